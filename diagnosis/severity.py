"""Severity coherent with the differential.

The hospital's scale has five categories (``not_ill``, ``mild``, ``acute``, ``chronic``,
``terminal``). A severity computed apart from the differential can contradict it ("not ill" for a
patient whose differential is nearly all disease, "terminal" 9 % for influenza). Here severity is
what the differential implies:

    P(not ill | x) = Σ_e P(e | x) · profile_e(not ill)      (= P(no disease): only NONE has it)
    P(s | x) ∝ Σ_e P(e | x) · profile_e(s) · (head(s | x) / prior(s))^β   for the ill categories s,
               scaled to share the rest of the mass

* ``P(e | x)`` is the served differential (every entry: NONE, the common conditions, the learned
  orphan classes and every ORPHA/OMIM disease of the ranker);
* ``profile_e`` is the severity mix of entry ``e``: for the classes the classifier learned, the mix
  of their training records (add-one smoothed over the categories the class was seen with, and
  ``not_ill`` only for the healthy class); for the ORPHA/OMIM diseases of the ranker, a profile from
  the release's clinical-course annotations (:func:`knowledge_profiles`) — mortality terms such as
  *Death in infancy* make ``terminal`` likely, a progressive course ``chronic``, an acute course
  ``acute`` — since no hospital record of them exists;
* the severity head (learned from vitals, age and symptoms) sharpens the ill categories: a
  pneumonia with a high heart rate is more likely acute than mild. ``β`` (0 ≤ β ≤ 1) weighs it.

So ``not_ill`` is at most the probability of NONE, and a disease never gets a category its
records or annotations never showed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from schemas.clinical import SEVERITIES

NOT_ILL, MILD, ACUTE, CHRONIC, TERMINAL = SEVERITIES
_I = {label: i for i, label in enumerate(SEVERITIES)}
assert _I[NOT_ILL] == 0  # severity_of_mix slices the ill categories as [1:]

# Release terms (aspect C of phenotype.hpoa) and the severity mix they imply. Hand-set clinical
# reading of the term, not fitted: mortality -> terminal; course -> chronic/acute.
MORTALITY_TERMS = {
    "HP:0003826",  # Stillbirth
    "HP:0005268",  # Miscarriage
    "HP:0003811",  # Neonatal death
    "HP:0001522",  # Death in infancy
    "HP:0003819",  # Death in childhood
    "HP:0011421",  # Death in adolescence
    "HP:0100613",  # Death in early adulthood
}
RAPIDLY_PROGRESSIVE = "HP:0003678"
PROGRESSIVE_TERMS = {"HP:0003676", "HP:0003677"}  # Progressive, Slowly progressive
NONPROGRESSIVE = "HP:0003680"
ACUTE_COURSE = {"HP:0011009", "HP:0025303"}  # Acute, Episodic

PROFILES: dict[str, dict[str, float]] = {
    "mortality": {TERMINAL: 0.5, CHRONIC: 0.4, ACUTE: 0.1},
    "rapidly_progressive": {TERMINAL: 0.3, CHRONIC: 0.5, ACUTE: 0.2},
    "progressive": {CHRONIC: 0.85, TERMINAL: 0.05, ACUTE: 0.05, MILD: 0.05},
    "acute_course": {ACUTE: 0.6, CHRONIC: 0.3, MILD: 0.1},
    "nonprogressive": {CHRONIC: 0.7, MILD: 0.3},
    # no course annotated: a rare disease seen at a hospital is mostly a chronic condition
    "unannotated": {CHRONIC: 0.7, MILD: 0.15, ACUTE: 0.1, TERMINAL: 0.05},
}
PROFILE_ORDER = tuple(PROFILES)  # the index stored per disease in the knowledge file


def profile_vector(name: str) -> np.ndarray:
    vector = np.zeros(len(SEVERITIES))
    for label, p in PROFILES[name].items():
        vector[_I[label]] = p
    return vector / vector.sum()


PROFILE_MATRIX = np.stack([profile_vector(name) for name in PROFILE_ORDER])  # [P, 5]


def course_profile(terms: set[str]) -> str:
    """The profile name of a disease from its clinical-course terms (strongest evidence first)."""
    if terms & MORTALITY_TERMS:
        return "mortality"
    if RAPIDLY_PROGRESSIVE in terms:
        return "rapidly_progressive"
    if terms & PROGRESSIVE_TERMS:
        return "progressive"
    if terms & ACUTE_COURSE:
        return "acute_course"
    if NONPROGRESSIVE in terms:
        return "nonprogressive"
    return "unannotated"


def knowledge_profiles(course: pl.DataFrame, diseases: Sequence[str]) -> list[int]:
    """Per disease (in ``diseases`` order), the index into :data:`PROFILE_ORDER` from its
    clinical-course annotations (the aspect ``C`` rows of
    :func:`diagnosis.hpo.parse_context_annotations`)."""
    by_disease: dict[str, set[str]] = {}
    for disease, term in course.select("disease_id", "hpo_id").iter_rows():
        by_disease.setdefault(disease, set()).add(term)
    return [PROFILE_ORDER.index(course_profile(by_disease.get(d, set()))) for d in diseases]


def class_profiles(
    classes: Sequence[str], diagnoses: Sequence[str], severities: Sequence[str]
) -> np.ndarray:
    """[C, 5] severity mix of each learned class in its training records, add-one smoothed over
    the categories the class was seen with (a class never seen ``not_ill`` gets 0 there)."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(SEVERITIES)))
    for code, severity in zip(diagnoses, severities):
        i = index.get(code)
        if i is not None and severity in _I:
            counts[i, _I[severity]] += 1
    seen = counts > 0
    smoothed = np.where(seen, counts + 1.0, 0.0)
    empty = smoothed.sum(axis=1) == 0
    smoothed[empty] = profile_vector("unannotated")  # a class without records (not expected)
    return smoothed / smoothed.sum(axis=1, keepdims=True)


