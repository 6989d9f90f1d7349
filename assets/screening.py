"""Screening: each validated week scored by the deployed model, in batch, through the runtime the
API uses; patients whose orphan-disease probability passes a threshold are listed (pseudonymised)
with their leading ORPHA/OMIM candidates for a clinician to review (logic:
:mod:`diagnosis.screening`)."""

import dagster as dg
import polars as pl

from assets.ingestion import weekly_exports
from diagnosis import audit
from diagnosis.runtime import ModelLoadError, load_deployment
from diagnosis.screening import SCREENING_COLUMNS, screen_week
from orchestration.resources import TriageStorage

DEPLOYED_MODEL = dg.AssetKey("deployed_model")
TABLE_ROWS_SHOWN = 50


class ScreeningConfig(dg.Config):
    orphan_threshold: float = 0.5  # list a patient when the orphan probability reaches this
    candidates: int = 3  # ORPHA/OMIM candidates shown per listed patient


@dg.asset(
    group_name="screening",
    partitions_def=weekly_exports,
    kinds={"onnx", "polars"},
    ins={"validated_patient_records": dg.AssetIn()},
    deps=[DEPLOYED_MODEL],
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "Weekly orphan-disease screening for clinician review: every validated record of the week "
        "scored by the deployed model (batch runtime, as the API scores a request); patients "
        "whose orphan probability reaches `orphan_threshold` (default 0.5) are listed by their "
        "pseudonymised key with their leading ORPHA/OMIM candidates and the diagnosis on record. "
        "Re-runs when the week's records or the deployed model change (its data version is the "
        "model version and the week's rows). CSV under reports/screening/."
    ),
)
def orphan_screening(
    context: dg.AssetExecutionContext,
    config: ScreeningConfig,
    storage: TriageStorage,
    validated_patient_records: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    if not 0.0 < config.orphan_threshold <= 1.0:
        raise dg.Failure(f"orphan_threshold must be in (0, 1], got {config.orphan_threshold}")
    if config.candidates < 1:
        raise dg.Failure(f"candidates must be at least 1, got {config.candidates}")
    week = context.partition_key
    storage.pull_deployment()
    try:
        runtime = load_deployment(storage.paths.deployments)
    except ModelLoadError as exc:
        raise dg.Failure(f"no deployed model to screen week {week} with: {exc}") from exc
    listed, counts = screen_week(
        runtime, validated_patient_records, config.orphan_threshold, config.candidates
    )
    listed = listed.with_columns(pl.lit(week).alias("week"))
    csv = storage.paths.reports / "screening" / f"orphan_screening_{week}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv.with_suffix(".tmp")
    listed.drop("candidate_codes").write_csv(tmp)
    tmp.replace(csv)
    storage.push("reports", [csv.relative_to(storage.paths.reports).as_posix()])
    _, dagster_ui = audit.ui_bases()
    return dg.Output(
        listed,
        data_version=dg.DataVersion(
            f"{runtime.version}:{audit.frame_digest(validated_patient_records)[:16]}:"
            f"{config.orphan_threshold}"
        ),
        metadata={
            "week": week,
            "model_version": runtime.version,
            "orphan_threshold": config.orphan_threshold,
            "scored": counts["scored"],
            "listed": counts["listed"],
            "listed_without_orphan_diagnosis": counts["listed_without_orphan_diagnosis"],
            "orphan_diagnoses_on_record": counts["orphan_on_record"],
            "orphan_diagnoses_listed": counts["orphan_on_record_listed"],
            "dagster/row_count": listed.height,
            "patients_for_review": dg.MetadataValue.table(
                records=[
                    dg.TableRecord(
                        {
                            "patient_key": row["patient_key"][:16],
                            "age": row["age"],
                            "sex": row["sex"],
                            "orphan_probability": round(row["orphan_probability"], 3),
                            "candidates": row["candidates"],
                            "diagnosis_on_record": row["diagnosis_on_record"] or "",
                        }
                    )
                    for row in listed.head(TABLE_ROWS_SHOWN).iter_rows(named=True)
                ],
                schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn("patient_key", "string", "pseudonym (first 16 hex)"),
                        dg.TableColumn("age", "float"),
                        dg.TableColumn("sex", "string"),
                        dg.TableColumn("orphan_probability", "float"),
                        dg.TableColumn("candidates", "string", "ORPHA/OMIM (probability)"),
                        dg.TableColumn("diagnosis_on_record", "string"),
                    ]
                ),
            ),
            "csv": dg.MetadataValue.path(str(csv)),
            "model": dg.MetadataValue.url(audit.dagster_asset_url(dagster_ui, "deployed_model")),
            "columns": dg.MetadataValue.json(list(SCREENING_COLUMNS)),
        },
    )
