"""Sensors.

- ``weekly_export_sensor``: a new weekly export in the landing zone is read; a readable one becomes
  a partition and is validated, an unreadable one is refused whole (moved to landing/refused/, a
  failed ``export_readable`` check, an alert) and never blocks the other weeks.
- ``new_labels_sensor``: enough newly confirmed labels request a retraining run.
- ``drift_retraining_sensor``: a failed drift check requests a retraining run, with a cooldown.
- ``model_gate_alert_sensor``: a refused challenger (quality gate or ONNX parity failed) is
  alerted through the ``alerts`` resource.

Every retraining goes through the ``training`` job, so through the blocking checks before
``deployed_model``: a refused challenger leaves the champion serving.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets.deployment import ONNX_PARITY_CHECK
from assets.evaluation import QUALITY_GATE_CHECK
from assets.ingestion import (
    ALERT_EXPORT_REFUSED,
    admit_exports,
    landing_partition_keys,
    weekly_exports,
)
from assets.monitoring.drift import DRIFT_CHECK, DRIFT_REPORT
from diagnosis.training.monitoring import label_files
from orchestration.jobs import training_job, weekly_validation_job
from orchestration.resources import AlertsResource, MonitoringPolicy, TriageStorage

TRIGGER_TAG = "triage/trigger"
# the status values of an asset-check execution record (compared by value: the enum is not public)
CHECK_SUCCEEDED, CHECK_FAILED = "SUCCEEDED", "FAILED"
TRIGGER_LABELS = "new_labels"
TRIGGER_DRIFT = "drift"
ALERT_GATE_REFUSED = "model_refused_by_gate"

DRIFT_CHECK_KEY = dg.AssetCheckKey(DRIFT_REPORT, DRIFT_CHECK)
GATE_CHECK_KEYS = (
    dg.AssetCheckKey(dg.AssetKey("model_evaluation"), QUALITY_GATE_CHECK),
    dg.AssetCheckKey(dg.AssetKey("onnx_model"), ONNX_PARITY_CHECK),
)


__all__ = ["landing_partition_keys"]  # kept importable from here (the pipeline command used it)


def alert_refusals(alerts: AlertsResource, refused, log) -> None:
    """One alert per refused export, its summary line as the text."""
    for refusal in refused:
        alerts.send(
            ALERT_EXPORT_REFUSED,
            refusal.summary(),
            {"week": refusal.partition_key, "file": refusal.file_name, "reason": refusal.reason},
            log=log,
        )


@dg.sensor(
    job=weekly_validation_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads each new records_<monday> export: a readable one is registered as a weekly "
        "partition and validated; an unreadable one is refused whole (landing/refused/, a failed "
        "export_readable check, an alert) and registers nothing."
    ),
)
def weekly_export_sensor(
    context: dg.SensorEvaluationContext, storage: TriageStorage, alerts: AlertsResource
):
    known = set(context.instance.get_dynamic_partitions(weekly_exports.name))
    new = [key for key in landing_partition_keys(storage) if key not in known]
    admitted, refused = admit_exports(storage, new)
    for refusal in refused:
        context.log.error(refusal.summary())
    alert_refusals(alerts, refused, context.log)
    return dg.SensorResult(
        run_requests=[
            # the file's digest in the key: a week re-exported after a refusal runs again
            dg.RunRequest(partition_key=key, run_key=f"export-{key}-{digest[:16]}")
            for key, digest in admitted.items()
        ],
        dynamic_partitions_requests=(
            [weekly_exports.build_add_request(list(admitted))] if admitted else []
        ),
        asset_events=[refusal.check_evaluation() for refusal in refused],
    )


# ------------------------------------------------------------------------------ labels
@dataclass(frozen=True)
class LabelCursor:
    """The newest label file already handed to a training run, as (mtime_ns, name), and when
    the last run was requested. Files are ordered by (mtime_ns, name): label files appear
    atomically (write then rename), so a new label has a later mtime than the ones processed."""

    mtime_ns: int = -1
    name: str = ""
    requested_at: float | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "LabelCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(int(data["mtime_ns"]), str(data["name"]), data.get("requested_at"))

    def dump(self) -> str:
        return json.dumps(
            {"mtime_ns": self.mtime_ns, "name": self.name, "requested_at": self.requested_at}
        )


def new_label_files(directory: Path, cursor: LabelCursor) -> list[tuple[int, str]]:
    """(mtime_ns, name) of label files after the cursor, oldest first."""
    found = []
    for path in label_files(directory):
        try:
            stamp = (path.stat().st_mtime_ns, path.name)
        except FileNotFoundError:  # removed between listing and stat
            continue
        if stamp > (cursor.mtime_ns, cursor.name):
            found.append(stamp)
    return sorted(found)


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests a retraining run (the training job, through the quality gate and ONNX parity) "
        "once at least min_new_labels confirmed labels arrived in TRIAGE_HOME/labels since the "
        "last request, and the cooldown has passed. The run key names the newest label, so the "
        "same labels never start two runs."
    ),
)
def new_labels_sensor(
    context: dg.SensorEvaluationContext, storage: TriageStorage, monitoring: MonitoringPolicy
):
    cursor = LabelCursor.parse(context.cursor)
    storage.pull("labels")  # with S3: labels written by every API host, mirrored here
    new = new_label_files(storage.paths.labels, cursor)
    if len(new) < monitoring.min_new_labels:
        return dg.SkipReason(
            f"{len(new)} new label(s) since the last retraining request; "
            f"{monitoring.min_new_labels} needed"
        )
    now = time.time()
    cooldown = monitoring.label_retrain_cooldown_seconds
    if cooldown and cursor.requested_at is not None and now - cursor.requested_at < cooldown:
        wait = cooldown - (now - cursor.requested_at)
        return dg.SkipReason(f"{len(new)} new labels, but in cooldown for {wait:.0f} s more")
    newest_mtime, newest_name = new[-1]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"labels-{newest_mtime}-{newest_name}",
                tags={TRIGGER_TAG: TRIGGER_LABELS, "triage/new_labels": str(len(new))},
            )
        ],
        cursor=LabelCursor(newest_mtime, newest_name, now).dump(),
    )


# ------------------------------------------------------------------------------ drift
@dg.sensor(
    job=training_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests a retraining run when the newest evaluation of the drift_share check failed, "
        "at most once per drift_retrain_cooldown_seconds. Evaluations from runs this sensor "
        "started are not acted on (retraining on the same window would otherwise loop)."
    ),
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, monitoring: MonitoringPolicy):
    state = json.loads(context.cursor) if context.cursor else {}
    handled, requested_at = state.get("record_id", -1), state.get("requested_at")
    record = context.instance.get_latest_asset_check_evaluation_record(DRIFT_CHECK_KEY)
    if record is None or record.id <= handled:
        return dg.SkipReason("no new drift check evaluation")
    if record.status.value not in (CHECK_FAILED, CHECK_SUCCEEDED):
        return dg.SkipReason(f"drift check evaluation {record.id} is {record.status.value}")

    def done(reason: str) -> dg.SensorResult:
        return dg.SensorResult(
            skip_reason=reason,
            cursor=json.dumps({"record_id": record.id, "requested_at": requested_at}),
        )

    if record.status.value == CHECK_SUCCEEDED:
        return done("drift within threshold")
    run = context.instance.get_run_by_id(record.run_id) if record.run_id else None
    if run is not None and run.tags.get(TRIGGER_TAG) == TRIGGER_DRIFT:
        return done("drift reported by a drift-triggered retraining run; not retraining again")
    now = time.time()
    cooldown = monitoring.drift_retrain_cooldown_seconds
    if requested_at is not None and now - requested_at < cooldown:
        # not marked handled: the request is made once the cooldown has passed
        return dg.SkipReason(
            f"drift detected, but in cooldown for {cooldown - (now - requested_at):.0f} s more"
        )
    evaluation = record.evaluation
    share = evaluation.metadata.get("drift_share") if evaluation else None
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{record.id}",
                tags={
                    TRIGGER_TAG: TRIGGER_DRIFT,
                    "triage/drift_check_run": record.run_id,
                    **({"triage/drift_share": f"{share.value:.3f}"} if share else {}),
                },
            )
        ],
        cursor=json.dumps({"record_id": record.id, "requested_at": now}),
    )


# ------------------------------------------------------------------------------ gate alerts
@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts (webhook from TRIAGE_ALERT_WEBHOOK) when the quality gate or ONNX parity refuses "
        "a challenger; the champion keeps serving."
    ),
)
def model_gate_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource):
    handled = int(context.cursor or -1)
    newest = handled
    sent = 0
    for key in GATE_CHECK_KEYS:
        history = context.instance.event_log_storage.get_asset_check_execution_history(
            key, limit=20
        )
        for record in sorted(history, key=lambda r: r.id):
            if record.id <= handled:
                continue
            if record.status.value == CHECK_FAILED:
                evaluation = record.evaluation
                alerts.send(
                    ALERT_GATE_REFUSED,
                    f"{key.name} refused the model trained in run {record.run_id}: "
                    f"{evaluation.description if evaluation else 'failed'}",
                    {
                        "check": key.name,
                        "run_id": record.run_id,
                        "metadata": {
                            k: v.value
                            for k, v in (evaluation.metadata if evaluation else {}).items()
                        },
                    },
                    log=context.log,
                )
                sent += 1
            if record.status.value in (CHECK_FAILED, CHECK_SUCCEEDED):
                newest = max(newest, record.id)
    context.update_cursor(str(newest))
    return dg.SkipReason(f"{sent} refusal alert(s) sent" if sent else "no new refusal")
