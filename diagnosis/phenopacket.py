"""GA4GH Phenopacket v2 → the patient a clinician would enter.

The rare-disease ecosystem (LIRICAL, Exomiser, phenopacket-store) exchanges patients as
Phenopackets. Only what the model reads is taken:

* ``phenotypicFeatures[].type.id`` (HPO) → ``symptoms``, or ``absent_symptoms`` when the feature
  is ``excluded: true``;
* ``subject.sex`` (``FEMALE``, ``MALE``, ``OTHER_SEX``, ``UNKNOWN_SEX``) → ``sex``;
* the age: ``subject.timeAtLastEncounter.age.iso8601duration`` (e.g. ``P3Y6M``); an age given
  otherwise (a range, a gestational age, an onset class) stays missing, never guessed;
* ``measurements[]`` with a LOINC assay of a vital sign the model reads (body temperature 8310-5,
  heart rate 8867-4, systolic 8480-6, diastolic 8462-4 blood pressure), in the units the API takes.

Everything else (identifiers, free text, diseases, interpretations, files) is ignored and never
logged. :func:`read_phenopacket` returns the patient body and every problem found, each with the
JSON path of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SEXES = {"FEMALE": "female", "MALE": "male", "OTHER_SEX": "other", "UNKNOWN_SEX": "unknown"}
# LOINC code -> (API field, accepted UCUM units)
VITAL_LOINC = {
    "8310-5": ("body_temperature", {"Cel", "°C", "C"}),
    "8867-4": ("heart_rate", {"/min", "{beats}/min", "beats/min"}),
    "8480-6": ("systolic_bp", {"mm[Hg]", "mmHg"}),
    "8462-4": ("diastolic_bp", {"mm[Hg]", "mmHg"}),
}
_DURATION = re.compile(
    r"^P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T.*)?$"
)


@dataclass(frozen=True)
class PacketProblem:
    field: str
    value: Any
    message: str
    allowed: str | None = None


def iso_duration_years(text: str) -> float | None:
    """``P3Y6M`` → 3.5; ``P10D`` → 0.027…; not a duration → ``None``."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.group(g) for g in "ymwd"):
        return None
    years = float(match.group("y") or 0)
    years += float(match.group("m") or 0) / 12
    years += float(match.group("w") or 0) * 7 / 365.25
    years += float(match.group("d") or 0) / 365.25
    return round(years, 3)


def _age(subject: Mapping[str, Any]) -> tuple[float | None, PacketProblem | None]:
    time = subject.get("timeAtLastEncounter")
    if not isinstance(time, Mapping):
        return None, None
    age = time.get("age")
    if isinstance(age, Mapping) and "iso8601duration" in age:
        years = iso_duration_years(age["iso8601duration"])
        if years is None:
            return None, PacketProblem(
                "subject.timeAtLastEncounter.age.iso8601duration",
                age["iso8601duration"],
                "not an ISO 8601 duration",
                "e.g. P3Y6M",
            )
        return years, None
    return None, None  # age ranges, gestational ages, onset classes: unknown as an exact age


def read_phenopacket(packet: Any) -> tuple[dict[str, Any] | None, list[PacketProblem]]:
    """(patient body or ``None``, every problem). The body has the fields of ``POST /v1/predict``
    (present ones only), to be validated like any request."""
    if not isinstance(packet, Mapping):
        return None, [PacketProblem("body", None, "a Phenopacket v2 JSON object is required")]
    problems: list[PacketProblem] = []
    patient: dict[str, Any] = {}
    subject = packet.get("subject") or {}
    if not isinstance(subject, Mapping):
        problems.append(PacketProblem("subject", None, "must be an object"))
        subject = {}
    sex = subject.get("sex")
    if sex is not None:
        if isinstance(sex, str) and sex in SEXES:
            patient["sex"] = SEXES[sex]
        else:
            problems.append(PacketProblem("subject.sex", sex, "unknown sex", " | ".join(SEXES)))
    age, problem = _age(subject)
    if problem is not None:
        problems.append(problem)
    if age is not None:
        patient["age"] = age

    features = packet.get("phenotypicFeatures")
    if features is None:
        features = []
    if not isinstance(features, list):
        problems.append(PacketProblem("phenotypicFeatures", None, "must be a list"))
        features = []
    present: list[str] = []
    absent: list[str] = []
    for i, feature in enumerate(features):
        path = f"phenotypicFeatures[{i}]"
        term = feature.get("type") if isinstance(feature, Mapping) else None
        term_id = term.get("id") if isinstance(term, Mapping) else None
        if not isinstance(term_id, str):
            problems.append(
                PacketProblem(
                    f"{path}.type.id", None, "an HPO id is required", "HP: followed by 7 digits"
                )
            )
            continue
        excluded = feature.get("excluded", False)
        if not isinstance(excluded, bool):
            problems.append(PacketProblem(f"{path}.excluded", excluded, "must be true or false"))
            continue
        (absent if excluded else present).append(term_id.strip())
    if present:
        patient["symptoms"] = present
    if absent:
        patient["absent_symptoms"] = absent

    measurements = packet.get("measurements") or []
    if isinstance(measurements, list):
        for i, measurement in enumerate(measurements):
            if not isinstance(measurement, Mapping):
                continue
            assay = measurement.get("assay") or {}
            code = (
                str(assay.get("id", "")).removeprefix("LOINC:")
                if isinstance(assay, Mapping)
                else ""
            )
            if code not in VITAL_LOINC:
                continue  # a measurement the model does not read
            field, units = VITAL_LOINC[code]
            value_obj = measurement.get("value")
            quantity = value_obj.get("quantity") if isinstance(value_obj, Mapping) else None
            quantity = quantity if isinstance(quantity, Mapping) else {}
            unit = quantity.get("unit") or {}
            unit_id = (
                str(unit.get("id", "")).removeprefix("UCUM:") if isinstance(unit, Mapping) else ""
            )
            value = quantity.get("value")
            path = f"measurements[{i}].value.quantity"
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(PacketProblem(f"{path}.value", value, "must be a number"))
            elif unit_id not in units:
                problems.append(
                    PacketProblem(
                        f"{path}.unit.id", unit_id, "unit not accepted", " | ".join(sorted(units))
                    )
                )
            else:
                patient[field] = float(value)
    return (None if problems else patient), problems
