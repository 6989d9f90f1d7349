"""Issue 17: evaluation and the ONNX parity check hold a bounded number of rows at once."""

from collections import Counter

import numpy as np

from diagnosis.runtime import batches
from diagnosis.training.export import parity_sample


def test_batches_cover_every_row_once_in_order():
    for n in (0, 1, 499, 500, 501, 1234):
        covered = [i for s in batches(n, 500) for i in range(n)[s]]
        assert covered == list(range(n))
        assert all(s.stop - s.start <= 500 for s in batches(n, 500))


def test_parity_sample_keeps_every_row_of_a_small_split():
    diagnoses = ["A"] * 30 + ["B"] * 3
    assert parity_sample(diagnoses, 100, seed=7).tolist() == list(range(33))


def test_parity_sample_is_bounded_stratified_and_keeps_every_class():
    rng = np.random.default_rng(0)
    diagnoses = rng.choice(["A", "B", "C"], size=20_000, p=[0.7, 0.29, 0.01]).tolist()
    diagnoses += ["RARE"]  # one row: still checked
    picked = parity_sample(diagnoses, 2_000, seed=7)
    assert len(picked) <= 2_000 + 4  # at most one extra row per class from rounding
    assert len(set(picked.tolist())) == len(picked) and np.all(np.diff(picked) > 0)
    counts = Counter(diagnoses[i] for i in picked)
    assert set(counts) == {"A", "B", "C", "RARE"}
    full = Counter(diagnoses)
    for code in ("A", "B", "C"):
        assert abs(counts[code] / len(picked) - full[code] / len(diagnoses)) < 0.01
    assert parity_sample(diagnoses, 2_000, seed=7).tolist() == picked.tolist()  # seeded


def test_fit_by_columns_gives_the_statistics_of_a_whole_fit():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    from diagnosis.training.candidates import BLOCK_COLUMNS, fit_by_columns

    rng = np.random.default_rng(3)
    X = (rng.random((501, 3 * BLOCK_COLUMNS + 7)) < 0.1).astype(np.float32)
    X[:, :5] = rng.normal(60, 20, (501, 5)).astype(np.float32)
    X[rng.random(501) < 0.3, 1] = np.nan
    X[::2, 0] = 0.0  # a real zero (an age of 0) is a value, not a missing one
    X[:, 70] = np.nan  # a column with no value at all
    whole = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    blocks = fit_by_columns(SimpleImputer(strategy="median", keep_empty_features=True), X)
    assert np.array_equal(whole.statistics_, blocks.statistics_)
    assert np.array_equal(whole.transform(X), blocks.transform(X), equal_nan=True)
    assert blocks.n_features_in_ == X.shape[1]

    imputed = whole.transform(X)
    # without a missing value (one sample count) and with some (a count per column)
    for matrix in (imputed, X):
        scaler = StandardScaler().fit(matrix)
        by_blocks = fit_by_columns(StandardScaler(), matrix)
        for name in ("mean_", "var_", "scale_", "n_samples_seen_"):
            assert np.array_equal(getattr(scaler, name), getattr(by_blocks, name), equal_nan=True)
            assert np.shape(getattr(scaler, name)) == np.shape(getattr(by_blocks, name))
        assert np.array_equal(scaler.transform(matrix), by_blocks.transform(matrix), equal_nan=True)


def test_fit_pipeline_in_place_fits_what_a_pipeline_fit_fits_and_leaves_copying_steps():
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from diagnosis.training.candidates import BLOCK_COLUMNS, fit_pipeline

    rng = np.random.default_rng(5)
    X = (rng.random((400, 2 * BLOCK_COLUMNS + 3)) < 0.2).astype(np.float32)
    X[:, 0] = rng.normal(37, 1, 400).astype(np.float32)
    X[rng.random(400) < 0.2, 0] = np.nan
    y = (X[:, 1] + X[:, 2] + rng.random(400) > 1).astype(int)
    weights = rng.random(400) + 0.5
    template = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=300)),
        ]
    )
    reference = clone(template).fit(X, y, model__sample_weight=weights)
    consumed = X.copy()
    fitted = fit_pipeline(clone(template), consumed, y, consume=True, model__sample_weight=weights)
    assert np.array_equal(reference.named_steps["model"].coef_, fitted.named_steps["model"].coef_)
    assert np.array_equal(reference.predict_proba(X), fitted.predict_proba(X))
    assert not np.array_equal(consumed, X, equal_nan=True)  # overwritten, as asked
    # the fitted steps copy again: predicting leaves the caller's rows alone
    assert all(step.copy for name, step in fitted.steps if name != "model")
    before = X.copy()
    fitted.predict_proba(X)
    assert np.array_equal(before, X, equal_nan=True)
