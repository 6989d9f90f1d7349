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


def test_fit_imputer_by_column_blocks_gives_the_statistics_of_a_whole_fit():
    from sklearn.impute import SimpleImputer

    from diagnosis.training.candidates import IMPUTER_BLOCK_COLUMNS, fit_imputer

    rng = np.random.default_rng(3)
    X = (rng.random((501, 3 * IMPUTER_BLOCK_COLUMNS + 7)) < 0.1).astype(np.float32)
    X[:, :5] = rng.normal(60, 20, (501, 5)).astype(np.float32)
    X[rng.random(501) < 0.3, 1] = np.nan
    X[::2, 0] = 0.0  # a real zero (an age of 0) is a value, not a missing one
    X[:, 70] = np.nan  # a column with no value at all
    whole = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    blocks = fit_imputer(SimpleImputer(strategy="median", keep_empty_features=True), X)
    assert np.array_equal(whole.statistics_, blocks.statistics_)
    assert np.array_equal(whole.transform(X), blocks.transform(X), equal_nan=True)
    assert blocks.n_features_in_ == X.shape[1]
