"""Audit trail: from a prediction id to its logged inputs and answer, the model version that gave
it and that version's provenance (manifest); the links to the MLflow and Dagster UIs; rollback of
the served version with a record of who did it and why.

Shared by the API (``GET /v1/predictions/{id}``, ``GET /v1/models/{version}``, in
:mod:`serving.audit`) and the ``triage trace`` / ``triage rollback`` commands. No Dagster, MLflow
or Litestar here: files in the ``TRIAGE_HOME`` layout (:mod:`schemas.layout`) and, when
configured, the S3 mirror of them (:mod:`diagnosis.remote`).

Rollback records: ``deployments/audit/<UTC time>-rollback-<version>.json``, one
:class:`RollbackRecord` per rollback, never rewritten (shared through S3 with the deployments).
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec

from diagnosis.artifacts import MANIFEST_FILE, point_to, read_current
from diagnosis.files import atomic_write
from schemas.contracts import ContractError, Manifest, PredictionLogLine, decode, encode
from schemas.layout import PREDICTION_LOG_GLOB, prediction_log_file

PREDICTION_ID_RE = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex, as the runtime issues them
VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
AUDIT_FOLDER = "audit"
CHAMPION_ALIAS = "champion"  # the MLflow registry alias of the served version

MLFLOW_UI_ENV = "TRIAGE_MLFLOW_UI_URL"
DAGSTER_UI_ENV = "TRIAGE_DAGSTER_UI_URL"
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
DEFAULT_DAGSTER_UI = "http://127.0.0.1:3000"


class AuditError(ValueError):
    """A request the audit trail cannot answer (unknown version, broken manifest...)."""


# ------------------------------------------------------------------------------ prediction log
def find_logged_prediction(
    directories: Iterable[Path], prediction_id: str, day: str | None = None
) -> PredictionLogLine | None:
    """The log line of ``prediction_id`` (``None`` when never logged or malformed id).

    Each directory holds daily ``predictions-<day>.jsonl`` files; the file of ``day`` (when known,
    e.g. from the prediction index) is searched first, then every file newest first, by a byte
    search over a memory map for a line starting with the id.
    """
    if PREDICTION_ID_RE.match(prediction_id) is None:
        return None
    needle = b'{"prediction_id":"' + prediction_id.encode("ascii") + b'"'
    for directory in directories:
        try:
            files = sorted(directory.glob(PREDICTION_LOG_GLOB), reverse=True)
        except OSError:
            continue
        if day is not None:
            first = prediction_log_file(directory, day)
            files = [first, *(f for f in files if f != first)] if first in files else files
        for path in files:
            line = _line_starting_with(path, needle)
            if line is None:
                continue
            try:
                return msgspec.json.decode(line, type=PredictionLogLine)
            except msgspec.DecodeError:  # a torn line being written, or a malformed one
                continue
    return None


def _line_starting_with(path: Path, needle: bytes) -> bytes | None:
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return None
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                at = view.find(needle)
                while at >= 0 and at > 0 and view[at - 1 : at] != b"\n":
                    at = view.find(needle, at + 1)
                if at < 0:
                    return None
                end = view.find(b"\n", at)
                return bytes(view[at : end if end >= 0 else len(view)])
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------ deployments
def check_version(version: str) -> str:
    if VERSION_RE.match(version) is None:
        raise AuditError(
            f"{version!r} is not a model version name (letters, digits, '_', '.', '-')"
        )
    return version


def manifest_path(deployments: Path, version: str) -> Path:
    return deployments / check_version(version) / MANIFEST_FILE


def read_manifest(deployments: Path, version: str, remote: Any = None) -> Manifest | None:
    """The manifest of a deployed ``version``; ``None`` when no such version was deployed.

    Read from the local deployments folder, else (with ``remote``, a
    :class:`diagnosis.remote.RemoteStore`) from the shared store. A manifest that breaks its
    contract raises :class:`schemas.contracts.ContractError`."""
    path = manifest_path(deployments, version)
    content: bytes | None = path.read_bytes() if path.is_file() else None
    if content is None and remote is not None:
        content = remote.get_bytes("deployments", f"{version}/{MANIFEST_FILE}")
    if content is None:
        return None
    return decode(content, Manifest, f"manifest of {version}")


def deployed_versions(deployments: Path) -> list[str]:
    """Every version folder with a manifest, oldest first (names start with the UTC time)."""
    if not deployments.is_dir():
        return []
    return sorted(
        p.name
        for p in deployments.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
    )


def current_version(deployments: Path) -> str | None:
    try:
        pointer = read_current(deployments)
    except ContractError:
        return None
    return pointer.version if pointer is not None else None


def provenance(manifest: Manifest) -> dict[str, Any]:
    """Where a version came from, as its manifest records it."""
    return {
        "version": manifest.version,
        "trained_at": manifest.trained_at,
        "onnx_sha256": manifest.onnx_sha256,
        "knowledge_sha256": manifest.knowledge_sha256,
        "mlflow_run_id": manifest.mlflow_run_id,
        "mlflow_model_name": manifest.mlflow_model_name,
        "mlflow_model_version": manifest.mlflow_model_version,
        "dagster_run_id": manifest.dagster_run_id,
        "code_version": manifest.code_version,
        "data_versions": manifest.data_versions,
        "hpo_release": manifest.hpo_release,
        "metrics": manifest.metrics,
    }


# ------------------------------------------------------------------------------ UI links
def ui_bases(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(MLflow UI, Dagster UI) base URLs from ``TRIAGE_MLFLOW_UI_URL`` / ``TRIAGE_DAGSTER_UI_URL``."""
    env = os.environ if env is None else env
    mlflow_ui = (env.get(MLFLOW_UI_ENV) or "").strip() or DEFAULT_MLFLOW_UI
    dagster_ui = (env.get(DAGSTER_UI_ENV) or "").strip() or DEFAULT_DAGSTER_UI
    return mlflow_ui.rstrip("/"), dagster_ui.rstrip("/")


