"""Drift: the reference of each trained model and the Evidently report of recent predictions
against the serving model's reference, with its warning check."""

import json
import os
from pathlib import Path

import dagster as dg
import polars as pl

from assets.monitoring.predictions import PREDICTION_LOG
from assets.validation import EVERY_VALID_WEEK, weeks_by_key
from diagnosis import audit
from diagnosis.artifacts import read_current, read_deployed_manifest
from diagnosis.training.dataset import SPLIT_TRAIN
from diagnosis.training.fitting import TrainedModel
from diagnosis.training.monitoring import (
    build_reference,
    current_window,
    drift_reference_path,
    drift_summary,
)
from orchestration.resources import AlertsResource, MonitoringPolicy, TriageStorage
from orchestration.settings import current_environment

DRIFT_CHECK = "drift_share"
DRIFT_REPORT = dg.AssetKey("drift_report")
DRIFT_REFERENCE = dg.AssetKey("drift_reference")
ALERT_DRIFT = "drift_detected"


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "parquet"},
    description=(
        "The drift reference of the model trained in this run: a seeded sample of its training "
        "split (vitals, sex, symptoms) with the model's own top-1 predictions, stored once as "
        "reports/drift/reference/<run id>.parquet. The deployment manifest records the same run "
        "id, so each drift report only computes the current window."
    ),
)
def drift_reference(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    training_table: pl.DataFrame,
    diagnosis_model: TrainedModel,
) -> dg.MaterializeResult:
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    reference = build_reference(train, diagnosis_model, monitoring.drift_max_rows, seed=7)
    path = drift_reference_path(storage.paths.reports, context.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    reference.write_parquet(tmp)
    tmp.replace(path)
    storage.push("reports", [path.relative_to(storage.paths.reports).as_posix()])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": reference.height,
            "training_rows": train.height,
            "path": dg.MetadataValue.path(str(path)),
            "training_run_id": context.run_id,
        }
    )


def serving_reference(
    context: dg.AssetExecutionContext, storage: TriageStorage
) -> tuple[Path | None, dict]:
    """The stored reference of the model that serves now (current.json -> manifest -> the training
    run id); else the newest stored reference, with where it came from."""
    deployments = storage.paths.deployments
    storage.pull_deployment()
    pointer = read_current(deployments)
    if pointer is not None:
        manifest = read_deployed_manifest(deployments, pointer.version)
        path = drift_reference_path(storage.paths.reports, str(manifest.dagster_run_id))
        storage.pull("reports", under=path.relative_to(storage.paths.reports).as_posix())
        if path.is_file():
            return path, {
                "model_version": pointer.version,
                "reference": "serving model",
                "mlflow_run_id": manifest.mlflow_run_id,
            }
    event = context.instance.get_latest_materialization_event(DRIFT_REFERENCE)
    if event is not None and event.asset_materialization is not None:
        path = Path(event.asset_materialization.metadata["path"].value)
        if path.is_file():
            return path, {
                "model_version": pointer.version if pointer else None,
                "reference": "latest trained model (no stored reference for the serving model)",
            }
    return None, {"model_version": pointer.version if pointer else None, "reference": None}