def coherent_severity(
    entry_probabilities: np.ndarray,
    profiles: np.ndarray,
    head: np.ndarray,
    head_prior: np.ndarray,
    beta: float,
) -> np.ndarray:
    """[n, 5]: the differential's severity mix ``entry_probabilities [n, E] @ profiles [E, 5]``.
    ``not_ill`` keeps exactly the mass the mix gives it (only the healthy class carries it, so it
    equals the probability of no disease); the rest is shared among the ill categories in
    proportion to the mix times the severity head's likelihood ratio ``(head / prior) ** beta``."""
    return severity_of_mix(entry_probabilities @ profiles, head, head_prior, beta)


def severity_of_mix(
    mix: np.ndarray, head: np.ndarray, head_prior: np.ndarray, beta: float
) -> np.ndarray:
    """:func:`coherent_severity` from the differential's severity mix [n, 5] (the runtime sums
    the catalogue's part in the ONNX graph)."""
    ratio = np.minimum(np.maximum(head, 1e-6), 1.0) / np.minimum(
        np.maximum(np.asarray(head_prior, dtype=np.float64), 1e-6), 1.0
    )
    ill = slice(1, None)  # every category but not_ill, the first
    weighted = mix[:, ill] * ratio[:, ill] ** beta
    total = weighted.sum(axis=1, keepdims=True)
    ill_mass = mix[:, ill].sum(axis=1, keepdims=True)
    out = mix.copy()
    out[:, ill] = np.where(total > 0, weighted / np.maximum(total, 1e-12) * ill_mass, mix[:, ill])
    return out


def incoherent(severity_label: str, healthy_probability: float) -> bool:
    """An answer contradicts itself when it says ``not_ill`` while the differential gives disease
    at least half the mass, or names an illness while NONE has at least half."""
    if severity_label == NOT_ILL:
        return healthy_probability < 0.5
    return healthy_probability >= 0.5
