"""The training table from all valid weeks (with labelled feedback), its split, and the training
split encoded as model features (unbalanced; :mod:`diagnosis.training.balancing` balances it)."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.model_selection import train_test_split

from diagnosis.categories import category_of
from diagnosis.features import VITAL_FEATURES, FeatureSpec
from schemas.clinical import SEVERITIES

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
    """The training split encoded as model features, as recorded (no balancing)."""

    spec: FeatureSpec
    classes: list[str]
    X: np.ndarray
    y_diagnosis: np.ndarray
    y_severity: np.ndarray

    def class_counts(self) -> dict[str, int]:
        return class_counts(self.y_diagnosis, self.classes)


def class_counts(y: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(y, minlength=len(classes))
    return {code: int(n) for code, n in zip(classes, counts)}


def encode_training_split(train: pl.DataFrame) -> TrainingSet:
    """The training rows as features (symptom vocabulary: terms seen at least twice), diagnosis
    class indices in sorted code order, and severity indices."""
    spec = FeatureSpec(
        symptoms=symptom_vocabulary(train["symptoms"].to_list()),
        missing_indicators=VITAL_FEATURES,  # age too: a form may leave it out
    )
    X = encode_table(train, spec)
    classes = sorted(train["diagnosis"].unique().to_list())
    index = {code: i for i, code in enumerate(classes)}
    y = np.array([index[c] for c in train["diagnosis"].to_list()], dtype=np.int64)
    severity_index = {label: i for i, label in enumerate(SEVERITIES)}
    y_severity = np.array([severity_index[s] for s in train["severity"].to_list()], dtype=np.int64)
    return TrainingSet(spec, classes, X, y, y_severity)
