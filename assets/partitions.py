"""Partitions shared by the ingestion and validation stages."""

from __future__ import annotations

import dagster as dg

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
