"""Fitting the served classifier heads: the diagnosis head of the selected family on the balanced
training set (:mod:`diagnosis.training.balancing`), and the XGBoost severity head on the recorded
training rows; and the rare cases simulated from the annotations that evaluation
scores the system on."""

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from diagnosis.features import FeatureSpec
from diagnosis.simulation import simulate_cohort
from diagnosis.training.balancing import BalancedTrainingSet
from diagnosis.training.candidates import (
    FAMILIES,
    NO_BALANCING,
    XGB_PARAMS,
    XGBOOST,
    candidate_params,
    fit_quietly,
    inference_pipeline,
    make_pipeline,
)
from schemas.validation import validate_records


@dataclass
class TrainedModel:
    """What the ONNX export and the deployment need from a training run."""

    spec: FeatureSpec
    classes: list[str]
    diagnosis: Pipeline
    severity: Pipeline
    params: dict
    mlflow_run_id: str | None = None
    imputation: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.diagnosis.predict_proba(X), self.severity.predict_proba(X)


def _pipeline(seed: int, params: dict | None = None) -> Pipeline:
    # Trees need no scaling; the imputer fills missing vitals with the training median and is
    # exported inside the ONNX graph, so serving sends NaN for a missing value.
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("model", XGBClassifier(random_state=seed, **(params or XGB_PARAMS))),
        ]
    )


def fit_diagnosis_head(family: str, data: BalancedTrainingSet, seed: int,
                       params: dict | None = None) -> Pipeline:
    """impute -> [scale] -> model of ``family`` fitted on the balanced rows (with their weights
    for class_weight). After resampling, the imputer is the one fitted on the recorded rows before
    the sampler ran, so the pipeline imputes with their medians; no sampler is in it."""
    pipeline = make_pipeline(family, NO_BALANCING, data.y, seed, params)
    kwargs = {} if data.sample_weight is None else {"model__sample_weight": data.sample_weight}
    if not data.resampled:
        return inference_pipeline(fit_quietly(pipeline, data.X, data.y, **kwargs))
    rest = Pipeline(pipeline.steps[1:])  # the rows are already imputed
    fit_quietly(rest, data.X, data.y, **kwargs)
    return Pipeline([("impute", data.imputer), *rest.steps])


def train_models(
    data: BalancedTrainingSet,
    seed: int,
    params: dict | None = None,
    family: str = XGBOOST,
) -> TrainedModel:
    """The diagnosis head of ``family`` on the balanced training set, and the XGBoost severity
    head on the recorded (unbalanced) training rows. ``params`` are XGBoost's."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    params = params or XGB_PARAMS
    diagnosis = fit_diagnosis_head(family, data, seed, params if family == XGBOOST else None)
    recorded = data.recorded
    severity = _pipeline(seed, params).fit(recorded.X, recorded.y_severity)
    medians = diagnosis.named_steps["impute"].statistics_[: len(data.spec.vitals)]
    return TrainedModel(
        spec=data.spec,
        classes=data.classes,
        diagnosis=diagnosis,
        severity=severity,
        params={
            **candidate_params(family, data.balancing, params if family == XGBOOST else None),
            **{f"severity_xgb_{k}": v for k, v in params.items()},
        },
        imputation={name: float(v) for name, v in zip(data.spec.vitals, medians)},
    )


def knowledge_cases(n: int, seed: int) -> pl.DataFrame:
    """Rare-disease patients simulated from the annotations (symptoms by annotated frequency,
    ordinary vitals), validated like any export: the cases no hospital has recorded yet."""
    weeks = simulate_cohort(
        n, 1, seed, defect_rate=0.0, n_orphan_diseases=max(n // 3, 1),
        healthy_share=0.0, orphan_share=1.0,
    )
    raw = pl.concat([frame for _, frame in weeks]).with_columns(
        pl.lit("knowledge_cases").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    return validate_records(raw, b"knowledge-cases").valid
