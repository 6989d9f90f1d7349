"""Training stage: the training table from all valid weeks, its balanced training set, and the
diagnosis model."""

import dagster as dg
import polars as pl

from diagnosis.categories import category_of
from diagnosis.training.dataset import (
    SPLIT_EVALUATION,
    SPLIT_TRAIN,
    TrainingSet,
    assemble_training_table,
    build_training_set,
)
from orchestration.resources import ModelPolicy


@dg.asset(
    group_name="training",
    kinds={"polars"},
    ins={
        "validated_patient_records": dg.AssetIn(),
        "disease_catalogue": dg.AssetIn(),
        "labelled_feedback": dg.AssetIn(),
    },
    description=(
        "Every valid record of every week, plus the clinician-confirmed labelled feedback "
        "(source = clinician_label), with diagnosis names and categories and a fixed, "
        "stratified train/evaluation split. Diagnoses with too few records are left out and named "
        "in the metadata."
    ),
)
def training_table(
    context: dg.AssetExecutionContext,
    policy: ModelPolicy,
    validated_patient_records: dict[str, pl.DataFrame],
    disease_catalogue: pl.DataFrame,
    labelled_feedback: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    table, too_few = assemble_training_table(
        validated_patient_records,
        disease_catalogue,
        min_class_rows=policy.min_class_rows,
        evaluation_share=policy.evaluation_share,
        seed=policy.random_seed,
        feedback=labelled_feedback,
    )
    by_source = table.group_by("source").len().sort("source")
    by_category = table.group_by("diagnosis_category").len().sort("diagnosis_category")
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "weeks": dg.MetadataValue.json(sorted(validated_patient_records)),
            "classes": table["diagnosis"].n_unique(),
            "rows_by_category": dg.MetadataValue.json(
                dict(zip(by_category["diagnosis_category"], by_category["len"]))
            ),
            "classes_below_minimum": dg.MetadataValue.json(too_few),
            "evaluation_rows": int((table["split"] == SPLIT_EVALUATION).sum()),
            "rows_by_source": dg.MetadataValue.json(dict(zip(by_source["source"], by_source["len"]))),
        },
    )


@dg.asset_check(
    asset=training_table,
    name="class_minimum",
    description="Warns when diagnoses had fewer records than the configured minimum and so "
    "cannot be learned from data; names them.",
)
def class_minimum(context: dg.AssetCheckExecutionContext, policy: ModelPolicy):
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_table"))
    too_few = event.asset_materialization.metadata["classes_below_minimum"].value
    orphans = sorted(code for code in too_few if category_of(code) == "orphan")
    others = sorted(code for code in too_few if category_of(code) != "orphan")
    return dg.AssetCheckResult(
        passed=not too_few,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(too_few)} diagnoses below {policy.min_class_rows} records"
            if too_few
            else "every diagnosis reaches the minimum"
        ),
        metadata={
            "orphan_below_minimum": dg.MetadataValue.json({c: too_few[c] for c in orphans}),
            "other_below_minimum": dg.MetadataValue.json({c: too_few[c] for c in others}),
            "min_class_rows": policy.min_class_rows,
        },
    )


@dg.asset(
    group_name="training",
    kinds={"numpy", "imblearn"},
    description=(
        "The training split encoded as model features (vitals, sex, symptom indicators), with "
        "diagnosis classes randomly over-sampled to balance them. The evaluation split is never "
        "resampled."
    ),
)
def balanced_training_set(policy: ModelPolicy, training_table: pl.DataFrame) -> dg.Output[TrainingSet]:
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    result = build_training_set(train, policy.random_seed)
    return dg.Output(
        result,
        metadata={
            "rows_before": int(result.X.shape[0]),
            "rows_after": int(result.X_balanced.shape[0]),
            "features": result.spec.n_features,
            "symptom_vocabulary": len(result.spec.symptoms),
            "classes": len(result.classes),
            "sampler": "imblearn RandomOverSampler (diagnosis classes)",
        },
    )
