"""Ingestion stage: each weekly hospital export, read as text, exactly as it arrived."""


import hashlib

import dagster as dg
import polars as pl

from assets.partitions import EXPORT_PREFIX, EXPORT_SUFFIXES, weekly_exports
from orchestration.resources import TriageStorage
from schemas.validation import read_raw_export


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
