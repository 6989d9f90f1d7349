"""Audit endpoints (API v1.4; roles auditor and admin, a clinician gets 403):

- ``GET /v1/predictions/{prediction_id}``: what was logged for one prediction (the validated,
  identifier-free inputs and the answer), the model version that gave it and that version's
  provenance from its manifest (MLflow run and registered version, Dagster run, code commit, data
  versions, metrics).
- ``GET /v1/models/{version}``: the provenance of any deployed version (served now or not), with
  the rollbacks that re-pointed the service to it.

The reading is shared with ``triage trace`` (:mod:`diagnosis.audit`): the prediction's day comes
from the prediction index (:class:`serving.prediction_log.PredictionIndex`: ids this process
served, else the log files, else, with S3, every host's log mirrored), its line from that day's
file. File reads run in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from diagnosis import audit
from schemas.contracts import ContractError, LoggedEntry, LoggedInputs
from serving.auth import AUDIT_ROLES, require_api_key
from serving.prediction_log import PredictionIndex
from serving.settings import Settings
from serving.structs import ErrorBody

PredictionId = Annotated[
    str,
    Parameter(
        pattern=audit.PREDICTION_ID_RE.pattern,
        description="The `prediction_id` /v1/predict returned (32 lowercase hexadecimal digits).",
    ),
]
Version = Annotated[
    str,
    Parameter(
        pattern=audit.VERSION_RE.pattern,
        description="A deployed version, as `model_version` in an answer or `version` in "
        "/v1/model (a folder name under deployments/).",
    ),
]

_RESPONSES = {
    400: ResponseSpec(data_container=ErrorBody, description="The id or version is malformed."),
    401: ResponseSpec(data_container=ErrorBody, description="Missing or unknown bearer token."),
    403: ResponseSpec(data_container=ErrorBody, description="The token's role may not call this."),
    404: ResponseSpec(data_container=ErrorBody, description="No such prediction or version."),
    503: ResponseSpec(
        data_container=ErrorBody, description="The shared storage cannot be read; retry later."
    ),
}


class Rollback(msgspec.Struct, kw_only=True):
    at: str
    by: str
    reason: str
    from_version: str | None


class ModelProvenance(msgspec.Struct, kw_only=True):
    """One deployed version and where it came from (its manifest)."""

    version: str
    current: bool  # served now (deployments/current.json names it)
    trained_at: str | None
    onnx_sha256: str
    knowledge_sha256: str | None
    mlflow_run_id: str | None
    mlflow_model_name: str | None
    mlflow_model_version: str | None
    dagster_run_id: str | None
    code_version: str | None
    data_versions: dict[str, Any]
    hpo_release: str | None
    metrics: dict[str, Any]
    n_classes: int
    rollbacks_to_this_version: list[Rollback] = msgspec.field(default_factory=list)


class PredictionRecord(msgspec.Struct, kw_only=True):
    """One served prediction as logged, and the model that gave it."""

    prediction_id: str
    time: str
    model_version: str
    inputs: LoggedInputs
    differential: list[LoggedEntry]
    orphan_probability: float
    severity: str
    model: ModelProvenance | None
    model_problem: str | None = None  # why ``model`` is missing (manifest gone or unreadable)


def _provenance(settings: Settings, remote: Any, version: str) -> ModelProvenance | None:
    deployments = settings.deployments_dir
    manifest = audit.read_manifest(deployments, version, remote)
    if manifest is None:
        return None
    rollbacks = [
        Rollback(at=r.at, by=r.by, reason=r.reason, from_version=r.from_version)
        for r in audit.rollback_records(deployments)
        if r.to_version == version
    ]
    return ModelProvenance(
        **audit.provenance(manifest),
        current=audit.current_version(deployments) == version,
        n_classes=len(manifest.classes),
        rollbacks_to_this_version=rollbacks,
    )


def _prediction(
    settings: Settings, remote: Any, index: PredictionIndex, prediction_id: str
) -> PredictionRecord | None:
    found = index.find(prediction_id)  # recent ids, the log files, other hosts' logs (S3)
    if found is None:
        return None
    day = str(found.get("time") or "")[:10] or None
    line = audit.find_logged_prediction(
        (settings.prediction_log_dir, settings.prediction_mirror_dir), prediction_id, day
    )
    if line is None:
        return None
    model: ModelProvenance | None = None
    problem: str | None = None
    try:
        model = _provenance(settings, remote, line.model_version)
        if model is None:
            problem = f"no manifest of version {line.model_version} in the deployments"
    except (ContractError, audit.AuditError) as exc:
        problem = str(exc)
    return PredictionRecord(
        prediction_id=line.prediction_id,
        time=line.time,
        model_version=line.model_version,
        inputs=line.inputs,
        differential=line.differential,
        orphan_probability=line.orphan_probability,
        severity=line.severity,
        model=model,
        model_problem=problem,
    )


def _remote(state: State) -> Any:
    """The app's S3 store (``None`` in the embedded default)."""
    return state.services.remote


class AuditController(Controller):
    path = "/v1"
    tags = ["audit"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]
    dependencies = {"remote": Provide(_remote, sync_to_thread=False)}

    @get(
        "/predictions/{prediction_id:str}",
        operation_id="getPredictionRecord",
        responses=_RESPONSES,
        opt={"roles": AUDIT_ROLES},
    )
    async def prediction_record(
        self,
        prediction_id: PredictionId,
        settings: Settings,
        prediction_index: PredictionIndex,
        remote: Any,
    ) -> PredictionRecord:
        """One served prediction: its logged (identifier-free) inputs and answer, the model version
        that gave it and that version's provenance (MLflow, Dagster, commit, data versions)."""
        if audit.PREDICTION_ID_RE.match(prediction_id) is None:
            raise ClientException(
                detail="prediction_id must be 32 lowercase hexadecimal characters, "
                "as returned by /v1/predict"
            )
        record = await anyio.to_thread.run_sync(
            _prediction, settings, remote, prediction_index, prediction_id
        )
        if record is None:
            raise NotFoundException(detail=f"no prediction {prediction_id} in the prediction log")
        return record

    @get(
        "/models/{version:str}",
        operation_id="getModelVersion",
        responses=_RESPONSES,
        opt={"roles": AUDIT_ROLES},
    )
    async def model_version(
        self, version: Version, settings: Settings, remote: Any
    ) -> ModelProvenance:
        """Any deployed version's provenance, whether it serves now, and the rollbacks to it."""
        try:
            audit.check_version(version)
        except audit.AuditError as exc:
            raise ClientException(detail=str(exc)) from None
        try:
            found = await anyio.to_thread.run_sync(_provenance, settings, remote, version)
        except ContractError as exc:
            raise NotFoundException(detail=f"version {version} is unreadable: {exc}") from None
        if found is None:
            raise NotFoundException(detail=f"no deployed version {version}")
        return found
