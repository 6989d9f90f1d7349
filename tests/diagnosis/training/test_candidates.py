"""Candidate comparison (diagnosis.training.candidates): balancing inside training folds only, fold planning,
the selection rule, and ONNX export of every family that can be selected."""

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

from diagnosis.features import ONNX_INPUT, FeatureSpec
from diagnosis.training import candidates
from diagnosis.training.balancing import balance
from diagnosis.training.candidates import (
    CLASS_WEIGHT,
    FAMILIES,
    KNOWLEDGE_RANKER,
    SMOTE_BALANCING,
    TABLE_SCHEMA,
    compare_candidates,
    cross_validate_candidate,
    fit_candidate,
    fold_plan,
    select_candidate,
)
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.export import parity, sklearn_head, to_onnx
from diagnosis.training.fitting import train_models

CLASSES = ["J10", "NONE", "ORPHA:558", "E11"]


def _data(n=160, features=8, seed=0, nans=False):
    """Imbalanced classes whose means differ, so every model learns something."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=[0.5, 0.3, 0.12, 0.08])
    X = rng.normal(size=(n, features)) + y[:, None] * 0.8
    X[:, features // 2 :] = X[:, features // 2 :] > 1.0  # binary indicators, like symptoms
    if nans:
        X[rng.random(X.shape) < 0.1] = np.nan
    return X.astype(np.float32), y


class _Recorder(RandomForestClassifier):
    """A forest that remembers the rows it was fitted on and asked to predict."""

    seen: list = []

    def fit(self, X, y, sample_weight=None):
        _Recorder.seen.append(("fit", np.asarray(X).copy()))
        return super().fit(X, y, sample_weight=sample_weight)

    def predict_proba(self, X):
        _Recorder.seen.append(("predict", np.asarray(X).copy()))
        return super().predict_proba(X)


def test_smote_rows_are_made_in_training_folds_and_validation_rows_are_the_original_rows(
    monkeypatch,
):
    X, y = _data()
    monkeypatch.setattr(
        candidates,
        "make_estimator",
        lambda family, seed, params=None, class_weight=False: _Recorder(
            n_estimators=5, random_state=seed
        ),
    )
    _Recorder.seen = []
    result = cross_validate_candidate("random_forest", SMOTE_BALANCING, X, y, CLASSES, seed=3)
    expected = list(StratifiedKFold(3, shuffle=True, random_state=3).split(X, y))
    fits = [x for kind, x in _Recorder.seen if kind == "fit"]
    predicts = [x for kind, x in _Recorder.seen if kind == "predict"]
    assert len(fits) == len(predicts) == result.n_folds == 3
    originals = {row.tobytes() for row in X}
    for (train, valid), fitted, predicted, sizes in zip(expected, fits, predicts, result.fold_rows):
        # validation: exactly the fold's original rows, same count, nothing synthetic
        assert sizes["validation_rows"] == predicted.shape[0] == valid.size
        np.testing.assert_array_equal(predicted.astype(np.float32), X[valid])
        # training: over-sampled up to the largest class, with synthetic rows
        largest = np.bincount(y[train]).max()
        assert fitted.shape[0] == largest * len(CLASSES) > train.size
        synthetic = {row.tobytes() for row in fitted.astype(np.float32)} - originals
        assert synthetic
        assert not synthetic & {row.tobytes() for row in predicted.astype(np.float32)}
    assert sum(r["validation_rows"] for r in result.fold_rows) == len(y)
    assert sum(result.confusion["matrix"], []).count(0) < 16  # a 4x4 matrix over all rows
    assert np.sum(result.confusion["matrix"]) == len(y)


def test_single_row_classes_train_in_every_fold_and_are_never_validated():
    X, y = _data(n=60)
    y[0] = 4  # one record of a fifth class
    k, train_only, splits = fold_plan(y, folds=3, seed=1)
    assert k == 2 and train_only == [4]
    for train, valid in splits:
        assert 0 in train and 0 not in valid
        assert not set(train) & set(valid)
    assert sorted(np.concatenate([v for _, v in splits]).tolist()) == list(range(1, 60))


def test_folds_shrink_to_the_rarest_class():
    y = np.array([0] * 20 + [1] * 20 + [2] * 2)
    k, train_only, splits = fold_plan(y, folds=5, seed=0)
    assert k == 2 and train_only == [] and len(splits) == 2


def _table(rows):
    return pl.DataFrame(
        [{**dict.fromkeys(TABLE_SCHEMA), "n_folds": 3, **r} for r in rows],
        schema=TABLE_SCHEMA,
        orient="row",
    )


def test_selection_takes_the_best_macro_f1_that_reaches_the_orphan_floor():
    table = _table(
        [
            {
                "model": "a",
                "balancing": "none",
                "macro_f1_mean": 0.90,
                "orphan_recall": 0.2,
                "fit_seconds": 1.0,
            },
            {
                "model": "b",
                "balancing": "smote",
                "macro_f1_mean": 0.85,
                "orphan_recall": 0.6,
                "fit_seconds": 3.0,
            },
            {
                "model": "c",
                "balancing": "none",
                "macro_f1_mean": 0.85,
                "orphan_recall": 0.7,
                "fit_seconds": 1.0,
            },
            {
                "model": KNOWLEDGE_RANKER,
                "balancing": "none",
                "macro_f1_mean": None,
                "orphan_recall": 0.99,
                "fit_seconds": 0.0,
            },
        ]
    )
    chosen = select_candidate(table, min_orphan_recall=0.5)
    assert (chosen["model"], chosen["orphan_floor_met"]) == ("c", True)  # tie -> faster fit
    fallback = select_candidate(table, min_orphan_recall=0.995)
    assert (fallback["model"], fallback["orphan_floor_met"]) == ("a", False)
    assert select_candidate(table, min_orphan_recall=0.0)["model"] == "a"


class _StubRanker:
    """Knows only ORPHA:558 and ranks it first when feature-term 'HP:1' is present."""

    diseases = ("ORPHA:999", "ORPHA:558")
    n_diseases = 2
    params = {"weights": {"stub": 1.0}, "temperature": 1.0}

    def score(self, terms):
        return np.array([0.5, 1.0 if "HP:1" in terms else 0.0], dtype=np.float32)

    def disease_index(self, code):
        return self.diseases.index(code)


def test_comparison_table_has_one_row_per_candidate_and_resamples_only_the_top_families():
    X, y = _data(n=120, nans=True)
    symptoms = [["HP:1"] if CLASSES[c] == "ORPHA:558" and i % 2 else [] for i, c in enumerate(y)]
    table = compare_candidates(
        X,
        y,
        CLASSES,
        seed=0,
        folds=3,
        resample_top=1,
        ranker=_StubRanker(),
        symptom_lists=symptoms,
        params={
            "xgboost": {"n_estimators": 5},
            "random_forest": {"n_estimators": 10},
            "mlp": {"max_iter": 30},
        },
    )
    classifiers = table.filter(pl.col("model") != KNOWLEDGE_RANKER)
    assert classifiers.height == len(FAMILIES) * 2 + 2  # none + class weights, then top-1 x 2
    assert classifiers["macro_f1_mean"].min() > 0.2
    assert (classifiers["orphan_rows"] == int((y == 2).sum())).all()
    resampled = classifiers.filter(pl.col("balancing").is_in(["random_over_sampling", "smote"]))
    assert resampled["model"].n_unique() == 1
    ranker = table.filter(pl.col("model") == KNOWLEDGE_RANKER).row(0, named=True)
    assert ranker["macro_f1_mean"] is None and "macro-F1 undefined" in ranker["note"]
    assert ranker["orphan_recall"] == pytest.approx(
        np.mean([bool(s) for s, c in zip(symptoms, y) if c == 2])
    )
    assert select_candidate(table, 0.0)["model"] != KNOWLEDGE_RANKER


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("balancing", [CLASS_WEIGHT, SMOTE_BALANCING])
def test_every_family_exports_to_onnx_without_its_sampler_within_parity(family, balancing):
    X, y = _data(n=200, features=12, nans=True)
    small = {"n_estimators": 10} if family in ("xgboost", "random_forest") else None
    pipeline = fit_candidate(family, balancing, X, y, seed=0, params=small)
    assert "sample" not in pipeline.named_steps
    head = sklearn_head(pipeline, X.shape[1], "probs", "dx__")
    session = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probs"], {ONNX_INPUT: X})
    assert probs.shape == (len(X), len(CLASSES))
    assert np.max(np.abs(probs - pipeline.predict_proba(X))) <= 1e-4


def test_selected_family_trains_the_diagnosis_head_and_the_whole_graph_keeps_parity():
    spec = FeatureSpec(symptoms=tuple(f"HP:{i:07d}" for i in range(6)))
    X, y = _data(n=200, features=spec.n_features, nans=True)
    y_sev = np.random.default_rng(1).integers(0, 5, len(y))
    data = balance(TrainingSet(spec, CLASSES, X, y, y_sev), SMOTE_BALANCING, seed=0)
    model = train_models(data, seed=0, family="logistic_regression")
    assert type(model.diagnosis.steps[-1][1]).__name__ == "LogisticRegression"
    assert model.params["model"] == "logistic_regression" and model.params["balancing"] == "smote"
    assert parity(model, to_onnx(model), X) <= 1e-4
    with pytest.raises(ValueError):
        train_models(data, seed=0, family="svm")


@pytest.mark.parametrize("balancing", ["none", CLASS_WEIGHT, SMOTE_BALANCING])
def test_heads_fitted_side_by_side_are_the_heads_fitted_one_after_the_other(balancing):
    """train_models fits the severity head in a thread beside the diagnosis head, on matrices it
    transforms in place: the heads, and the rows it was given, are those of a fit in sequence."""
    from diagnosis.training.candidates import XGB_PARAMS
    from diagnosis.training.fitting import fit_diagnosis_head, fit_severity_head

    spec = FeatureSpec(symptoms=tuple(f"HP:{i:07d}" for i in range(10)))
    X, y = _data(n=300, features=spec.n_features, nans=True)
    y_sev = np.random.default_rng(2).integers(0, 5, len(y))
    data = balance(TrainingSet(spec, CLASSES, X, y, y_sev), balancing, seed=0)
    rows = data.X.copy()
    params = {**XGB_PARAMS, "n_estimators": 8}
    model = train_models(data, seed=3, params=params, family="logistic_regression")
    diagnosis = fit_diagnosis_head("logistic_regression", data, 3)
    severity = fit_severity_head(data, 3, params)
    assert np.array_equal(data.X, rows, equal_nan=True)  # the caller's rows are left alone
    assert np.array_equal(model.diagnosis.predict_proba(X), diagnosis.predict_proba(X))
    assert np.array_equal(model.severity.predict_proba(X), severity.predict_proba(X))
    assert model.severity.named_steps["model"].get_booster().save_raw("json") == (
        severity.named_steps["model"].get_booster().save_raw("json")
    )
