"""Ingestion assets: the weekly-export partitions and each export read as text, exactly as it
arrived (parsing: :func:`schemas.validation.read_raw_export`)."""

import hashlib

import dagster as dg
import polars as pl

from orchestration.resources import TriageStorage
from schemas.validation import read_raw_export

# One partition per weekly export, keyed by the Monday that starts the week (YYYY-MM-DD). The
# partitions are the files that actually arrived: a sensor (or the pipeline command) registers a
# key when records_<monday>.txt lands.
weekly_exports = dg.DynamicPartitionsDefinition(name="weekly_exports")

EXPORT_PREFIX = "records_"
EXPORT_SUFFIXES = (".txt", ".csv", ".tsv")


def partition_key_for(file_name: str) -> str | None:
    """``records_2026-01-05.txt`` -> ``2026-01-05``; None for files that are not weekly exports."""
    for suffix in EXPORT_SUFFIXES:
        if file_name.startswith(EXPORT_PREFIX) and file_name.endswith(suffix):
            key = file_name[len(EXPORT_PREFIX) : -len(suffix)]
            return key if len(key) == 10 and key[4] == "-" and key[7] == "-" else None
    return None


def find_export(storage: TriageStorage, partition_key: str):
    storage.pull("landing", under=f"{EXPORT_PREFIX}{partition_key}")
    for suffix in EXPORT_SUFFIXES:
        path = storage.paths.landing / f"{EXPORT_PREFIX}{partition_key}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(
        f"no export for week {partition_key} in {storage.paths.landing} "
        f"(expected {EXPORT_PREFIX}{partition_key}.txt)"
    )


@dg.asset(
    group_name="ingestion",
    partitions_def=weekly_exports,
    kinds={"polars", "file"},
    description=(
        "One weekly export from the landing zone, every value kept as the original text, with "
        "source_file and source_row (1-based data row) so any record can be traced to its file."
    ),
)
def raw_patient_records(
    context: dg.AssetExecutionContext, storage: TriageStorage
) -> dg.Output[pl.DataFrame]:
    path = find_export(storage, context.partition_key)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    frame = read_raw_export(path)
    return dg.Output(
        frame,
        data_version=dg.DataVersion(digest[:16]),
        metadata={
            "source_file": path.name,
            "file_sha256": digest,
            "dagster/row_count": frame.height,
        },
    )
