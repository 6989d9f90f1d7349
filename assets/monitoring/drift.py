"""Drift: the reference of each trained model and the Evidently report of recent predictions
against the serving model's reference, with its warning check."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.monitoring.predictions import PREDICTION_LOG
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
            return path, {"model_version": pointer.version, "reference": "serving model"}
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
    ins={"validated_patient_records": dg.AssetIn()},
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
    validated_patient_records: dict[str, pl.DataFrame],
) -> dg.Output[dict]:
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
    json_path.write_text(json.dumps(summary, indent=2))
    storage.push(
        "reports", [p.relative_to(storage.paths.reports).as_posix() for p in (html_path, json_path)]
    )
    return dg.Output(
        summary,
        metadata={
            "current_source": source,
            "model_version": reference_info["model_version"],
            "reference_rows": summary["reference_rows"],
            "current_rows": summary["current_rows"],
            "drift_share": summary["drift_share"],
            "drift_share_threshold": monitoring.drift_share_threshold,
            "drifted_columns": dg.MetadataValue.json(summary["drifted_columns"]),
            "columns": dg.MetadataValue.json(summary["columns"]),
            "report_html": dg.MetadataValue.path(str(html_path)),
            "summary_json": dg.MetadataValue.path(str(json_path)),
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
    passed = share <= monitoring.drift_share_threshold
    description = (
        f"drift share {share:.2f} <= {monitoring.drift_share_threshold}"
        if passed
        else f"drift share {share:.2f} > {monitoring.drift_share_threshold}: "
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
            },
            log=context.log,
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "drift_share": share,
            "threshold": monitoring.drift_share_threshold,
            "drifted_columns": dg.MetadataValue.json(drift_report["drifted_columns"]),
            "alert_delivered": alerted,
        },
    )
