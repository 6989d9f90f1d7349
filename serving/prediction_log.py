"""Append-only log of served predictions (JSON lines), read later by monitoring.

File: ``<TRIAGE_HOME>/predictions/predictions-<UTC date>.jsonl``, one line per prediction::

    {"prediction_id", "time", "model_version",
     "inputs": {"age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp",
                "symptoms"},
     "differential": [{"code", "probability"}, ...],   # what was returned, most probable first
     "orphan_probability", "severity"}                  # severity = the returned label

Requests carry no identifiers and unknown fields are rejected before scoring, so the inputs logged
are only the validated model inputs (no free text can reach this file).

Cost: the file handle stays open; each request's lines are built in memory and written with one
unbuffered ``write`` syscall into the page cache (no fsync), under a lock so threads never
interleave partial lines. So a line is on disk (page cache) when the response is sent. Each uvicorn worker process appends to the same daily file;
every request writes whole lines in one ``O_APPEND`` write, which the kernel keeps unbroken.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

log = logging.getLogger("triage.serving.predictions")

_INPUT_FIELDS = ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")


class PredictionLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._encoder = msgspec.json.Encoder()
        self._lock = threading.Lock()
        self._handle: IO[bytes] | None = None
        self._day: str | None = None
        self.write_errors = 0

    def path_for(self, day: str) -> Path:
        return self.directory / f"predictions-{day}.jsonl"

    def _handle_for(self, day: str) -> IO[bytes]:
        if self._handle is None or self._day != day:
            self.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            # unbuffered: the request's lines are gathered in memory and written with one call
            self._handle = open(self.path_for(day), "ab", buffering=0)  # noqa: SIM115
            self._day = day
        return self._handle

    def record(
        self,
        patients: Sequence[Mapping[str, Any]],
        answers: Sequence[Mapping[str, Any]],
    ) -> None:
        """Append one line per (patient, answer); written before returning."""
        now = dt.datetime.now(dt.timezone.utc)
        stamp = now.isoformat(timespec="milliseconds")
        lines = bytearray()
        for patient, answer in zip(patients, answers, strict=True):
            entry = {
                "prediction_id": answer["prediction_id"],
                "time": stamp,
                "model_version": answer["model_version"],
                "inputs": {
                    **{name: patient.get(name) for name in _INPUT_FIELDS},
                    "symptoms": list(patient.get("symptoms") or ()),
                },
                "differential": [
                    {"code": d["code"], "probability": d["probability"]}
                    for d in answer["differential"]
                ],
                "orphan_probability": answer["orphan_probability"],
                "severity": answer["severity"]["label"],
            }
            lines += self._encoder.encode(entry)
            lines += b"\n"
        try:
            with self._lock:
                handle = self._handle_for(now.date().isoformat())
                view = memoryview(lines)
                while view:  # a regular file takes it all at once; loop for partial writes
                    written = handle.write(view)
                    view = view[written or 0 :]
        except OSError as exc:
            self.write_errors += 1
            log.error("prediction log write failed (%d so far): %s", self.write_errors, exc.strerror)

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            finally:
                self._handle = None
                self._day = None
