"""Feature encoding shared by training (assets/) and serving (serving/).

A patient becomes one float32 row: the vitals in ``VITAL_FEATURES`` order (NaN when missing; the
ONNX graph imputes them), a one-hot of sex, one indicator per symptom of the model's vocabulary,
then one "was not measured" indicator per vital in ``missing_indicators``: a missing vital is
imputed for the arithmetic, but the model also sees that it was missing, so an unmeasured
temperature never reads as a normal one. The vocabulary and orders travel in the deployed manifest, so the API encodes a request
exactly as the training code encoded the records the model learned from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VITAL_FEATURES: tuple[str, ...] = (
    "age",
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
)
SEX_CATEGORIES: tuple[str, ...] = ("female", "male", "other", "unknown")
# Vital signs often not measured at triage.
MEASURED_VITALS: tuple[str, ...] = ("heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")

ONNX_INPUT = "features"
ONNX_DIAGNOSIS_OUTPUT = "diagnosis_probabilities"
ONNX_SEVERITY_OUTPUT = "severity_probabilities"
ONNX_QUERY_INPUT = "query_terms"  # the knowledge ranker's HPO indicator (schemas/ranker.py)
ONNX_RANKER_OUTPUT = "ranker_scores"


@dataclass(frozen=True)
class FeatureSpec:
    """The columns a model reads, in order."""

    symptoms: tuple[str, ...]
    vitals: tuple[str, ...] = VITAL_FEATURES
    sexes: tuple[str, ...] = SEX_CATEGORIES
    missing_indicators: tuple[str, ...] = ()
    _symptom_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_symptom_index", {term: i for i, term in enumerate(self.symptoms)}
        )

    @property
    def n_features(self) -> int:
        return (
            len(self.vitals) + len(self.sexes) + len(self.symptoms) + len(self.missing_indicators)
        )

    @property
    def missing_offset(self) -> int:
        return len(self.vitals) + len(self.sexes) + len(self.symptoms)

    @property
    def names(self) -> list[str]:
        return (
            list(self.vitals)
            + [f"sex={s}" for s in self.sexes]
            + [f"symptom={t}" for t in self.symptoms]
            + [f"missing={v}" for v in self.missing_indicators]
        )

    def knows_symptom(self, term: str) -> bool:
        return term in self._symptom_index

    def to_manifest(self) -> dict[str, list[str]]:
        return {
            "vitals": list(self.vitals),
            "sexes": list(self.sexes),
            "symptoms": list(self.symptoms),
            "missing_indicators": list(self.missing_indicators),
        }

    @classmethod
    def from_manifest(cls, features: Mapping[str, Sequence[str]]) -> FeatureSpec:
        return cls(
            symptoms=tuple(features["symptoms"]),
            vitals=tuple(features.get("vitals", VITAL_FEATURES)),
            sexes=tuple(features.get("sexes", SEX_CATEGORIES)),
            missing_indicators=tuple(features.get("missing_indicators", ())),
        )

    def encode(self, patients: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode patient dicts (API body fields) into a float32 matrix."""
        n_vitals, n_sexes = len(self.vitals), len(self.sexes)
        out = np.zeros((len(patients), self.n_features), dtype=np.float32)
        sex_offset = n_vitals
        symptom_offset = n_vitals + n_sexes
        unknown_sex = self.sexes.index("unknown") if "unknown" in self.sexes else None
        sex_index = {s: i for i, s in enumerate(self.sexes)}
        for row, patient in enumerate(patients):
            for col, name in enumerate(self.vitals):
                value = patient.get(name)
                out[row, col] = np.nan if value is None else float(value)
            sex = sex_index.get(patient.get("sex") or "unknown", unknown_sex)
            if sex is not None:
                out[row, sex_offset + sex] = 1.0
            for term in patient.get("symptoms") or ():
                col = self._symptom_index.get(term)
                if col is not None:
                    out[row, symptom_offset + col] = 1.0
        self._mark_missing(out)
        return out

    def _mark_missing(self, out: np.ndarray) -> None:
        """Fill the "not measured" indicators from the vitals' NaNs."""
        offset = self.missing_offset
        for i, name in enumerate(self.missing_indicators):
            out[:, offset + i] = np.isnan(out[:, self.vitals.index(name)])

    def encode_columns(
        self,
        vitals: Mapping[str, np.ndarray],
        sexes: Sequence[str | None],
        symptom_lists: Iterable[Sequence[str] | None],
    ) -> np.ndarray:
        """Vectorised encoding of a table (training side): columns instead of dicts."""
        sexes = list(sexes)
        n = len(sexes)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        for col, name in enumerate(self.vitals):
            out[:, col] = np.asarray(vitals[name], dtype=np.float64)
        sex_index = {s: i for i, s in enumerate(self.sexes)}
        unknown_sex = sex_index.get("unknown")
        for row, sex in enumerate(sexes):
            idx = sex_index.get(sex or "unknown", unknown_sex)
            if idx is not None:
                out[row, len(self.vitals) + idx] = 1.0
        symptom_offset = len(self.vitals) + len(self.sexes)
        for row, terms in enumerate(symptom_lists):
            for term in terms or ():
                col = self._symptom_index.get(term)
                if col is not None:
                    out[row, symptom_offset + col] = 1.0
        self._mark_missing(out)
        return out
