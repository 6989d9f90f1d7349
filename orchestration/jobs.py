"""Jobs: the weekly validation of one export, the training-to-deployment path, and monitoring."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from assets.ingestion import weekly_exports
from assets.monitoring.predictions import prediction_days

PREDICTION_LOG = dg.AssetSelection.assets("prediction_log")
DRIFT_REFERENCE = dg.AssetSelection.assets("drift_reference")

weekly_validation_job = dg.define_asset_job(
    "weekly_validation",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    partitions_def=weekly_exports,
    description="Read and validate one weekly export (one partition).",
)

# The daily prediction_log partitions are not part of a training run: labels and drift read the
# log files through the same reader, so a run never waits for days nobody materialised.
training_job = dg.define_asset_job(
    "training",
    selection=dg.AssetSelection.groups(
        "knowledge", "evaluation", "training", "deployment", "monitoring"
    )
    - PREDICTION_LOG,
    hooks={end_mlflow_on_run_finished},
    description=(
        "Validate the clinicians' labels and join them to their predictions, build the training "
        "table from every valid week plus the labelled feedback, train, evaluate, export to ONNX "
        "and, when the quality gate and ONNX parity pass, deploy; then report drift and live "
        "performance."
    ),
)

monitoring_job = dg.define_asset_job(
    "monitoring",
    selection=dg.AssetSelection.groups("monitoring") - PREDICTION_LOG - DRIFT_REFERENCE,
    description=(
        "Labels, labelled feedback, drift of the recent predictions and live performance, "
        "without retraining."
    ),
)

prediction_log_job = dg.define_asset_job(
    "prediction_log_daily",
    selection=PREDICTION_LOG,
    partitions_def=prediction_days,
    description="Read one UTC day of the service's prediction log (one partition).",
)

# Stopped by default: the demo drives monitoring from training runs and the sensors.
monitoring_schedule = dg.ScheduleDefinition(
    job=monitoring_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily drift and live-performance report at 06:00 UTC.",
)
prediction_log_schedule = dg.build_schedule_from_partitioned_job(
    prediction_log_job,
    hour_of_day=0,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
