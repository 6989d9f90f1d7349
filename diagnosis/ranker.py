"""Knowledge ranker: every annotated ORPHA/OMIM disease, ranked from a patient's findings.

No training record is needed: the evidence comes from the HPO release (``phenotype.hpoa`` and
``hp.obo``), so a disease nobody has ever recorded is still rankable. Real published case reports
(:mod:`diagnosis.reference`) fit only a handful of *generic* weights (one per kind of evidence
below, the same for every disease) and the softmax temperature; no disease-specific parameter is
learned from cases. The weights live in ``diagnosis/data/ranker_params.json`` with the
out-of-fold figures that measure them (cross-validation grouped by disease).

Model
-----
For present findings ``P``, excluded findings ``A``, age and sex, the log-score of disease ``d``::

    score[d] = T · ( bias[d] + Σ_{q∈P} Wp[q, d] + Σ_{q∈A} Wa[q, d] + age[bin(age), d] + sex[sex, d] )

with, writing ``F[d, c]`` for the highest annotated frequency among ``d``'s positive annotations at
or below term ``c`` (unspecified frequencies count 0.5; ``F = 0`` when ``c`` is not in ``d``'s
annotation closure) and ``IC(c) = -log(#diseases with F[d, c] > 0 / #diseases)``:

* present findings: ``Wp[q, d] = w_tm·[F>0] + w_icm·IC(q)·[F>0] + w_lf·log F[d, q] + w_notp·NOT[d, q]``
  — a match of the finding or of a more general term, weighted by how informative the finding is
  and how frequent it is in ``d``; ``NOT[d, q]`` is 1 when ``d`` is annotated *not* to have ``q``;
* excluded findings: ``Wa[q, d] = c_absent·log(1 - min(F[d, q], 0.95)) + w_a_not·NOT[d, q]`` —
  the likelihood of not observing a finding ``d`` has with frequency ``F``: always evidence
  *against* a disease that has the finding, never for it (case reports list as absent the
  features of the disease they describe; the ranker is not allowed to learn that reporting bias);
* ``bias[d] = w_b_logn·log(1 + #annotations) + w_b_sumf·Σ frequencies`` (diseases with many
  annotations match more findings by chance);
* age and sex against the release's onset (aspect C) and inheritance (aspect I) annotations:
  younger than the earliest annotated onset; an adult with a disease of antenatal–infantile onset
  only; a woman with an X-linked recessive disease; a man with an X-linked dominant one.

Everything is stored as one sparse matrix ``W`` whose rows are the present findings, then the
excluded findings, then the age bins, then the sexes (:data:`ROW_BLOCKS`); a patient is the list
of its rows, and :mod:`diagnosis.sparse_graph` scores a whole batch of patients in one ONNX call.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from diagnosis import sparse_graph
from diagnosis.hpo import Ontology, disease_phenotypes
from diagnosis.knowledge import age_row as knowledge_age_row

__all__ = [
    "AGE_EDGES",
    "DEFAULT_PARAMS",
    "Evidence",
    "evidence",
    "KnowledgeRanker",
    "ONSET_RANGES",
    "PARAMS_FILE",
    "SEXES",
    "load_params",
]

PARAMS_FILE = Path(__file__).resolve().parent / "data" / "ranker_params.json"
_HP_ID = re.compile(r"^HP:\d{7}$")

DEFAULT_FREQUENCY = 0.5  # an annotation without a frequency
MIN_FREQUENCY = 0.02  # floor for annotated frequencies
ABSENT_CAP = 0.95  # log(1 - min(F, cap)): an obligate finding is strong, not absolute evidence
ONSET_ROOT = "HP:0003674"
XLR, XLD = "HP:0001419", "HP:0001423"
# Onset terms (years, lower and upper); any other onset term inherits the range of its nearest
# listed ancestor, so a later release's new onset terms are read too.
ONSET_RANGES: dict[str, tuple[float, float]] = {
    "HP:0030674": (-1.0, 0.0),  # Antenatal
    "HP:0003577": (0.0, 0.0),  # Congenital
    "HP:0003623": (0.0, 28 / 365),  # Neonatal
    "HP:0003593": (28 / 365, 1.0),  # Infantile
    "HP:0011463": (1.0, 5.0),  # Childhood
    "HP:0003621": (5.0, 15.0),  # Juvenile
    "HP:0410280": (0.0, 15.0),  # Pediatric
    "HP:0003581": (16.0, 120.0),  # Adult
    "HP:0011462": (16.0, 40.0),  # Young adult
    "HP:0025708": (16.0, 19.0),  # Early young adult
    "HP:0025709": (19.0, 25.0),  # Intermediate young adult
    "HP:0025710": (25.0, 40.0),  # Late young adult
    "HP:0003596": (40.0, 60.0),  # Middle age
    "HP:0003584": (60.0, 120.0),  # Late
}
ADULT_AGE = 18.0
# Age bins (years): row 0 = age unknown, then one row per [edge_i, edge_i+1) and one past the last
AGE_EDGES = (0.0, 28 / 365, 1.0, 5.0, 15.0, 16.0, 18.0, 19.0, 25.0, 40.0, 60.0)
N_AGE_ROWS = len(AGE_EDGES) + 2  # unknown, below the first edge, each bin, past the last edge
SEXES = ("unknown", "female", "male")
ROW_BLOCKS = ("present", "absent", "age", "sex")

# Generic weights; replaced by diagnosis/data/ranker_params.json when it is present.
DEFAULT_PARAMS: dict[str, Any] = {
    "weights": {
        "tm": 1.0,
        "icm": 0.5,
        "lf": 0.5,
        "notp": -2.0,
        "c_absent": 1.0,
        "a_not": 0.5,
        "b_logn": -0.5,
        "b_sumf": 0.0,
        "too_young": -1.0,
        "adult_early_only": -1.0,
        "female_xlr": -1.0,
        "male_xld": -0.5,
    },
    "temperature": 1.0,
    "calibration": None,  # isotonic map of the top probability: {"x": [...], "y": [...]}
    "source": "untuned defaults",
}


def load_params(path: Path | None = None) -> dict[str, Any]:
    """The fitted generic weights (``ranker_params.json``), else :data:`DEFAULT_PARAMS`."""
    path = path or PARAMS_FILE
    if not path.exists():
        return json.loads(json.dumps(DEFAULT_PARAMS))
    params = json.loads(path.read_text())
    weights = {**DEFAULT_PARAMS["weights"], **params.get("weights", {})}
    return {**DEFAULT_PARAMS, **params, "weights": weights}


def age_row(age: float | None) -> int:
    """The age-bin row of :data:`AGE_EDGES` (0: unknown); the runtime reads the same bins."""
    return knowledge_age_row(age, AGE_EDGES)


def _onset_ranges(ontology: Ontology) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    if ONSET_ROOT not in ontology:
        return ranges
    for term in ontology.descendants(ONSET_ROOT):
        # the nearest listed ancestor-or-self: the one with the most ancestors of its own
        for up in sorted(ontology.ancestors(term), key=lambda a: -len(ontology.ancestors(a))):
            if up in ONSET_RANGES:
                ranges[term] = ONSET_RANGES[up]
                break
    return ranges


@dataclass
class Evidence:
    """The model's evidence before weighing (:func:`evidence`): per kind, a [terms, D] matrix for
    present and for excluded findings, a [D] vector for the biases, an [age rows, D] and a
    [sexes, D] table. :meth:`KnowledgeRanker.compile` weighs them; a fitting script reads them
    to fit the generic weights."""

    ontology: Ontology
    terms: tuple[str, ...]
    diseases: tuple[str, ...]
    disease_names: tuple[str, ...]
    present: dict[str, Any]
    absent: dict[str, Any]
    bias: dict[str, np.ndarray]
    age: dict[str, np.ndarray]
    sex: dict[str, np.ndarray]
    seconds: float = 0.0


@dataclass
class KnowledgeRanker:
    """The compiled ranker (see the module docstring): one CSR matrix over the row blocks."""

    ontology: Ontology
    diseases: tuple[str, ...]
    disease_names: tuple[str, ...]
    terms: tuple[str, ...]
    row_ptr: np.ndarray  # int64 [R + 1]
    nnz_disease: np.ndarray  # int32 [NNZ]
    nnz_weight: np.ndarray  # float32 [NNZ], temperature applied
    bias: np.ndarray  # float32 [D], temperature applied
    params: dict[str, Any]
    hpo_release: str = ""
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    # per disease, an index into diagnosis.severity.PROFILE_ORDER (set by the knowledge asset)
    disease_profiles: np.ndarray | None = field(default=None, repr=False)
    build_seconds: float = 0.0
    _term_index: dict[str, int] = field(init=False, repr=False)
    _disease_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._term_index = {t: i for i, t in enumerate(self.terms)}
        self._disease_index = {d: i for i, d in enumerate(self.diseases)}

    # -------------------------------------------------------------------------- layout
    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @property
    def n_diseases(self) -> int:
        return len(self.diseases)

    @property
    def nnz(self) -> int:
        return int(self.nnz_weight.shape[0])

    @property
    def absent_offset(self) -> int:
        return self.n_terms

    @property
    def age_offset(self) -> int:
        return 2 * self.n_terms

    @property
    def sex_offset(self) -> int:
        return self.age_offset + N_AGE_ROWS

    @property
    def log_prior(self) -> np.ndarray:
        """Scores of a patient with nothing stated (the blend's empty-query reference)."""
        return self.bias

    def disease_index(self, code: str) -> int:
        return self._disease_index[code]

    # -------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        ontology: Ontology,
        annotations: pl.DataFrame,
        context: pl.DataFrame | None = None,
        universe: Sequence[str] = ("ORPHA", "OMIM"),
        params: Mapping[str, Any] | None = None,
    ) -> KnowledgeRanker:
        """Build from the release's annotations (:func:`evidence`) and the generic weights
        (:func:`load_params` by default). A few seconds for the full release."""
        return cls.compile(evidence(ontology, annotations, context, universe), params)

    @classmethod
    def compile(cls, found: Evidence, params: Mapping[str, Any] | None = None) -> KnowledgeRanker:
        """Weigh the evidence into one matrix ``W`` (temperature applied) and the bias."""
        import scipy.sparse as sp

        started = time.perf_counter()
        p = load_params() if params is None else {**load_params(), **params}
        w = {**DEFAULT_PARAMS["weights"], **p["weights"]}
        temperature = float(p["temperature"])
        n_terms, n_diseases = len(found.terms), len(found.diseases)

        def weighed(parts: Mapping[str, Any], shape: tuple[int, int]) -> sp.csr_matrix:
            total = sp.csr_matrix(shape, dtype=np.float64)
            for name, value in parts.items():
                if w.get(name, 0.0):
                    total = total + w[name] * sp.csr_matrix(value)
            return total

        stacked = sp.vstack(
            [
                weighed(found.present, (n_terms, n_diseases)),
                weighed(found.absent, (n_terms, n_diseases)),
                weighed(found.age, (N_AGE_ROWS, n_diseases)),
                weighed(found.sex, (len(SEXES), n_diseases)),
            ],
            format="csr",
        )
        stacked.data *= temperature
        stacked.eliminate_zeros()
        stacked.sort_indices()
        bias = temperature * sum(w.get(name, 0.0) * value for name, value in found.bias.items())
        calibration = p.get("calibration")
        return cls(
            ontology=found.ontology,
            diseases=found.diseases,
            disease_names=found.disease_names,
            terms=found.terms,
            row_ptr=stacked.indptr.astype(np.int64),
            nnz_disease=stacked.indices.astype(np.int32),
            nnz_weight=stacked.data.astype(np.float32),
            bias=np.asarray(bias, dtype=np.float32) + np.zeros(n_diseases, dtype=np.float32),
            params={"weights": w, "temperature": temperature, "source": p.get("source", "")},
            hpo_release=found.ontology.release,
            calibration=(np.asarray(calibration["x"]), np.asarray(calibration["y"]))
            if calibration
            else None,
            build_seconds=found.seconds + time.perf_counter() - started,
        )

    # -------------------------------------------------------------------------- queries
    def canonical_terms(self, terms: Iterable[str]) -> list[str]:
        """Current ids of the well-formed terms this release knows, first-seen order, once."""
        out: list[str] = []
        for raw in terms:
            text = raw.strip() if isinstance(raw, str) else ""
            if not _HP_ID.match(text):
                continue
            term = self.ontology.canonical(text)
            if term is not None and term in self._term_index and term not in out:
                out.append(term)
        return out

    def query_rows(
        self,
        present: Iterable[str] = (),
        absent: Iterable[str] = (),
        age: float | None = None,
        sex: str | None = None,
    ) -> list[int]:
        """The rows of ``W`` a patient reads (a term both present and absent counts present)."""
        shown = self.canonical_terms(present)
        rows = [self._term_index[t] for t in shown]
        rows += [
            self.absent_offset + self._term_index[t]
            for t in self.canonical_terms(absent)
            if t not in shown
        ]
        rows.append(self.age_offset + age_row(age))
        rows.append(self.sex_offset + (SEXES.index(sex) if sex in SEXES else 0))
        return rows

    def score_rows(self, row_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Log-scores [n, D] (numpy reference of the ONNX graph's scores)."""
        rows = [list(r) for r in row_lists]
        return sparse_graph.score_batch(
            self.row_ptr,
            self.nnz_disease,
            self.nnz_weight,
            self.bias,
            np.fromiter((i for i, r in enumerate(rows) for _ in r), dtype=np.int64),
            np.fromiter((t for r in rows for t in r), dtype=np.int64),
            len(rows),
        )

    # -------------------------------------------------------------------------- contexts
    @property
    def n_contexts(self) -> int:
        return N_AGE_ROWS * len(SEXES)

    def context_rows(self) -> list[tuple[int, int]]:
        """The (age row, sex row) of ``W`` of every context, in context order: context
        ``a * len(SEXES) + s`` is age bin ``a`` and sex ``s``."""
        return [
            (self.age_offset + a, self.sex_offset + s)
            for a in range(N_AGE_ROWS)
            for s in range(len(SEXES))
        ]

    def onnx_feeds(
        self, row_lists: Sequence[Sequence[int]], k: int = 1, probe: Sequence[int] = ()
    ) -> dict[str, np.ndarray]:
        """The graph's inputs for :meth:`query_rows` lists (findings, then the age row and the
        sex row): the findings as queries, the age and sex as the context row."""
        findings = [list(r[:-2]) for r in row_lists]
        contexts = [
            (r[-2] - self.age_offset) * len(SEXES) + (r[-1] - self.sex_offset) for r in row_lists
        ]
        return sparse_graph.encode_queries(findings, contexts, min(k, self.n_diseases), probe)

    def score(
        self,
        present: Iterable[str] = (),
        absent: Iterable[str] = (),
        age: float | None = None,
        sex: str | None = None,
    ) -> np.ndarray:
        """Log-scores [D] of one patient."""
        return self.score_rows([self.query_rows(present, absent, age, sex)])[0]

    def posterior(
        self,
        present: Iterable[str] = (),
        absent: Iterable[str] = (),
        age: float | None = None,
        sex: str | None = None,
    ) -> np.ndarray:
        """Softmax probabilities [D] of one patient (before the served calibration)."""
        scores = self.score(present, absent, age, sex).astype(np.float64)
        scores -= scores.max()
        probs = np.exp(scores)
        return probs / probs.sum()

    def rank(self, present: Iterable[str], top_k: int = 10) -> list[tuple[str, str, float]]:
        """The ``top_k`` most probable diseases as ``(code, name, probability)``."""
        probs = self.posterior(list(present))
        order = np.argsort(-probs, kind="stable")[:top_k]
        return [(self.diseases[i], self.disease_names[i], float(probs[i])) for i in order]

    # -------------------------------------------------------------------------- export
    def to_onnx(self) -> bytes:
        """The batched sparse graph (:mod:`diagnosis.sparse_graph`) over ``W``, with the context
        rows (bias + age row + sex row) precomputed and the diseases' severity profiles (when the
        knowledge asset has set them) for the graph's profile mix."""
        from diagnosis.severity import PROFILE_MATRIX

        profiles = (
            PROFILE_MATRIX[np.asarray(self.disease_profiles, dtype=np.int64)]
            if self.disease_profiles is not None
            else None
        )
        return sparse_graph.to_onnx(
            self.row_ptr,
            self.nnz_disease,
            self.nnz_weight,
            sparse_graph.context_table(
                self.row_ptr, self.nnz_disease, self.nnz_weight, self.bias, self.context_rows()
            ),
            profiles,
            name="knowledge_ranker",
            props={
                "hpo_release": self.hpo_release,
                "n_diseases": str(self.n_diseases),
                "n_terms": str(self.n_terms),
            },
        )


def evidence(
    ontology: Ontology,
    annotations: pl.DataFrame,
    context: pl.DataFrame | None = None,
    universe: Sequence[str] = ("ORPHA", "OMIM"),
) -> Evidence:
    """Every kind of evidence of the model (module docstring), one matrix or table each, from
    phenotypic annotations (``disease_term_frequencies`` or :func:`diagnosis.hpo.load_annotations`
    rows) and the onset/inheritance annotations
    (:func:`diagnosis.hpo.parse_context_annotations`, optional)."""
    import scipy.sparse as sp

    started = time.perf_counter()

    terms = tuple(sorted(ontology.names))
    t_index = {t: i for i, t in enumerate(terms)}
    n_terms = len(terms)
    canon = {t: ontology.canonical(t) for t in annotations["hpo_id"].unique().to_list()}
    rows = (
        disease_phenotypes(annotations.filter(pl.col("database").is_in(list(universe))))
        .with_columns(pl.col("hpo_id").replace_strict(canon, default=None, return_dtype=pl.Utf8))
        .drop_nulls("hpo_id")
        .group_by(["disease_id", "hpo_id"], maintain_order=True)
        .agg(
            pl.col("disease_name").first(),
            pl.col("frequency").mean(),
            pl.col("excluded").all(),
        )
    )
    names = rows.group_by("disease_id").agg(pl.col("disease_name").first()).sort("disease_id")
    diseases = tuple(names["disease_id"].to_list())
    d_index = {d: i for i, d in enumerate(diseases)}
    n_diseases = len(diseases)

    # positive annotations and their closure: F[d, c] = max frequency at or below c
    positive = rows.filter(~pl.col("excluded"))
    pd_ = np.array([d_index[d] for d in positive["disease_id"].to_list()], dtype=np.int64)
    pt = np.array([t_index[t] for t in positive["hpo_id"].to_list()], dtype=np.int64)
    pf = positive["frequency"].fill_null(DEFAULT_FREQUENCY).clip(MIN_FREQUENCY, 1.0).to_numpy()
    n_annotations = np.bincount(pd_, minlength=n_diseases).astype(np.float64)
    sum_frequency = np.bincount(pd_, weights=pf, minlength=n_diseases)
    ancestors = {t: [t_index[a] for a in ontology.ancestors(terms[t])] for t in set(pt.tolist())}
    lengths = np.array([len(ancestors[t]) for t in pt.tolist()], dtype=np.int64)
    closure_d = np.repeat(pd_, lengths)
    closure_f = np.repeat(pf, lengths)
    closure_t = np.concatenate([ancestors[t] for t in pt.tolist()]) if len(pt) else pt
    key = closure_t * n_diseases + closure_d  # (term, disease), term-major
    order = np.lexsort((-closure_f, key))
    key, closure_f = key[order], closure_f[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    key, frequency = key[first], closure_f[first]
    f_term, f_disease = key // n_diseases, key % n_diseases
    per_term = np.bincount(f_term, minlength=n_terms).astype(np.float64)
    ic = -np.log(np.maximum(per_term, 1.0) / max(n_diseases, 1))

    # NOT annotations, closed downwards: NOT[d, q] = 1 for q at or below an excluded term
    excluded = rows.filter(pl.col("excluded"))
    not_t, not_d = [], []
    for disease, term in excluded.select("disease_id", "hpo_id").iter_rows():
        for below in ontology.descendants(term):
            not_t.append(t_index[below])
            not_d.append(d_index[disease])
    not_t_arr = np.asarray(not_t, dtype=np.int64)
    not_d_arr = np.asarray(not_d, dtype=np.int64)

    def matrix(t: np.ndarray, d: np.ndarray, v: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((v, (t, d)), shape=(n_terms, n_diseases), dtype=np.float64)
        m.sum_duplicates()
        return m

    matched = matrix(f_term, f_disease, np.ones(len(f_term)))
    not_matrix = matrix(not_t_arr, not_d_arr, np.ones(len(not_t_arr)))
    not_matrix.data[:] = 1.0
    # a NOT annotation counts only where the disease has nothing at or below the term
    not_absent = not_matrix - not_matrix.multiply(matched)
    not_absent.eliminate_zeros()
    present = {
        "tm": matched,
        "icm": matrix(f_term, f_disease, ic[f_term]),
        "lf": matrix(f_term, f_disease, np.log(frequency)),
        "notp": not_matrix,
    }
    absent = {
        "c_absent": matrix(f_term, f_disease, np.log(1.0 - np.minimum(frequency, ABSENT_CAP))),
        "a_not": not_absent,
    }

    # context: age bins and sexes against onset and inheritance annotations
    onset_low = np.full(n_diseases, np.nan)
    onset_high = np.full(n_diseases, np.nan)
    xlr_only = np.zeros(n_diseases, dtype=bool)
    xld = np.zeros(n_diseases, dtype=bool)
    if context is not None and context.height:
        ranges = _onset_ranges(ontology)
        inheritance: dict[int, set[str]] = {}
        for disease, term, aspect in context.select("disease_id", "hpo_id", "aspect").iter_rows():
            i = d_index.get(disease)
            current = ontology.canonical(term)
            if i is None or current is None:
                continue
            if aspect == "C" and current in ranges:
                low, high = ranges[current]
                onset_low[i] = low if np.isnan(onset_low[i]) else min(onset_low[i], low)
                onset_high[i] = high if np.isnan(onset_high[i]) else max(onset_high[i], high)
            elif aspect == "I":
                inheritance.setdefault(i, set()).add(current)
        for i, modes in inheritance.items():
            xlr_only[i] = modes == {XLR}
            xld[i] = XLD in modes
    edges = np.asarray(AGE_EDGES)
    ages = [None, -0.5, *((edges[:-1] + edges[1:]) / 2).tolist(), edges[-1] + 10.0]
    assert len(ages) == N_AGE_ROWS
    age = {
        "too_young": np.zeros((len(ages), n_diseases)),
        "adult_early_only": np.zeros((len(ages), n_diseases)),
    }
    with np.errstate(invalid="ignore"):
        for r, years in enumerate(ages):
            if years is None:
                continue
            age["too_young"][r] = years < onset_low
            age["adult_early_only"][r] = (years >= ADULT_AGE) & (onset_high <= 1.0)
    sex = {
        "female_xlr": np.zeros((len(SEXES), n_diseases)),
        "male_xld": np.zeros((len(SEXES), n_diseases)),
    }
    sex["female_xlr"][SEXES.index("female")] = xlr_only
    sex["male_xld"][SEXES.index("male")] = xld
    return Evidence(
        ontology=ontology,
        terms=terms,
        diseases=diseases,
        disease_names=tuple(names["disease_name"].to_list()),
        present=present,
        absent=absent,
        bias={"b_logn": np.log1p(n_annotations), "b_sumf": sum_frequency},
        age=age,
        sex=sex,
        seconds=time.perf_counter() - started,
    )
