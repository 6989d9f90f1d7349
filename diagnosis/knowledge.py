"""The knowledge side of a deployment: the ranker's index, as the runtime reads it.

A deployment whose manifest names a ``knowledge_file`` ships, next to ``model.onnx``, a small JSON
index (written by assets/deployment.py): the ranker's HPO term vocabulary in ONNX input order, the
ORPHA/OMIM diseases in ONNX output order, the release's alt_id/obsolete map and the empty-query
reference score. The ONNX graph computes the ranker's log-scores; diagnosis/blend.py combines them
with the classifier, exactly as the evaluation that gated the model did.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diagnosis import warning_codes
from schemas.contracts import ContractError, KnowledgeFile, WarningDetail, decode


def age_row(age: float | None, edges: Sequence[float]) -> int:
    """The ranker's age-bin row for an age in years: 0 when unknown, then one row below the first
    edge, one per ``[edge_i, edge_i+1)`` and one past the last edge."""
    if age is None:
        return 0
    age = float(age)
    if not math.isfinite(age):
        return 0
    # np.searchsorted(edges, age, side="right") on the sorted edges, without an array per call
    return 1 + bisect.bisect_right(edges, age)


class KnowledgeLoadError(RuntimeError):
    """The index is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class KnowledgeIndex:
    hpo_release: str
    terms: tuple[str, ...]
    codes: tuple[str, ...]
    names: tuple[str, ...]
    aliases: Mapping[str, str] = field(repr=False)
    empty_best: float = 0.0
    # [D, 5] severity mix of each disease (from its clinical course), or None
    severity: np.ndarray | None = field(default=None, repr=False, compare=False)
    # the ranker's row layout (diagnosis.ranker): absent terms, age bins, sexes
    absent_offset: int = 0
    age_offset: int = 0
    age_edges: tuple[float, ...] = ()
    sex_offset: int = 0
    sexes: tuple[str, ...] = ()
    # isotonic map of the ranker's top probability (x, y), or None
    calibration: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)
    _term_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_term_index", {t: i for i, t in enumerate(self.terms)})

    @classmethod
    def from_bytes(cls, content: bytes, expected_sha256: str | None = None) -> KnowledgeIndex:
        """The index from ``knowledge.json``'s bytes (:class:`schemas.contracts.KnowledgeFile`),
        refused when its SHA-256 differs from ``expected_sha256`` (the manifest's)."""
        if expected_sha256 is not None:
            actual = hashlib.sha256(content).hexdigest()
            if actual != str(expected_sha256).lower():
                raise KnowledgeLoadError(
                    f"sha256 of the knowledge index is {actual}, manifest says {expected_sha256}"
                )
        try:
            data = decode(content, KnowledgeFile, "the knowledge index")
        except ContractError as exc:
            raise KnowledgeLoadError(str(exc)) from None
        return cls(
            hpo_release=data.hpo_release,
            terms=tuple(data.terms),
            codes=tuple(d.code for d in data.diseases),
            names=tuple(d.name for d in data.diseases),
            aliases=dict(data.term_aliases),
            empty_best=float(data.empty_best),
            severity=(
                np.asarray(data.severity_profiles, dtype=np.float64)[
                    np.asarray(data.disease_profiles, dtype=np.int64)
                ]
                if data.severity_profiles and len(data.disease_profiles) == len(data.diseases)
                else None
            ),
            absent_offset=data.absent_offset,
            age_offset=data.age_offset,
            age_edges=tuple(data.age_edges),
            sex_offset=data.sex_offset,
            sexes=tuple(data.sexes),
            calibration=(
                (np.asarray(data.calibration_x), np.asarray(data.calibration_y))
                if data.calibration_x
                else None
            ),
        )

    @classmethod
    def load(cls, path: Path, expected_sha256: str | None) -> KnowledgeIndex:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise KnowledgeLoadError(f"cannot read {path.name}: {exc.strerror}") from None
        return cls.from_bytes(content, expected_sha256)

    def canonical(self, term: str) -> str | None:
        """The current id of ``term`` in this release (alt_ids and obsolete ids mapped)."""
        if term in self._term_index:
            return term
        mapped = self.aliases.get(term)
        return mapped if mapped in self._term_index else None

    def rows(self, patient: Mapping[str, object]) -> list[int]:
        """The rows of the ranker's weight matrix a patient (as the runtime scores it: canonical
        terms, none both present and absent) reads: present terms, excluded terms, the age bin
        and the sex."""
        present = [self._term_index[t] for t in patient.get("symptoms") or ()]
        absent = [
            self.absent_offset + self._term_index[t] for t in patient.get("absent_symptoms") or ()
        ]
        age_bin = age_row(patient.get("age"), self.age_edges)
        sex = patient.get("sex")
        sex_row = self.sexes.index(sex) if sex in self.sexes else 0
        return [*present, *absent, self.age_offset + age_bin, self.sex_offset + sex_row]

    def warnings(
        self, symptoms: Sequence[str], what: str = warning_codes.SYMPTOM
    ) -> list[WarningDetail]:
        """The ids of one request list (``what``: ``symptom`` or ``absent_symptom``) this release
        lacks (ignored) or reads as another term (an alt_id or obsolete id)."""
        notes = []
        for term in symptoms:
            current = self.canonical(term)
            if current is None:
                notes.append(warning_codes.symptom_not_in_release(what, term, self.hpo_release))
            elif current != term:
                notes.append(warning_codes.symptom_old_id(what, term, current))
        return notes