@dg.asset(
    group_name="monitoring",
    kinds={"evidently"},
    deps=[PREDICTION_LOG, DRIFT_REFERENCE],
    ins={"validated_patient_records": EVERY_VALID_WEEK},
    description=(
        "Evidently data-drift report of the recent window of served predictions (the last "
        "drift_window_days of the prediction log) against the training data of the model that "
        "serves: each vital, sex, the prevalence of the most frequent symptoms and the predicted "
        "class, with the method, threshold and score of each, and the share of drifted features. "
        "Before any prediction is logged, the newest weekly export stands in for the window. "
        "HTML report and JSON summary under reports/drift."
    ),
)
def drift_report(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    validated_patient_records: dict[str, pl.DataFrame] | pl.DataFrame,
) -> dg.Output[dict]:
    validated_patient_records = weeks_by_key(context, validated_patient_records)
    reference_path, reference_info = serving_reference(context, storage)
    if reference_path is None:
        raise dg.Failure(
            "no drift reference stored yet: materialise drift_reference (a training run) first"
        )
    reference = pl.read_parquet(reference_path)
    storage.pull("predictions")
    current, window, problems = current_window(
        storage.paths.predictions, monitoring.drift_window_days
    )
    with_predicted = current.height > 0
    if with_predicted:
        source = f"prediction log {window[0]}..{window[-1]}"
        label = f"predictions_{window[-1]}"
    else:
        week = max(validated_patient_records)
        current = validated_patient_records[week]
        source = f"weekly export {week} (no predictions logged yet)"
        label = week
    if current.height > monitoring.drift_max_rows:
        current = current.sample(monitoring.drift_max_rows, seed=7)
    html_path = storage.paths.reports / "drift" / f"drift_{label}.html"
    summary = drift_summary(
        reference,
        current,
        html_path,
        tracked_symptoms=monitoring.drift_top_symptoms,
        with_predicted=with_predicted,
        drift_share=monitoring.drift_share_threshold,
    )
    summary.update(
        {
            "current_source": source,
            "window_days": window if with_predicted else [],
            "malformed_log_lines": len(problems),
            "reference_path": str(reference_path),
            **reference_info,
            "drift_share_threshold": monitoring.drift_share_threshold,
            "report_html": str(html_path),
        }
    )
    if not with_predicted:
        summary["week"] = label
    json_path = html_path.with_suffix(".json")
    report_url = publish_to_mlflow(
        context, storage, reference_info.get("mlflow_run_id"), html_path, label
    )
    summary["report_url"] = report_url
    json_path.write_text(json.dumps(summary, indent=2))
    storage.push(
        "reports", [p.relative_to(storage.paths.reports).as_posix() for p in (html_path, json_path)]
    )
    links = {"report": dg.MetadataValue.url(report_url)} if report_url else {}
    return dg.Output(
        summary,
        metadata={
            "current_source": source,
            "model_version": reference_info["model_version"],
            "reference_rows": summary["reference_rows"],
            "current_rows": summary["current_rows"],
            "drift_share": summary["drift_share"],
            "drift_share_threshold": monitoring.drift_share_threshold,
            "dataset_drift": summary["dataset_drift"],
            "evidently_dataset_test": (summary["dataset_test"] or {}).get("description") or "",
            "drifted_columns": dg.MetadataValue.json(summary["drifted_columns"]),
            "columns": dg.MetadataValue.json(summary["columns"]),
            "report_html": dg.MetadataValue.path(str(html_path)),
            "summary_json": dg.MetadataValue.path(str(json_path)),
            **links,
        },
    )


@dg.asset_check(
    asset=drift_report,
    name=DRIFT_CHECK,
    description="Warns (and alerts) when the share of drifted features passes the configured "
    "threshold; the drift sensor then requests a retraining run.",
)
def drift_share_check(
    context: dg.AssetCheckExecutionContext,
    monitoring: MonitoringPolicy,
    alerts: AlertsResource,
    drift_report: dict,
) -> dg.AssetCheckResult:
    share = drift_report["drift_share"] or 0.0
    threshold = drift_report.get("drift_share_threshold", monitoring.drift_share_threshold)
    # Evidently's own verdict (its test "share of drifted columns < threshold", the preset built
    # with the policy's threshold); a summary from before the verdict was recorded uses the rule
    if "dataset_drift" in drift_report:
        passed = not drift_report["dataset_drift"]
    else:
        passed = share < threshold
    description = (
        f"drift share {share:.2f} < {threshold} (Evidently)"
        if passed
        else f"drift share {share:.2f} >= {threshold} (Evidently): "
        + ", ".join(drift_report["drifted_columns"])
    )
    alerted = False
    if not passed:
        alerted = alerts.send(
            ALERT_DRIFT,
            description,
            {
                "model_version": drift_report.get("model_version"),
                "current_source": drift_report.get("current_source"),
                "drifted_columns": drift_report["drifted_columns"],
                "report_html": drift_report.get("report_html"),
                "report_url": drift_report.get("report_url"),
            },
            log=context.log,
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "drift_share": share,
            "threshold": threshold,
            "evidently_dataset_test": (drift_report.get("dataset_test") or {}).get("description")
            or "",
            "drifted_columns": dg.MetadataValue.json(drift_report["drifted_columns"]),
            "alert_delivered": alerted,
        },
    )


def publish_to_mlflow(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    run_id: str | None,
    html_path: Path,
    label: str,
) -> str | None:
    """Attach the HTML report to the serving model's MLflow run (``drift/<label>/``) so a
    browser opens it from the MLflow UI (also with S3 artifacts); return its UI URL, or ``None``
    (with a warning) when there is no run or no tracking store."""
    if not run_id:
        return None
    uri = os.environ.get("TRIAGE_MLFLOW_TRACKING_URI")
    if not uri:
        db = storage.paths.mlflow / "mlflow.db"
        if not db.is_file():
            context.log.warning("no MLflow tracking store: the drift report is not published")
            return None
        uri = f"sqlite:///{db}"
    location = current_environment().s3_location()
    if location is not None and location.endpoint_url:  # MLflow's S3 store reads its own variable
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", location.endpoint_url)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = client.get_run(run_id).info.experiment_id
        client.log_artifact(run_id, str(html_path), artifact_path=f"drift/{label}")
    except Exception as exc:  # the report stays on disk and in the metadata either way
        context.log.warning(f"drift report not published to MLflow run {run_id}: {exc}")
        return None
    mlflow_ui, _ = audit.ui_bases()
    return audit.mlflow_artifact_url(
        mlflow_ui, experiment_id, run_id, f"drift/{label}/{html_path.name}"
    )
