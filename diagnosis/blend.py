"""How the learned classifier and the knowledge ranker make one differential.

The classifier (learned from the hospital's records) knows the common conditions, NONE, the
severity and the few orphan diseases with enough records. The knowledge ranker (schemas/ranker.py)
ranks every ORPHA/OMIM disease of the HPO annotations from the symptoms alone. They are combined in
two steps, the same in evaluation and in serving: both score through :mod:`diagnosis.runtime`:

1. **Is it rare?** ``orphan_probability = sigmoid(w · x + b)`` with three features:
   the classifier's own orphan share (as a logit), the ranker's evidence (its best log-score minus
   the best log-score of an empty query) and the share of the patient's symptoms the classifier
   never saw in training (where the classifier cannot know, the ranker should speak). ``w, b`` are
   fitted by logistic regression on held-out records plus rare cases simulated from the
   annotations, and logged with the model.
2. **Which disease?** Non-orphan classes keep the classifier's distribution rescaled to
   ``1 - orphan_probability``; every orphan disease gets ``orphan_probability`` times a mixture of
   the ranker's posterior and the classifier's share for the orphan classes it learned
   (weight ``alpha``, chosen on held-out data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from schemas.contracts import BlendSpec

GATE_FEATURES = ("orphan_share_logit", "ranker_evidence", "unseen_symptom_share")
_EPS = 1e-6


@dataclass(frozen=True)
class BlendParams:
    coef: tuple[float, float, float]
    intercept: float
    alpha: float

    def to_dict(self) -> dict:
        return {**asdict(self), "features": list(GATE_FEATURES)}

    def to_spec(self) -> BlendSpec:
        """As the manifest stores it (:class:`schemas.contracts.BlendSpec`)."""
        return BlendSpec(
            coef=list(self.coef),
            intercept=self.intercept,
            alpha=self.alpha,
            features=list(GATE_FEATURES),
        )

    @classmethod
    def from_spec(cls, spec: BlendSpec) -> BlendParams:
        return cls(tuple(float(c) for c in spec.coef), float(spec.intercept), float(spec.alpha))


def _logit(p: np.ndarray) -> np.ndarray:
    # Clipped at 1e-4: below that the classifier only says "never seen", not "how unlikely".
    p = np.minimum(np.maximum(p, 1e-4), 1 - 1e-4)
    return np.log(p / (1 - p))


def gate_features(
    classifier_probs: np.ndarray,
    orphan_mask: np.ndarray,
    ranker_scores: np.ndarray,
    empty_best: float,
    unseen_share: np.ndarray,
) -> np.ndarray:
    """The three gate features for n patients: ``classifier_probs`` [n, C], ``ranker_scores``
    [n, D], ``unseen_share`` [n]. Returns [n, 3]."""
    return gate_features_of_best(
        classifier_probs, orphan_mask, ranker_scores.max(axis=1), empty_best, unseen_share
    )


def gate_features_of_best(
    classifier_probs: np.ndarray,
    orphan_mask: np.ndarray,
    best_score: np.ndarray,
    empty_best: float,
    unseen_share: np.ndarray,
) -> np.ndarray:
    """:func:`gate_features` from each row's best ranker log-score [n] (all the gate reads of
    the ranker)."""
    orphan_share = classifier_probs[:, orphan_mask].sum(axis=1)
    evidence = np.asarray(best_score, dtype=np.float64) - empty_best
    return np.column_stack([_logit(orphan_share), evidence, unseen_share]).astype(np.float64)


def orphan_probability(features: np.ndarray, params: BlendParams) -> np.ndarray:
    # a row's sum of products, not a matrix product: BLAS rounds a 1-row product differently
    # from a batch's, and a patient must get the same answer alone as in a batch
    z = (features * np.asarray(params.coef, dtype=np.float64)).sum(axis=1) + params.intercept
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -50.0), 50.0)))


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def calibrate(
    posterior: np.ndarray, calibration: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """Remap each row's top probability through the isotonic curve ``(x, y)`` fitted on real
    cases (:mod:`diagnosis.ranker`) and rescale the other entries so the row still sums to 1;
    the ranking is unchanged. ``None``: the posterior as it is."""
    if calibration is None:
        return posterior
    x, y = calibration
    rows = np.arange(len(posterior))
    top = posterior.argmax(axis=1)
    p_top = posterior[rows, top]
    second = np.partition(posterior, -2, axis=1)[:, -2] if posterior.shape[1] > 1 else 0 * p_top
    # never below the level at which the rescaled runner-up would overtake it (ranking kept)
    floor = second / np.maximum(1.0 - p_top + second, 1e-12)
    new_top = np.maximum(np.interp(p_top, x, y), floor)
    rest = np.where(p_top < 1.0, (1.0 - new_top) / np.maximum(1.0 - p_top, 1e-12), 0.0)
    out = posterior * rest[:, None]
    out[rows, top] = new_top
    return out


def blend(
    classifier_probs: np.ndarray,
    orphan_mask: np.ndarray,
    class_to_disease: np.ndarray,
    ranker_scores: np.ndarray,
    empty_best: float,
    unseen_share: np.ndarray,
    params: BlendParams,
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine n patients' outputs.

    ``class_to_disease`` [C] maps each classifier class to its index in the ranker's diseases
    (-1 when it has none). Returns ``(class_probs [n, C], disease_probs [n, D], p_orphan [n])``:
    class_probs holds the non-orphan classes (orphan classes present in the ranker are 0 there,
    their mass moved into disease_probs; orphan classes absent from the ranker keep theirs), and
    the two together sum to 1 per patient.
    """
    p_orphan = orphan_probability(
        gate_features(classifier_probs, orphan_mask, ranker_scores, empty_best, unseen_share),
        params,
    )
    orphan_share = classifier_probs[:, orphan_mask].sum(axis=1)
    non_orphan = np.where(orphan_mask, 0.0, classifier_probs)
    scale_common = (1 - p_orphan) / np.maximum(1 - orphan_share, _EPS)
    class_probs = non_orphan * scale_common[:, None]

    learned = np.where(orphan_mask, classifier_probs, 0.0) / np.maximum(orphan_share, _EPS)[:, None]
    ranker = calibrate(softmax(ranker_scores.astype(np.float64)), calibration)
    disease_probs = (1 - params.alpha) * ranker
    mapped = class_to_disease >= 0
    if mapped.any():
        np.add.at(
            disease_probs,
            (slice(None), class_to_disease[mapped]),
            params.alpha * learned[:, mapped],
        )
    unmapped_orphans = orphan_mask & ~mapped
    class_probs[:, unmapped_orphans] = params.alpha * learned[:, unmapped_orphans]
    total = disease_probs.sum(axis=1) + class_probs[:, unmapped_orphans].sum(axis=1)
    disease_probs *= (p_orphan / np.maximum(total, _EPS))[:, None]
    class_probs[:, unmapped_orphans] *= (p_orphan / np.maximum(total, _EPS))[:, None]
    return class_probs, disease_probs, p_orphan


