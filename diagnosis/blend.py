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
    p = np.clip(p, 1e-4, 1 - 1e-4)
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
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


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
    ``probe_probs`` [n, M], ``p_orphan`` [n] and ``scale`` [n]: a disease's probability is
    ``scale · ((1 - alpha) · exp(score - best) / norm + alpha · learned share)``."""

    class_probs: np.ndarray
    disease_probs: np.ndarray
    probe_probs: np.ndarray
    p_orphan: np.ndarray
    scale: np.ndarray
    learned: np.ndarray  # [n, C] the classifier's share of each orphan class it learned

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
        norm = np.asarray(norm, dtype=np.float64)
        p_orphan = orphan_probability(
            gate_features_of_best(classifier_probs, orphan_mask, best, empty_best, unseen_share),
            params,
        )
        orphan_share = classifier_probs[:, orphan_mask].sum(axis=1)
        non_orphan = np.where(orphan_mask, 0.0, classifier_probs)
        scale_common = (1 - p_orphan) / np.maximum(1 - orphan_share, _EPS)
        class_probs = non_orphan * scale_common[:, None]
        learned = (
            np.where(orphan_mask, classifier_probs, 0.0) / np.maximum(orphan_share, _EPS)[:, None]
        )
        mapped = class_to_disease >= 0
        unmapped_orphans = orphan_mask & ~mapped
        # the softmax sums to 1, so the blend's total needs no catalogue row
        total = (1 - params.alpha) + params.alpha * learned[:, orphan_mask].sum(axis=1)
        scale = p_orphan / np.maximum(total, _EPS)

        def ranker(values: np.ndarray) -> np.ndarray:
            shifted = np.asarray(values, dtype=np.float64) - best[:, None]
            return (1 - params.alpha) * (np.exp(shifted) / norm[:, None])

        disease_probs = ranker(scores) * scale[:, None]
        probe_probs = (ranker(probe_scores) + params.alpha * learned[:, mapped]) * scale[:, None]
        class_probs[:, unmapped_orphans] = (
            params.alpha * learned[:, unmapped_orphans] * scale[:, None]
        )
        return cls(class_probs, disease_probs, probe_probs, p_orphan, scale, learned)
