"""The balancing ``model_selection`` chose, applied to the whole training split: what the diagnosis
head is fitted on.

``model_selection`` compares balancings inside the cross-validation folds
(:mod:`diagnosis.training.candidates`); :func:`balance` applies the winner once to every training
row, exactly as a candidate's pipeline does in ``fit``:

* ``none``: the rows as recorded.
* ``class_weight``: the rows as recorded, with per-row weights ``n / (k * n_class)`` (scikit-learn's
  "balanced"; what ``class_weight="balanced"`` computes inside logistic regression and the random
  forest, and what XGBoost and the MLP receive as ``sample_weight``).
* ``random_over_sampling`` / ``smote``: the median imputer is fitted on the recorded rows (SMOTE
  needs complete rows), then the sampler makes every class as large as the largest, unless that
  would add more than ``max_resampled_rows`` rows: then every class is raised to the floor
  ``max_resampled_rows // classes`` (larger classes keep their rows), so a 100 k-row split never
  becomes millions of synthetic rows. The same cap applies inside the selection's folds. The fitted
  imputer travels with the set: the exported pipeline imputes with the medians of the recorded
  rows, and the sampler is never part of it.

The severity head is not balanced: it trains on the recorded rows (``recorded``).
"""

from dataclasses import dataclass

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.utils.class_weight import compute_sample_weight

from diagnosis.features import FeatureSpec
from diagnosis.training.candidates import (
    BALANCINGS,
    CLASS_WEIGHT,
    MAX_RESAMPLED_ROWS,
    RESAMPLING,
    fit_by_columns,
    make_sampler,
)
from diagnosis.training.dataset import TrainingSet, class_counts


@dataclass
class BalancedTrainingSet:
    """The training split with one balancing applied (see the module docstring)."""

    balancing: str
    spec: FeatureSpec
    classes: list[str]
    X: np.ndarray  # the diagnosis head's rows: recorded, or imputed and resampled
    y: np.ndarray
    sample_weight: np.ndarray | None  # class_weight only
    imputer: SimpleImputer | None  # resampling only: fitted on the recorded rows
    sampler: str | None  # the sampler's class name, resampling only
    recorded: TrainingSet  # the unbalanced split (severity head, overrides, counts before)

    @property
    def resampled(self) -> bool:
        return self.imputer is not None

    def counts_before(self) -> dict[str, int]:
        return self.recorded.class_counts()

    def counts_after(self) -> dict[str, int]:
        return class_counts(self.y, self.classes)

    def class_weights(self) -> dict[str, float] | None:
        """The weight of each class's rows (class_weight only)."""
        if self.sample_weight is None:
            return None
        return {
            self.classes[c]: float(self.sample_weight[np.argmax(self.y == c)])
            for c in np.unique(self.y)
        }


def balance(
    data: TrainingSet,
    balancing: str,
    seed: int,
    max_resampled_rows: int | None = MAX_RESAMPLED_ROWS,
) -> BalancedTrainingSet:
    """``balancing`` applied to every row of ``data`` (the training split); resampling adds at
    most ``max_resampled_rows`` rows (:func:`~diagnosis.training.candidates.resampling_targets`)."""
    if balancing not in BALANCINGS:
        raise ValueError(f"unknown balancing {balancing!r}; expected one of {BALANCINGS}")
    X, y = data.X, data.y_diagnosis
    weights = imputer = sampler = None
    if balancing == CLASS_WEIGHT:
        weights = compute_sample_weight("balanced", y)
    elif balancing in RESAMPLING:
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        sampling = make_sampler(balancing, y, seed, max_resampled_rows)
        X, y = sampling.fit_resample(fit_by_columns(imputer, X).transform(X), y)
        sampler = type(sampling).__name__
    return BalancedTrainingSet(
        balancing=balancing,
        spec=data.spec,
        classes=data.classes,
        X=X,
        y=y,
        sample_weight=weights,
        imputer=imputer,
        sampler=sampler,
        recorded=data,
    )
