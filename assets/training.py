"""Training stage: the training table from all valid weeks, and its balanced training set."""


from collections import Counter
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl
from imblearn.over_sampling import RandomOverSampler
from sklearn.model_selection import train_test_split

from schemas.categories import category_of
from orchestration.resources import ModelPolicy
from schemas.clinical import SEVERITIES
from schemas.features import FeatureSpec

SOURCE_WEEKLY_EXPORT = "weekly_export"
SOURCE_CLINICIAN_LABEL = "clinician_label"

SPLIT_TRAIN = "train"
SPLIT_EVALUATION = "evaluation"
MIN_SYMPTOM_COUNT = 2


def feedback_rows(feedback: pl.DataFrame, like: pl.DataFrame) -> pl.DataFrame:
    """Labelled feedback (logged model inputs + confirmed diagnosis and severity) shaped like the
    validated records: no patient key (requests carry no identifier), ``recorded_at`` = the time of
    the prediction, ``source_file`` = the label file, ``week`` = the Monday of that day."""
    if feedback.is_empty():
        return feedback.clear()
    rows = feedback.select(
        pl.lit(None, dtype=pl.Utf8).alias("patient_key"),
        pl.col("time").dt.replace_time_zone(None).dt.cast_time_unit("us").alias("recorded_at"),
        *[pl.col(name).cast(pl.Float64) for name in FeatureSpec(symptoms=()).vitals],
        pl.col("sex").fill_null("unknown"),
        pl.col("symptoms"),
        pl.col("diagnosis"),
        pl.col("severity"),
        pl.col("label_file").alias("source_file"),
        pl.lit(None, dtype=pl.Int64).alias("source_row"),
        pl.col("time").dt.truncate("1w").dt.date().cast(pl.Utf8).alias("week"),
        pl.lit(SOURCE_CLINICIAN_LABEL).alias("source"),
    )
    columns = [c for c in like.columns if c in rows.columns]
    return rows.select(columns).cast({c: like.schema[c] for c in columns})


def assemble_training_table(
    weeks: dict[str, pl.DataFrame],
    catalogue: pl.DataFrame,
    *,
    min_class_rows: int,
    evaluation_share: float,
    seed: int,
    feedback: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """All valid weeks, plus labelled feedback when given, in one table with a stratified
    train/evaluation split; ``source`` tells weekly-export rows from clinician-label rows.

    Diagnoses with fewer than ``min_class_rows`` records cannot be learned from data; they are
    left out of the table and returned with their counts so the caller can report them by name.
    """
    frames = [
        frame.with_columns(pl.lit(week).alias("week"), pl.lit(SOURCE_WEEKLY_EXPORT).alias("source"))
        for week, frame in sorted(weeks.items())
    ]
    if feedback is not None and not feedback.is_empty() and frames:
        frames.append(feedback_rows(feedback, frames[0]))
    table = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
    counts = Counter(table["diagnosis"].to_list())
    too_few = {code: n for code, n in sorted(counts.items()) if n < min_class_rows}
    table = table.filter(~pl.col("diagnosis").is_in(list(too_few)))
    names = catalogue.select(
        pl.col("code").alias("diagnosis"), pl.col("name").alias("diagnosis_name")
    )
    table = table.join(names, on="diagnosis", how="left").with_columns(
        pl.col("diagnosis_name").fill_null(pl.col("diagnosis")),
        pl.col("diagnosis")
        .map_elements(category_of, return_dtype=pl.Utf8)
        .alias("diagnosis_category"),
    )
    indices = np.arange(table.height)
    _, evaluation = train_test_split(
        indices,
        test_size=evaluation_share,
        random_state=seed,
        stratify=table["diagnosis"].to_numpy(),
    )
    split = np.full(table.height, SPLIT_TRAIN, dtype=object)
    split[evaluation] = SPLIT_EVALUATION
    return table.with_columns(pl.Series("split", split.tolist(), dtype=pl.Utf8)), too_few


def symptom_vocabulary(symptom_lists: list[list[str]], min_count: int = MIN_SYMPTOM_COUNT):
    counts = Counter(term for terms in symptom_lists for term in (terms or ()))
    return tuple(sorted(term for term, n in counts.items() if n >= min_count))


def encode_table(table: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    vitals = {name: table[name].cast(pl.Float64).to_numpy() for name in spec.vitals}
    return spec.encode_columns(vitals, table["sex"].to_list(), table["symptoms"].to_list())


@dataclass
class TrainingSet:
    """Encoded training rows; the diagnosis classes were over-sampled, severity rows were not."""

    spec: FeatureSpec
    classes: list[str]
    X_balanced: np.ndarray
    y_balanced: np.ndarray
    X: np.ndarray
    y_diagnosis: np.ndarray
    y_severity: np.ndarray


def build_training_set(train: pl.DataFrame, seed: int) -> TrainingSet:
    spec = FeatureSpec(symptoms=symptom_vocabulary(train["symptoms"].to_list()))
    X = encode_table(train, spec)
    classes = sorted(train["diagnosis"].unique().to_list())
    index = {code: i for i, code in enumerate(classes)}
    y = np.array([index[c] for c in train["diagnosis"].to_list()], dtype=np.int64)
    severity_index = {label: i for i, label in enumerate(SEVERITIES)}
    y_severity = np.array([severity_index[s] for s in train["severity"].to_list()], dtype=np.int64)
    X_bal, y_bal = RandomOverSampler(random_state=seed).fit_resample(X, y)
    return TrainingSet(spec, classes, X_bal, y_bal, X, y, y_severity)


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
