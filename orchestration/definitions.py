"""The project's only Definitions: assets, checks, jobs, sensors and resources."""

import dagster as dg

from assets import deployment, knowledge, model, monitoring, onnx_export, raw, training, validated
from orchestration.jobs import training_job, weekly_validation_job
from orchestration.resources import build_resources
from orchestration.sensors import weekly_export_sensor

_modules = [raw, validated, knowledge, training, model, onnx_export, deployment, monitoring]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_modules),
    asset_checks=dg.load_asset_checks_from_modules(_modules),
    jobs=[weekly_validation_job, training_job],
    sensors=[weekly_export_sensor],
    resources=build_resources(),
)
