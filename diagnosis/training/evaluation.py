"""Evaluation of the served system, through the runtime, on the exported artifact.

The challenger is scored as the API will score it: :class:`diagnosis.runtime.Runtime` over the
ONNX graph and knowledge index of the artifact (:func:`diagnosis.training.export.build_artifact`).
The champion (the deployment being served) is scored by the same code on the same rows, so the
quality gate compares like with like: a retrain identical to the champion gets identical figures.

The blend (:mod:`diagnosis.blend`) is fitted on one half of the held-out records plus rare cases
simulated from the annotations, from the runtime's own components; the other half scores the
whole system.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score

from diagnosis.blend import BlendParams, gate_features
from diagnosis.categories import CATEGORY_ORPHAN, HEALTHY_CODE, category_of
from diagnosis.features import MEASURED_VITALS
from diagnosis.runtime import Components, Runtime, Scores, batches
from diagnosis.severity import incoherent
from diagnosis.training.dataset import SPLIT_EVALUATION

PATIENT_COLUMNS = (
    "age",
    "sex",
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
    "symptoms",
)
ALPHAS = (0.0, 0.25, 0.5)
TOP = 10
# a rare patient as a triage desk first sees one: this many of the findings, no vitals measured
DESK_FINDINGS = 3
# Held-out records the blend (and the severity weight) is fitted on, at most: a random subset of
# the calibration half when it is larger (the simulated rare cases of that half are all kept).
MAX_CALIBRATION_ROWS = 10_000


def patient_dicts(rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Table rows as API request bodies."""
    return rows.select(PATIENT_COLUMNS).to_dicts()


