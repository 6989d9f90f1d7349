"""Benchmark: the whole pipeline at hospital scale, per asset (issue 17's cost model).

    python tests/benchmarks/bench_pipeline.py [--patients 10000 100000] [--million]
                                              [--weeks 4] [--new-week-rows 25000] [--keep]

For each N: ``triage simulate --patients N --weeks 4`` into the landing zone of a fresh temporary
TRIAGE_HOME, then ``triage pipeline --no-seed`` as a subprocess (the product command, its own
executor choice), while a sampler reads the resident memory of the pipeline's process tree from
/proc every 0.2 s. After the run, the Dagster event log of that home gives each step's start and
end; a step's peak RSS is the largest sample taken while it ran. The weekly validations are summed
over their partitions. Then (``--new-week-rows``, default 25 000) one more weekly file is dropped
into the landing zone and the pipeline runs again: validation of the new week + retraining, the
"new weekly file, nothing else changed" case. A run whose challenger the quality gate refuses
(exit 3) ran every step: its figures count (marked "gate refused"), the new week follows it, and
the end of the report says which runs deployed nothing; a run that failed counts as a target
not met.

Printed: per-size tables (seconds and peak MB per step), the growth of each step between sizes
(time ratio and the exponent b of t ~ N^b), the load average beside the figures (the machine is
shared), and whether issue 17's targets are met:
  100 k patients end to end <= 180 s and peak RSS <= 2 GB; 1 M <= 20 min without swapping
  (pages swapped out while the run lasted, /proc/vmstat);
  a new weekly file of 25 k rows: validation + retraining <= 60 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# `triage pipeline` ran every step and the quality gate refused the challenger
from orchestration.cli import EXIT_GATE_REFUSED

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = str(Path(sys.executable).with_name("triage"))
TARGET_100K_SECONDS = 180.0
TARGET_100K_RSS_MB = 2048.0
TARGET_1M_SECONDS = 1200.0
TARGET_NEW_WEEK_SECONDS = 60.0
START = "2026-01-05"


# ------------------------------------------------------------------------------ memory sampling
def _meminfo_mb(field_name: str) -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def total_memory_mb() -> float:
    return _meminfo_mb("MemTotal")


def swap_total_mb() -> float:
    return _meminfo_mb("SwapTotal")


def swapped_out_mb() -> float:
    """MB the kernel has swapped out since boot (/proc/vmstat pswpout), 0 without the file."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "pswpout":
                return int(value) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        pass
    return 0.0