def mlflow_run_url(base: str, run_id: str, experiment_id: str | None = None) -> str:
    if experiment_id:
        return f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"
    return f"{base}/#/runs/{quote(run_id)}"  # the UI finds the experiment itself


def mlflow_artifact_url(base: str, experiment_id: str, run_id: str, artifact: str) -> str:
    return (
        f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}/artifactPath/"
        f"{quote(artifact)}"
    )


def mlflow_model_version_url(base: str, name: str, version: str) -> str:
    return f"{base}/#/models/{quote(name)}/versions/{quote(str(version))}"


def dagster_run_url(base: str, run_id: str) -> str:
    return f"{base}/runs/{quote(run_id)}"


def dagster_asset_url(base: str, asset: str) -> str:
    return f"{base}/assets/{quote(asset)}"


# ------------------------------------------------------------------------------ rollback
class RollbackRecord(msgspec.Struct, kw_only=True):
    """``deployments/audit/<time>-rollback-<version>.json``: who re-pointed the service, and why."""

    action: str = "rollback"
    at: str
    by: str
    reason: str
    from_version: str | None
    to_version: str
    mlflow_model_name: str | None = None
    mlflow_model_version: str | None = None
    mlflow_alias: str = "not attempted"  # "moved", "failed: ...", "no MLflow model recorded"
    s3_pointer: str = "not configured"  # "published" when the shared pointer was moved


def rollback_records(deployments: Path) -> list[RollbackRecord]:
    folder = deployments / AUDIT_FOLDER
    if not folder.is_dir():
        return []
    return [
        decode(p.read_bytes(), RollbackRecord, p.name)
        for p in sorted(folder.glob("*-rollback-*.json"))
    ]


def repoint(deployments: Path, version: str, remote: Any = None) -> str:
    """Switch ``current.json`` to ``version`` (which must be a complete, loadable deployment)
    locally and, with ``remote``, in the shared store; return what happened to the S3 pointer.

    With ``remote`` the version folder is pulled first when missing here (so it is checked before
    the pointer moves) and pushed again before the pointer (a reader never sees a pointer to a
    folder that is not completely there)."""
    check_version(version)
    if remote is not None and not manifest_path(deployments, version).is_file():
        remote.pull("deployments", deployments, under=f"{version}/")
    if not manifest_path(deployments, version).is_file():
        raise AuditError(
            f"no deployment {version!r} in {deployments} (known: "
            f"{', '.join(deployed_versions(deployments)) or 'none'})"
        )
    from diagnosis.runtime import ModelLoadError, Runtime  # onnxruntime only when rolling back

    try:  # the same checks the API runs before serving it: hashes and a smoke prediction
        runtime = Runtime.from_manifest(manifest_path(deployments, version))
    except ModelLoadError as exc:
        raise AuditError(f"deployment {version} cannot be served: {exc}") from exc
    if runtime.version != version:
        raise AuditError(f"folder {version} holds a manifest of version {runtime.version!r}")
    point_to(deployments, version)
    if remote is None:
        return "not configured"
    remote.publish_deployment(deployments, version)
    return "published"


def write_rollback_record(deployments: Path, record: RollbackRecord, remote: Any = None) -> Path:
    stamp = dt.datetime.fromisoformat(record.at).strftime("%Y%m%dT%H%M%S.%fZ")
    path = deployments / AUDIT_FOLDER / f"{stamp}-rollback-{record.to_version}.json"
    atomic_write(path, encode(record, indent=True))
    if remote is not None:
        remote.push("deployments", deployments, [path.relative_to(deployments).as_posix()])
    return path


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------ dataset digests
def frame_digest(frame: Any) -> str:
    """SHA-256 of a polars DataFrame's columns, types and rows (polars' row hash, seed 0), in
    order: the digest MLflow shows for a logged dataset and the manifest lists."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(repr([(name, str(dtype)) for name, dtype in frame.schema.items()]).encode())
    if frame.height:
        digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()
