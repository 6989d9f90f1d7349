"""The quality gate's figures for the model a home serves, scored as ``model_evaluation`` scores a
challenger, beside the policy's floors and ceiling.

    python tests/benchmarks/gate_figures.py --home TRIAGE_HOME [--broken-blend]

Reads the home's ``training_table`` and ``reference_cases`` asset values and its deployed
artifact, and runs :func:`assets.evaluation.score_challenger` (blend fitted on the calibration
half, held-out records, simulated rare cases, the same rare cases as a triage desk sees them,
the real published cases). The model's fitted blend is the deployed one (the same seed and data),
so the figures are those the gate saw. Prints each gated figure with its limit, the served orphan
probability of the incident's patient (a 3-year-old with seizures, developmental delay and
microcephaly), and what the gate would say. How the floors were chosen: README, "What the gate
checks". ``--broken-blend`` scores the same model with its fitted blend broken as
``tests/assets/test_gate_served.py`` breaks it (intercept 10 lower, evidence weighted 1.5 times),
the incident's kind of model.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

INCIDENT = {"age": 3, "sex": "female", "symptoms": ["HP:0001250", "HP:0001263", "HP:0000252"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a TRIAGE_HOME with a deployment")
    parser.add_argument(
        "--broken-blend",
        action="store_true",
        help="break the fitted blend as the gate's test does (orphans with weak evidence suppressed)",
    )
    args = parser.parse_args()
    home = args.home.resolve()
    os.environ["TRIAGE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    warnings.filterwarnings("ignore")

    import dagster as dg

    from assets.evaluation import REAL_GROUPS, gate_failures, score_challenger
    from diagnosis.runtime import load_deployment
    from diagnosis.training.fitting import knowledge_cases
    from orchestration.definitions import defs
    from orchestration.resources import ModelPolicy

    started = time.perf_counter()
    policy = ModelPolicy()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        table = defs.load_asset_value("training_table", instance=instance)
        reference = defs.load_asset_value("reference_cases", instance=instance)
    runtime = load_deployment(home / "deployments")
    cases = knowledge_cases(policy.knowledge_cases, policy.random_seed + 1)
    if args.broken_blend:
        from diagnosis.blend import BlendParams
        from diagnosis.training import evaluation

        fit_blend = evaluation.fit_blend

        def broken_fit(runtime, parts, truth):
            fitted = fit_blend(runtime, parts, truth)
            c = fitted.coef
            return BlendParams((c[0], 1.5 * c[1], c[2]), fitted.intercept - 10.0, fitted.alpha)

        evaluation.fit_blend = broken_fit
    result = score_challenger(runtime, table, cases, reference, policy.random_seed)
    metrics = result.metrics
    rows = [
        ("macro_f1", ">=", policy.min_macro_f1),
        ("orphan_recall", ">=", policy.min_orphan_recall),
        ("rare_top10", ">=", policy.min_rare_top10),
        ("rare_mean_orphan_probability", "", None),
        *[
            (f"real_{group}_mean_orphan_probability", ">=", policy.min_real_orphan_probability)
            for group in REAL_GROUPS
        ],
        *[(f"real_{group}_orphan_below_half_share", "", None) for group in REAL_GROUPS],
        ("rare_desk_mean_orphan_probability", ">=", policy.min_desk_orphan_probability),
        ("rare_desk_orphan_below_half_share", "", None),
        ("rare_desk_top10", "", None),
        ("real_all_ece", "<=", policy.max_real_ece),
        ("real_cited_ece", "", None),
        ("real_uncited_ece", "", None),
        ("real_all_top10", "", None),
    ]
    print(f"home {home}: deployed {runtime.version}{' (blend broken)' * args.broken_blend}")
    print(f"{'figure':40s} {'value':>8s}  limit")
    for name, sense, limit in rows:
        shown = f"{sense} {limit}" if limit is not None else "(reported)"
        print(f"{name:40s} {metrics[name]:8.3f}  {shown}")
    print(f"rare_desk_cases {metrics['rare_desk_cases']}, {metrics['rare_desk_findings']} findings")
    incident = float(result.served.score([INCIDENT]).orphan[0])
    print(f"incident patient (3 y, HP:0001250 HP:0001263 HP:0000252): orphan {incident:.4f}")
    failures = gate_failures(policy, metrics)
    print("gate (no champion):", "; ".join(failures) or "all floors met")
    print(f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