def _tree_rss_mb(root: int) -> float:
    """Resident memory (MB) of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = pages * page
    total, todo = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / 2**20


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []  # (unix time, MB)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), _tree_rss_mb(self.pid)))
            self.stop.wait(self.every)

    def peak(self, start: float = 0.0, end: float = math.inf) -> float:
        inside = [mb for t, mb in self.samples if start <= t <= end]
        return max(inside, default=float("nan"))


# ------------------------------------------------------------------------------ one run
@dataclass
class Step:
    seconds: float = 0.0
    peak_mb: float = 0.0
    count: int = 0


@dataclass
class RunFigures:
    label: str
    wall: float
    peak_mb: float  # sampled, whole process tree
    maxrss_mb: float  # getrusage of the largest single process
    steps: dict[str, Step] = field(default_factory=dict)
    ok: bool = True
    refused: bool = False  # exit 3: every step ran, the quality gate refused the challenger

    @property
    def ran_every_step(self) -> bool:
        return self.ok or self.refused

    swapped_out_mb: float = 0.0  # pages the kernel swapped out while the run lasted (any process)


CODE: Path | None = None  # --code: another checkout of the project to run (a "before" figure)


def pipeline_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRIAGE_", "DAGSTER_", "MLFLOW_")) or k == "TRIAGE_EXECUTOR"
    }
    env.update(
        TRIAGE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
        TRIAGE_ENV="local",
    )
    if CODE is not None:
        env["PYTHONPATH"] = str(CODE)
    return env


def step_times(home: Path, since: float, sampler: Sampler) -> dict[str, Step]:
    """Per step key (partitions summed): seconds from STEP_START to STEP_SUCCESS/FAILURE, and the
    peak sampled RSS while it ran, for every run that started after ``since``."""
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    import dagster as dg

    steps: dict[str, Step] = {}
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            records = instance.all_logs(run.run_id)
            if not records or records[0].timestamp < since:
                continue
            started: dict[str, float] = {}
            for record in records:
                event = record.dagster_event
                if event is None or record.step_key is None:
                    continue
                if event.event_type_value == "STEP_START":
                    started[record.step_key] = record.timestamp
                elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                    t0 = started.pop(record.step_key, None)
                    if t0 is None:
                        continue
                    peak = sampler.peak(t0, record.timestamp + 0.2)
                    keys = [record.step_key]
                    if "." in record.step_key:  # a graph asset's op: also count the whole asset
                        keys.append(record.step_key.split(".")[0] + " (all its steps)")
                    for key in keys:
                        step = steps.setdefault(key, Step())
                        step.seconds += record.timestamp - t0
                        step.peak_mb = max(step.peak_mb, peak)
                        step.count += 1
    return steps


# the weekly validation and the training assets up to the fitted model: "validation + retraining"
RETRAINING = (
    "raw_patient_records",
    "validated_patient_records",
    "training_table",
    "training_features",
    "model_selection",
    "model_selection (all its steps)",
    "balanced_training_set",
    "diagnosis_model",
)


def retraining_seconds(figures: RunFigures) -> float:
    return sum(figures.steps[k].seconds for k in RETRAINING if k in figures.steps)


def run_pipeline(home: Path, label: str) -> RunFigures:
    env = pipeline_env(home)
    since = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [TRIAGE, "pipeline", "--no-seed"],
        env=env,
        cwd=CODE or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    swapped_before = swapped_out_mb()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    swapped = swapped_out_mb() - swapped_before
    sampler.stop.set()
    sampler.join()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    refused = proc.returncode == EXIT_GATE_REFUSED
    if proc.returncode not in (0, EXIT_GATE_REFUSED):
        print(f"  pipeline FAILED (exit {proc.returncode}):\n{out[-4000:]}")
    elif refused:  # the pipeline's own line naming the refusing check and its reasons
        print(*(f"  {line.strip()}" for line in out.splitlines() if " refused: " in line), sep="\n")
    figures = RunFigures(
        label,
        wall,
        sampler.peak(),
        maxrss,
        step_times(home, since, sampler),
        proc.returncode == 0,
        refused,
        swapped,
    )
    return figures


def simulate(landing: Path, patients: int, weeks: int, seed: int, start: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            TRIAGE,
            "simulate",
            "--patients",
            str(patients),
            "--weeks",
            str(weeks),
            "--seed",
            str(seed),
            "--start",
            start,
            "--out",
            str(landing),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
        env=pipeline_env(landing.parent),
    )
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ reporting
def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} / {five:.2f}"


def print_run(figures: RunFigures) -> None:
    print(
        f"  {figures.label}: wall {figures.wall:.1f} s, peak RSS {figures.peak_mb:.0f} MB "
        f"(tree, sampled; largest process {figures.maxrss_mb:.0f} MB), "
        f"{'ok' if figures.ok else 'gate refused' if figures.refused else 'FAILED'}, "
        f"swapped out {figures.swapped_out_mb:.0f} MB, {load()}"
    )
    print(f"    {'step':<44} {'runs':>4} {'seconds':>9} {'peak MB':>8}")
    for key, step in sorted(figures.steps.items(), key=lambda kv: -kv[1].seconds):
        print(f"    {key:<44} {step.count:>4} {step.seconds:>9.1f} {step.peak_mb:>8.0f}")


def print_growth(results: dict[int, RunFigures]) -> None:
    sizes = sorted(results)
    if len(sizes) < 2:
        return
    print("\ngrowth with N (time ratio; exponent b of t ~ N^b; peak MB):")
    keys = sorted({k for r in results.values() for k in r.steps})
    header = "  " + f"{'step':<44}" + "".join(f"{f'{n:,} s':>12}" for n in sizes)
    print(header + "   ratio     b")
    for key in keys + ["(whole pipeline)"]:
        if key == "(whole pipeline)":
            times = [results[n].wall for n in sizes]
        else:
            times = [results[n].steps.get(key, Step(float("nan"))).seconds for n in sizes]
        lo, hi = times[0], times[-1]
        ratio = hi / lo if lo > 0 else float("nan")
        b = math.log(ratio) / math.log(sizes[-1] / sizes[0]) if ratio > 0 else float("nan")
        cells = "".join(f"{t:>12.1f}" for t in times)
        print(f"  {key:<44}{cells} {ratio:>7.1f} {b:>5.2f}")


def verdict(name: str, value: float, limit: float, unit: str) -> bool:
    ok = value <= limit
    print(
        f"  {'MET ' if ok else 'NOT MET'} {name}: {value:.1f} {unit} (target <= {limit:g} {unit})"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="add 1,000,000 patients")
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--new-week-rows",
        type=int,
        default=25_000,
        help="rows of the extra weekly file dropped after each full run (0: skip)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument(
        "--code",
        type=Path,
        help="run another checkout of the project (e.g. `git archive` of an older commit) with "
        "this environment: the 'before' figures",
    )
    args = parser.parse_args()
    global CODE
    CODE = args.code.resolve() if args.code else None
    sizes = sorted(set(args.patients + ([1_000_000] if args.million else [])))

    print(
        f"bench-pipeline: sizes {sizes}, {args.weeks} weeks, {os.cpu_count()} cores, {load()}, "
        f"code {CODE or ROOT}"
    )
    results: dict[int, RunFigures] = {}
    incremental: dict[int, RunFigures] = {}
    for n in sizes:
        home = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{n}-"))
        try:
            seconds = simulate(home / "landing", n, args.weeks, args.seed, START)
            print(f"\nN = {n:,}: simulated {args.weeks} weeks in {seconds:.1f} s ({home})")
            results[n] = run_pipeline(home, f"full pipeline, {n:,} patients")
            print_run(results[n])
            # a refused challenger still ran every step: the new week is measured after it too
            if args.new_week_rows and (results[n].ok or results[n].refused):
                monday = dt.date.fromisoformat(START) + dt.timedelta(weeks=args.weeks)
                simulate(home / "landing", args.new_week_rows, 1, args.seed + 1, monday.isoformat())
                incremental[n] = run_pipeline(
                    home, f"new weekly file of {args.new_week_rows:,} rows after {n:,}"
                )
                print_run(incremental[n])
        finally:
            if args.keep:
                print(f"  kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)

    print_growth(results)
    print(f"\ntargets (issue 17), {load()}:")
    met = True
    if 100_000 in results:
        r = results[100_000]
        met &= (
            verdict("100 k patients end to end", r.wall, TARGET_100K_SECONDS, "s")
            and r.ran_every_step
        )
        met &= verdict("100 k patients peak RSS", r.peak_mb, TARGET_100K_RSS_MB, "MB")
    else:
        print("  (100 k not run)")
    if 1_000_000 in results:
        r = results[1_000_000]
        met &= (
            verdict("1 M patients end to end", r.wall, TARGET_1M_SECONDS, "s") and r.ran_every_step
        )
        met &= verdict("1 M patients swapped out", r.swapped_out_mb, 0.0, "MB")
        print(
            f"          (peak RSS {r.peak_mb:,.0f} MB of {total_memory_mb():,.0f} MB; "
            f"swap configured: {swap_total_mb():,.0f} MB)"
        )
    else:
        print("  (1 M not run: --million)")
    for n, r in sorted(incremental.items()):
        met &= r.ran_every_step
        name = (
            f"new weekly file ({args.new_week_rows:,} rows) after {n:,}: validation + retraining "
            f"(steps {', '.join(RETRAINING[:3])}, ..., diagnosis_model)"
        )
        if (n, args.new_week_rows) == (100_000, 25_000):
            met &= verdict(name, retraining_seconds(r), TARGET_NEW_WEEK_SECONDS, "s")
        else:  # the target is set for one case; the others are figures, said as such
            print(
                f"  (figure) {name}: {retraining_seconds(r):.1f} s (not a target: issue 17's is "
                f"{TARGET_NEW_WEEK_SECONDS:g} s for 25,000 rows after 100,000)"
            )
        print(
            f"          (the whole pipeline run, evaluation, export and deployment included: {r.wall:.1f} s)"
        )
    print(f"  {'every figure above is within its target' if met else 'not every target was met'}")
    # Whether a run's challenger was deployed is the quality gate's decision on the model, not a
    # figure of scale: said apart, and never hidden.
    runs = [(f"{n:,} patients", r) for n, r in sorted(results.items())] + [
        (f"new week after {n:,}", r) for n, r in sorted(incremental.items())
    ]
    for name, r in runs:
        if not r.ran_every_step:
            print(f"  {name}: the pipeline FAILED (see its output above): its figures do not count")
        elif r.refused:
            print(
                f"  {name}: every step ran, and the quality gate refused the challenger: nothing "
                "was deployed (its reasons above)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