def _share(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else 0.0


def compact(parts: Components) -> Components:
    """The ranker's log-scores kept as float32, the graph's own output type (exactly: the
    runtime widened them from float32), half the memory; :func:`widened` restores them."""
    if parts.ranker_scores is None or parts.ranker_scores.dtype == np.float32:
        return parts
    return Components(
        parts.classifier, parts.severity, parts.ranker_scores.astype(np.float32), parts.unseen_share
    )


def widened(parts: Components) -> Components:
    """The log-scores back in float64, as :meth:`Runtime.components` returns them."""
    if parts.ranker_scores is None or parts.ranker_scores.dtype == np.float64:
        return parts
    return Components(
        parts.classifier, parts.severity, parts.ranker_scores.astype(np.float64), parts.unseen_share
    )


def components_in_batches(runtime: Runtime, patients: list[dict[str, Any]]) -> Components:
    """:meth:`Runtime.components` of ``patients``, :data:`BATCH_ROWS` at a time, the log-scores
    kept compact (:func:`compact`)."""
    parts = [compact(runtime.components(patients[s])) for s in batches(len(patients))]
    if not parts:
        return compact(runtime.components([]))
    return Components.concat(parts)


@dataclass(frozen=True)
class Recomputed:
    """Rows whose components :func:`widened_batches` computes again through ``runtime`` at
    every pass instead of keeping them: the calibration records, whose log-scores over the
    catalogue would hold 0.5 GB at 10,000 records (a pass costs ~3-4 s per 10,000 rows). The
    batches are those of :func:`components_in_batches`, so the values are the same."""

    runtime: Runtime
    patients: list[dict[str, Any]]


Rows = Components | Recomputed


def widened_batches(parts: Rows | Sequence[Rows]):
    """(rows slice, the widened components of those rows) for each batch of ``parts``, several
    parts read one after the other as if they were concatenated (without the copy)."""
    offset = 0
    for part in [parts] if isinstance(parts, Rows) else parts:
        if isinstance(part, Recomputed):
            n = len(part.patients)
            for rows in batches(n):
                batch = part.runtime.components(part.patients[rows])
                yield slice(offset + rows.start, offset + rows.stop), batch
        else:
            n = len(part.classifier)
            for rows in batches(n):
                yield slice(offset + rows.start, offset + rows.stop), widened(part.subset(rows))
        offset += n


def blend_in_batches(runtime: Runtime, parts: Rows | Sequence[Rows]):
    """(rows slice, :class:`Scores` of those rows) for each batch of ``parts``: the served
    distribution over the whole catalogue never exists for every row at once."""
    for rows, batch in widened_batches(parts):
        yield rows, runtime.blend(batch)


def fit_blend(runtime: Runtime, parts: Rows | Sequence[Rows], truth: list[str]) -> BlendParams:
    """Fit the rare-or-not gate by logistic regression, then choose alpha by orphan top-1.
    ``parts``: the rows of ``truth``, in one or several parts, read twice (the gate's features,
    then every alpha batch by batch)."""
    orphan_mask = np.array([c.category == CATEGORY_ORPHAN for c in runtime.classes])
    features = np.concatenate(
        [
            gate_features(
                batch.classifier,
                orphan_mask,
                batch.ranker_scores,
                runtime.knowledge.empty_best,
                batch.unseen_share,
            )
            for _, batch in widened_batches(parts)
        ]
    )
    is_orphan = np.array([category_of(c) == CATEGORY_ORPHAN for c in truth])
    gate = LogisticRegression(C=1.0, max_iter=1000).fit(features, is_orphan)
    codes = runtime.codes
    truth_arr = np.array(truth)
    blends = {
        alpha: BlendParams(tuple(gate.coef_[0].tolist()), float(gate.intercept_[0]), alpha)
        for alpha in ALPHAS
    }
    served = {alpha: runtime.with_blend(params) for alpha, params in blends.items()}
    top1 = {alpha: np.empty(len(truth), dtype=object) for alpha in ALPHAS}
    for rows, batch in widened_batches(parts):
        for alpha, candidate in served.items():
            top1[alpha][rows] = codes[candidate.blend(batch).probabilities.argmax(axis=1)]
    best: tuple[float, BlendParams] | None = None
    for alpha in ALPHAS:
        hits = _share((top1[alpha] == truth_arr)[is_orphan])
        if best is None or hits > best[0]:
            best = (hits, blends[alpha])
    return best[1]


BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def fit_severity_beta(
    runtime: Runtime, parts: Rows | Sequence[Rows], severities: list[str]
) -> Runtime:
    """Choose the weight of the severity head's likelihood ratio (:mod:`diagnosis.severity`) by
    the log-likelihood of the recorded severities of the calibration rows. The blend does not
    depend on it: each batch is blended once and its severity computed for every weight."""
    labels = {label: i for i, label in enumerate(runtime.severity_labels)}
    truth = np.array([labels[s] for s in severities])
    candidates = [
        runtime.with_severity(msgspec.structs.replace(runtime.manifest.severity, beta=beta))
        for beta in BETAS
    ]
    logs = np.empty((len(BETAS), len(truth)))
    for rows, batch in widened_batches(parts):
        probabilities = runtime.blend(batch).probabilities
        for i, candidate in enumerate(candidates):
            # what Runtime.blend gives as the severity with that weight
            severity = np.clip(candidate.severity_of(probabilities, batch.severity), 0.0, 1.0)
            picked = severity[np.arange(len(severity)), truth[rows]]
            logs[i, rows] = np.log(np.clip(picked, 1e-9, 1.0))
    best: tuple[float, Runtime] | None = None
    for i, candidate in enumerate(candidates):
        loglik = float(logs[i].mean())
        if best is None or loglik > best[0]:
            best = (loglik, candidate)
    return best[1]


def incoherent_share(runtime: Runtime, ranked: Ranked) -> float:
    """Share of answers whose severity contradicts their differential
    (:func:`diagnosis.severity.incoherent`), NONE's probability read from the ranked entries."""
    labels = runtime.severity_labels
    flags = []
    for codes, probs, severity in zip(ranked.codes, ranked.probabilities, ranked.severity):
        healthy = sum(p for c, p in zip(codes, probs) if c == HEALTHY_CODE)
        flags.append(incoherent(labels[int(np.argmax(severity))], healthy))
    return _share(np.array(flags, dtype=bool))


@dataclass
class Ranked:
    """The top entries the runtime gave each row: what the gate saw, row by row."""

    codes: list[list[str]]
    probabilities: list[list[float]]
    orphan: list[float]
    severity: list[list[float]]

    @classmethod
    def of(cls, runtime: Runtime, scores: Scores, k: int = TOP) -> Ranked:
        order = runtime.top(scores.probabilities, k)
        return cls(
            codes=runtime.codes[order].tolist(),
            probabilities=np.take_along_axis(scores.probabilities, order, axis=1).tolist(),
            orphan=scores.orphan.tolist(),
            severity=scores.severity.tolist(),
        )

    @classmethod
    def concat(cls, parts: list[Ranked]) -> Ranked:
        return cls(
            codes=[row for part in parts for row in part.codes],
            probabilities=[row for part in parts for row in part.probabilities],
            orphan=[p for part in parts for p in part.orphan],
            severity=[row for part in parts for row in part.severity],
        )


def rank_parts(runtime: Runtime, parts: Components) -> Ranked:
    """:meth:`Ranked.of` the blended ``parts``, batch by batch."""
    return Ranked.concat(
        [Ranked.of(runtime, scores) for _, scores in blend_in_batches(runtime, parts)]
    )


def rank_in_batches(runtime: Runtime, patients: list[dict[str, Any]]) -> tuple[Ranked, np.ndarray]:
    """What the runtime serves for ``patients`` (:meth:`Runtime.score`, :data:`BATCH_ROWS` at a
    time) as :class:`Ranked`, and each row's first class by the classifier alone."""
    class_codes = np.array([c.code for c in runtime.classes], dtype=object)
    ranked, first = [], []
    for rows in batches(len(patients)):
        parts = runtime.components(patients[rows])
        ranked.append(Ranked.of(runtime, runtime.blend(parts)))
        first.append(class_codes[parts.classifier.argmax(axis=1)])
    return Ranked.concat(ranked), np.concatenate(first) if first else np.empty(0, dtype=object)


def record_metrics(
    ranked: Ranked, truth: list[str], severity_truth: list[str], severity_labels: tuple[str, ...]
) -> dict[str, float | int]:
    """Accuracy, macro-F1, top-3, orphan recall/top-10, severity and the orphan probability of
    common rows, from what the runtime returned for held-out records."""
    top = np.array(ranked.codes, dtype=object).reshape(len(truth), -1)
    truth_arr = np.array(truth, dtype=object)
    predicted = top[:, 0]
    orphan_rows = np.array([category_of(c) == CATEGORY_ORPHAN for c in truth], dtype=bool)
    severity_index = {label: i for i, label in enumerate(severity_labels)}
    y_sev = np.array([severity_index[s] for s in severity_truth])
    sev_pred = np.array(ranked.severity).reshape(len(truth), -1).argmax(axis=1)
    orphan_p = np.array(ranked.orphan)
    return {
        "evaluation_rows": int(len(truth)),
        "accuracy": _share(predicted == truth_arr),
        "macro_f1": float(f1_score(truth_arr, predicted, average="macro", zero_division=0)),
        "top3_accuracy": _share(np.array([t in row[:3] for t, row in zip(truth, top)])),
        "orphan_rows": int(orphan_rows.sum()),
        "orphan_recall": _share(predicted[orphan_rows] == truth_arr[orphan_rows]),
        "orphan_top10": _share(
            np.array([t in row for t, row in zip(truth_arr[orphan_rows], top[orphan_rows])])
        ),
        "common_mean_orphan_probability": float(orphan_p[~orphan_rows].mean())
        if (~orphan_rows).any()
        else 0.0,
        "severity_accuracy": _share(sev_pred == y_sev),
        "severity_macro_f1": float(f1_score(y_sev, sev_pred, average="macro", zero_division=0)),
    }


@dataclass
class Evaluation:
    metrics: dict[str, float | int]
    blend: BlendParams
    champion_version: str | None
    confusion_matrix: list[list[int]]
    classes: list[str]
    # the held-out rows the system was scored on (API bodies) and what the runtime returned
    patients: list[dict[str, Any]] = field(default_factory=list)
    ranked: Ranked | None = None
    served: Runtime | None = field(default=None, repr=False)  # the challenger as it was scored
    truth: list[str] = field(default_factory=list)  # the true diagnosis of each scored row
    breakdown: dict[str, Any] = field(default_factory=dict)  # see breakdown()
    severity: Any = None  # schemas.contracts.SeveritySpec as fitted (beta), for the manifest
    real: Any = None  # diagnosis.reference.RealEvaluation, added by the caller

    def __getstate__(self) -> dict[str, Any]:
        # the runtime holds an onnxruntime session: not stored with the asset value
        return {**self.__dict__, "served": None}

    def summary(self) -> dict[str, Any]:
        """JSON-able: metrics, blend, champion, confusion matrix."""
        return {
            "metrics": self.metrics,
            "champion_version": self.champion_version,
            "blend": self.blend.to_dict(),
            "confusion_matrix": self.confusion_matrix,
            "classes": self.classes,
        }


def evaluate(
    candidate: Runtime,
    table: pl.DataFrame,
    cases: pl.DataFrame,
    seed: int,
    champion: Runtime | None = None,
    max_calibration_rows: int = MAX_CALIBRATION_ROWS,
) -> Evaluation:
    """Fit the blend on one half of the held-out records and the simulated rare cases, and score
    the whole served system (classifier + ranker + blend, through ``candidate``) on the other half.
    ``champion`` is scored by the same code on the very same rows, for the gate."""
    rows = table.filter(pl.col("split") == SPLIT_EVALUATION)
    record_patients = patient_dicts(rows)
    record_truth = rows["diagnosis"].to_list()
    record_severity = rows["severity"].to_list()
    rare_truth = cases["diagnosis"].to_list()
    rare_patients = patient_dicts(cases)
    rare = components_in_batches(candidate, rare_patients)
    rng = np.random.default_rng(seed)
    record_half = rng.random(len(record_truth)) < 0.5
    rare_half = rng.random(len(rare_truth)) < 0.5
    calibration_rows = np.flatnonzero(record_half)
    if len(calibration_rows) > max_calibration_rows:
        kept = np.random.default_rng(seed + 1).choice(
            calibration_rows, max_calibration_rows, replace=False
        )
        calibration_rows = np.sort(kept)
    records = Recomputed(candidate, [record_patients[i] for i in calibration_rows])
    params = fit_blend(
        candidate,
        [records, rare.subset(rare_half)],
        [record_truth[i] for i in calibration_rows]
        + [t for t, h in zip(rare_truth, rare_half) if h],
    )
    served = candidate.with_blend(params)
    if served.manifest.severity is not None:
        served = fit_severity_beta(served, records, [record_severity[i] for i in calibration_rows])

    test = np.flatnonzero(~record_half)
    test_patients = [record_patients[i] for i in test]
    truth = [record_truth[i] for i in test]
    severity_truth = [record_severity[i] for i in test]
    ranked, classifier_top1 = rank_in_batches(served, test_patients)
    metrics: dict[str, float | int] = {
        **record_metrics(ranked, truth, severity_truth, served.severity_labels),
        "calibration_rows": int(len(calibration_rows) + rare_half.sum()),
        "calibration_records_available": int(record_half.sum()),
        "severity_incoherent_share": incoherent_share(served, ranked),
        "severity_beta": float(served.manifest.severity.beta)
        if served.manifest.severity is not None
        else -1.0,
    }
    metrics["classifier_only_macro_f1"] = float(
        f1_score(np.array(truth, dtype=object), classifier_top1, average="macro", zero_division=0)
    )

    rare_test = np.flatnonzero(~rare_half)
    rare_ranked = rank_parts(served, rare.subset(rare_test))
    rare_truth_test = np.array([rare_truth[i] for i in rare_test], dtype=object)
    rare_top = np.array(rare_ranked.codes, dtype=object).reshape(len(rare_test), -1)
    learned = {c.code for c in served.classes}
    unseen = np.array([c not in learned for c in rare_truth_test], dtype=bool)
    metrics.update(
        {
            "rare_cases": int(len(rare_truth_test)),
            "rare_unseen_cases": int(unseen.sum()),
            "rare_unseen_top1": _share(rare_top[unseen, 0] == rare_truth_test[unseen])
            if len(rare_test)
            else 0.0,
            "rare_top10": _share(np.array([t in row for t, row in zip(rare_truth_test, rare_top)])),
            "rare_mean_orphan_probability": float(np.mean(rare_ranked.orphan))
            if len(rare_test)
            else 0.0,
        }
    )
    desk = desk_patients([rare_patients[i] for i in rare_test], seed)
    metrics.update(desk_metrics(served, desk, rare_truth_test.tolist()))
    if champion is not None:
        champion_ranked, _ = rank_in_batches(champion, test_patients)
        champion_metrics = record_metrics(
            champion_ranked, truth, severity_truth, champion.severity_labels
        )
        metrics["champion_macro_f1"] = champion_metrics["macro_f1"]
        metrics["champion_accuracy"] = champion_metrics["accuracy"]
    predicted = [row[0] for row in ranked.codes]
    labels = sorted(set(truth) | set(predicted))
    matrix = confusion_matrix(truth, predicted, labels=labels)
    return Evaluation(
        metrics=metrics,
        blend=params,
        champion_version=champion.version if champion is not None else None,
        confusion_matrix=matrix.tolist(),
        classes=labels,
        patients=test_patients,
        ranked=ranked,
        served=served,
        truth=truth,
        breakdown=breakdown(ranked, truth, test_patients),
        severity=served.manifest.severity,
    )


def desk_patients(
    patients: list[dict[str, Any]], seed: int, findings: int = DESK_FINDINGS
) -> list[dict[str, Any]]:
    """Rare patients as a triage desk first sees them: ``findings`` of each patient's symptoms kept
    at random (all of them when it has fewer), age and sex as recorded, and no vitals measured
    (missing, never filled with normal values). The simulated rare cases carry many findings and
    ordinary vitals, the easy case for the blend; a clinician often sends three terms."""
    rng = np.random.default_rng([seed, findings])
    out = []
    for patient in patients:
        symptoms = list(patient.get("symptoms") or ())
        if len(symptoms) > findings:
            keep = np.sort(rng.choice(len(symptoms), size=findings, replace=False))
            symptoms = [symptoms[i] for i in keep]
        out.append({**patient, **{vital: None for vital in MEASURED_VITALS}, "symptoms": symptoms})
    return out


def desk_metrics(runtime: Runtime, patients: list[dict[str, Any]], truth: list[str]) -> dict:
    """What ``runtime`` serves for rare patients seen at a triage desk (:func:`desk_patients`):
    the mean orphan probability (what a clinician reads: is it rare?), the share of them told
    orphan probability below one half, and top-10 of the true disease."""
    if not patients:
        return {"rare_desk_cases": 0}
    scores = runtime.score(patients)
    orphan = scores.orphan.astype(np.float64)
    top = runtime.codes[runtime.top(scores.probabilities, TOP)]
    return {
        "rare_desk_cases": len(patients),
        "rare_desk_findings": DESK_FINDINGS,
        "rare_desk_mean_orphan_probability": float(orphan.mean()),
        "rare_desk_orphan_below_half_share": _share(orphan < 0.5),
        "rare_desk_top10": _share(np.array([t in row for t, row in zip(truth, top)])),
    }


AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 65, "40-64"), (65, 200, "65+"))


