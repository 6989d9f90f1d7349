"""Clinician labels, validated, and labelled feedback (labels joined with their predictions)."""

from collections import Counter

import dagster as dg
import polars as pl

from assets.monitoring.predictions import PREDICTION_LOG
from diagnosis.training.monitoring import (
    STATUS_ACCEPTED,
    STATUS_REJECTED,
    STATUS_SUPERSEDED,
    join_feedback,
    label_files,
    read_prediction_log,
    validate_label_files,
    version_accuracy,
)
from orchestration.resources import MonitoringPolicy, TriageStorage


def _reason_kind(reason: str) -> str:
    """A reason without its particulars (code, token, day, file), for counting."""
    if reason.startswith("diagnosis: ") and "not in the disease catalogue" in reason:
        return "diagnosis: not in the disease catalogue in use"
    if reason.startswith("cap: "):
        return "cap: over the labels per token per day"
    if reason.startswith("superseded by "):
        return "superseded by a later revision"
    return reason


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "file"},
    deps=[PREDICTION_LOG],
    ins={"disease_catalogue": dg.AssetIn()},
    description=(
        "Every clinician label file in the labels landing zone, validated: accepted, rejected "
        "(quarantined with every reason: not JSON, missing field, malformed diagnosis code, a "
        "code outside the disease catalogue in use, unknown severity, prediction not in the log, "
        "over the per-token daily cap) or superseded by a later revision for the same "
        "prediction (the latest wins). No label is dropped."
    ),
)
def clinician_labels(
    storage: TriageStorage, monitoring: MonitoringPolicy, disease_catalogue: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    storage.pull("predictions")
    storage.pull("labels")
    predictions, _ = read_prediction_log(storage.paths.predictions)
    labels = validate_label_files(
        label_files(storage.paths.labels),
        set(predictions["prediction_id"].to_list()),
        catalogue_codes=set(disease_catalogue["code"].to_list()),
        max_labels_per_token_per_day=monitoring.max_labels_per_token_per_day,
    )
    by_status = Counter(labels["status"].to_list())
    by_reason = Counter(_reason_kind(r) for reasons in labels["reasons"].to_list() for r in reasons)
    revised = labels.filter(pl.col("revisions") > 1)
    return dg.Output(
        labels,
        metadata={
            "dagster/row_count": labels.height,
            "accepted": by_status.get(STATUS_ACCEPTED, 0),
            "rejected": by_status.get(STATUS_REJECTED, 0),
            "superseded": by_status.get(STATUS_SUPERSEDED, 0),
            # every valid label of a prediction is a revision; the latest is the accepted one
            "revisions": int(labels["revisions"].drop_nulls().len()),
            "predictions_revised": int(revised["prediction_id"].n_unique()),
            "max_labels_per_token_per_day": monitoring.max_labels_per_token_per_day,
            "counts_by_reason": dg.MetadataValue.json(dict(sorted(by_reason.items()))),
        },
    )


@dg.asset(
    group_name="monitoring",
    kinds={"polars"},
    deps=[PREDICTION_LOG],
    description=(
        "Accepted clinician labels joined with their logged predictions: each row holds the "
        "model inputs the service received (vitals, sex, symptoms), the confirmed diagnosis and "
        "severity, and what the model version predicted (top-1). These rows join the training "
        "table, marked as clinician labels."
    ),
)
def labelled_feedback(
    storage: TriageStorage, clinician_labels: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    storage.pull("predictions")
    predictions, _ = read_prediction_log(storage.paths.predictions)
    feedback = join_feedback(clinician_labels, predictions)
    return dg.Output(
        feedback,
        metadata={
            "dagster/row_count": feedback.height,
            "by_model_version": dg.MetadataValue.json(version_accuracy(feedback)),
            "diagnoses": feedback["diagnosis"].n_unique(),
        },
    )
