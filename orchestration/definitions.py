"""The project's only Definitions: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from assets import (
    deployment,
    evaluation,
    ingestion,
    knowledge,
    monitoring,
    screening,
    training,
    validation,
)
from orchestration.jobs import (
    monitoring_job,
    monitoring_schedule,
    prediction_log_job,
    prediction_log_schedule,
    training_job,
    weekly_validation_job,
)
from orchestration.knowledge_sensor import hpo_release_sensor
from orchestration.resources import build_executor, build_resources
from orchestration.sensors import (
    drift_retraining_sensor,
    model_gate_alert_sensor,
    new_labels_sensor,
    weekly_export_sensor,
)

# one module per asset group (assets/<group>.py; monitoring is a package of four modules)
_modules = [
    ingestion,
    validation,
    knowledge,
    training,
    evaluation,
    deployment,
    *monitoring.MODULES,
    screening,
]

defs = dg.Definitions(
    # each asset links to its source file and line in the UI
    assets=dg.with_source_code_references(dg.load_assets_from_modules(_modules)),
    asset_checks=dg.load_asset_checks_from_modules(_modules),
    jobs=[weekly_validation_job, training_job, monitoring_job, prediction_log_job],
    schedules=[monitoring_schedule, prediction_log_schedule],
    sensors=[
        weekly_export_sensor,
        new_labels_sensor,
        drift_retraining_sensor,
        model_gate_alert_sensor,
        hpo_release_sensor,
    ],
    resources=build_resources(),
    executor=build_executor(),
)
