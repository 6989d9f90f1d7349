"""Confirmed diagnoses ("labels") sent back by clinicians, days after a prediction.

One JSON file per label: ``<TRIAGE_HOME>/labels/<prediction_id>.json``::

    {"format": 1, "prediction_id", "diagnosis", "severity", "labelled_at", "labelled_by",
     "model_version", "predicted_at"}

``diagnosis`` is canonical (upper case, matching :data:`schemas.clinical.DIAGNOSIS_PATTERN`),
``severity`` canonical English (Spanish input is normalised), ``labelled_by`` the *role* of the
token (never the token), ``model_version``/``predicted_at`` those of the logged prediction, so
monitoring can join labels to predictions per model version. A later label for the same prediction
replaces the earlier one (a correction); both writes are atomic, so a reader sees one or the other.

Durability: the label is written to a temporary file in the same directory, flushed and
``fsync``-ed, renamed over the final name with ``os.replace`` and the directory is ``fsync``-ed, all
before the API answers 202. A failure leaves no partial file behind. With S3 configured
(:mod:`diagnosis.remote`) the same record is also written to ``labels/<prediction_id>.json`` in the
bucket before the 202; if that write fails the request fails (503) and the clinician can resend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from diagnosis.files import atomic_write
from diagnosis.remote import RemoteStore
from schemas.clinical import DIAGNOSIS_RE, SEVERITIES, normalise_severity
from schemas.contracts import LabelRecord
from serving.prediction_log import PREDICTION_ID_RE
from serving.structs import LabelRequest, Problem, echo, type_name

LABEL_FIELDS = ("prediction_id", "diagnosis", "severity")


def canonical_label(body: LabelRequest) -> dict[str, str]:
    """A decoded label body in canonical form (id lower case, code upper case, severity in
    English): exactly the fields :func:`validate_label_body` returns for the same body."""
    return {
        "prediction_id": body.prediction_id.strip().lower(),
        "diagnosis": body.diagnosis.strip().upper(),
        "severity": normalise_severity(body.severity.strip()) or body.severity,
    }


def validate_label_body(obj: Any) -> tuple[dict[str, str] | None, list[Problem]]:
    """Check a decoded label body; return (canonical fields or None, every problem found)."""
    if not isinstance(obj, Mapping):
        return None, [
            Problem(
                field="body",
                value=echo(obj),
                message=f"expected a JSON object, got {type_name(obj)}",
                allowed=", ".join(LABEL_FIELDS),
            )
        ]
    problems = [
        Problem(
            field=str(key),
            value=echo(obj[key]),
            message="unknown field",
            allowed=", ".join(LABEL_FIELDS),
        )
        for key in obj
        if key not in LABEL_FIELDS
    ]
    clean: dict[str, str] = {}

    def text(name: str, allowed: str) -> str | None:
        value = obj.get(name)
        if value is None:
            problems.append(Problem(field=name, value=None, message="required", allowed=allowed))
            return None
        if not isinstance(value, str):
            problems.append(
                Problem(
                    field=name,
                    value=echo(value),
                    message=f"must be a string, got {type_name(value)}",
                    allowed=allowed,
                )
            )
            return None
        return value.strip()

    allowed_id = "the prediction_id returned by /v1/predict (32 hex characters)"
    prediction_id = text("prediction_id", allowed_id)
    if prediction_id is not None:
        prediction_id = prediction_id.lower()
        if PREDICTION_ID_RE.match(prediction_id):
            clean["prediction_id"] = prediction_id
        else:
            problems.append(
                Problem(
                    field="prediction_id",
                    value=echo(obj["prediction_id"]),
                    message="not a prediction id",
                    allowed=allowed_id,
                )
            )

    allowed_dx = "NONE, an ICD-10 code (e.g. J18.9), ORPHA:<n> or OMIM:<n>"
    diagnosis = text("diagnosis", allowed_dx)
    if diagnosis is not None:
        code = diagnosis.upper()
        if DIAGNOSIS_RE.match(code):
            clean["diagnosis"] = code
        else:
            problems.append(
                Problem(
                    field="diagnosis",
                    value=echo(obj["diagnosis"]),
                    message="not a diagnosis code",
                    allowed=allowed_dx,
                )
            )

    allowed_sev = (
        " | ".join(SEVERITIES) + " (or Spanish: No enfermo, leve, aguda, crónica, terminal)"
    )
    severity = text("severity", allowed_sev)
    if severity is not None:
        canonical = normalise_severity(severity)
        if canonical is not None:
            clean["severity"] = canonical
        else:
            problems.append(
                Problem(
                    field="severity",
                    value=echo(obj["severity"]),
                    message="unknown severity",
                    allowed=allowed_sev,
                )
            )

    return (None if problems else clean), problems


class LabelStore:
    def __init__(self, directory: Path, remote: RemoteStore | None = None) -> None:
        self.directory = directory
        self.remote = remote
        self._encoder = msgspec.json.Encoder()

    def path_for(self, prediction_id: str) -> Path:
        if PREDICTION_ID_RE.match(prediction_id) is None:  # the id becomes a file name
            raise ValueError("not a prediction id")
        return self.directory / f"{prediction_id}.json"

    def write(
        self, fields: Mapping[str, str], role: str, prediction: Mapping[str, Any]
    ) -> tuple[LabelRecord, bool]:
        """Durably write one label; return (the stored record, whether it replaced an earlier one)."""
        record = LabelRecord(
            prediction_id=fields["prediction_id"],
            diagnosis=fields["diagnosis"],
            severity=fields["severity"],
            labelled_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            labelled_by=role,
            model_version=prediction.get("model_version"),
            predicted_at=prediction.get("time"),
        )
        target = self.path_for(record.prediction_id)
        replaced = target.exists()
        data = self._encoder.encode(record) + b"\n"
        atomic_write(target, data)
        if self.remote is not None:
            self.remote.put_bytes("labels", target.name, data)
        return record, replaced
