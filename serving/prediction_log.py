"""Append-only log of served predictions (JSON lines), read later by monitoring.

File: ``<TRIAGE_HOME>/predictions/predictions-<UTC date>.jsonl``, one line per prediction, each a
:class:`schemas.contracts.PredictionLogLine` (the monitoring assets decode the same Struct).

Requests carry no identifiers and unknown fields are rejected before scoring, so the inputs logged
are only the validated model inputs (no free text can reach this file).

Cost: the file handle stays open; each request's lines are built in memory and written with one
unbuffered ``write`` syscall into the page cache (no fsync), under a lock so threads never
interleave partial lines. So a line is on disk (page cache) when the response is sent. Each uvicorn worker process appends to the same daily file;
every request writes whole lines in one ``O_APPEND`` write, which the kernel keeps unbroken.

:class:`PredictionIndex` answers "was this prediction id served?" for the label endpoint: ids this
process logged are kept in memory (the newest :data:`RECENT_IDS_MAX`); any other id (logged by
another worker, or before a restart) is looked up by scanning the log files, newest first, with a
byte search over a memory map (about 1 ms per 10 MB; run it in a worker thread).
"""

from __future__ import annotations

import datetime as dt
import logging
import mmap
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from schemas.contracts import LoggedEntry, LoggedInputs, Prediction, PredictionLogLine

log = logging.getLogger("triage.serving.predictions")

_INPUT_FIELDS = ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
FILE_GLOB = "predictions-*.jsonl"
PREDICTION_ID_RE = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex, as the model store issues them
RECENT_IDS_MAX = 200_000


class PredictionIndex:
    """Known prediction ids -> ``{"prediction_id", "time", "model_version"}``."""

    def __init__(
        self,
        directory: Path,
        recent_max: int = RECENT_IDS_MAX,
        fallback: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        self.directory = directory
        self.fallback = fallback  # e.g. a scan of every host's log mirrored from S3
        self.recent_max = recent_max
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.scans = 0  # how many lookups needed the files (for tests and metrics)

    def remember(self, prediction_id: str, time: str, model_version: str) -> None:
        with self._lock:
            self._recent[prediction_id] = (time, model_version)
            while len(self._recent) > self.recent_max:
                self._recent.popitem(last=False)

    def find(self, prediction_id: str) -> dict[str, Any] | None:
        """The logged prediction's id, time and model version, or ``None`` if never logged.

        Only well-formed ids are looked up (anything else cannot be in the log).
        """
        if PREDICTION_ID_RE.match(prediction_id) is None:
            return None
        with self._lock:
            known = self._recent.get(prediction_id)
        if known is not None:
            return {"prediction_id": prediction_id, "time": known[0], "model_version": known[1]}
        self.scans += 1
        found = self._scan(prediction_id)
        if found is None and self.fallback is not None:
            found = self.fallback(prediction_id)
        return found

    def _scan(self, prediction_id: str) -> dict[str, Any] | None:
        needle = b'{"prediction_id":"' + prediction_id.encode("ascii") + b'"'
        try:
            files = sorted(self.directory.glob(FILE_GLOB), reverse=True)  # newest day first
        except OSError:
            return None
        for path in files:
            try:
                with path.open("rb") as handle:
                    if path.stat().st_size == 0:
                        continue
                    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                        at = view.find(needle)
                        if at < 0 or (at > 0 and view[at - 1 : at] != b"\n"):
                            continue
                        end = view.find(b"\n", at)
                        line = view[at : end if end >= 0 else len(view)]
            except (OSError, ValueError) as exc:
                log.warning("cannot scan %s: %s", path.name, exc)
                continue
            try:
                entry = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue  # a torn last line being written right now
            return {
                "prediction_id": prediction_id,
                "time": str(entry.get("time")),
                "model_version": str(entry.get("model_version")),
            }
        return None


class PredictionLog:
    def __init__(self, directory: Path, index: PredictionIndex | None = None) -> None:
        self.directory = directory
        self.index = index
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
        answers: Sequence[Prediction],
    ) -> None:
        """Append one line per (patient, answer); written before returning."""
        now = dt.datetime.now(dt.UTC)
        stamp = now.isoformat(timespec="milliseconds")
        lines = bytearray()
        for patient, answer in zip(patients, answers, strict=True):
            entry = PredictionLogLine(
                prediction_id=answer.prediction_id,
                time=stamp,
                model_version=answer.model_version,
                inputs=LoggedInputs(
                    **{name: patient.get(name) for name in _INPUT_FIELDS},
                    symptoms=list(patient.get("symptoms") or ()),
                    absent_symptoms=list(patient.get("absent_symptoms") or ()),
                ),
                differential=[
                    LoggedEntry(code=d.code, probability=d.probability) for d in answer.differential
                ],
                orphan_probability=answer.orphan_probability,
                severity=answer.severity.label,
            )
            lines += self._encoder.encode(entry)
            lines += b"\n"
            if self.index is not None:
                self.index.remember(answer.prediction_id, stamp, answer.model_version)
        try:
            with self._lock:
                handle = self._handle_for(now.date().isoformat())
                view = memoryview(lines)
                while view:  # a regular file takes it all at once; loop for partial writes
                    written = handle.write(view)
                    view = view[written or 0 :]
        except OSError as exc:
            self.write_errors += 1
            log.error(
                "prediction log write failed (%d so far): %s", self.write_errors, exc.strerror
            )

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            finally:
                self._handle = None
                self._day = None
