"""Real published cases: the yardstick of the differential on real patients.

``diagnosis/data/reference_cases.json`` holds 3,675 published case reports of 276 OMIM diseases
(GA4GH phenopacket-store, BSD 3-Clause; see ``diagnosis/data/README.md``). This module reads them,
canonicalises their HPO ids against the release in use, turns each into the request body a
clinician would send, and measures a ranking: top-1/3/10 and mean reciprocal rank of the true
disease among the OMIM entries, and the calibration of the top candidate's probability, for all
cases and for cited and uncited cases apart (a cited case's publication was a source of the
disease's annotations, so it is easy for any annotation-based ranker).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from diagnosis.runtime import BATCH_ROWS, batches

DATA_DIR = Path(__file__).resolve().parent / "data"
REFERENCE_CASES_FILE = DATA_DIR / "reference_cases.json"
REFERENCE_SOURCE = "GA4GH phenopacket-store b694d17 (BSD 3-Clause), development half"
GROUPS = ("all", "cited", "uncited")
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class ReferenceCase:
    id: str
    symptoms: tuple[str, ...]
    absent: tuple[str, ...]
    truth: str
    age: float | None
    sex: str
    cited: bool

    def patient(self, *, with_absent: bool = True) -> dict[str, Any]:
        """The case as an API request body (age in years, sex, present and excluded terms)."""
        body: dict[str, Any] = {
            "age": self.age,
            "sex": self.sex if self.sex in ("female", "male") else "unknown",
            "symptoms": list(self.symptoms),
        }
        if with_absent and self.absent:
            body["absent_symptoms"] = [t for t in self.absent if t not in self.symptoms]
        return body


def load_reference_cases(path: Path | None = None) -> list[ReferenceCase]:
    data = json.loads((path or REFERENCE_CASES_FILE).read_bytes())
    return [
        ReferenceCase(
            id=str(c["id"]),
            symptoms=tuple(c["symptoms"]),
            absent=tuple(c.get("absent") or ()),
            truth=str(c["truth"]),
            age=None if c.get("age") is None else float(c["age"]),
            sex=str(c.get("sex") or "unknown"),
            cited=bool(c["cited"]),
        )
        for c in data
    ]


@dataclass(frozen=True)
class Canonicalised:
    cases: list[ReferenceCase]
    terms_mapped: int  # old ids read as their current term
    terms_dropped: int  # ids the release does not know
    cases_dropped: int  # no present term left


def canonicalise(cases: Sequence[ReferenceCase], canonical) -> Canonicalised:
    """Read every HPO id as the release in use does (``canonical(term) -> current id or None``):
    old ids are mapped, unknown ids dropped, repeats counted once; cases left with no present term
    are dropped."""
    mapped = dropped = 0
    kept: list[ReferenceCase] = []

    def read(terms: Sequence[str]) -> tuple[str, ...]:
        nonlocal mapped, dropped
        out: list[str] = []
        for term in terms:
            current = canonical(term)
            if current is None:
                dropped += 1
                continue
            if current != term:
                mapped += 1
            if current not in out:
                out.append(current)
        return tuple(out)

    for case in cases:
        symptoms = read(case.symptoms)
        absent = tuple(t for t in read(case.absent) if t not in symptoms)
        if symptoms:
            kept.append(replace(case, symptoms=symptoms, absent=absent))
    return Canonicalised(kept, mapped, dropped, len(cases) - len(kept))


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Standard ECE over equal-width bins: Σ_b (n_b / n) |accuracy_b - mean confidence_b|."""
    n = np.asarray(confidence).size
    if n == 0:
        return 0.0
    return float(
        sum(
            b["cases"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidence, correct, bins)
        )
    )


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Per equal-width bin: cases, mean confidence, accuracy (the reliability diagram's points)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "cases": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else 0.0,
                "accuracy": float(correct[mask].mean()) if mask.any() else 0.0,
            }
        )
    return out


@dataclass(frozen=True)
class Ranks:
    """Per case: the rank of the true disease among the scored entries (1 = first; ties count
    against it), the top entry's probability and whether it is the truth."""

    rank: np.ndarray
    top_probability: np.ndarray
    top_correct: np.ndarray
    orphan: np.ndarray | None = None  # the served orphan probability, when the scorer gives one


def rank_truth(probabilities: np.ndarray, codes: Sequence[str], truths: Sequence[str]) -> Ranks:
    """Ranks of ``truths`` in rows of ``probabilities`` [n, E] over ``codes`` [E]: 1 + the entries
    scored higher + the tied entries listed before it (a deterministic tie-break by catalogue
    order, as the baselines of the development set's README count). A truth that is not among the
    codes gets rank E + 1."""
    index = {code: i for i, code in enumerate(codes)}
    n, e = probabilities.shape
    ranks = np.full(n, e + 1, dtype=np.int64)
    for row, truth in enumerate(truths):
        j = index.get(truth)
        if j is not None:
            p = probabilities[row]
            ranks[row] = 1 + int((p > p[j]).sum()) + int((p[:j] == p[j]).sum())
    best = probabilities.argmax(axis=1)
    top_probability = probabilities[np.arange(n), best]
    top_correct = np.array([codes[b] == t for b, t in zip(best, truths)])
    return Ranks(ranks, top_probability, top_correct)


