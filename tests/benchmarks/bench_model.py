"""Benchmark: knowledge ranker vs plain term matching on simulated patients (Köhler 2009 / LIRICAL).

    python tests/benchmarks/bench_model.py --seed 7 --cases 1000 [--ablation] [--no-onnx]

Protocol, per universe (ORPHA, OMIM), one simulated patient per case:

* pick a disease uniformly among those with >= 3 annotated non-excluded terms;
* include each of its non-excluded terms with its annotated frequency (unspecified: 0.5); at
  least 1 (one drawn uniformly when none was), at most 10 (a uniform subset);
* imprecision: replace each term, with probability 0.5, by one of its parents drawn uniformly
  (never by "Phenotypic abnormality" or the root; a term whose only parent is one of those stays);
* noise: add floor(n/2) terms drawn uniformly among phenotypic-abnormality terms that are neither
  an ancestor nor a descendant of any of the disease's annotated terms.

The four conditions (exact, noise, imprecision, noise+imprecision) reuse the same sampled terms
per case, so differences between conditions and models are paired. The simulation reads only the
release files (annotations + ontology), never the ranker's parameters or weights.

Models: the ranker (diagnosis.ranker, default parameters unless --param is given) and a term-match
baseline (score = number of query terms equal to an annotated term of the disease or one of its
ancestors). Both break ties the same deterministic way (the lower disease index, i.e. code order,
wins), and the rank of the true disease counts every disease that wins over it.

Also printed: build time, ONNX size, p50/p99 single-query onnxruntime latency (1 thread) for the
deployable ORPHA+OMIM model, parity with the numpy scores, and process RSS (this process, and a
fresh process that only loads the ONNX model and serves queries, like the API would).

Served system (skip with --no-served): the common-disease macro-F1 and the severity macro-F1 of
the deployed model, scored exactly as the API scores (diagnosis.runtime.Runtime: onnxruntime,
classifier + knowledge ranker + blend) on a held-out simulated cohort
(diagnosis.simulation.simulate_cohort, no defects, validated like an export) drawn with
--cohort-seed (default --seed; moved by 1000 if it equals the training seed). The model is, by
default, trained and deployed for the run: `make pipeline`'s demo cohort (seed 7) in a temporary
TRIAGE_HOME, in a child process; --home DIR scores the deployment of an existing TRIAGE_HOME
instead. The common-disease figures use the patients whose true diagnosis is a common condition or
NONE, the prediction being the differential's first entry (an orphan disease there is a miss);
macro-F1 averages over the 20 ICD-10 conditions and NONE. Severity uses every patient (the five
categories).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from diagnosis import sparse_graph  # noqa: E402
from diagnosis.hpo import (  # noqa: E402  # noqa: E402
    PHENOTYPIC_ABNORMALITY,
    ROOT,
    UNSPECIFIED_FREQUENCY,
    Ontology,
    disease_phenotypes,
    hpo_data_dir,
    load_annotations,
    parse_context_annotations,
)
from diagnosis.ranker import KnowledgeRanker, load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

CONDITIONS = ("exact", "noise", "imprecision", "noise+imprecision")
MAX_TERMS = 10
MIN_TERMS = 3
IMPRECISION_RATE = 0.5


# ------------------------------------------------------------------------------ simulation
@dataclass
class Universe:
    """The protocol's view of one annotation database (independent of the ranker)."""

    name: str
    diseases: list[str]
    positive: dict[str, list[tuple[str, float]]]  # disease -> [(term, frequency)]
    annotated: dict[str, set[str]]  # disease -> every annotated term (incl. excluded)
    eligible: list[str]


