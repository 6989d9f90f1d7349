"""The balanced training set (diagnosis.training.balancing): model_selection's balancing applied to
the whole training split, and the diagnosis head fitted on it equals the candidate that was
cross-validated (same pipeline, same sampler, same weights; no sampler exported)."""

import numpy as np
import pytest

from diagnosis.features import FeatureSpec
from diagnosis.training.balancing import balance
from diagnosis.training.candidates import (
    CLASS_WEIGHT,
    LOGISTIC_REGRESSION,
    MLP,
    NO_BALANCING,
    RANDOM_FOREST,
    RANDOM_OVER_SAMPLING,
    SMOTE_BALANCING,
    fit_candidate,
)
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.fitting import fit_diagnosis_head

CLASSES = ["J10", "NONE", "ORPHA:558", "E11"]


def _data(n=160, seed=0) -> TrainingSet:
    spec = FeatureSpec(symptoms=("HP:0000001", "HP:0000002", "HP:0000003"))
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=[0.5, 0.3, 0.12, 0.08])
    X = (rng.normal(size=(n, spec.n_features)) + y[:, None] * 0.8).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    return TrainingSet(spec, CLASSES, X, y, rng.integers(0, 5, n))


@pytest.mark.parametrize("balancing", [RANDOM_OVER_SAMPLING, SMOTE_BALANCING])
def test_resampling_makes_every_class_as_large_as_the_largest(balancing):
    data = _data()
    balanced = balance(data, balancing, seed=0)
    before, after = balanced.counts_before(), balanced.counts_after()
    assert before == data.class_counts() and sum(before.values()) == len(data.y_diagnosis)
    assert set(after.values()) == {max(before.values())}
    assert not np.isnan(balanced.X).any()  # imputed with the recorded rows' medians first
    assert balanced.sample_weight is None and balanced.recorded is data


@pytest.mark.parametrize("balancing", [NO_BALANCING, CLASS_WEIGHT])
def test_weighting_and_none_pass_the_recorded_rows_through(balancing):
    data = _data()
    balanced = balance(data, balancing, seed=0)
    assert balanced.X is data.X and balanced.counts_after() == balanced.counts_before()
    weights = balanced.class_weights()
    if balancing == NO_BALANCING:
        assert weights is None
    else:  # n / (k * n_class): every class carries the same total weight
        totals = {c: weights[c] * n for c, n in balanced.counts_before().items()}
        assert np.allclose(list(totals.values()), len(data.y_diagnosis) / len(CLASSES))


@pytest.mark.parametrize(
    "family,balancing",
    [
        (LOGISTIC_REGRESSION, SMOTE_BALANCING),
        (LOGISTIC_REGRESSION, CLASS_WEIGHT),
        (RANDOM_FOREST, RANDOM_OVER_SAMPLING),
        (RANDOM_FOREST, CLASS_WEIGHT),
        (MLP, NO_BALANCING),
    ],
)
def test_the_head_fitted_on_the_balanced_set_is_the_cross_validated_candidate(family, balancing):
    data = _data()
    small = {"n_estimators": 10} if family == RANDOM_FOREST else None
    head = fit_diagnosis_head(family, balance(data, balancing, seed=0), seed=0, params=small)
    candidate = fit_candidate(family, balancing, data.X, data.y_diagnosis, seed=0, params=small)
    assert "sample" not in head.named_steps
    np.testing.assert_allclose(
        head.predict_proba(data.X), candidate.predict_proba(data.X), atol=1e-6
    )
