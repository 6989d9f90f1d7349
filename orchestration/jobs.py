"""Jobs: the weekly validation of one export, and the training-to-deployment path."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from assets.partitions import weekly_exports

weekly_validation_job = dg.define_asset_job(
    "weekly_validation",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    partitions_def=weekly_exports,
    description="Read and validate one weekly export (one partition).",
)

training_job = dg.define_asset_job(
    "training",
    selection=dg.AssetSelection.groups("knowledge", "training", "deployment", "monitoring"),
    hooks={end_mlflow_on_run_finished},
    description=(
        "Build the training table from every valid week, train, evaluate, export to ONNX and, "
        "when the quality gate and ONNX parity pass, deploy; then report drift."
    ),
)
