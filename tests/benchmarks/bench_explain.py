"""Benchmark: what the per-prediction explanation (API v1.2, occlusion) costs, in process.

    python tests/benchmarks/bench_explain.py [--home TRIAGE_HOME] [--patients 500] [--rounds 3]

Loads the model ``TRIAGE_HOME/deployments/current.json`` points to (default ./.triage, as left by
``make pipeline``), takes the first N valid records of the weekly exports in ``landing/`` (validated
exactly as the pipeline does) as request bodies, and times ``Runtime.predict`` per patient
(``top_k=10``, as ``POST /v1/predict`` calls it) with and without explanations, then one call for
all N patients (as ``POST /v1/predict/batch`` does). Each mode runs ``--rounds`` times, alternating;
the fastest round is reported (the machine is shared), with p50/p99 of the single calls of that
round. Also printed: occlusion rows and onnxruntime calls per explained patient.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from diagnosis.explain import occlusion_rows  # noqa: E402
from diagnosis.runtime import load_deployment  # noqa: E402
from schemas.validation import read_raw_export, validate_records  # noqa: E402
from serving.structs import validate_patient_body  # noqa: E402

FIELDS = ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp", "symptoms")


def patients_from_landing(landing: Path, n: int) -> list[dict]:
    bodies: list[dict] = []
    for export in sorted(landing.glob("records_*")):
        valid = validate_records(read_raw_export(export), b"bench-explain").valid
        for row in valid.select(FIELDS).to_dicts():
            row["symptoms"] = list(row["symptoms"] or [])
            clean, problems = validate_patient_body(row)  # the API's own request check
            if clean is not None and not problems:
                bodies.append(clean)
            if len(bodies) == n:
                return bodies
    if not bodies:
        raise SystemExit(f"no valid records under {landing}")
    return bodies


def time_single(model, patients: list[dict], explain: bool) -> np.ndarray:
    seconds = np.empty(len(patients))
    for i, patient in enumerate(patients):
        started = time.perf_counter()
        model.predict([patient], 10, explain=explain)
        seconds[i] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("TRIAGE_HOME", ".triage"))
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")
    model = load_deployment(home / "deployments")
    patients = patients_from_landing(home / "landing", args.patients)

    rows, calls = [], []
    for patient in patients:
        _, occluded = occlusion_rows(patient, model.spec.vitals, model.spec.sexes)
        rows.append(len(occluded))
        # the patient and its occlusion rows go through one call (Runtime.rank), unless they
        # outnumber a chunk (diagnosis.runtime.CHUNK_ROWS)
        calls.append(1)

    time_single(model, patients[:50], False)  # warm-up
    time_single(model, patients[:50], True)
    best: dict[str, np.ndarray] = {}
    batch: dict[str, float] = {}
    for _ in range(args.rounds):
        for mode, explain in (("off", False), ("on", True)):
            seconds = time_single(model, patients, explain)
            if mode not in best or seconds.sum() < best[mode].sum():
                best[mode] = seconds
            started = time.perf_counter()
            model.predict(patients, 10, explain=explain)
            elapsed = time.perf_counter() - started
            batch[mode] = min(batch.get(mode, elapsed), elapsed)

    print(
        f"explanation cost, model {model.version}, {len(patients)} patients from {home}/landing, "
        f"fastest of {args.rounds} rounds, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(
        f"symptoms per patient: mean {np.mean([len(p['symptoms']) for p in patients]):.1f}; "
        f"occlusion rows per patient: mean {np.mean(rows):.1f}, max {max(rows)}; "
        f"onnxruntime calls per explained patient: mean {np.mean(calls):.1f}, max {max(calls)}"
    )
    print(
        f"{'explain':>7} | {'mean ms':>7} | {'p50 ms':>6} | {'p99 ms':>6} | "
        f"{'total s':>7} | {'batch call s':>12}"
    )
    for mode in ("off", "on"):
        ms = best[mode] * 1e3
        print(
            f"{mode:>7} | {ms.mean():>7.3f} | {np.percentile(ms, 50):>6.3f} | "
            f"{np.percentile(ms, 99):>6.3f} | {best[mode].sum():>7.3f} | {batch[mode]:>12.3f}"
        )
    extra = (best["on"].mean() - best["off"].mean()) * 1e3
    print(
        f"per patient: +{extra:.3f} ms with explanations "
        f"({best['on'].mean() / best['off'].mean():.2f}x); batch of {len(patients)}: "
        f"{batch['on'] / batch['off']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