@dataclass(frozen=True)
class CandidateBlend:
    """:func:`blend` for the entries that can reach a top-k, without a row over the catalogue.

    Per row, from the graph (:mod:`diagnosis.sparse_graph`): the best log-score ``best`` [n], the
    softmax denominator ``norm`` [n] (``Σ_d exp(score_d - best)``), the log-scores ``scores``
    [n, Q] of some diseases no classifier class maps to, and ``probe_scores`` [n, M] of the
    diseases the mapped classes point to (in the order of ``np.flatnonzero(class_to_disease >=
    0)``). The result is what :func:`blend` gives those entries, to float rounding: ``class_probs``
    [n, C] (mapped orphan classes 0, their mass on their disease), ``disease_probs`` [n, Q],
    ``probe_probs`` [n, M], ``p_orphan`` [n]; a disease's probability is ``ranker_weight ·
    exp(score - best) + mapped_weight · (its class's classifier probability)``, and
    ``class_weights`` [n, C] is each class's share of the differential once its mapped mass is
    moved (what the severity mix weighs the classes' profiles by).

    A handful of vectorised operations on [n, C + Q + M] values: the same arithmetic for a row
    alone as in a batch (no matrix product, whose rounding depends on the number of rows)."""

    class_probs: np.ndarray
    disease_probs: np.ndarray
    probe_probs: np.ndarray
    p_orphan: np.ndarray
    ranker_weight: np.ndarray  # [n]: P(d) = ranker_weight · exp(score_d - best) for unmapped d
    class_weights: np.ndarray  # [n, C]: class_probs plus, on mapped classes, their moved mass

    @classmethod
    def of(
        cls,
        classifier_probs: np.ndarray,
        orphan_mask: np.ndarray,
        class_to_disease: np.ndarray,
        best: np.ndarray,
        norm: np.ndarray,
        scores: np.ndarray,
        probe_scores: np.ndarray,
        empty_best: float,
        unseen_share: np.ndarray,
        params: BlendParams,
    ) -> CandidateBlend:
        best = np.asarray(best, dtype=np.float64)
        alpha = params.alpha
        orphan_share = (classifier_probs * orphan_mask).sum(axis=1)
        # np.column_stack's values, without its per-column reshapes
        features = np.empty((len(best), 3))
        features[:, 0] = _logit(orphan_share)
        np.subtract(best, empty_best, out=features[:, 1])
        features[:, 2] = unseen_share
        p_orphan = orphan_probability(features, params)
        inverse = 1.0 / np.maximum(orphan_share, _EPS)
        # the softmax sums to 1 and the learned shares to orphan_share / max(orphan_share, eps)
        total = (1 - alpha) + alpha * orphan_share * inverse
        scale = p_orphan / np.maximum(total, _EPS)
        learned = alpha * scale * inverse  # [n]: a learned orphan class's weight
        mapped = class_to_disease >= 0
        common = (1 - p_orphan) / np.maximum(1 - orphan_share, _EPS)
        # per class: common classes scaled to 1 - p_orphan, unmapped orphans their learned share
        weights = np.where(orphan_mask, learned[:, None], common[:, None])
        class_weights = classifier_probs * weights
        class_probs = np.where(mapped, 0.0, class_weights)
        ranker_weight = (1 - alpha) * scale / np.asarray(norm, dtype=np.float64)
        disease_probs = np.exp(np.asarray(scores, dtype=np.float64) - best[:, None])
        disease_probs *= ranker_weight[:, None]
        probe_probs = np.exp(np.asarray(probe_scores, dtype=np.float64) - best[:, None])
        probe_probs = probe_probs * ranker_weight[:, None] + class_weights[:, mapped]
        return cls(class_probs, disease_probs, probe_probs, p_orphan, ranker_weight, class_weights)
