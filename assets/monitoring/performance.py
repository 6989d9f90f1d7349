"""Live performance per model version on labelled feedback, with its warning check."""

import dagster as dg
import polars as pl

from diagnosis.artifacts import read_current
from diagnosis.training.monitoring import live_metrics, performance_failures
from orchestration.resources import AlertsResource, MonitoringPolicy, TriageStorage

LIVE_PERFORMANCE_CHECK = "live_performance_floors"
ALERT_LIVE_PERFORMANCE = "live_performance_below_floor"


@dg.asset(
    group_name="monitoring",
    kinds={"scikitlearn"},
    description=(
        "Live performance per model version on clinician-confirmed labels: counts, top-1 "
        "accuracy, macro-F1 over the confirmed diagnoses, orphan recall and severity accuracy."
    ),
)
def live_performance(labelled_feedback: pl.DataFrame) -> dg.Output[dict]:
    metrics = live_metrics(labelled_feedback)
    return dg.Output(
        metrics,
        metadata={
            "labelled": labelled_feedback.height,
            "model_versions": len(metrics),
            "by_model_version": dg.MetadataValue.json(metrics),
        },
    )


@dg.asset_check(
    asset=live_performance,
    name=LIVE_PERFORMANCE_CHECK,
    description="Warns (and alerts) when the serving model's live accuracy, macro-F1 or orphan "
    "recall on labelled feedback falls below the configured floors, once it has enough labels.",
)
def live_performance_check(
    context: dg.AssetCheckExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    alerts: AlertsResource,
    live_performance: dict,
) -> dg.AssetCheckResult:
    storage.pull_deployment()
    pointer = read_current(storage.paths.deployments)
    version = pointer.version if pointer else None
    metrics = live_performance.get(version) if version else None
    if metrics is None or metrics["labelled"] < monitoring.min_labels_for_performance:
        n = metrics["labelled"] if metrics else 0
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{n} labels for serving model {version}; "
            f"{monitoring.min_labels_for_performance} needed to judge",
            metadata={"model_version": str(version), "labelled": n},
        )
    failures = performance_failures(metrics, monitoring)
    alerted = False
    if failures:
        alerted = alerts.send(
            ALERT_LIVE_PERFORMANCE,
            f"model {version}: " + "; ".join(failures),
            {"model_version": version, "metrics": metrics},
            log=context.log,
        )
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(failures) or "all floors met",
        metadata={
            "model_version": version,
            **{k: v for k, v in metrics.items() if v is not None},
            "alert_delivered": alerted,
        },
    )
