"""Sensors: a new weekly export in the landing zone becomes a partition and is validated."""

import dagster as dg

from assets.partitions import partition_key_for, weekly_exports
from orchestration.jobs import weekly_validation_job
from orchestration.resources import TriageStorage


def landing_partition_keys(storage: TriageStorage) -> list[str]:
    landing = storage.paths.landing
    if not landing.is_dir():
        return []
    keys = {partition_key_for(p.name) for p in landing.iterdir() if p.is_file()}
    return sorted(k for k in keys if k)


@dg.sensor(
    job=weekly_validation_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each new records_<monday> export as a weekly partition and validates it.",
)
def weekly_export_sensor(context: dg.SensorEvaluationContext, storage: TriageStorage):
    known = set(context.instance.get_dynamic_partitions(weekly_exports.name))
    new = [key for key in landing_partition_keys(storage) if key not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"export-{key}") for key in new],
        dynamic_partitions_requests=[weekly_exports.build_add_request(new)] if new else [],
    )
