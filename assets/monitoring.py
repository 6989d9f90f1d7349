"""Monitoring stage: data drift of the newest week against the data the model learned from."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.training import SPLIT_TRAIN
from orchestration.resources import TriageStorage
from schemas.features import VITAL_FEATURES

DRIFT_SHARE_THRESHOLD = 0.5


def drift_summary(reference: pl.DataFrame, current: pl.DataFrame, html_path: Path) -> dict:
    """Run Evidently's DataDriftPreset on the vitals; save the HTML report; return a summary.

    Evidently is imported here, not at module import: it takes seconds to load.
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = list(VITAL_FEATURES)
    snapshot = Report([DataDriftPreset(columns=columns)]).run(
        current_data=current.select(columns).to_pandas(),
        reference_data=reference.select(columns).to_pandas(),
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    per_column: dict[str, dict] = {}
    share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config") or {}
        if "column" in config and "method" in config:
            per_column[config["column"]] = {
                "method": config["method"],
                "threshold": config.get("threshold"),
                "score": float(metric["value"]),
            }
        elif isinstance(metric.get("value"), dict) and "share" in metric["value"]:
            share = float(metric["value"]["share"])
    for entry in per_column.values():
        method = entry["method"] or ""
        # p-value methods drift when the score falls below the threshold; distances when above.
        below = "p_value" in method
        entry["drifted"] = (
            entry["score"] < entry["threshold"] if below else entry["score"] >= entry["threshold"]
        )
    return {
        "reference_rows": reference.height,
        "current_rows": current.height,
        "drift_share": share,
        "drifted_columns": sorted(c for c, e in per_column.items() if e["drifted"]),
        "columns": per_column,
    }


@dg.asset(
    group_name="monitoring",
    kinds={"evidently"},
    ins={"validated_patient_records": dg.AssetIn(), "training_table": dg.AssetIn()},
    description=(
        "Evidently data-drift report of the newest week's vitals against the training split: the "
        "method and threshold of each column, the drift share, and the HTML report on disk."
    ),
)
def drift_report(
    storage: TriageStorage,
    validated_patient_records: dict[str, pl.DataFrame],
    training_table: pl.DataFrame,
) -> dg.Output[dict]:
    week = max(validated_patient_records)
    reference = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    html_path = storage.paths.reports / "drift" / f"drift_{week}.html"
    summary = drift_summary(reference, validated_patient_records[week], html_path)
    summary["week"] = week
    (html_path.with_suffix(".json")).write_text(json.dumps(summary, indent=2))
    return dg.Output(
        summary,
        metadata={
            "week": week,
            "drift_share": summary["drift_share"],
            "drifted_columns": dg.MetadataValue.json(summary["drifted_columns"]),
            "columns": dg.MetadataValue.json(summary["columns"]),
            "report_html": dg.MetadataValue.path(str(html_path)),
        },
    )
