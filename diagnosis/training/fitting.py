"""Fitting the served classifier heads: the diagnosis head of the selected family on the balanced
training set (:mod:`diagnosis.training.balancing`), and the XGBoost severity head on the recorded
training rows; and the rare cases simulated from the annotations that evaluation
scores the system on."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from diagnosis.features import MEASURED_VITALS, FeatureSpec
from diagnosis.simulation import simulate_cohort
from diagnosis.training.balancing import BalancedTrainingSet
from diagnosis.training.candidates import (
    FAMILIES,
    NO_BALANCING,
    XGB_PARAMS,
    XGBOOST,
    candidate_params,
    fit_pipeline,
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


# Triage copies: the share of training rows added again as a triage desk sees them.
MISSING_COPY_SHARE = 0.5
SYMPTOM_KEEP = 0.5  # each recorded finding stays in a copy with this probability
UNSTATED_SHARE = 0.25  # copies whose age (and, separately, sex) is not given


def with_unmeasured_vitals(
    X: np.ndarray,
    spec: FeatureSpec,
    seed: int,
    share: float = MISSING_COPY_SHARE,
    *,
    stacked: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a random ``share`` of the rows as a triage desk often sees them: half of the
    copies with no vital sign measured, the others with each vital missing at random (at least
    one), and in every copy each finding kept with probability :data:`SYMPTOM_KEEP` (at least one
    when the row had any), since a clinician at triage enters a few findings, not all the record
    holds; a quarter of the copies also lack the age, a quarter the sex. Returns (the copies, the
    indices of the rows they copy); with ``stacked``, (``X`` followed by the copies, in one
    matrix allocated once, the indices). The "not measured" indicators of the copies are set, so
    the model learns what the findings say when vitals are absent instead of reading a missing
    vital as a normal one, and that one reported finding is not a healthy patient's record."""
    rng = np.random.default_rng(seed)
    if not spec.missing_indicators or share <= 0:
        return (X.copy() if stacked else X[:0].copy()), np.empty(0, dtype=np.int64)
    rows = np.flatnonzero(rng.random(len(X)) < share)
    if stacked:
        out = np.empty((len(X) + len(rows), X.shape[1]), dtype=X.dtype)
        out[: len(X)] = X
        copies = out[len(X) :]  # a view: the copies are edited in place
        np.take(X, rows, axis=0, out=copies)
    else:
        out = copies = X[rows].copy()
    measured = [v for v in spec.missing_indicators if v in MEASURED_VITALS]
    columns = [spec.vitals.index(v) for v in measured]
    drop = rng.random((len(rows), len(columns))) < 0.5
    drop[rng.random(len(rows)) < 0.5] = True  # half the copies: nothing measured
    none = ~drop.any(axis=1)
    drop[none, rng.integers(0, len(columns), none.sum())] = True
    for j, col in enumerate(columns):
        copies[drop[:, j], col] = np.nan
    # a form may also leave out the age (and the sex): a quarter of the copies each
    if "age" in spec.missing_indicators:
        copies[rng.random(len(rows)) < UNSTATED_SHARE, spec.vitals.index("age")] = np.nan
    if "unknown" in spec.sexes:
        unstated = rng.random(len(rows)) < UNSTATED_SHARE
        first = len(spec.vitals)
        copies[unstated, first : first + len(spec.sexes)] = 0.0
        copies[unstated, first + spec.sexes.index("unknown")] = 1.0
    offset = spec.missing_offset
    for j, name in enumerate(spec.missing_indicators):
        copies[:, offset + j] = np.isnan(copies[:, spec.vitals.index(name)])
    start = len(spec.vitals) + len(spec.sexes)
    findings = copies[:, start : start + len(spec.symptoms)]  # a view: edits land in copies
    for i in range(len(copies)):
        present = np.flatnonzero(findings[i] > 0)
        if len(present) > 1:
            keep = rng.random(len(present)) < SYMPTOM_KEEP
            if not keep.any():
                keep[rng.integers(0, len(present))] = True
            findings[i, present[~keep]] = 0.0
    return out, rows


def fit_diagnosis_head(
    family: str, data: BalancedTrainingSet, seed: int, params: dict | None = None
) -> Pipeline:
    """impute -> [scale] -> model of ``family`` fitted on the balanced rows (with their weights
    for class_weight). After resampling, the imputer is the one fitted on the recorded rows before
    the sampler ran, so the pipeline imputes with their medians; no sampler is in it."""
    pipeline = make_pipeline(family, NO_BALANCING, data.y, seed, params)
    recorded = data.recorded
    if not data.resampled:  # data.X holds the recorded rows: they and their copies, stacked
        X, source = with_unmeasured_vitals(data.X, data.spec, seed, stacked=True)
    else:
        copies, source = with_unmeasured_vitals(recorded.X, data.spec, seed)
    y_copies = recorded.y_diagnosis[source]
    weights = data.sample_weight
    if weights is not None:  # a copy weighs what a row of its class weighs
        per_class = {int(c): float(weights[np.argmax(data.y == c)]) for c in np.unique(data.y)}
        weights = np.concatenate([weights, [per_class[int(c)] for c in y_copies]])
    kwargs = {} if weights is None else {"model__sample_weight": weights}
    y = np.concatenate([data.y, y_copies])
    if not data.resampled:
        return fit_pipeline(pipeline, X, y, consume=True, **kwargs)
    rest = Pipeline(pipeline.steps[1:])  # the rows are already imputed
    if not len(copies):
        rest = fit_pipeline(rest, data.X, y, **kwargs)
    else:
        X = np.concatenate([data.X, data.imputer.transform(copies)])
        del copies
        rest = fit_pipeline(rest, X, y, consume=True, **kwargs)
    return Pipeline([("impute", data.imputer), *rest.steps])


def fit_severity_head(data: BalancedTrainingSet, seed: int, params: dict) -> Pipeline:
    """The XGBoost severity head on the recorded (unbalanced) training rows and their triage
    copies (:func:`with_unmeasured_vitals`, seeded apart from the diagnosis head's)."""
    recorded = data.recorded
    X, source = with_unmeasured_vitals(recorded.X, data.spec, seed + 1, stacked=True)
    y = np.concatenate([recorded.y_severity, recorded.y_severity[source]])
    return fit_pipeline(_pipeline(seed, params), X, y, consume=True)


def train_models(
    data: BalancedTrainingSet,
    seed: int,
    params: dict | None = None,
    family: str = XGBOOST,
) -> TrainedModel:
    """The diagnosis head of ``family`` on the balanced training set, and the XGBoost severity
    head on the recorded (unbalanced) training rows, each with triage copies of some rows whose
    vitals were not measured (:func:`with_unmeasured_vitals`). ``params`` are XGBoost's."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    params = params or XGB_PARAMS
    # The two heads are fitted side by side, the severity head in a thread: XGBoost and the
    # matrix products of the diagnosis head release the GIL, so each takes a core. Each keeps its
    # own thread count (XGBoost n_jobs, the BLAS threads), so the fitted heads are the ones a
    # fit in sequence gives.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="severity-head") as pool:
        severity_fit = pool.submit(fit_severity_head, data, seed, params)
        diagnosis = fit_diagnosis_head(family, data, seed, params if family == XGBOOST else None)
        severity = severity_fit.result()
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
        n,
        1,
        seed,
        defect_rate=0.0,
        n_orphan_diseases=max(n // 3, 1),
        healthy_share=0.0,
        orphan_share=1.0,
    )
    raw = pl.concat([frame for _, frame in weeks]).with_columns(
        pl.lit("knowledge_cases").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    return validate_records(raw, b"knowledge-cases").valid