def load_universe(ontology: Ontology, annotations: pl.DataFrame, name: str) -> Universe:
    rows = disease_phenotypes(annotations.filter(pl.col("database") == name))
    positive: dict[str, dict[str, float]] = {}
    annotated: dict[str, set[str]] = {}
    for disease, term, freq, excluded in rows.select(
        "disease_id", "hpo_id", "frequency", "excluded"
    ).iter_rows():
        current = ontology.canonical(term)
        if current is None:
            continue
        annotated.setdefault(disease, set()).add(current)
        if not excluded:
            f = UNSPECIFIED_FREQUENCY if freq is None else float(freq)
            prev = positive.setdefault(disease, {}).get(current)
            positive[disease][current] = f if prev is None else max(prev, f)
    diseases = sorted(annotated)
    eligible = [d for d in diseases if len(positive.get(d, {})) >= MIN_TERMS]
    return Universe(
        name=name,
        diseases=diseases,
        positive={d: sorted(terms.items()) for d, terms in positive.items()},
        annotated=annotated,
        eligible=eligible,
    )


@dataclass
class Case:
    disease: str
    conditions: dict[str, list[str]]


def simulate(
    ontology: Ontology, universe: Universe, cases: int, rng: np.random.Generator
) -> list[Case]:
    generic = {ROOT, PHENOTYPIC_ABNORMALITY}
    pa_terms = np.array(
        sorted(
            t for t in ontology.descendants(PHENOTYPIC_ABNORMALITY) if t != PHENOTYPIC_ABNORMALITY
        )
    )
    out: list[Case] = []
    for disease in rng.choice(np.array(universe.eligible), size=cases, replace=True):
        disease = str(disease)
        terms = universe.positive[disease]
        draws = rng.random(len(terms))
        keep = [t for (t, f), u in zip(terms, draws, strict=True) if u < f]
        if not keep:
            keep = [terms[int(rng.integers(len(terms)))][0]]
        if len(keep) > MAX_TERMS:
            keep = [keep[i] for i in sorted(rng.choice(len(keep), MAX_TERMS, replace=False))]

        imprecise: list[str] = []
        for term in keep:
            parents = [p for p in ontology.parents.get(term, ()) if p not in generic]
            if parents and rng.random() < IMPRECISION_RATE:
                imprecise.append(parents[int(rng.integers(len(parents)))])
            else:
                imprecise.append(term)
        imprecise = list(dict.fromkeys(imprecise))

        related_up: set[str] = set()
        for term in universe.annotated[disease]:
            related_up |= ontology.ancestors(term)
        annotated = universe.annotated[disease]
        n_noise = len(keep) // 2
        noise: list[str] = []
        for _ in range(2000):
            if len(noise) >= n_noise:
                break
            cand = str(pa_terms[int(rng.integers(len(pa_terms)))])
            if cand in related_up or cand in noise or ontology.ancestors(cand) & annotated:
                continue
            noise.append(cand)
        out.append(
            Case(
                disease=disease,
                conditions={
                    "exact": keep,
                    "noise": keep + noise,
                    "imprecision": imprecise,
                    "noise+imprecision": imprecise + noise,
                },
            )
        )
    return out


# ------------------------------------------------------------------------------ models
class TermMatchBaseline:
    """score(d) = number of query terms among d's positive annotated terms and their ancestors."""

    def __init__(self, ontology: Ontology, universe: Universe) -> None:
        self.diseases = universe.diseases
        index = {d: i for i, d in enumerate(self.diseases)}
        members: dict[str, list[int]] = {}
        for disease, terms in universe.positive.items():
            closure: set[str] = set()
            for term, _ in terms:
                closure |= ontology.ancestors(term)
            for term in closure:
                members.setdefault(term, []).append(index[disease])
        self.members = {t: np.array(v, dtype=np.int64) for t, v in members.items()}
        self.ontology = ontology

    def score(self, query: list[str]) -> np.ndarray:
        scores = np.zeros(len(self.diseases), dtype=np.float64)
        for term in self.ontology.canonicalise(query):
            hits = self.members.get(term)
            if hits is not None:
                scores[hits] += 1.0
        return scores


