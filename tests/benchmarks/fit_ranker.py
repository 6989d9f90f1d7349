"""Fit the knowledge ranker's generic weights on the real development cases.

    OMP_NUM_THREADS=1 python tests/benchmarks/fit_ranker.py [--cv] [--out PATH]

Writes ``diagnosis/data/ranker_params.json`` (read by :func:`diagnosis.ranker.load_params`).

Protocol
--------
* Evidence: :func:`diagnosis.ranker.evidence` over the packaged HPO release, ORPHA+OMIM (the
  catalogue the product serves). Per case and per kind of evidence, the feature vector over all
  diseases is what :meth:`KnowledgeRanker.compile` weighs: the sum of the case's present-finding
  rows (tm, icm, lf, notp), of its excluded-finding rows (c_absent, a_not; a term both present and
  excluded counts present), the bias vectors (b_logn, b_sumf), its age-bin row (too_young,
  adult_early_only) and its sex row (female_xlr, male_xld).
* Weights: conditional logit (softmax maximum likelihood) over a shortlist of ``--shortlist``
  OMIM candidates per case (the top by the IC-weighted match, no excluded-term information; the
  truth forced in), L2 1e-4 on standardised features. ``c_absent`` is fixed at 0.1 (product
  decision: excluded findings in case reports are ascertainment-biased, the data cannot estimate
  it) and ``a_not`` is bounded >= 0, so an excluded finding never raises a disease.
* Temperature: ML of the softmax over the full catalogue (and, for the OMIM-only figures, over the
  OMIM entries), on a fixed random subsample of the fitting cases.
* Calibration: isotonic regression (increasing, clipped to [0, 1]) of "top entry is the truth" on
  the top probability, fitted on grouped out-of-fold predictions; applied as the product applies
  it (:func:`diagnosis.blend.calibrate`).
* ``--cv``: all of the above inside 5-fold GroupKFold by truth disease (the isotonic map of each
  outer training fold fitted on its own inner 4-fold grouped OOF predictions), and the OOF table:
  all / cited / uncited x top-1/3/10, MRR, ECE (temperature only, and isotonic), mean top
  probability, for (a) the OMIM-only ranking and (b) the full ORPHA+OMIM catalogue (a hit is the
  OMIM truth; an ORPHA entry of the same disease ranked above it counts against it).
* Deployment: weights and catalogue temperature fitted on all cases; the isotonic map fitted on
  the 5-fold grouped OOF top probabilities of all cases. Then the written file is compiled with
  :meth:`KnowledgeRanker.build` and the cases scored through ``score_rows`` (in-sample figures;
  the OOF figures are the honest ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.optimize import minimize, minimize_scalar  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.isotonic import IsotonicRegression  # noqa: E402
from sklearn.model_selection import GroupKFold  # noqa: E402

from diagnosis.blend import calibrate  # noqa: E402
from diagnosis.hpo import (  # noqa: E402
    HPOA_FILE,
    Ontology,
    hpo_data_dir,
    load_annotations,
    parse_context_annotations,
)
from diagnosis.ranker import PARAMS_FILE, SEXES, KnowledgeRanker, age_row, evidence  # noqa: E402
from diagnosis.reference import (  # noqa: E402
    GROUPS,
    canonicalise,
    load_reference_cases,
    rank_truth,
    summarise,
)

PRESENT = ("tm", "icm", "lf", "notp")
ABSENT = ("c_absent", "a_not")
BIAS = ("b_logn", "b_sumf")
AGE = ("too_young", "adult_early_only")
SEX = ("female_xlr", "male_xld")
FEATURES = PRESENT + ABSENT + BIAS + AGE + SEX
FIXED = {"c_absent": 0.1}  # product decision (see the module docstring)
NONNEGATIVE = {"a_not"}
L2 = 1e-4
TEMPERATURE_SAMPLE = 1000
OUTER_FOLDS, INNER_FOLDS = 5, 4


# ------------------------------------------------------------------------------ features
class Features:
    """Per-case feature vectors over all diseases: dense [N, D] for the present/absent kinds,
    [D] vectors for the biases, tables + per-case row for age and sex."""

    def __init__(self, found, cases):
        t_index = {t: i for i, t in enumerate(found.terms)}
        d_index = {d: i for i, d in enumerate(found.diseases)}
        n, n_terms = len(cases), len(found.terms)

        def indicator(lists):
            r, c = [], []
            for i, terms in enumerate(lists):
                cols = sorted({t_index[t] for t in terms if t in t_index})
                r += [i] * len(cols)
                c += cols
            return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n_terms), dtype=np.float64)

        present = indicator([c.symptoms for c in cases])
        absent = indicator([[t for t in c.absent if t not in c.symptoms] for c in cases])
        self.dense = {}
        for kind in PRESENT:
            self.dense[kind] = (present @ sp.csr_matrix(found.present[kind])).toarray()
        for kind in ABSENT:
            self.dense[kind] = (absent @ sp.csr_matrix(found.absent[kind])).toarray()
        for kind in self.dense:
            self.dense[kind] = self.dense[kind].astype(np.float32)
        self.bias = {k: np.asarray(found.bias[k], dtype=np.float64) for k in BIAS}
        self.tables = {k: np.asarray(found.age[k]) for k in AGE} | {
            k: np.asarray(found.sex[k]) for k in SEX
        }
        age_rows = np.array([age_row(c.age) for c in cases])
        sex_rows = np.array([SEXES.index(c.sex) if c.sex in SEXES else 0 for c in cases])
        self.table_row = {k: age_rows for k in AGE} | {k: sex_rows for k in SEX}
        self.truth = np.array([d_index[c.truth] for c in cases])
        self.n, self.d = n, len(found.diseases)

    def candidates(self, rows, cols):
        """[len(rows), K, F] features of the candidates ``cols`` [len(rows), K]."""
        r = rows[:, None]
        out = []
        for f in FEATURES:
            if f in self.dense:
                out.append(self.dense[f][r, cols].astype(np.float64))
            elif f in self.bias:
                out.append(self.bias[f][cols])
            else:
                out.append(self.tables[f][self.table_row[f][r], cols])
        return np.stack(out, axis=-1)

    def scores(self, w, rows):
        """Weighted sum (before temperature) [len(rows), D] for the weight dict ``w``."""
        s = np.zeros((len(rows), self.d))
        s += sum(w[f] * self.bias[f] for f in BIAS)
        for f in self.dense:
            if w[f]:
                s += w[f] * self.dense[f][rows]
        for f in AGE + SEX:
            if w[f]:
                s += w[f] * self.tables[f][self.table_row[f][rows]]
        return s


# ------------------------------------------------------------------------------ fitting
def fit_weights(X, rows, omim_cols, omim_truth, shortlist):
    """Conditional logit on a shortlist of OMIM candidates (truth forced in)."""
    cheap = X.dense["icm"][rows][:, omim_cols]
    k = min(shortlist, len(omim_cols) - 1)
    part = np.argpartition(-cheap, k, axis=1)[:, :k]
    truth = omim_truth[rows]
    has = (part == truth[:, None]).any(axis=1)
    part[~has, -1] = truth[~has]
    y = np.argmax(part == truth[:, None], axis=1)
    xc = X.candidates(rows, omim_cols[part])
    n = len(rows)
    free = [i for i, f in enumerate(FEATURES) if f not in FIXED]
    offset = sum(FIXED[f] * xc[:, :, FEATURES.index(f)] for f in FIXED)
    z = xc[:, :, free]
    scale = z.reshape(-1, len(free)).std(axis=0) + 1e-9
    z = z / scale
    ar = np.arange(n)

    def nll(v):
        s = z @ v + offset
        lse = logsumexp(s, axis=1)
        p = np.exp(s - lse[:, None])
        value = (lse - s[ar, y]).sum() / n + L2 * (v @ v)
        grad = (np.einsum("nk,nkf->f", p, z) - z[ar, y].sum(axis=0)) / n + 2 * L2 * v
        return value, grad

    bounds = [(0.0, None) if FEATURES[i] in NONNEGATIVE else (None, None) for i in free]
    result = minimize(
        nll,
        np.zeros(len(free)),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 500},
    )
    w = dict(FIXED)
    for j, i in enumerate(free):
        w[FEATURES[i]] = float(result.x[j] / scale[j])
    return {f: w[f] for f in FEATURES}


def fit_temperature(s, truth, cols, seed=0):
    """ML temperature of the softmax over ``cols`` (subsample of the rows of ``s``)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(s), min(TEMPERATURE_SAMPLE, len(s)), replace=False)
    z0, t = s[idx][:, cols], truth[idx]
    ar = np.arange(len(idx))

    def nll(log_t):
        z = np.exp(log_t) * z0
        return float((logsumexp(z, axis=1) - z[ar, t]).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def top_probability(s, t, cols, truth_cols):
    """Top probability and whether it is the truth, softmax(t * s) over ``cols``."""
    z = t * s[:, cols]
    top = np.exp(z.max(axis=1) - logsumexp(z, axis=1))
    return top, z.argmax(axis=1) == truth_cols


def fit_isotonic(confidence, correct):
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(confidence, correct.astype(np.float64))
    return np.asarray(model.X_thresholds_), np.asarray(model.y_thresholds_)


class Universes:
    """The two rankings: OMIM-only and the full catalogue (truth = the OMIM entry)."""

    def __init__(self, X, diseases):
        self.cols = {
            "omim": np.flatnonzero([d.startswith("OMIM:") for d in diseases]),
            "catalogue": np.arange(len(diseases)),
        }
        self.truth = {}
        for key, cols in self.cols.items():
            index = -np.ones(len(diseases), dtype=np.int64)
            index[cols] = np.arange(len(cols))
            self.truth[key] = index[X.truth]


def fit_model(X, U, rows, shortlist):
    """Weights, then a temperature per universe, on ``rows``."""
    w = fit_weights(X, rows, U.cols["omim"], U.truth["omim"], shortlist)
    s = X.scores(w, rows)
    temps = {k: fit_temperature(s, U.truth[k][rows], U.cols[k]) for k in U.cols}
    return w, temps


def oof_top(X, U, rows, groups, folds, shortlist):
    """Grouped OOF (top probability, correct) per universe over ``rows`` (temperature only)."""
    conf = {k: np.zeros(len(rows)) for k in U.cols}
    corr = {k: np.zeros(len(rows), dtype=bool) for k in U.cols}
    for a, b in GroupKFold(folds).split(rows, groups=groups[rows]):
        w, temps = fit_model(X, U, rows[a], shortlist)
        s = X.scores(w, rows[b])
        for k in U.cols:
            conf[k][b], corr[k][b] = top_probability(s, temps[k], U.cols[k], U.truth[k][rows[b]])
    return conf, corr


def evaluate(scores, temps, maps, cols, truth_cols, cited):
    """OOF summary: ranks from the scores, ECE with the temperature and with the isotonic map."""
    p = softmax(temps[:, None] * scores[:, cols])
    ranks = rank_truth(p, list(range(len(cols))), truth_cols.tolist())
    plain = summarise(ranks, cited)
    calibrated = np.zeros(len(p))
    if maps is not None:
        for fold_map, members in maps:
            calibrated[members] = calibrate(p[members], fold_map).max(axis=1)
        iso = summarise(replace(ranks, top_probability=calibrated), cited)
        for g in plain:
            plain[g]["ece_isotonic"] = iso[g]["ece"]
            plain[g]["mean_top_probability_isotonic"] = iso[g]["mean_top_probability"]
    return plain


def print_table(title, summary):
    print(f"\n{title}")
    print(
        "| cases | group | top-1 | top-3 | top-10 | MRR | ECE (temp.) | ECE (isotonic) "
        "| mean top p (temp. / iso) | top right |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in GROUPS:
        m = summary[g]
        print(
            f"| {m['cases']} | {g} | {100 * m['top1']:.1f} | {100 * m['top3']:.1f} | "
            f"{100 * m['top10']:.1f} | {m['mrr']:.3f} | {m['ece']:.3f} | "
            f"{m.get('ece_isotonic', float('nan')):.3f} | {m['mean_top_probability']:.3f} / "
            f"{m.get('mean_top_probability_isotonic', float('nan')):.3f} | "
            f"{100 * m['top_accuracy']:.1f} |"
        )


def cross_validate(X, U, groups, cited, shortlist):
    n = X.n
    scores = np.zeros((n, X.d))
    temps = {k: np.zeros(n) for k in U.cols}
    maps = {k: [] for k in U.cols}
    fold_weights = []
    for fold, (tr, te) in enumerate(GroupKFold(OUTER_FOLDS).split(np.zeros(n), groups=groups)):
        started = time.perf_counter()
        w, t = fit_model(X, U, tr, shortlist)
        fold_weights.append(w)
        scores[te] = X.scores(w, te)
        conf, corr = oof_top(X, U, tr, groups, INNER_FOLDS, shortlist)
        for k in U.cols:
            temps[k][te] = t[k]
            maps[k].append((fit_isotonic(conf[k], corr[k]), te))
        print(
            f"  outer fold {fold + 1}/{OUTER_FOLDS}: {len(tr)} fitting / {len(te)} held-out cases, "
            f"T omim {t['omim']:.3f} catalogue {t['catalogue']:.3f}, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    out = {k: evaluate(scores, temps[k], maps[k], U.cols[k], U.truth[k], cited) for k in U.cols}
    print("\nfold weights (mean ± sd over the outer folds):")
    print(
        "  "
        + ", ".join(
            f"{f} {np.mean([w[f] for w in fold_weights]):+.3f}±"
            f"{np.std([w[f] for w in fold_weights]):.3f}"
            for f in FEATURES
        )
    )
    return out


def compact(summary):
    return {
        g: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        for g, m in summary.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cv", action="store_true", help="nested grouped CV and the OOF table")
    parser.add_argument("--shortlist", type=int, default=300)
    parser.add_argument("--out", type=Path, default=PARAMS_FILE)
    parser.add_argument("--max-cases", type=int, default=0, help="smoke test: first N cases")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print("command: OMP_NUM_THREADS=1 python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    print(__doc__.split("Protocol\n--------\n")[1].rstrip(), flush=True)

    ontology = Ontology.load()
    annotations = load_annotations()
    context = parse_context_annotations(hpo_data_dir() / HPOA_FILE)
    found = evidence(ontology, annotations, context)
    loaded = canonicalise(load_reference_cases(), ontology.canonical)
    cases = loaded.cases[: args.max_cases or None]
    print(
        f"\nHPO release {ontology.release}: {len(found.terms):,} terms, {len(found.diseases):,} "
        f"diseases (ORPHA+OMIM), evidence {found.seconds:.1f} s; {len(cases):,} cases "
        f"({sum(c.cited for c in cases):,} cited; {loaded.terms_mapped} ids mapped, "
        f"{loaded.terms_dropped} dropped, {loaded.cases_dropped} cases dropped)",
        flush=True,
    )
    X = Features(found, cases)
    U = Universes(X, found.diseases)
    groups = np.array([c.truth for c in cases])
    cited = np.array([c.cited for c in cases])
    print(f"features {time.perf_counter() - started:.0f} s", flush=True)

    oof = None
    if args.cv:
        print(f"\ncross-validation ({OUTER_FOLDS}-fold grouped by truth disease, nested):")
        oof = cross_validate(X, U, groups, cited, args.shortlist)
        print_table("OOF, (a) OMIM-only ranking:", oof["omim"])
        print_table("OOF, (b) full ORPHA+OMIM catalogue (hit = the OMIM truth):", oof["catalogue"])
        print(f"\ncross-validation done at {time.perf_counter() - started:.0f} s", flush=True)

    # deployment: weights and temperature on all cases; isotonic on grouped OOF predictions
    everything = np.arange(X.n)
    w, temps = fit_model(X, U, everything, args.shortlist)
    conf, corr = oof_top(X, U, everything, groups, OUTER_FOLDS, args.shortlist)
    x_iso, y_iso = fit_isotonic(conf["catalogue"], corr["catalogue"])
    print("\nfitted on all cases: " + ", ".join(f"{f} {v:+.4f}" for f, v in w.items()))
    print(
        f"temperature: catalogue {temps['catalogue']:.4f} (written), OMIM-only "
        f"{temps['omim']:.4f}; isotonic map {len(x_iso)} points",
        flush=True,
    )
    if oof is not None:
        a, c = oof["omim"], oof["catalogue"]
        figures = (
            f"OMIM-only top-1/3/10 {100 * a['all']['top1']:.1f}/{100 * a['all']['top3']:.1f}/"
            f"{100 * a['all']['top10']:.1f} (uncited {100 * a['uncited']['top1']:.1f}/"
            f"{100 * a['uncited']['top3']:.1f}/{100 * a['uncited']['top10']:.1f}); full "
            f"catalogue {100 * c['all']['top1']:.1f}/{100 * c['all']['top3']:.1f}/"
            f"{100 * c['all']['top10']:.1f} (uncited {100 * c['uncited']['top1']:.1f}/"
            f"{100 * c['uncited']['top3']:.1f}/{100 * c['uncited']['top10']:.1f}), ECE "
            f"{c['all']['ece']:.3f} temperature only, {c['all']['ece_isotonic']:.3f} isotonic"
        )
    else:
        figures = "not run; use --cv"
    params = {
        "weights": w,
        "temperature": temps["catalogue"],
        "calibration": {"x": x_iso.tolist(), "y": y_iso.tolist()},
        "source": (
            f"fitted on the {X.n:,} development cases by tests/benchmarks/fit_ranker.py "
            f"(grouped 5-fold CV figures: {figures}); c_absent fixed at 0.1, a_not >= 0; "
            f"HPO release {ontology.release}"
        ),
        "oof": None
        if oof is None
        else {"omim_only": compact(oof["omim"]), "catalogue": compact(oof["catalogue"])},
    }
    args.out.write_text(json.dumps(params, indent=1) + "\n")
    print(f"wrote {args.out}", flush=True)

    # verification: the written file through the product's compile and scoring path
    ranker = KnowledgeRanker.build(ontology, annotations, context, params=params)
    rows = [ranker.query_rows(c.symptoms, c.absent, c.age, c.sex) for c in cases]
    scores = np.concatenate(
        [ranker.score_rows(rows[i : i + 500]) for i in range(0, len(rows), 500)]
    ).astype(np.float64)
    reference = temps["catalogue"] * X.scores(w, np.arange(min(300, X.n)))
    print(
        f"\nverification: compiled ranker (build {ranker.build_seconds:.1f} s, nnz {ranker.nnz:,}); "
        f"max |score_rows - T·feature sum| over 300 cases "
        f"{np.abs(scores[: len(reference)] - reference).max():.2e}"
    )
    probabilities = calibrate(softmax(scores), ranker.calibration)
    for key, title in (("omim", "OMIM-only"), ("catalogue", "full catalogue")):
        cols = U.cols[key]
        ranks = rank_truth(probabilities[:, cols], list(range(len(cols))), U.truth[key].tolist())
        s = summarise(ranks, cited)
        print(
            f"  in-sample {title}: top-1/10 all {100 * s['all']['top1']:.1f}/"
            f"{100 * s['all']['top10']:.1f}, uncited {100 * s['uncited']['top1']:.1f}/"
            f"{100 * s['uncited']['top10']:.1f}"
            + (f", ECE (isotonic) {s['all']['ece']:.3f}" if key == "catalogue" else "")
        )
    print("  (in-sample figures; the OOF table above is the honest measure)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
