"""Deployment assets: the served model as one ONNX artifact (checked for parity), then an
immutable, versioned deployment and the atomic pointer switch (logic: :mod:`diagnosis.training.export`,
:mod:`diagnosis.artifacts`)."""

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import msgspec
import onnx
import polars as pl
from dagster_mlflow.resources import MlFlow

from diagnosis import audit
from diagnosis.artifacts import read_current, write_deployment
from diagnosis.audit import CHAMPION_ALIAS
from diagnosis.ranker import KnowledgeRanker
from diagnosis.training.dataset import (
    SOURCE_CLINICIAN_LABEL,
    SPLIT_EVALUATION,
    SPLIT_TRAIN,
    encode_table,
)
from diagnosis.training.evaluation import Evaluation, patient_dicts
from diagnosis.training.export import (
    Artifact,
    build_artifact,
    parity_sample,
    severity_spec,
    system_parity,
)
from diagnosis.training.fitting import TrainedModel
from orchestration.resources import INPUTS_KEY, INPUTS_TAG, ModelPolicy, TriageStorage, code_version
from orchestration.settings import current_environment

ONNX_PARITY_CHECK = "onnx_parity"

__all__ = ["CHAMPION_ALIAS", "ONNX_PARITY_CHECK", "deployed_model", "onnx_model", "read_current"]


@dg.asset(
    group_name="deployment",
    kinds={"onnx"},
    description=(
        "The served model as one ONNX graph: inputs `features` (vitals, sex, symptom indicators) "
        "and `query_terms` (the ranker's HPO indicator); outputs the diagnosis and severity "
        "probabilities and the knowledge ranker's log-scores over every ORPHA/OMIM disease. With "
        "its SHA-256 and the measured parity against the fitted pipelines and the numpy ranker on held-out rows (at most "
        "ModelPolicy.parity_max_rows of them, stratified by diagnosis, in batches)."
    ),
)
def onnx_model(
    policy: ModelPolicy,
    diagnosis_model: TrainedModel,
    knowledge_ranker: KnowledgeRanker,
    training_table: pl.DataFrame,
) -> dg.Output[Artifact]:
    names = dict(training_table.select("diagnosis", "diagnosis_name").unique().iter_rows())
    categories = dict(training_table.select("diagnosis", "diagnosis_category").unique().iter_rows())
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    severity = severity_spec(
        diagnosis_model.classes, train["diagnosis"].to_list(), train["severity"].to_list()
    )
    artifact = build_artifact(diagnosis_model, knowledge_ranker, names, categories, severity)
    rows = training_table.filter(pl.col("split") == SPLIT_EVALUATION)
    held_out = rows.height
    rows = rows[
        parity_sample(rows["diagnosis"].to_list(), policy.parity_max_rows, policy.random_seed)
    ]
    X = encode_table(rows, diagnosis_model.spec)
    artifact.max_abs_diff = system_parity(
        diagnosis_model, knowledge_ranker, artifact.onnx, X, patient_dicts(rows)
    )
    artifact.parity_rows = int(X.shape[0])
    return dg.Output(
        artifact,
        metadata={
            "onnx_sha256": artifact.sha256,
            "size_bytes": len(artifact.onnx),
            "knowledge_sha256": artifact.manifest.knowledge_sha256,
            "max_abs_diff": artifact.max_abs_diff,
            "parity_rows": artifact.parity_rows,
            "parity_held_out_rows": held_out,
        },
    )


@dg.asset_check(
    asset=onnx_model,
    name=ONNX_PARITY_CHECK,
    blocking=True,
    description="Blocks deployment unless ONNX probabilities match the training framework "
    "within the configured tolerance on held-out rows.",
)
def onnx_parity(policy: ModelPolicy, onnx_model: Artifact) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=onnx_model.parity_rows > 0 and onnx_model.max_abs_diff <= policy.max_onnx_abs_diff,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "max_abs_diff": onnx_model.max_abs_diff,
            "tolerance": policy.max_onnx_abs_diff,
            "rows": onnx_model.parity_rows,
        },
    )


