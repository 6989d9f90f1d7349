"""The service's prediction log, one daily partition per UTC day."""

import dagster as dg
import polars as pl

from diagnosis.training.monitoring import read_prediction_log
from orchestration.resources import TriageStorage
from schemas.layout import prediction_log_file

PREDICTION_LOG = dg.AssetKey("prediction_log")

# UTC days of the service's prediction log. end_offset=1: today's (still growing) file is a
# partition too.
prediction_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


@dg.asset(
    group_name="monitoring",
    partitions_def=prediction_days,
    kinds={"polars", "file"},
    description=(
        "One UTC day of the service's prediction log (predictions-<day>.jsonl) as a table: "
        "the logged model inputs, the model version, the top-1 diagnosis and severity returned. "
        "A day without a file is an empty table (no predictions served); malformed lines are "
        "counted by file and line, never copied."
    ),
)
def prediction_log(
    context: dg.AssetExecutionContext, storage: TriageStorage
) -> dg.Output[pl.DataFrame]:
    day = context.partition_key
    storage.pull("predictions")
    path = prediction_log_file(storage.paths.predictions, day)
    frame, problems = read_prediction_log(storage.paths.predictions, [day])
    by_version = frame.group_by("model_version").len().sort("model_version")
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "file_present": path.is_file(),
            "malformed_lines": len(problems),
            "malformed_sample": dg.MetadataValue.json(problems[:20]),
            "rows_by_model_version": dg.MetadataValue.json(
                dict(zip(by_version["model_version"], by_version["len"]))
            ),
        },
    )