def rank_of(scores: np.ndarray, true_index: int) -> int:
    """1-based rank with ties broken by the lower index."""
    s = scores[true_index]
    return 1 + int((scores > s).sum()) + int((scores[:true_index] == s).sum())


def summarise(ranks: list[int]) -> dict[str, float]:
    r = np.asarray(ranks)
    return {
        "top1": float((r <= 1).mean()),
        "top3": float((r <= 3).mean()),
        "top10": float((r <= 10).mean()),
        "mrr": float((1.0 / r).mean()),
    }


def ranker_scorer(ranker: KnowledgeRanker, propagate: bool = False):
    index = {t: i for i, t in enumerate(ranker.terms)}
    onto = ranker.ontology

    def score(query: list[str]) -> np.ndarray:
        terms = onto.canonicalise(query)
        if propagate:  # ablation: the query closed upwards (every implied ancestor as a term)
            terms = sorted({a for t in terms for a in onto.ancestors(t)})
        return ranker.score([t for t in terms if t in index])

    return score


def evaluate(cases: list[Case], diseases: list[str], scorers: dict, conditions=CONDITIONS):
    index = {d: i for i, d in enumerate(diseases)}
    results: dict[tuple[str, str], dict[str, float]] = {}
    for model, score in scorers.items():
        for condition in conditions:
            ranks = [rank_of(score(c.conditions[condition]), index[c.disease]) for c in cases]
            results[(model, condition)] = summarise(ranks)
    return results


def print_table(universe: str, results: dict) -> None:
    print(f"\n{universe}: model / condition            top-1   top-3  top-10    MRR")
    for (model, condition), m in results.items():
        print(
            f"  {model:<10} {condition:<22} {m['top1']:6.1%}  {m['top3']:6.1%}  "
            f"{m['top10']:6.1%}  {m['mrr']:.3f}"
        )


# ------------------------------------------------------------------------------ ONNX + memory
def rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of this process in MB."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = float(value.split()[0]) / 1024.0
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


_SERVE_PROBE = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
rows = np.load(sys.argv[2], allow_pickle=True)
for feeds in rows:
    sess.run(["scores"], feeds)
fields = {}
for line in open("/proc/self/status"):
    k, _, v = line.partition(":")
    if k in ("VmRSS", "VmHWM"):
        fields[k] = float(v.split()[0]) / 1024.0
print(json.dumps(fields))
"""


def onnx_report(ranker: KnowledgeRanker, queries: list[list[str]]) -> None:
    import onnxruntime as ort

    t0 = time.perf_counter()
    content = ranker.to_onnx()
    export_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    session = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    rows = [ranker.query_rows(q) for q in queries]

    max_prob_diff = max_score_diff = 0.0
    for row in rows[:200]:
        (scores,) = session.run([sparse_graph.SCORES], ranker.onnx_feeds([row]))
        expected = ranker.score_rows([row])[0]
        probs = np.exp(scores[0] - scores[0].max())
        probs /= probs.sum()
        ref = np.exp(expected - expected.max())
        ref /= ref.sum()
        max_prob_diff = max(max_prob_diff, float(np.abs(probs - ref).max()))
        max_score_diff = max(max_score_diff, float(np.abs(scores[0] - expected).max()))

    for row in rows[:20]:  # warm-up
        session.run([sparse_graph.TOP_SCORES], ranker.onnx_feeds([row], k=10))
    times = []
    for row in rows:
        feeds = ranker.onnx_feeds([row], k=10)
        t0 = time.perf_counter()
        session.run([sparse_graph.TOP_SCORES, sparse_graph.TOP_INDEX], feeds)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    numpy_times = []
    for row in rows[:300]:
        t0 = time.perf_counter()
        ranker.score_rows([row])
        numpy_times.append(time.perf_counter() - t0)

    print(
        f"\nDeployable model (universe ORPHA+OMIM): {ranker.n_diseases} diseases, "
        f"{ranker.n_terms} terms, {ranker.nnz:,} weights"
    )
    print(
        f"  ONNX size {len(content) / 1e6:.1f} MB, export {export_s:.2f} s, session load {load_s:.2f} s"
    )
    print(
        f"  parity vs numpy: max |prob diff| {max_prob_diff:.2e}, max |score diff| {max_score_diff:.2e}"
    )
    print(
        f"  onnxruntime single query (1 thread, {len(ms)} queries): p50 {np.percentile(ms, 50):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms"
    )
    print(f"  numpy reference posterior: p50 {np.median(numpy_times) * 1e3:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "ranker.onnx"
        model_path.write_bytes(content)
        query_path = Path(tmp) / "queries.npy"
        np.save(query_path, np.array([ranker.onnx_feeds([r]) for r in rows[:200]], dtype=object))
        probe = subprocess.run(
            [sys.executable, "-c", _SERVE_PROBE, str(model_path), str(query_path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        serve = json.loads(probe.stdout.strip().splitlines()[-1])
    print(
        f"  fresh process with only the ONNX session after 200 queries: "
        f"RSS {serve['VmRSS']:.0f} MB (peak {serve['VmHWM']:.0f} MB)"
    )


# ------------------------------------------------------------------------------ served system
_PIPELINE = "from orchestration.pipeline import run_pipeline; raise SystemExit(run_pipeline())"


def deploy_demo_model(home: Path) -> float:
    """`make pipeline` into an empty TRIAGE_HOME (seeds the demo cohort, trains, gates, deploys)
    in a child process, so this process measures only what it scores. Returns the seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "DAGSTER_"))}
    env.update(TRIAGE_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PIPELINE], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"the demo pipeline failed (exit {proc.returncode})")
    return time.perf_counter() - t0


