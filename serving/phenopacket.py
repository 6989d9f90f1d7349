"""``POST /v1/predict/phenopacket``: a GA4GH Phenopacket v2 JSON as a predict body (API v1.3).

The phenopacket is converted by the core's reader (:func:`diagnosis.phenopacket.read_phenopacket`)
and the patient it yields is validated by :func:`serving.structs.validate_patient_body`, exactly
like a ``/v1/predict`` body; every problem is reported at once, with the path of the phenopacket
field it comes from (``phenotypicFeatures[3].type.id``, ``measurements[0].value.quantity.value``,
``subject.timeAtLastEncounter.age.iso8601duration``, …).

Only the fields the model reads are looked at (see :data:`PHENOPACKET_SCHEMA`); every other field
of the phenopacket (identifiers, free text, diseases, interpretations, files, …) is ignored and
never logged. The fields that are read must have the documented JSON types: a wrong type is a
problem of the request (422), never a server error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnosis.phenopacket import SEXES, VITAL_LOINC, read_phenopacket
from schemas.clinical import HPO_ID_PATTERN
from serving.structs import (
    Problem,
    echo,
    type_name,
    validate_patient_body,
)

_NULLABLE_OBJECT = ["object", "null"]
_NUMBER = "[0-9]+(?:[.][0-9]+)?"
# what diagnosis.phenopacket.iso_duration_years reads: at least one of years, months, weeks, days
# (a time part is read as nothing)
DURATION_PATTERN = (
    f"^P(?=[0-9])(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?(?:T.*)?$"
)

# What the reader reads, as JSON Schema: documented in the OpenAPI (with ``additionalProperties``
# left open: a phenopacket has many fields the model does not read) and checked by
# :func:`_shape_problems` before the reader runs.
PHENOPACKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A GA4GH Phenopacket v2 (JSON). Read: `phenotypicFeatures[].type.id` (HPO; "
    "`excluded: true` makes it an excluded finding, `absent_symptoms`), `subject.sex`, "
    "`subject.timeAtLastEncounter.age.iso8601duration` (the age; other age forms stay missing), "
    "and `measurements[]` whose `assay.id` is a vital sign's LOINC code (8310-5 body temperature "
    "in Cel, 8867-4 heart rate in /min, 8480-6 systolic and 8462-4 diastolic blood pressure in "
    "mm[Hg]). Every other field is ignored and never logged. The patient is then validated and "
    "answered exactly as by POST /v1/predict.",
    "properties": {
        "subject": {
            "type": _NULLABLE_OBJECT,
            "properties": {
                "sex": {"enum": [*SEXES, None]},
                "timeAtLastEncounter": {
                    "type": _NULLABLE_OBJECT,
                    "properties": {
                        "age": {
                            "type": _NULLABLE_OBJECT,
                            "properties": {
                                "iso8601duration": {
                                    "type": "string",
                                    "description": "Age as an ISO 8601 duration, e.g. P3Y6M "
                                    "(0–120 years).",
                                    "pattern": DURATION_PATTERN,
                                }
                            },
                        }
                    },
                },
            },
        },
        "phenotypicFeatures": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {
                            "id": {"type": "string", "pattern": HPO_ID_PATTERN},
                        },
                    },
                    "excluded": {"type": "boolean"},
                },
            },
        },
        "measurements": {
            "type": ["array", "null"],
            "description": "Measurements; those of a vital sign the model reads (by LOINC code) "
            "need `value.quantity.value` (a number) and `value.quantity.unit.id` (UCUM).",
            "items": {"type": "object"},
        },
    },
}

PHENOPACKET_EXAMPLE: dict[str, Any] = {
    "id": "example-1",
    "subject": {
        "id": "patient-1",
        "sex": "MALE",
        "timeAtLastEncounter": {"age": {"iso8601duration": "P27Y"}},
    },
    "phenotypicFeatures": [
        {"type": {"id": "HP:0001166", "label": "Arachnodactyly"}},
        {"type": {"id": "HP:0001083", "label": "Ectopia lentis"}},
        {"type": {"id": "HP:0001945", "label": "Fever"}, "excluded": True},
    ],
    "measurements": [
        {
            "assay": {"id": "LOINC:8867-4", "label": "Heart rate"},
            "value": {
                "quantity": {
                    "unit": {"id": "UCUM:/min", "label": "per minute"},
                    "value": 72,
                }
            },
        }
    ],
    "metaData": {
        "created": "2026-01-12T00:00:00Z",
        "phenopacketSchemaVersion": "2.0",
        "resources": [],
    },
}

_AGE_PATH = "subject.timeAtLastEncounter.age.iso8601duration"


def _problem(path: str, value: Any, expected: str) -> Problem:
    return Problem(
        field=path, value=echo(value), message=f"must be {expected}, got {type_name(value)}"
    )


def _loinc(measurement: Mapping[str, Any]) -> str | None:
    assay = measurement.get("assay")
    if not isinstance(assay, Mapping):
        return None
    code = str(assay.get("id", "")).removeprefix("LOINC:")
    return code if code in VITAL_LOINC else None


def _shape_problems(packet: Mapping[str, Any]) -> list[Problem]:
    """The read fields that do not have their documented JSON type (the reader assumes them)."""
    problems: list[Problem] = []
    subject = packet.get("subject")
    if subject is not None and not isinstance(subject, Mapping):
        problems.append(_problem("subject", subject, "an object or null"))
    elif subject is not None:
        sex = subject.get("sex")
        if sex is not None and not isinstance(sex, str):
            problems.append(
                Problem(
                    field="subject.sex",
                    value=echo(sex),
                    message=f"must be a string or null, got {type_name(sex)}",
                    allowed=" | ".join(SEXES),
                )
            )
        time = subject.get("timeAtLastEncounter")
        if time is not None and not isinstance(time, Mapping):
            problems.append(_problem("subject.timeAtLastEncounter", time, "an object or null"))
        elif time is not None:
            age = time.get("age")
            if age is not None and not isinstance(age, Mapping):
                problems.append(_problem("subject.timeAtLastEncounter.age", age, "an object"))
    features = packet.get("phenotypicFeatures")
    if features is not None and not isinstance(features, list):
        problems.append(_problem("phenotypicFeatures", features, "an array or null"))
    measurements = packet.get("measurements")
    if measurements is not None and not isinstance(measurements, list):
        problems.append(_problem("measurements", measurements, "an array or null"))
    elif measurements is not None:
        for i, measurement in enumerate(measurements):
            path = f"measurements[{i}]"
            if not isinstance(measurement, Mapping):
                problems.append(_problem(path, measurement, "an object"))
                continue
            if _loinc(measurement) is None:
                continue  # a measurement the model does not read
            value = measurement.get("value")
            quantity = value.get("quantity") if isinstance(value, Mapping) else None
            unit = quantity.get("unit") if isinstance(quantity, Mapping) else None
            if not isinstance(value, Mapping):
                problems.append(_problem(f"{path}.value", value, "an object with a quantity"))
            elif not isinstance(quantity, Mapping):
                problems.append(_problem(f"{path}.value.quantity", quantity, "an object"))
            elif unit is not None and not isinstance(unit, Mapping):
                problems.append(_problem(f"{path}.value.quantity.unit", unit, "an object"))
    return problems


def _field_paths(
    packet: Mapping[str, Any], read: Mapping[str, Any], dropped: set[int]
) -> dict[str, str]:
    """Predict-body path -> phenopacket path. ``read`` is the packet the reader read: ``packet``
    without the features ``dropped`` and with its faulty measurements blanked. The i-th present
    (absent) symptom is the i-th feature read that is not (is) excluded; a vital comes from the
    last measurement read with its LOINC code (the reader keeps the last)."""
    paths = {"sex": "subject.sex", "age": _AGE_PATH}
    counts = {"symptoms": 0, "absent_symptoms": 0}
    paths["symptoms"] = paths["absent_symptoms"] = "phenotypicFeatures"
    for j, feature in enumerate(packet.get("phenotypicFeatures") or ()):
        if j in dropped:
            continue
        name = "absent_symptoms" if feature.get("excluded", False) else "symptoms"
        paths[f"{name}[{counts[name]}]"] = f"phenotypicFeatures[{j}].type.id"
        counts[name] += 1
    for i, measurement in enumerate(read.get("measurements") or ()):  # same indices
        code = _loinc(measurement) if isinstance(measurement, Mapping) else None
        if code is not None:
            paths[VITAL_LOINC[code][0]] = f"measurements[{i}].value.quantity.value"
    return paths


def _index(path: str, field: str) -> int | None:
    """``3`` for ``field[3]...``; ``None`` for another field."""
    if not path.startswith(f"{field}["):
        return None
    return int(path[len(field) + 1 :].split("]", 1)[0])


def _without(packet: Mapping[str, Any], problems: list[Problem]) -> tuple[dict[str, Any], set[int]]:
    """``packet`` without the parts the reader found problems in, so that the rest can still be
    read and validated (every problem of a request is reported at once). Features are dropped,
    measurements blanked (``None``: the reader skips them), other fields removed. Also returns
    the indices of the dropped features."""
    bad_features = {i for p in problems if (i := _index(p.field, "phenotypicFeatures")) is not None}
    bad_measurements = {i for p in problems if (i := _index(p.field, "measurements")) is not None}
    fields = {p.field for p in problems}
    clean = dict(packet)
    subject = clean.get("subject")
    if isinstance(subject, Mapping):
        subject = dict(subject)
        if "subject.sex" in fields:
            subject.pop("sex", None)
        if _AGE_PATH in fields:
            subject.pop("timeAtLastEncounter", None)
        clean["subject"] = subject
    if bad_features:
        clean["phenotypicFeatures"] = [
            f for j, f in enumerate(clean["phenotypicFeatures"]) if j not in bad_features
        ]
    if bad_measurements:
        clean["measurements"] = [
            None if i in bad_measurements else m for i, m in enumerate(clean["measurements"])
        ]
    return clean, bad_features


def validate_phenopacket_body(obj: Any) -> tuple[dict[str, Any] | None, list[Problem]]:
    """(the patient as ``/v1/predict`` scores it, or ``None``; every problem, with phenopacket
    paths)."""
    if not isinstance(obj, Mapping):
        return None, [
            Problem(
                field="body",
                value=echo(obj),
                message=f"expected a Phenopacket v2 JSON object, got {type_name(obj)}",
            )
        ]
    problems = _shape_problems(obj)
    if problems:  # the reader cannot read a packet of the wrong shape: these problems only
        return None, problems
    patient, packet_problems = read_phenopacket(obj)
    problems = [
        Problem(field=p.field, value=echo(p.value), message=p.message, allowed=p.allowed)
        for p in packet_problems
    ]
    rest, dropped = obj, set()
    if patient is None:  # read what is left, to report its problems too
        rest, dropped = _without(obj, problems)
        patient, _ = read_phenopacket(rest)
    if patient is None:
        return None, problems
    paths = _field_paths(obj, rest, dropped)
    clean, body_problems = validate_patient_body(patient)
    for problem in body_problems:
        problem.field = paths.get(problem.field, problem.field)
    problems += body_problems
    return (None if problems else clean), problems


__all__ = [
    "PHENOPACKET_EXAMPLE",
    "PHENOPACKET_SCHEMA",
    "validate_phenopacket_body",
]
