"""Shared state in S3 (or any S3-compatible server), mirrored to and from the local layout.

The embedded default keeps everything under ``TRIAGE_HOME``. With ``TRIAGE_S3_BUCKET`` set, the
shared areas live in ``s3://<bucket>/<prefix>/<area>/...`` instead and every process keeps a local
working copy under its own ``TRIAGE_HOME``:

=============== ======================================================= ==========================
area            written by                                              read by
=============== ======================================================= ==========================
``landing``     hospitals (weekly exports), ``triage pipeline`` (demo)  sensor, raw asset
``labels``      the API (one object per confirmed diagnosis)             sensor, monitoring assets
``deployments`` the deployment asset (version folder, then the pointer) API, gate (champion)
``predictions`` the API (segments of its daily log)                      monitoring assets
``reports``     monitoring assets (drift references and reports)         monitoring assets, people
``knowledge``   the data team (a newer HPO release under ``hpo/``)       HPO sensor, knowledge assets
=============== ======================================================= ==========================

Asset outputs go to S3 through dagster-aws's IO manager and MLflow artifacts through MLflow's own
S3 store; this module covers the files the code reads and writes by name. It is the one piece of
S3 code the API needs (the API image has no Dagster); the pipeline passes it the client of
dagster-aws's ``S3Resource``.

Objects are compared with local files by MD5 (the ETag of a single-part upload), so a pull
downloads only what changed and a push uploads only what changed.

Prediction log: each API host appends to its local daily file as before; a shipper uploads what
was appended since the last upload as a segment object
``predictions/<day>/<host>-<first byte offset>.jsonl`` (every ``TRIAGE_S3_LOG_INTERVAL`` seconds
and at shutdown). Pulling the area reassembles ``predictions-<day>.jsonl`` from the segments, in
(host, offset) order, so the readers see the single-file layout of the local default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnosis.files import atomic_write
from schemas.layout import PREDICTION_LOG_GLOB, prediction_log_day, prediction_log_file

log = logging.getLogger("triage.remote")

AREAS = ("landing", "labels", "deployments", "predictions", "reports", "knowledge")
POINTER = "current.json"
_SEGMENT_RE = re.compile(
    r"^(?P<day>\d{4}-\d{2}-\d{2})/(?P<host>[A-Za-z0-9_.-]+)-(?P<offset>\d{12})\.jsonl$"
)


class RemoteError(RuntimeError):
    """The object store could not be read or written; the message names the key, never secrets."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def host_name() -> str:
    """This host's name, reduced to characters safe in an object key."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = "triage"
    endpoint_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Location | None:
        """``TRIAGE_S3_BUCKET`` (unset: no remote store), ``TRIAGE_S3_PREFIX`` (default
        ``triage``) and ``AWS_ENDPOINT_URL`` for an S3-compatible server."""
        env = os.environ if env is None else env
        bucket = (env.get("TRIAGE_S3_BUCKET") or "").strip()
        if not bucket:
            return None
        prefix = (env.get("TRIAGE_S3_PREFIX") or "triage").strip().strip("/")
        endpoint = (env.get("AWS_ENDPOINT_URL") or "").strip() or None
        return cls(bucket=bucket, prefix=prefix, endpoint_url=endpoint)

    def uri(self, area: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}/{area}".rstrip("/")

    def client(self) -> Any:
        import boto3  # only processes configured for S3 pay for the import

        return boto3.client("s3", endpoint_url=self.endpoint_url)


class RemoteStore:
    """The shared areas in one bucket/prefix; ``client`` is a boto3 S3 client."""

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        self.client = client if client is not None else location.client()

    def __repr__(self) -> str:
        return f"RemoteStore({self.location.uri()})"

    # ------------------------------------------------------------------ objects
    def key(self, area: str, name: str = "") -> str:
        if area not in AREAS:
            raise ValueError(f"unknown area {area!r} (known: {', '.join(AREAS)})")
        return (
            f"{self.location.prefix}/{area}/{name}" if name else f"{self.location.prefix}/{area}/"
        )

    def put_bytes(self, area: str, name: str, data: bytes) -> None:
        key = self.key(area, name)
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=data)
        except Exception as exc:  # botocore raises many types; the caller needs one
            raise RemoteError(
                f"cannot write s3://{self.location.bucket}/{key}: {_reason(exc)}"
            ) from exc

    def get_bytes(self, area: str, name: str) -> bytes | None:
        """The object's content, or ``None`` when it does not exist."""
        key = self.key(area, name)
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=key)
            return answer["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise RemoteError(
                f"cannot read s3://{self.location.bucket}/{key}: {_reason(exc)}"
            ) from exc

    def list(self, area: str, under: str = "") -> dict[str, str]:
        """``{name relative to the area: etag}`` of every object in the area (below ``under``)."""
        base = self.key(area)
        found: dict[str, str] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=base + under
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    found[item["Key"][len(base) :]] = item["ETag"].strip('"')
        except Exception as exc:
            raise RemoteError(f"cannot list {self.location.uri(area)}: {_reason(exc)}") from exc
        return found

    # ------------------------------------------------------------------ mirroring
    def pull(self, area: str, local_dir: Path, under: str = "") -> list[str]:
        """Download the area's objects that are missing or different locally; the names fetched.

        Local files the store does not have are left alone (a pull never deletes).
        """
        if area == "predictions":
            return self._pull_prediction_segments(local_dir)
        fetched = []
        for name, etag in sorted(self.list(area, under).items()):
            if name.endswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
                continue
            target = local_dir / name
            if target.is_file() and md5_of(target) == etag:
                continue
            data = self.get_bytes(area, name)
            if data is not None:
                atomic_write(target, data)
                fetched.append(name)
        return fetched

    def push(self, area: str, local_dir: Path, names: Iterable[str] | None = None) -> list[str]:
        """Upload local files (all regular, non-hidden files below ``local_dir`` or ``names``)
        that the store lacks or holds differently; the names uploaded."""
        if names is None:
            names = (
                sorted(
                    p.relative_to(local_dir).as_posix()
                    for p in local_dir.rglob("*")
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(local_dir).parts)
                )
                if local_dir.is_dir()
                else []
            )
        names = list(names)
        remote = self.list(area) if names else {}
        sent = []
        for name in names:
            path = local_dir / name
            if remote.get(name) == md5_of(path):
                continue
            self.put_bytes(area, name, path.read_bytes())
            sent.append(name)
        return sent

    # ------------------------------------------------------------------ deployments
    def publish_deployment(self, deployments_dir: Path, version: str) -> None:
        """Upload a version folder, then the pointer: a reader never sees a pointer to a version
        that is not completely there."""
        folder = deployments_dir / version
        self.push(
            "deployments",
            deployments_dir,
            [
                f"{version}/{p.relative_to(folder).as_posix()}"
                for p in sorted(folder.rglob("*"))
                if p.is_file()
            ],
        )
        self.put_bytes("deployments", POINTER, (deployments_dir / POINTER).read_bytes())

    def pull_deployment(self, deployments_dir: Path) -> bool:
        """Mirror the deployed version: its folder first, then the pointer (atomically), so the
        local pointer only ever names a complete folder. True when the local pointer changed."""
        pointer = self.get_bytes("deployments", POINTER)
        if pointer is None:
            return False
        local_pointer = deployments_dir / POINTER
        if local_pointer.is_file() and local_pointer.read_bytes() == pointer:
            return False
        try:
            version = str(json.loads(pointer)["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(
                f"{self.location.uri('deployments')}/{POINTER} is not a pointer: {exc}"
            ) from exc
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", version):
            raise RemoteError(f"the deployment pointer names an unsafe version {version!r}")
        self.pull("deployments", deployments_dir, under=f"{version}/")
        atomic_write(local_pointer, pointer)
        return True

    # ------------------------------------------------------------------ prediction log
    def ship_segment(self, path: Path, day: str, offset: int, host: str | None = None) -> int:
        """Upload the bytes of a daily log from ``offset`` up to its last complete line as one
        segment; return the new offset (unchanged when nothing complete was appended)."""
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            return offset
        name = f"{day}/{host or host_name()}-{offset:012d}.jsonl"
        self.put_bytes("predictions", name, data[:end])
        return offset + end

    def _pull_prediction_segments(self, local_dir: Path) -> list[str]:
        by_day: dict[str, list[tuple[str, int, str]]] = {}
        for name in self.list("predictions"):
            match = _SEGMENT_RE.match(name)
            if match:
                by_day.setdefault(match["day"], []).append(
                    (match["host"], int(match["offset"]), name)
                )
        assembled = []
        for day, segments in sorted(by_day.items()):
            data = b"".join(
                self.get_bytes("predictions", name) or b"" for _, _, name in sorted(segments)
            )
            target = prediction_log_file(local_dir, day)
            if target.is_file() and target.read_bytes() == data:
                continue
            atomic_write(target, data)
            assembled.append(target.name)
        return assembled


class LogShipper:
    """Background thread uploading new lines of the API's daily prediction logs to the store."""

    def __init__(self, remote: RemoteStore, directory: Path, interval_s: float = 10.0) -> None:
        self.remote = remote
        self.directory = directory
        self.interval_s = interval_s
        self.offsets: dict[str, int] = {}
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ship(self) -> int:
        """Upload what was appended to every daily log since the last call; segments sent."""
        sent = 0
        with self._lock:
            for path in sorted(self.directory.glob(PREDICTION_LOG_GLOB)):
                day = prediction_log_day(path)
                if day is None:
                    continue
                before = self.offsets.get(day, 0)
                try:
                    after = self.remote.ship_segment(path, day, before)
                except (OSError, RemoteError) as exc:
                    self.failures += 1
                    log.error("prediction log upload failed (%d so far): %s", self.failures, exc)
                    continue
                if after != before:
                    self.offsets[day] = after
                    sent += 1
        return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.ship()

    def start(self) -> None:
        # Lines already in the local files were shipped by an earlier process (or belong to it):
        # start from the current ends so a restart never uploads them twice.
        for path in self.directory.glob(PREDICTION_LOG_GLOB):
            day = prediction_log_day(path)
            if day is not None:
                self.offsets[day] = path.stat().st_size
        self._thread = threading.Thread(
            target=self._loop, name="prediction-log-shipper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.ship()


class DeploymentFollower:
    """Background thread mirroring the deployed model from the store into the local deployments
    folder; the model store then hot-reloads it like a locally written deployment."""

    def __init__(self, remote: RemoteStore, deployments_dir: Path, interval_s: float = 2.0) -> None:
        self.remote = remote
        self.deployments_dir = deployments_dir
        self.interval_s = interval_s
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self) -> bool:
        try:
            return self.remote.pull_deployment(self.deployments_dir)
        except (OSError, RemoteError) as exc:
            self.failures += 1
            log.error("cannot mirror the deployed model (%d so far): %s", self.failures, exc)
            return False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="deployment-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in {"NoSuchKey", "404", "NotFound"}


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
