"""Confirmed diagnoses ("labels") sent back by clinicians, days after a prediction.

One JSON file per prediction, its latest revision: ``<TRIAGE_HOME>/labels/<prediction_id>.json``
(a :class:`schemas.contracts.LabelRecord`)::

    {"format": 1, "prediction_id", "diagnosis", "severity", "labelled_at", "labelled_by",
     "model_version", "predicted_at", "revision", "confirmed_by"}

``diagnosis`` is canonical (upper case) and must be a code of the catalogue the deployed model
serves (its classes and the ranker's diseases, or ``NONE``; API v1.4), ``severity`` canonical
English (Spanish input is normalised), ``labelled_by`` the *role* of the token and ``confirmed_by``
its *name* (never the token), ``model_version``/``predicted_at`` those of the logged prediction,
so monitoring can join labels to predictions per model version.

Revisions (API v1.4): a later label for the same prediction is a correction, never a silent
overwrite. Every revision is kept as ``labels/revisions/<prediction_id>.<n>.json`` (n = 1, 2, …,
never rewritten) and the latest one is also ``labels/<prediction_id>.json``, which the pipeline
reads. Writers of one home (threads and worker processes) take an exclusive ``flock`` on
``labels/revisions/.lock`` around numbering and writing, so two corrections never get the same
number and the latest file is always the highest revision.

Durability: each file is written to a temporary file in the same directory, flushed and
``fsync``-ed, renamed into place with ``os.replace`` and the directory is ``fsync``-ed, all before
the API answers 202 (the revision first, then the latest). A failure leaves no partial file
behind. The files are 0600 in 0700 folders (patient data). With S3 configured
(:mod:`diagnosis.remote`) both records are also written to the bucket (``labels/revisions/…`` and
``labels/<prediction_id>.json``) before the 202; if that write fails the request fails (503) and
the clinician can resend.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from diagnosis.common_conditions import COMMON_CONDITIONS
from diagnosis.files import atomic_write
from diagnosis.remote import RemoteStore
from schemas.clinical import DIAGNOSIS_RE, SEVERITIES, normalise_severity
from schemas.contracts import LabelRecord
from serving.prediction_log import PREDICTION_ID_RE, private_directory
from serving.structs import LabelRequest, Problem, echo, type_name

log = logging.getLogger("triage.serving.labels")

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
        self.revisions = directory / REVISIONS_DIR
        self.remote = remote
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(LabelRecord)
        self.catalogue = Catalogue()

    def path_for(self, prediction_id: str) -> Path:
        if PREDICTION_ID_RE.match(prediction_id) is None:  # the id becomes a file name
            raise ValueError("not a prediction id")
        return self.directory / f"{prediction_id}.json"

    def revision_path(self, prediction_id: str, revision: int) -> Path:
        self.path_for(prediction_id)  # the same check of the id
        return self.revisions / f"{prediction_id}.{revision}.json"

    def _read(self, path: Path) -> LabelRecord | None:
        try:
            return self._decoder.decode(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            log.error("label file %s is unreadable: %s", path.name, exc)
            return None

    def history(self, prediction_id: str) -> list[LabelRecord]:
        """Every revision of the prediction's label, oldest first (a pre-v1.4 label that was never
        corrected has no revision file: the latest file alone)."""
        records = []
        revision = 1
        while (record := self._read(self.revision_path(prediction_id, revision))) is not None:
            records.append(record)
            revision += 1
        if not records:
            latest = self._read(self.path_for(prediction_id))
            records = [latest] if latest is not None else []
        return records

    def write(
        self,
        fields: Mapping[str, str],
        role: str,
        prediction: Mapping[str, Any],
        confirmed_by: str | None = None,
    ) -> tuple[LabelRecord, bool]:
        """Durably write one label as the prediction's next revision; return (the stored record,
        whether it corrected an earlier label)."""
        target = self.path_for(fields["prediction_id"])
        private_directory(self.directory)
        private_directory(self.revisions)
        with _exclusive(self.revisions / ".lock"):
            previous = self._read(target)
            revision = 1
            if previous is not None:
                revision = previous.revision + 1
                kept = self.revision_path(previous.prediction_id, previous.revision)
                if not kept.exists():  # written before v1.4: keep it as revision 1
                    self._put(kept, self._encoder.encode(previous) + b"\n")
            record = LabelRecord(
                prediction_id=fields["prediction_id"],
                diagnosis=fields["diagnosis"],
                severity=fields["severity"],
                labelled_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                labelled_by=role,
                model_version=prediction.get("model_version"),
                predicted_at=prediction.get("time"),
                revision=revision,
                confirmed_by=confirmed_by,
            )
            data = self._encoder.encode(record) + b"\n"
            self._put(self.revision_path(record.prediction_id, revision), data)
            self._put(target, data)
        return record, previous is not None

    def _put(self, path: Path, data: bytes) -> None:
        atomic_write(path, data)  # a 0600 temporary file renamed into place
        if self.remote is not None:
            self.remote.put_bytes("labels", path.relative_to(self.directory).as_posix(), data)


REVISIONS_DIR = "revisions"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class Catalogue:
    """The diagnosis codes a label may name: the deployed model's classes and the ranker's
    diseases (its ``entries``), the curated common conditions (as the pipeline's
    ``disease_catalogue``: a condition this week's training data lacked can still be confirmed,
    and learned from) and ``NONE``; computed once per loaded model."""

    def __init__(self) -> None:
        self._model: Any = None
        self._codes: frozenset[str] = frozenset()

    def codes(self, model: Any) -> frozenset[str]:
        if model is not self._model:  # a reference swap on hot reload: recompute once
            self._codes = frozenset(
                {NO_DISEASE, *COMMON_CODES, *(entry.code for entry in model.entries)}
            )
            self._model = model
        return self._codes

    def problems(self, diagnosis: str, model: Any) -> list[Problem]:
        if diagnosis in self.codes(model):
            return []
        return [
            Problem(
                field="diagnosis",
                value=echo(diagnosis),
                message=f"not a disease of the catalogue the deployed model {model.version} serves",
                allowed="NONE or a code the model can answer (GET /v1/diseases lists them, "
                "in_model: true)",
            )
        ]


NO_DISEASE = "NONE"
COMMON_CODES = frozenset(condition.code for condition in COMMON_CONDITIONS)