def age_band(age: Any) -> str:
    if age is None:
        return "unknown"
    for low, high, name in AGE_BANDS:
        if low <= float(age) < high:
            return name
    return "unknown"


def _group_row(group: str, value: str, hits1: np.ndarray, hits3: np.ndarray) -> dict[str, Any]:
    return {
        "group": group,
        "value": value,
        "rows": int(hits1.size),
        "recall_top1": round(_share(hits1), 4),
        "recall_top3": round(_share(hits3), 4),
    }


def breakdown(ranked: Ranked, truth: list[str], patients: list[dict[str, Any]]) -> dict[str, Any]:
    """What the held-out scores say beyond the headline metrics, as tables (JSON-able rows):

    * ``per_class``: per true diagnosis, its category, rows, recall of the first entry and of the
      first three, and how often it was predicted first;
    * ``groups``: the same recalls per category (common, orphan, healthy), per sex and per age
      band (missing age or sex is its own ``unknown`` group, never merged into another);
    * ``reliability``: the probability of the first entry against how often it is right, in
      equal-width bins, with the calibration error (what a clinician reads is that probability).
    """
    from diagnosis.reference import expected_calibration_error, reliability_bins

    if not truth:
        return {"per_class": [], "groups": [], "reliability": [], "ece": None}
    top = np.array(ranked.codes, dtype=object).reshape(len(truth), -1)
    truth_arr = np.array(truth, dtype=object)
    hits1 = top[:, 0] == truth_arr
    hits3 = np.array([t in row[:3] for t, row in zip(truth, top)], dtype=bool)
    predicted_first = Counter(top[:, 0].tolist())
    per_class = []
    for code in sorted(set(truth)):
        mask = truth_arr == code
        per_class.append(
            {
                "code": code,
                "category": category_of(code),
                "rows": int(mask.sum()),
                "recall_top1": round(_share(hits1[mask]), 4),
                "recall_top3": round(_share(hits3[mask]), 4),
                "predicted_first": int(predicted_first.get(code, 0)),
            }
        )
    groups = []
    keys = {
        "category": [category_of(t) for t in truth],
        "sex": [str(p.get("sex") or "unknown") for p in patients],
        "age_band": [age_band(p.get("age")) for p in patients],
    }
    for group, values in keys.items():
        values_arr = np.array(values, dtype=object)
        for value in sorted(set(values)):
            mask = values_arr == value
            groups.append(_group_row(group, value, hits1[mask], hits3[mask]))
    probabilities = np.array([row[0] for row in ranked.probabilities], dtype=np.float64)
    return {
        "per_class": per_class,
        "groups": groups,
        "reliability": reliability_bins(probabilities, hits1),
        "ece": round(expected_calibration_error(probabilities, hits1), 4),
    }


