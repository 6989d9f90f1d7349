"""Batch orphan-disease screening of a week of validated records with the deployed runtime.

Each record is scored exactly as the API scores a request (:meth:`diagnosis.runtime.Runtime.predict`
on the same fields); a patient is listed when the orphan probability reaches the threshold, with
the leading ORPHA/OMIM entries of the differential. Records are identified only by their
pseudonymised ``patient_key`` (set at validation); no free text is carried.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from diagnosis.categories import CATEGORY_ORPHAN, category_of

PATIENT_FIELDS = (
    "age",
    "sex",
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
    "symptoms",
    "absent_symptoms",
)
SCREENING_COLUMNS = (
    "patient_key",
    "recorded_at",
    "age",
    "sex",
    "orphan_probability",
    "candidates",
    "candidate_codes",
    "severity",
    "diagnosis_on_record",
    "model_version",
)
DIFFERENTIAL_DEPTH = 30  # entries read per patient to find its leading ORPHA/OMIM candidates
BATCH = 500


def _patients(frame: pl.DataFrame) -> list[dict[str, Any]]:
    fields = [f for f in PATIENT_FIELDS if f in frame.columns]
    rows = frame.select(fields).to_dicts()
    for row in rows:
        row["symptoms"] = list(row.get("symptoms") or [])
        if "absent_symptoms" in row:
            row["absent_symptoms"] = list(row.get("absent_symptoms") or [])
    return rows


def screen_week(
    runtime: Any, records: pl.DataFrame, threshold: float, candidates: int
) -> tuple[pl.DataFrame, dict[str, int]]:
    """(listed patients, most probable first; counts) for one week's validated ``records``."""
    patients = _patients(records)
    answers = []
    for start in range(0, len(patients), BATCH):
        answers += runtime.predict(patients[start : start + BATCH], DIFFERENTIAL_DEPTH)
    keys = records["patient_key"].to_list() if "patient_key" in records.columns else []
    recorded = records["diagnosis"].to_list() if "diagnosis" in records.columns else []
    times = records["recorded_at"].to_list() if "recorded_at" in records.columns else []
    rows = []
    for i, answer in enumerate(answers):
        if answer.orphan_probability < threshold:
            continue
        orphan = [e for e in answer.differential if e.category == CATEGORY_ORPHAN][:candidates]
        rows.append(
            {
                "patient_key": keys[i] if keys else None,
                "recorded_at": times[i] if times else None,
                "age": patients[i].get("age"),
                "sex": patients[i].get("sex"),
                "orphan_probability": float(answer.orphan_probability),
                "candidates": "; ".join(f"{e.code} {e.name} ({e.probability:.2f})" for e in orphan),
                "candidate_codes": [e.code for e in orphan],
                "severity": answer.severity.label,
                "diagnosis_on_record": recorded[i] if recorded else None,
                "model_version": answer.model_version,
            }
        )
    schema = {
        "patient_key": pl.Utf8,
        "recorded_at": pl.Datetime("us"),
        "age": pl.Float64,
        "sex": pl.Utf8,
        "orphan_probability": pl.Float64,
        "candidates": pl.Utf8,
        "candidate_codes": pl.List(pl.Utf8),
        "severity": pl.Utf8,
        "diagnosis_on_record": pl.Utf8,
        "model_version": pl.Utf8,
    }
    listed = pl.DataFrame(rows, schema=schema).sort("orphan_probability", descending=True)
    on_record = [category_of(d) == CATEGORY_ORPHAN for d in recorded if d]
    listed_orphan = sum(
        1
        for d in listed["diagnosis_on_record"].to_list()
        if d and category_of(d) == CATEGORY_ORPHAN
    )
    counts = {
        "scored": len(answers),
        "listed": listed.height,
        "listed_without_orphan_diagnosis": listed.height - listed_orphan,
        "orphan_on_record": int(sum(on_record)),
        "orphan_on_record_listed": listed_orphan,
    }
    return listed, counts
