"""Benchmark: two code trees' ``Runtime.predict`` over one deployment, timed in alternation.

    python tests/benchmarks/bench_ab.py BASE_DIR CHANGED_DIR [--home TRIAGE_HOME] [--rounds 15]

On a shared machine a figure moves by 2x between two runs of the same code, so a speed change is
read from pairs measured a moment apart. Each directory is a checkout of this repository (for
example ``git worktree add /tmp/base main``); one worker process per tree imports the runtime from
it and loads the deployment ``TRIAGE_HOME/deployments/current.json`` points to (default ./.triage,
as ``make pipeline`` leaves it). Then, round after round, each worker in turn times one block of
calls in thread CPU time:

* ``run 1`` / ``run 64``: the runtime's scoring call (``Runtime._run``, top_k=10) for the febrile
  patient of ``bench_api.py`` alone, and for 64 landing patients (one chunk of a batch);
* ``predict 1``: ``Runtime.predict`` for that patient (what ``POST /v1/predict`` calls);
* ``predict 1000``: one call for 1,000 landing patients (``POST /v1/predict/batch``);
* ``explained``: ``predict(..., explain=True)`` for that patient.

Printed per case, in µs per patient: each tree's fastest and median block, and the median of the
per-round ratios CHANGED / BASE (below 1: the change is faster). The load average is printed
beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("run 1", "run 64", "predict 1", "predict 1000", "explained")


def worker(code: Path, home: Path) -> None:
    """Serve timing requests on stdin: one case name a line, the block's µs per patient back."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path[:0] = [str(code / "tests" / "benchmarks"), str(code)]
    import msgspec
    from bench_api import PATIENT
    from bench_explain import patients_from_landing

    from diagnosis.runtime import load_deployment
    from serving.structs import Patient, patient_input

    model = load_deployment(home / "deployments")
    body = msgspec.convert(PATIENT, Patient)
    patient = model.as_scored(patient_input(body))
    batch = [model.as_scored(p) for p in patients_from_landing(home / "landing", 1000)]
    cases = {  # (call, calls per block, patients per call)
        "run 1": (lambda: model._run([patient], 10, None), 100, 1),
        "run 64": (lambda: model._run(batch[:64], 10, None), 5, 64),
        "predict 1": (lambda: model.predict([patient], 10), 100, 1),
        "predict 1000": (lambda: model.predict(batch, 10), 1, len(batch)),
        "explained": (lambda: model.predict([patient], 10, explain=True), 30, 1),
    }
    for call, _, _ in cases.values():
        call()
    print("ready", flush=True)
    for line in sys.stdin:
        call, calls, patients = cases[line.strip()]
        started = time.thread_time()
        for _ in range(calls):
            call()
        print((time.thread_time() - started) / calls / patients * 1e6, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="checkout of the code before the change")
    parser.add_argument("changed", type=Path, help="checkout of the code after the change")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TRIAGE_HOME", ".triage")))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.worker:
        worker(args.worker, home)
        return 0
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")
    trees = [args.base.resolve(), args.changed.resolve()]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(t), str(t), "--home", str(home), "--worker", str(t)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for t in trees
    ]
    try:
        for process, tree in zip(workers, trees):
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"the worker for {tree} did not start")
        print(f"paired A/B, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f} at start")
        print(f"  A = {trees[0]}\n  B = {trees[1]}")
        print(f"  {'case':<13} | {'A min':>7} {'A med':>7} | {'B min':>7} {'B med':>7} | B/A")
        for case in CASES:
            times: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                for process, measured in zip(workers, times):
                    process.stdin.write(case + "\n")
                    process.stdin.flush()
                    measured.append(float(process.stdout.readline()))
            a, b = times
            ratio = statistics.median(y / x for x, y in zip(a, b))
            print(
                f"  {case:<13} | {min(a):7.1f} {statistics.median(a):7.1f} | "
                f"{min(b):7.1f} {statistics.median(b):7.1f} | {ratio:.3f}"
            )
        print(f"  µs per patient, thread CPU; load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        for process in workers:
            process.stdin.close()
            process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
