"""Validation assets: every raw row lands in exactly one of the validated or quarantined tables."""

import dagster as dg
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from assets.ingestion import weekly_exports
from orchestration.resources import QualityPolicy, TriageStorage
from schemas.validation import VALID_RECORDS_SCHEMA, validate_records

# An unpartitioned asset reading every valid week: the IO manager hands several partitions over
# as {week: frame} but a single one as its bare frame, so the input is typed Any and read through
# weeks_by_key (a home with exactly one valid week trains like any other).
EVERY_VALID_WEEK = dg.AssetIn("validated_patient_records", dagster_type=dg.Any)


def weeks_by_key(
    context: dg.AssetExecutionContext, loaded: dict[str, pl.DataFrame] | pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Every valid week's frame by its partition key, however many weeks there are."""
    if isinstance(loaded, dict):
        return loaded
    keys = sorted(context.asset_partition_keys_for_input("validated_patient_records"))
    if len(keys) != 1:
        raise dg.Failure(f"one frame loaded for {len(keys)} weeks of validated_patient_records")
    return {keys[0]: loaded}


ROW_ACCOUNTING_CHECK = "row_accounting"
SCHEMA_CHECK = "schema_conformance"
QUARANTINE_RATE_CHECK = "quarantine_rate"

VALIDATED = dg.AssetKey("validated_patient_records")
QUARANTINED = dg.AssetKey("quarantined_patient_records")


def _failure_sample(quarantined: pl.DataFrame, n: int = 10) -> str:
    """A Markdown sample of quarantined rows: location and reasons only (no identifiers)."""
    if quarantined.is_empty():
        return "_no quarantined rows_"
    sample = quarantined.head(n).select(
        "source_file",
        "source_row",
        pl.col("reasons").list.join("; ").alias("reasons"),
    )
    lines = ["| file | row | reasons |", "|---|---|---|"]
    for file, row, reasons in sample.iter_rows():
        lines.append(f"| {file} | {row} | {reasons} |")
    return "\n".join(lines)


@dg.multi_asset(
    group_name="validation",
    partitions_def=weekly_exports,
    outs={
        "validated_patient_records": dg.AssetOut(
            kinds={"polars", "pandera"},
            description=(
                "Rows of one weekly export that passed every clinical-range check, typed, "
                "normalised (°C, canonical sex/severity, HPO ids) and pseudonymised (patient_key)."
            ),
        ),
        "quarantined_patient_records": dg.AssetOut(
            kinds={"polars", "pandera"},
            description=(
                "Rows held back from training, with their original text values, source_file, "
                "source_row and every failed check in `reasons`."
            ),
        ),
    },
    ins={"raw_patient_records": dg.AssetIn()},
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=VALIDATED,
            blocking=True,
            description="The validated table conforms to the Pandera clinical-range schema.",
        ),
        dg.AssetCheckSpec(
            ROW_ACCOUNTING_CHECK,
            asset=VALIDATED,
            blocking=True,
            description="valid + quarantined == raw rows, and no source row appears twice.",
        ),
        dg.AssetCheckSpec(
            QUARANTINE_RATE_CHECK,
            asset=QUARANTINED,
            description="Warns when the share of a week's rows in quarantine passes the "
            "configured threshold (QualityPolicy.max_quarantine_rate, 10 % by default).",
        ),
    ],
)
def validated_patient_records(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    quality: QualityPolicy,
    raw_patient_records: pl.DataFrame,
):
    outcome = validate_records(raw_patient_records, storage.pseudonym_key())
    valid, quarantined = outcome.valid, outcome.quarantined
    summary = outcome.summary()
    rows = raw_patient_records.height

    yield dg.Output(
        valid,
        output_name="validated_patient_records",
        metadata={
            "dagster/row_count": valid.height,
            "raw_rows": rows,
            "valid_share": float(valid.height / rows) if rows else 0.0,
        },
    )
    yield dg.Output(
        quarantined,
        output_name="quarantined_patient_records",
        metadata={
            "dagster/row_count": quarantined.height,
            "counts_by_reason": dg.MetadataValue.json(summary.get("reasons", {})),
            "counts_by_column": dg.MetadataValue.json(summary.get("columns", {})),
            "failure_sample": dg.MetadataValue.md(_failure_sample(quarantined)),
        },
    )

    try:
        VALID_RECORDS_SCHEMA.validate(valid, lazy=True)
        schema_problems: list[str] = []
    except (SchemaError, SchemaErrors) as exc:
        schema_problems = [str(exc)[:2000]]
    yield dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=VALIDATED,
        passed=not schema_problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.json(schema_problems)},
    )

    seen = pl.concat(
        [valid.select("source_row"), quarantined.select("source_row")], how="vertical"
    )["source_row"]
    accounted = valid.height + quarantined.height == rows and seen.n_unique() == seen.len()
    yield dg.AssetCheckResult(
        check_name=ROW_ACCOUNTING_CHECK,
        asset_key=VALIDATED,
        passed=bool(accounted),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"raw": rows, "valid": valid.height, "quarantined": quarantined.height},
    )
    rate = quarantined.height / rows if rows else 0.0
    yield dg.AssetCheckResult(
        check_name=QUARANTINE_RATE_CHECK,
        asset_key=QUARANTINED,
        passed=rate <= quality.max_quarantine_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantine_rate": float(rate), "threshold": quality.max_quarantine_rate},
    )