def weekly_export_versions(instance: dg.DagsterInstance, weeks: list[str]) -> dict:
    """``{"weekly_exports": {week: {"file", "sha256"}}}`` from each week's latest
    ``raw_patient_records`` materialisation (what a manifest records as its weeks)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_patient_records"), asset_partitions=weeks),
        limit=max(len(weeks) * 4, 10),
    ).records
    files: dict[str, dict] = {}
    for record in records:
        event = record.asset_materialization
        if event is None or event.partition in files:
            continue
        files[event.partition] = {
            "file": event.metadata["source_file"].value,
            "sha256": event.metadata["file_sha256"].value,
        }
    return {"weekly_exports": dict(sorted(files.items()))}


def _hpo_files(context: dg.AssetExecutionContext) -> dict:
    """Which HPO release files the shipped knowledge ranker was built from (SHA-256, source)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("knowledge_ranker"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    keys = ("hpo_files_sha256", "hp_obo_sha256", "phenotype_hpoa_sha256", "hpo_source")
    return {key: metadata[key].value for key in keys if key in metadata}


def _pipeline_inputs(context: dg.AssetExecutionContext) -> dict:
    """The digests of what determined this model, as `triage pipeline` computed them before the
    run (its run tag; :mod:`orchestration.reuse`): the next `triage pipeline` keeps this deployment
    while they hold. Runs started otherwise (sensors, the UI) record none."""
    raw = context.run.tags.get(INPUTS_TAG)
    if not raw:
        return {}
    try:
        return {INPUTS_KEY: json.loads(raw)}
    except ValueError:
        context.log.warning(f"run tag {INPUTS_TAG} is not JSON; no input digests recorded")
        return {}


@dg.asset(
    group_name="deployment",
    kinds={"onnx", "mlflow"},
    deps=[dg.AssetKey("disease_catalogue")],
    description=(
        "The model clinicians are served: an immutable directory deployments/<version>/ with "
        "model.onnx and manifest.json (provenance: MLflow run, Dagster run, code and data "
        "versions), registered in MLflow with the `champion` alias. Reached only after the quality "
        "gate and ONNX parity checks pass; current.json then switches atomically."
    ),
)
def deployed_model(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    mlflow: dg.ResourceParam[MlFlow],
    diagnosis_model: TrainedModel,
    model_evaluation: Evaluation,
    onnx_model: Artifact,
    training_table: pl.DataFrame,
) -> dg.MaterializeResult:
    trained_at = datetime.now(UTC)
    version = f"{trained_at:%Y%m%dT%H%M%SZ}-{onnx_model.sha256[:8]}"
    weeks = sorted(training_table["week"].unique().to_list())
    hpo_release = onnx_model.manifest.hpo_release

    model_name = current_environment().model_name
    mlflow_ui, dagster_ui = audit.ui_bases()
    run = mlflow.active_run()
    experiment_id = run.info.experiment_id
    commit = code_version()
    where = storage.describe("storage")
    datasets = log_datasets(training_table, where if "://" in where else Path(where).as_uri())
    info = mlflow.onnx.log_model(
        onnx.load_from_string(onnx_model.onnx),
        name="model",
        registered_model_name=model_name,
        pip_requirements=["onnxruntime"],
    )
    registered_version = str(info.registered_model_version)
    client = mlflow.tracking.MlflowClient()
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, registered_version)
    dagster_url = audit.dagster_run_url(dagster_ui, context.run_id)
    client.set_model_version_tag(model_name, registered_version, "deployed_version", version)
    client.set_model_version_tag(model_name, registered_version, "dagster_run_url", dagster_url)
    client.set_model_version_tag(model_name, registered_version, "git_commit", commit)
    manifest = msgspec.structs.replace(
        onnx_model.manifest,
        version=version,
        trained_at=trained_at.isoformat(),
        blend=model_evaluation.blend.to_spec(),
        # the severity spec as the gate scored it (its beta fitted in the evaluation)
        severity=model_evaluation.severity or onnx_model.manifest.severity,
        metrics={**model_evaluation.metrics, "onnx_max_abs_diff": onnx_model.max_abs_diff},
        mlflow_run_id=diagnosis_model.mlflow_run_id,
        mlflow_model_name=model_name,
        mlflow_model_version=registered_version,
        dagster_run_id=context.run_id,
        code_version=commit,
        data_versions={
            **weekly_export_versions(context.instance, weeks),
            **datasets,
            "hpo_release": hpo_release,
            **_hpo_files(context),
            **_pipeline_inputs(context),
        },
    )
    target = write_deployment(storage.paths.deployments, manifest, onnx_model.files())
    remote = storage.remote
    if remote is not None:  # the version folder first, then the pointer the API follows
        remote.publish_deployment(storage.paths.deployments, version)
    mlflow.set_tags(
        {
            "deployed_version": version,
            "dagster_run_url": dagster_url,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,  # shown as the run's source commit in the UI
        }
    )
    run_url = audit.mlflow_run_url(
        mlflow_ui, diagnosis_model.mlflow_run_id or run.info.run_id, experiment_id
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "version": version,
            "path": str(target),
            "published_to": storage.describe("deployments"),
            "onnx_sha256": onnx_model.sha256,
            "mlflow_run_id": diagnosis_model.mlflow_run_id,
            "mlflow_model_version": registered_version,
            "mlflow_run": dg.MetadataValue.url(run_url),
            "mlflow_registered_model": dg.MetadataValue.url(
                audit.mlflow_model_version_url(mlflow_ui, model_name, registered_version)
            ),
            "code_version": manifest.code_version,
            "training_table_digest": datasets["training_table"]["digest"],
            "label_set_digest": datasets["label_set"]["digest"],
            "classes": len(manifest.classes),
        },
    )


def log_datasets(training_table: pl.DataFrame, where: str) -> dict:
    """Log the training table and its clinician-label rows as the MLflow run's input datasets,
    with digests (:func:`diagnosis.audit.frame_digest`); the same digests go into the manifest's
    data versions, so a deployment names exactly the rows it learned from."""
    import mlflow
    import mlflow.data

    labels = training_table.filter(pl.col("source") == SOURCE_CLINICIAN_LABEL)
    found = {}
    for name, frame, context in (
        ("training_table", training_table, "training"),
        ("label_set", labels, "training"),
    ):
        digest = audit.frame_digest(frame)
        with warnings.catch_warnings():  # MLflow registers two equal local-file source types
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = mlflow.data.from_polars(
                frame, source=f"{where}/{name}", name=name, digest=digest[:36]
            )
        mlflow.log_input(dataset, context=context)
        found[name] = {"rows": frame.height, "digest": digest, "mlflow_digest": digest[:36]}
    return found
