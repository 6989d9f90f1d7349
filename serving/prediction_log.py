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
another worker, or before a restart) is found through an index of the log files built once and
then fed only the bytes appended since (no scan of the history per look-up).

Privacy: the files hold patients' findings: they are created 0600 in a 0700 folder (a folder or
file found wider is narrowed).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from diagnosis.audit import PREDICTION_ID_RE
from schemas.contracts import LoggedEntry, LoggedInputs, Prediction, PredictionLogLine
from schemas.layout import PREDICTION_LOG_GLOB, prediction_log_file

log = logging.getLogger("triage.serving.predictions")

_INPUT_FIELDS = ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
RECENT_IDS_MAX = 200_000
_MERGE_AT = 50_000  # ids read since the last merge into the sorted arrays
_LINE_START = re.compile(rb'\{"prediction_id":"([0-9a-f]{32})"')
_BLOCK = 8 << 20  # bytes of log read at once while indexing


def private_directory(directory: Path) -> None:
    """Create ``directory`` (and parents) if needed and make it 0700: it holds patient data."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)


class PredictionIndex:
    """Known prediction ids -> ``{"prediction_id", "time", "model_version"}``.

    Ids this process logged are kept in memory with their time and model version (the newest
    :data:`RECENT_IDS_MAX`). Every other id is found through an index of the log files, built once
    (at start-up) and then brought up to date by reading only the bytes appended since (by any
    worker): a sorted array of each id's first 64 bits with the line's location (16 bytes per
    prediction), plus a dict of the ids read since the last merge. A hit is confirmed by reading
    the one line at its location, so an unknown id costs a ``stat`` per log file and the new bytes,
    never a scan of the history (``bytes_read`` counts what was read, for tests and metrics).
    """

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
        self._index_lock = threading.Lock()
        self._files: list[str] = []  # file names, numbered in the order first seen
        self._read_upto: dict[str, int] = {}  # bytes of each file already indexed
        self._keys = np.empty(0, dtype=np.uint64)  # sorted first 64 bits of the ids
        self._where = np.empty(0, dtype=np.int64)  # file number << 40 | line offset
        self._pending: dict[str, int] = {}  # ids indexed since the last merge
        self.scans = 0  # look-ups that had to read the log files' new bytes
        self.bytes_read = 0  # log bytes read by the index so far

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
        found = self._lookup(prediction_id)
        if found is None:
            self.scans += 1
            self.catch_up()
            found = self._lookup(prediction_id)
        if found is None and self.fallback is not None:
            found = self.fallback(prediction_id)
        return found

    # ---------------------------------------------------------------- the file index
    def catch_up(self) -> int:
        """Index the lines appended to the log files since the last call; the bytes read."""
        with self._index_lock:
            try:
                names = sorted(p.name for p in self.directory.glob(PREDICTION_LOG_GLOB))
            except OSError:
                return 0
            read = 0
            for name in names:
                read += self._index_file(name)
            if len(self._pending) > _MERGE_AT:
                self._merge()
            self.bytes_read += read
            return read

    def _index_file(self, name: str) -> int:
        done = self._read_upto.get(name, 0)
        path = self.directory / name
        try:
            size = path.stat().st_size
            if size <= done:
                return 0
            if name not in self._read_upto:
                self._files.append(name)
                self._read_upto[name] = 0
            number = self._files.index(name)
            read = 0
            with path.open("rb") as handle:
                handle.seek(done)
                while done < size:  # in blocks: a long history never sits in memory at once
                    block = handle.read(min(_BLOCK, size - done))
                    complete = block.rfind(b"\n") + 1  # a line being written waits for next time
                    if complete == 0:
                        break
                    for match in _LINE_START.finditer(block, 0, complete):
                        at = match.start()
                        if at == 0 or block[at - 1] == 0x0A:  # only a line's opening bytes
                            key = match.group(1).decode("ascii")
                            self._pending[key] = (number << 40) | (done + at)
                    done += complete
                    read += complete
                    handle.seek(done)
        except OSError as exc:
            log.warning("cannot index %s: %s", name, exc.strerror)
            return 0
        self._read_upto[name] = done
        return read

    def _merge(self) -> None:
        ids = list(self._pending)
        keys = np.fromiter((int(i[:16], 16) for i in ids), dtype=np.uint64, count=len(ids))
        where = np.fromiter(self._pending.values(), dtype=np.int64, count=len(ids))
        keys = np.concatenate([self._keys, keys])
        where = np.concatenate([self._where, where])
        order = np.argsort(keys, kind="stable")
        self._keys, self._where = keys[order], where[order]
        self._pending = {}

    def _lookup(self, prediction_id: str) -> dict[str, Any] | None:
        with self._index_lock:
            locations = []
            pending = self._pending.get(prediction_id)
            if pending is not None:
                locations.append(pending)
            key = np.uint64(int(prediction_id[:16], 16))
            lo = int(np.searchsorted(self._keys, key, side="left"))
            hi = int(np.searchsorted(self._keys, key, side="right"))
            locations.extend(int(w) for w in self._where[lo:hi])
            files = list(self._files)
        for location in locations:
            entry = self._line_at(files[location >> 40], location & ((1 << 40) - 1))
            if entry is not None and entry.get("prediction_id") == prediction_id:
                return {
                    "prediction_id": prediction_id,
                    "time": str(entry.get("time")),
                    "model_version": str(entry.get("model_version")),
                }
        return None

    def _line_at(self, name: str, offset: int) -> dict[str, Any] | None:
        try:
            with (self.directory / name).open("rb") as handle:
                handle.seek(offset)
                line = handle.readline()
            entry = msgspec.json.decode(line)
        except (OSError, msgspec.DecodeError):  # removed by retention, or damaged
            return None
        return entry if isinstance(entry, dict) else None


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
        return prediction_log_file(self.directory, day)

    def _handle_for(self, day: str) -> IO[bytes]:
        if self._handle is None or self._day != day:
            self.close()
            private_directory(self.directory)
            fd = os.open(self.path_for(day), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if os.fstat(fd).st_mode & 0o077:  # a file created before the API made it private
                os.fchmod(fd, 0o600)
            # unbuffered: the request's lines are gathered in memory and written with one call
            self._handle = open(fd, "ab", buffering=0)  # noqa: SIM115
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