def summarise(ranks: Ranks, cited: Sequence[bool]) -> dict[str, dict[str, float]]:
    """top-1/3/10, MRR, ECE of the top candidate and its mean probability, per group; with the
    served orphan probability, its mean and the share of cases told below one half."""
    cited_arr = np.asarray(cited, dtype=bool)
    out: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        mask = (
            np.ones_like(cited_arr)
            if group == "all"
            else cited_arr
            if group == "cited"
            else ~cited_arr
        )
        r = ranks.rank[mask]
        if r.size == 0:
            continue
        out[group] = {
            "cases": int(r.size),
            "top1": float((r <= 1).mean()),
            "top3": float((r <= 3).mean()),
            "top10": float((r <= 10).mean()),
            "mrr": float((1.0 / r).mean()),
            "ece": expected_calibration_error(ranks.top_probability[mask], ranks.top_correct[mask]),
            "mean_top_probability": float(ranks.top_probability[mask].mean()),
            "top_accuracy": float(ranks.top_correct[mask].mean()),
        }
        if ranks.orphan is not None:
            # every case is a rare (OMIM) disease: a clinician should read "rare"
            orphan = ranks.orphan[mask]
            out[group]["mean_orphan_probability"] = float(orphan.mean())
            out[group]["orphan_below_half_share"] = float((orphan < 0.5).mean())
    return out


@dataclass(frozen=True)
class RealEvaluation:
    """A runtime scored on real cases: per group (all / cited / uncited) top-1/3/10, MRR,
    calibration of the top candidate; the reliability diagram's bins (all cases)."""

    summary: dict[str, dict[str, float]]
    reliability: list[dict[str, float]]

    def metrics(self, prefix: str = "real") -> dict[str, float]:
        """Flat metrics (``real_all_top10``, ``real_uncited_ece``, …) for MLflow and the gate."""
        return {
            f"{prefix}_{group}_{name}": value
            for group, figures in self.summary.items()
            for name, value in figures.items()
            if name != "cases"
        } | {f"{prefix}_{group}_cases": figures["cases"] for group, figures in self.summary.items()}


def evaluate_runtime(
    runtime, cases: Sequence[ReferenceCase], batch: int = BATCH_ROWS
) -> RealEvaluation:
    """Score ``cases`` through ``runtime`` (:class:`diagnosis.runtime.Runtime`, exactly as the API
    scores a request: present and excluded findings, age, sex). The true disease is ranked among
    the OMIM entries of the served distribution (the truths are OMIM diseases; comparable with the
    baselines); calibration is that of what a clinician reads: the probability of the first entry
    of the whole served differential, right when it is the true disease. Every case is a rare
    disease, so the served orphan probability is reported too (its mean per group)."""
    codes = runtime.codes
    omim = np.array([c.startswith("OMIM:") for c in codes])
    omim_codes = list(codes[omim])
    truths = [case.truth for case in cases]
    patients = [case.patient() for case in cases]
    ranks, top_probability, top_correct, orphan = [], [], [], []
    for rows in batches(len(patients), batch):
        scores = runtime.score(patients[rows])
        part = rank_truth(scores.probabilities[:, omim], omim_codes, truths[rows])
        ranks.append(part.rank)
        first = runtime.top(scores.probabilities, 1)[:, 0]
        top_probability.append(scores.probabilities[np.arange(len(first)), first])
        top_correct.append(codes[first] == np.asarray(truths[rows]))
        orphan.append(np.asarray(scores.orphan, dtype=np.float64))
    empty = np.zeros(0)
    result = Ranks(
        np.concatenate(ranks) if ranks else empty.astype(np.int64),
        np.concatenate(top_probability) if top_probability else empty,
        np.concatenate(top_correct) if top_correct else empty.astype(bool),
        np.concatenate(orphan) if orphan else empty,
    )
    return RealEvaluation(
        summary=summarise(result, [case.cited for case in cases]),
        reliability=reliability_bins(result.top_probability, result.top_correct),
    )


def reliability_figure(evaluation: RealEvaluation, title: str):
    """A reliability diagram (matplotlib Figure): accuracy against mean confidence per bin, the
    diagonal, and the number of cases per bin."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.2))
    ax = figure.add_subplot(1, 1, 1)
    bins = [b for b in evaluation.reliability if b["cases"]]
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfect")
    ax.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        marker="o",
        color="#1f77b4",
        label="top candidate",
    )
    for b in bins:
        ax.annotate(
            str(b["cases"]),
            (b["confidence"], b["accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, -10),
        )
    ece = evaluation.summary.get("all", {}).get("ece", float("nan"))
    ax.set_title(f"{title} (ECE {ece:.3f})", fontsize=10)
    ax.set_xlabel("probability of the top candidate")
    ax.set_ylabel("share that is the true disease")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def reliability_markdown(evaluation: RealEvaluation) -> str:
    lines = ["| probability | cases | mean probability | right |", "|---|---|---|---|"]
    for b in evaluation.reliability:
        if b["cases"]:
            lines.append(
                f"| {b['low']:.1f}–{b['high']:.1f} | {b['cases']} | {b['confidence']:.3f} | "
                f"{b['accuracy']:.3f} |"
            )
    return "\n".join(lines)