def confusion_figure(classes: list[str], matrix: list[list[int]]):
    """The confusion matrix (rows: true, columns: first entry), row-normalised colours and the
    counts written in each non-empty cell (matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    counts = np.array(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(5.0, 0.32 * len(classes) + 2.0)
    figure = Figure(figsize=(size, size))
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("first entry of the differential")
    ax.set_ylabel("true diagnosis")
    ax.set_title("Held-out records: confusion matrix (colour = share of the row)", fontsize=9)
    figure.tight_layout()
    return figure


def recall_figure(per_class: list[dict[str, Any]]):
    """Per-class recall of the first entry (bars coloured by category) and of the first three."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    colours = {"common": "#1f77b4", "orphan": "#d62728", "healthy": "#2ca02c"}
    rows = sorted(per_class, key=lambda r: (r["category"], r["code"]))
    figure = Figure(figsize=(max(6.0, 0.3 * len(rows) + 2.0), 4.2))
    ax = figure.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    ax.bar(x, [r["recall_top3"] for r in rows], color="#dddddd", label="in the first three")
    ax.bar(
        x,
        [r["recall_top1"] for r in rows],
        color=[colours.get(r["category"], "#777777") for r in rows],
        label="first entry (colour: category)",
    )
    ax.set_xticks(x, [f"{r['code']} ({r['rows']})" for r in rows], rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title("Held-out records: recall per true diagnosis (rows)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    return figure


def table_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