def heldout_cohort(patients: int, seed: int) -> pl.DataFrame:
    """A simulated cohort without defects, validated exactly as a weekly export is."""
    from diagnosis.simulation import simulate_cohort
    from schemas.validation import validate_records

    weeks = simulate_cohort(patients, 1, seed, defect_rate=0.0, start="2026-06-01")
    raw = pl.concat([frame for _, frame in weeks]).with_columns(
        pl.lit("bench_heldout").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    return validate_records(raw, b"bench-heldout").valid


def served_metrics(model, cohort: pl.DataFrame) -> tuple[dict, float]:
    """Score every patient through ``Runtime.predict`` (as the API does) and compare with
    the cohort's true diagnosis and severity."""
    from sklearn.metrics import f1_score

    from diagnosis.categories import CATEGORY_ORPHAN, HEALTHY_CODE, category_of
    from diagnosis.common_conditions import COMMON_CONDITIONS
    from schemas.clinical import SEVERITIES

    bodies = cohort.select(
        "age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp", "symptoms"
    ).to_dicts()
    t0 = time.perf_counter()
    answers = []
    for start in range(0, len(bodies), 200):  # batches as the API takes them (bounded memory)
        answers += model.predict(bodies[start : start + 200], top_k=1)
    seconds = time.perf_counter() - t0
    predicted = np.array([a.differential[0].code for a in answers])
    severity = np.array([a.severity.label for a in answers])
    truth = np.array(cohort["diagnosis"].to_list())
    true_severity = np.array(cohort["severity"].to_list())
    common = np.array([category_of(code) != CATEGORY_ORPHAN for code in truth])
    labels = [c.code for c in COMMON_CONDITIONS] + [HEALTHY_CODE]
    common_truth, common_pred = truth[common], predicted[common]
    metrics = {
        "rows": len(truth),
        "common_rows": int(common.sum()),
        "orphan_rows": int((~common).sum()),
        "common_labels": len(labels),
        "common_macro_f1": float(
            f1_score(common_truth, common_pred, labels=labels, average="macro", zero_division=0)
        ),
        "common_accuracy": float((common_truth == common_pred).mean()),
        "common_predicted_orphan": float(
            np.mean([category_of(c) == CATEGORY_ORPHAN for c in common_pred])
        ),
        "severity_macro_f1": float(
            f1_score(
                true_severity, severity, labels=list(SEVERITIES), average="macro", zero_division=0
            )
        ),
        "severity_accuracy": float((true_severity == severity).mean()),
        "severity_macro_f1_common": float(
            f1_score(
                true_severity[common],
                severity[common],
                labels=list(SEVERITIES),
                average="macro",
                zero_division=0,
            )
        ),
    }
    return metrics, seconds


def served_report(home: Path | None, patients: int, cohort_seed: int) -> None:
    from diagnosis.runtime import load_deployment
    from orchestration.pipeline import DEMO_SEED

    with tempfile.TemporaryDirectory(prefix="bench-served-") as tmp:
        if home is None:
            home = Path(tmp)
            trained_on = f"the demo cohort, seed {DEMO_SEED}"
            if cohort_seed == DEMO_SEED:
                cohort_seed += 1000
            print(
                "\nServed system: training and deploying the demo model "
                "(`make pipeline` in a temporary TRIAGE_HOME)...",
                flush=True,
            )
            print(f"  pipeline {deploy_demo_model(home):.0f} s")
        else:
            trained_on = f"the deployment of {home}"
        model = load_deployment(home / "deployments")
        t0 = time.perf_counter()
        cohort = heldout_cohort(patients, cohort_seed)
        simulate_s = time.perf_counter() - t0
        metrics, score_s = served_metrics(model, cohort)
        gate = dict(model.manifest.metrics)
    print(
        f"\nServed system, model {model.version} (HPO {model.manifest.hpo_release}, "
        f"trained on {trained_on})"
    )
    print(
        f"  held-out cohort: seed {cohort_seed}, {metrics['rows']:,} valid patients "
        f"({metrics['common_rows']:,} common or NONE, {metrics['orphan_rows']:,} orphan), "
        f"simulated in {simulate_s:.1f} s; scored one by one through onnxruntime as the API does "
        f"in {score_s:.1f} s ({score_s / max(metrics['rows'], 1) * 1e3:.2f} ms/patient)"
    )
    rows = [
        (
            f"common-disease macro-F1 ({metrics['common_labels']} labels: 20 ICD-10 + NONE)",
            metrics["common_rows"],
            metrics["common_macro_f1"],
        ),
        ("common-disease accuracy (top-1)", metrics["common_rows"], metrics["common_accuracy"]),
        (
            "  share of them answered with an orphan disease",
            metrics["common_rows"],
            metrics["common_predicted_orphan"],
        ),
        (
            "severity macro-F1 (5 categories), every patient",
            metrics["rows"],
            metrics["severity_macro_f1"],
        ),
        (
            "severity macro-F1, common or NONE patients",
            metrics["common_rows"],
            metrics["severity_macro_f1_common"],
        ),
        ("severity accuracy, every patient", metrics["rows"], metrics["severity_accuracy"]),
    ]
    print(f"  {'metric':<58} {'rows':>6}  value")
    for label, n, value in rows:
        print(f"  {label:<58} {n:>6,}  {value:.3f}")
    if gate:
        print(
            f"  (the gate's own held-out split, from the manifest: macro-F1 "
            f"{gate.get('macro_f1', float('nan')):.3f} over every class incl. orphan, severity "
            f"macro-F1 {gate.get('severity_macro_f1', float('nan')):.3f})"
        )


# ------------------------------------------------------------------------------ main
ABLATIONS: list[tuple[str, dict, bool]] = [
    ("no information content (icm=0)", {"icm": 0.0}, False),
    ("no frequencies (lf=0)", {"lf": 0.0}, False),
    ("no NOT annotations (notp=0)", {"notp": 0.0}, False),
    ("no annotation-count bias (b_logn=b_sumf=0)", {"b_logn": 0.0, "b_sumf": 0.0}, False),
    ("query closed upwards (propagate)", {}, True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--universe", nargs="+", default=["ORPHA", "OMIM"])
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a ranker parameter (repeatable)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also score design variants on noise+imprecision"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX/latency section")
    parser.add_argument(
        "--no-served",
        action="store_true",
        help="skip the served-system section (common-disease and severity F1)",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="score the deployment of this TRIAGE_HOME instead of training the "
        "demo model into a temporary one",
    )
    parser.add_argument(
        "--cohort-seed",
        type=int,
        default=None,
        help="seed of the held-out cohort (default: --seed)",
    )
    parser.add_argument("--cohort-patients", type=int, default=2000)
    args = parser.parse_args(argv)
    overrides = {k: float(v) for k, v in (p.split("=", 1) for p in args.param)}
    params = load_params()
    params["weights"] = {**params["weights"], **overrides}
    context = parse_context_annotations(hpo_data_dir() / "phenotype.hpoa")

    t_start = time.perf_counter()
    ontology = Ontology.load()
    annotations = load_annotations()
    print(
        f"HPO release {ontology.release}; seed {args.seed}; {args.cases} cases per universe; "
        f"ranker weights {params['source']}; overrides {overrides or 'none'}"
    )
    rng = np.random.default_rng(args.seed)
    noise_imprecision_queries: list[list[str]] = []

    for name in args.universe:
        universe = load_universe(ontology, annotations, name)
        cases = simulate(ontology, universe, args.cases, rng)
        noise_imprecision_queries += [c.conditions["noise+imprecision"] for c in cases]
        t0 = time.perf_counter()
        ranker = KnowledgeRanker.build(
            ontology, annotations, context, universe=(name,), params=params
        )
        build_s = time.perf_counter() - t0
        assert list(ranker.diseases) == universe.diseases, (
            "ranker and protocol disagree on diseases"
        )
        baseline = TermMatchBaseline(ontology, universe)
        t0 = time.perf_counter()
        results = evaluate(
            cases,
            universe.diseases,
            {"ranker": ranker_scorer(ranker), "term-match": baseline.score},
        )
        eval_s = time.perf_counter() - t0
        print(
            f"\n[{name}] {len(universe.diseases)} diseases ({len(universe.eligible)} eligible), "
            f"build {build_s:.2f} s, {ranker.nnz:,} weights, evaluation {eval_s:.1f} s"
        )
        print_table(name, results)
        gain = (
            results[("ranker", "noise+imprecision")]["top1"]
            - results[("term-match", "noise+imprecision")]["top1"]
        )
        print(f"  top-1 gain over term-match (noise+imprecision): {gain * 100:+.1f} points")

        if args.ablation:
            print(f"  ablations on {name} noise+imprecision (top-1 / top-10 / MRR):")
            for label, overrides, propagate in ABLATIONS:
                variant = KnowledgeRanker.build(
                    ontology,
                    annotations,
                    context,
                    universe=(name,),
                    params={**params, "weights": {**params["weights"], **overrides}},
                )
                m = evaluate(
                    cases,
                    universe.diseases,
                    {"v": ranker_scorer(variant, propagate)},
                    ("noise+imprecision",),
                )
                m = m[("v", "noise+imprecision")]
                print(f"    {label:<42} {m['top1']:6.1%}  {m['top10']:6.1%}  {m['mrr']:.3f}")

    if not args.no_onnx:
        t0 = time.perf_counter()
        combined = KnowledgeRanker.build(
            ontology, annotations, context, universe=("ORPHA", "OMIM"), params=params
        )
        print(f"\nbuild ORPHA+OMIM: {time.perf_counter() - t0:.2f} s")
        onnx_report(combined, noise_imprecision_queries)

    if not args.no_served:
        served_report(
            args.home,
            args.cohort_patients,
            args.seed if args.cohort_seed is None else args.cohort_seed,
        )

    rss, peak = rss_mb()
    print(
        f"\nthis benchmark process: RSS {rss:.0f} MB (peak {peak:.0f} MB); "
        f"total {time.perf_counter() - t_start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
