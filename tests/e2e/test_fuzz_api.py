"""Schemathesis against a real ``triage serve`` process, over loopback HTTP.

The OpenAPI document is read from the running server (``/schema/openapi.json``); every operation
in it gets a bounded number of generated requests, first schema-conforming ones (positive), then
schema-violating ones (negative), sent with an admin token (admin may call every endpoint).
Each response goes through schemathesis' default checks, among them:

- ``not_a_server_error``: no 5xx, whatever the input;
- ``status_code_conformance``: the status code is documented for the operation;
- ``content_type_conformance`` / ``response_schema_conformance`` /
  ``response_headers_conformance``: the body (and its media type) is the documented one for
  that status;
- ``negative_data_rejection``: a request that violates the schema is refused with a 4xx;
- ``positive_data_acceptance``: a request that satisfies the schema is not refused with 400/422;
- ``ignored_auth``: the same request without the token gets 401.

No check is switched off. The rules JSON Schema cannot state (the fields' descriptions do) are
given to the generator instead, and positive cases that break one are discarded rather than
reported as "valid data rejected": ``diastolic_bp`` must be below ``systolic_bp``; an HPO id may
not be both in ``symptoms`` and in ``absent_symptoms`` (v1.3); and for a phenopacket, the same
rules on the patient it describes (a term both observed and excluded, an age over 120 years).

A real process (``start_api``) rather than the in-process ASGI transport: the in-process
transport once hung the whole run, and HTTP also exercises uvicorn's parsing and limits.
Shrinking is off (each failing example is reported as generated, with a curl command to replay
it) so that the test stays well under two minutes (about 15 s after the shared pipeline run).
The examples are the same on every run; ``TRIAGE_FUZZ_RANDOM=1`` draws new ones and
``TRIAGE_FUZZ_EXAMPLES=N`` changes how many per operation and mode (default 30).
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import GenerationMode

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
EXAMPLES = int(os.environ.get("TRIAGE_FUZZ_EXAMPLES", "30"))  # per operation and mode


def _vitals_contradict(patient: Any) -> bool:
    """The one rule JSON Schema cannot state: ``diastolic_bp`` must be below ``systolic_bp``
    (documented in the field's description; the API answers 422 otherwise)."""
    if not isinstance(patient, dict):
        return False
    systolic, diastolic = patient.get("systolic_bp"), patient.get("diastolic_bp")
    numbers = (int, float)
    return (
        isinstance(systolic, numbers)
        and isinstance(diastolic, numbers)
        and not isinstance(systolic, bool)
        and not isinstance(diastolic, bool)
        and diastolic >= systolic
    )


def _present_and_absent(patient: Any) -> bool:
    """An HPO id both in ``symptoms`` and in ``absent_symptoms`` (API v1.3: 422)."""
    if not isinstance(patient, dict):
        return False
    present, absent = patient.get("symptoms"), patient.get("absent_symptoms")
    if not (isinstance(present, list) and isinstance(absent, list)):
        return False
    return bool(
        {t for t in present if isinstance(t, str)} & {t for t in absent if isinstance(t, str)}
    )


def _patient_invalid(patient: Any) -> bool:
    return _vitals_contradict(patient) or _present_and_absent(patient)


def _phenopacket_patient_invalid(packet: Any) -> bool:
    """The phenopacket's patient breaks a rule of the predict body that the phenopacket's JSON
    Schema cannot state: a term both observed and excluded, or an age over 120 years."""
    from diagnosis.phenopacket import iso_duration_years

    if not isinstance(packet, dict):
        return False
    features = packet.get("phenotypicFeatures")
    if isinstance(features, list):
        terms: dict[bool, set[str]] = {True: set(), False: set()}
        for feature in features:
            term = feature.get("type") if isinstance(feature, dict) else None
            term_id = term.get("id") if isinstance(term, dict) else None
            if isinstance(term_id, str):
                terms[feature.get("excluded") is True].add(term_id.strip())
        if terms[True] & terms[False]:
            return True
    subject = packet.get("subject")
    time = subject.get("timeAtLastEncounter") if isinstance(subject, dict) else None
    age = time.get("age") if isinstance(time, dict) else None
    duration = age.get("iso8601duration") if isinstance(age, dict) else None
    years = iso_duration_years(duration) if isinstance(duration, str) else None
    return years is not None and years > 120


def _cross_field_invalid(operation_id: str | None, body: Any) -> bool:
    if operation_id == "predictDifferential":
        return _patient_invalid(body)
    if operation_id == "predictDifferentialBatch" and isinstance(body, dict):
        return any(_patient_invalid(p) for p in body.get("patients") or [])
    if operation_id == "predictDifferentialFromPhenopacket":
        return _phenopacket_patient_invalid(body)
    return False


def fuzz(base_url: str, token: str, examples: int = EXAMPLES) -> tuple[int, list[str]]:
    """Run every operation of the served schema; return (operations fuzzed, failure reports)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", timeout=30)
    schema.config.update(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
    session = requests.Session()
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        operation_id = operation.definition.raw.get("operationId")
        # the Authorization header (from the security scheme) is fixed to the admin token, so an
        # operation with no other parameter and no body has no schema-violating request to make
        has_inputs = bool(operation.body) or any(
            not (
                str(getattr(p.location, "value", p.location)) == "header"
                and p.name.lower() == "authorization"
            )
            for p in operation.iter_parameters()
        )
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_inputs else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=os.environ.get("TRIAGE_FUZZ_RANDOM") != "1",  # reproducible by default
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=True,
            )
            def check(case: schemathesis.Case) -> None:
                if mode is GenerationMode.POSITIVE:
                    assume(not _cross_field_invalid(operation_id, case.body))
                case.call_and_validate(session=session, timeout=30)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # every failure is collected, reported
                report = re.sub(r"\n{3,}", "\n\n", str(exc))
                failures.append(f"{operation.label} [{mode.value}]\n{report[:4000]}")
    return operations, failures


@pytest.fixture
def fuzz_server(deployed_home, start_api):
    return start_api(deployed_home, f"admin:{ADMIN_TOKEN}")


def test_every_operation_survives_fuzzing_and_answers_as_documented(fuzz_server):
    operations, failures = fuzz(fuzz_server, ADMIN_TOKEN)
    assert operations >= 9, f"only {operations} operations in the served schema"
    assert not failures, f"{len(failures)} failing operation/mode pair(s):\n\n" + "\n\n".join(
        failures
    )
