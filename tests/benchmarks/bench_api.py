"""Benchmark: the real API process under load on loopback, driven by wrk, with its cost model.

    python tests/benchmarks/bench_api.py [--home TRIAGE_HOME] [--workers 1] [--duration 8]
                                         [--rounds 2] [--connections 8] [--compare] [--no-stages]
                                         [--no-split]

Starts the API on a free loopback port over a deployed TRIAGE_HOME (default ./.triage, as left by
``make pipeline``) as ``triage serve`` runs it (uvicorn, ``--workers N``, no access log,
prediction log on), built by :func:`bench_app`: the shipped app plus one bench-only route,
``POST /bench/parse``, that only parses the predict body into the typed ``Patient`` and answers
like ``/health`` (the HTTP floor of a POST with the same JSON body; it exists only in this
script's server). wrk (Debian package ``wrk``) then drives, with 8 connections:

* ``GET /health`` and ``POST /bench/parse`` (the floor);
* ``POST /v1/predict`` with one febrile patient (top_k=10, the full catalogue of the deployed
  model), with the explanation (the API's default for one patient) and with ``explain=false``;
* ``POST /v1/predict/batch`` with 1,000 patients (the first valid records of ``landing/``) per
  request, 2 connections.

They are measured in alternation, ``--rounds`` times, so that a burst of load from other jobs on a
shared machine hits all of them: ratios to /health are computed round by round (same server, same
minute) and averaged; latencies are the worst round's. ``server CPU µs/req`` is the CPU time the
server's processes spent per answered request (from /proc), a figure that other jobs on the
machine disturb much less than throughput. The cost model follows: the floor, what a prediction
adds to it, split into ``Runtime.predict`` (timed in this process by ``bench_inprocess.py``, which
also prints each stage beside its limit) and the server's own work (auth, validation, prediction
log, metrics, encoding, scheduling: the rest). The targets
of issue 13 are printed with met / not met, and the load average beside the figures.

``--split`` (the default; ``--no-split`` skips it) first starts the same server with
``Runtime.predict`` memoised (each request shape is scored once, then its answer is returned; the
server does everything else as usual) and measures the parse-only POST and both predict calls on
it: their server CPU is the server's own work, and what the real server spends beyond it is the
runtime as it runs inside the server (colder than alone in a loop).

``--compare`` also measures the alternatives the choice was made against: the other uvicorn
worker count, and granian with 1 and 2 workers when it is importable (``pip install granian``; it
is not a dependency). Each server is stopped by its own process group.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

TOKEN = "bench-clinician-token"
PATIENT = {
    "age": 41,
    "sex": "female",
    "heart_rate": 112,
    "body_temperature": 39.4,
    "systolic_bp": 112,
    "diastolic_bp": 70,
    "symptoms": ["HP:0001945", "HP:0012735"],
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
BATCH = 1000
# issue 13's targets, one worker on loopback, measured in one run
TARGET_RATIO = {"predict, no explanation": 0.35, "predict": 0.15}  # throughput / /health's
TARGET_CPU_US = {"predict, no explanation": 250.0, "predict": 600.0}  # server CPU per request
TARGET_P99_MS = 10.0  # explained, 8 connections
TARGET_BATCH_PER_S = 10_000  # patients/s through HTTP, 1,000 a request
TARGET_RSS_MB = 500.0  # per worker
CACHED_RUNTIME_ENV = "BENCH_CACHED_RUNTIME"  # the --split server: Runtime.predict memoised
# (name, path, body script, connections: None = --connections)
ENDPOINTS: tuple[tuple[str, str, str | None, int | None], ...] = (
    ("health", "/health", None, None),
    ("parse-only POST", "/bench/parse", "predict", None),
    ("predict", "/v1/predict?top_k=10", "predict", None),  # explanation on: the default
    ("predict, no explanation", "/v1/predict?top_k=10&explain=false", "predict", None),
    (f"batch of {BATCH}", "/v1/predict/batch?top_k=10", "batch", 2),
)


def bench_app():  # noqa: ANN201 - a Litestar app, imported lazily
    """The shipped app (:func:`serving.app.create_app`) plus ``POST /bench/parse``: the same
    JSON body parsed into the typed ``Patient`` and a ``/health``-sized answer. Only the server
    this script starts has it (``uvicorn --factory bench_api:bench_app``)."""
    from litestar import post
    from litestar.params import JSONBody

    from serving.app import create_app
    from serving.structs import Health, Patient

    @post(
        "/bench/parse",
        status_code=200,
        include_in_schema=False,
        signature_namespace={"JSONBody": JSONBody, "Patient": Patient, "Health": Health},
    )
    async def parse_only(data: JSONBody[Patient]) -> Health:
        return Health(status="ok")

    if os.environ.get(CACHED_RUNTIME_ENV):
        _memoise_runtime()
    app = create_app()
    app.register(parse_only)
    return app


def _memoise_runtime() -> None:
    """``Runtime.predict`` answers each (patients, top_k, explain) shape once and then returns
    that answer: the server does everything else as usual (auth, validation, budget, prediction
    log, metrics, encoding), so its CPU per request is the server's own work (the cost model's
    split). Only in the server ``--split`` starts."""
    from diagnosis.runtime import Runtime

    real = Runtime.predict
    answers: dict[tuple[int, int, bool], object] = {}

    def predict(self, patients, top_k, *, explain=False, symptom_name=None):  # noqa: ANN001, ANN202
        key = (len(patients), top_k, explain)
        if key not in answers:
            answers[key] = real(self, patients, top_k, explain=explain, symptom_name=symptom_name)
        return answers[key]

    Runtime.predict = predict  # type: ignore[method-assign]


@dataclass
class Config:
    name: str
    command: list[str]
    workers: int


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    non_2xx: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configs(workers: int, compare: bool) -> list[Config]:
    """The shipped configuration first, then (``--compare``) the alternatives."""

    def uvicorn(n: int) -> Config:  # what `triage serve` runs (serving.app.serve), + the floor
        return Config(
            f"uvicorn as `triage serve`, {n} worker(s)",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "--app-dir",
                str(Path(__file__).resolve().parent),
                "bench_api:bench_app",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--workers",
                str(n),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            n,
        )

    chosen = [uvicorn(workers)]
    if not compare:
        return chosen
    alternatives = [uvicorn(n) for n in (1, 2) if n != workers]
    if importlib.util.find_spec("granian") is not None:
        alternatives += [
            Config(
                f"granian, {n} worker(s)",
                [
                    sys.executable,
                    "-m",
                    "granian",
                    "--interface",
                    "asgi",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                    "--workers",
                    str(n),
                    "--factory",
                    "--app-dir",
                    str(Path(__file__).resolve().parent),
                    "bench_api:bench_app",
                ],
                n,
            )
            for n in (1, 2)
        ]
    else:
        print("granian is not importable: its rows are skipped (pip install granian)")
    return chosen + alternatives


def start_server(
    config: Config, home: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "TRIAGE_HOME": str(home),
        "TRIAGE_API_KEYS": f"clinician:{TOKEN}",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    command = [part.replace("{port}", str(port)) for part in config.command]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                if answer.status == 200:
                    time.sleep(1.0 if config.workers > 1 else 0.0)  # let every worker finish
                    return process, base
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"{config.name}: the API exited before it was ready")
        time.sleep(0.3)
    stop(process)
    raise SystemExit(f"{config.name}: the API was not ready within 120 s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in the server's process group."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pgid: int) -> tuple[float, float]:
    """(RSS of every process of the server's group, the largest single process's), in MB."""
    sizes = []
    for pid in group_pids(pgid):
        try:
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        sizes.append(int(match.group(1)) if match else 0)
    return sum(sizes) / 1024, max(sizes, default=0) / 1024


def wrk(url: str, duration: int, connections: int, script: Path | None) -> tuple[dict, str]:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    command += ["--timeout", "30s"]  # a batch of 1,000 takes seconds before the work here
    if script:
        command += ["-s", str(script)]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        latency[pct] = float(value) * UNITS[unit]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "requests": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }, out


def wait_idle(base: str) -> None:
    """Until /health answers at once (the server has worked off what wrk left queued)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = time.monotonic()
        with urllib.request.urlopen(f"{base}/health", timeout=60):
            pass
        if time.monotonic() - started < 0.05:
            return
        time.sleep(0.2)


def measure(
    config: Config,
    home: Path,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    endpoints: tuple[tuple[str, str, str | None, int | None], ...] = ENDPOINTS,
    extra_env: dict[str, str] | None = None,
) -> tuple[dict[str, Result], tuple[float, float]]:
    process, base = start_server(config, home, extra_env)
    results = {name: Result() for name, *_ in endpoints}

    def run(path: str, script: str | None, connections: int | None, seconds: int) -> dict:
        out, _ = wrk(
            base + path,
            seconds,
            connections or args.connections,
            scripts[script] if script else None,
        )
        return out

    try:
        for _, path, script, connections in endpoints:  # warm-up: caches, connection set-up
            run(path, script, connections, 2)
            wait_idle(base)
        for _ in range(args.rounds):
            for name, path, script, connections in endpoints:
                before = cpu_seconds(process.pid)
                out = run(path, script, connections, args.duration)
                spent = cpu_seconds(process.pid) - before
                wait_idle(base)  # requests still queued are not the next endpoint's load
                result = results[name]
                result.rps.append(out["rps"])
                result.p50_ms.append(out["p50_ms"])
                result.p99_ms.append(out["p99_ms"])
                result.cpu_us.append(1e6 * spent / max(out["requests"], 1))
                result.non_2xx += out["non_2xx"]
        memory = rss_mb(process.pid)
    finally:
        stop(process)
    return results, memory


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(
    config: Config,
    results: dict[str, Result],
    memory: tuple[float, float],
    stages: dict[str, float] | None = None,
    own: dict[str, float] | None = None,
) -> list[str]:
    """Print the table, the HTTP cost model and the targets; return the targets not met.
    ``stages``: the in-process cost model (``bench_inprocess.measure``), whose ``Runtime.predict``
    figures split what a prediction adds to the floor into the runtime and the server's own work
    (auth, validation, prediction log, metrics, encoding, scheduling). ``own``: the server CPU
    per request of the same endpoints with ``Runtime.predict`` memoised (``--split``): the
    server's own work measured, the rest being the runtime as it runs inside the server."""
    health = results["health"]
    print(f"\n{config.name}  (RSS {memory[0]:.0f} MB in all, largest process {memory[1]:.0f} MB)")
    print(
        f"  {'endpoint':<24} | {'req/s':>7} | {'patients/s':>10} | {'ratio to health':>15} | "
        f"{'p50 ms':>6} | {'p99 ms':>6} | {'server CPU µs/req':>17} | {'non-2xx':>7}"
    )
    ratios, cpu = {}, {}
    for name, *_ in ENDPOINTS:
        r = results[name]
        # per round: the endpoint and health measured on the same server within seconds
        ratios[name] = mean([p / h for p, h in zip(r.rps, health.rps)])
        cpu[name] = mean(r.cpu_us)
        per_request = BATCH if name.startswith("batch") else 1
        print(
            f"  {name:<24} | {mean(r.rps):>7.0f} | {mean(r.rps) * per_request:>10.0f} | "
            f"{ratios[name]:>15.3f} | {max(r.p50_ms):>6.2f} | {max(r.p99_ms):>6.2f} | "
            f"{cpu[name]:>17.0f} | {r.non_2xx:>7}"
        )
    batch_name = f"batch of {BATCH}"
    floor = cpu["parse-only POST"]
    print("  cost model, server CPU per request (µs):")
    print(
        f"    HTTP floor: GET /health {cpu['health']:.0f}; POST parsing the same body {floor:.0f}"
    )
    runtime_stage = {
        "predict, no explanation": "= predict, no explanation",
        "predict": "= predict, explained",
    }
    for name in ("predict, no explanation", "predict"):
        added = cpu[name] - floor
        runtime = (stages or {}).get(runtime_stage[name])
        if own and name in own:  # measured: the same server with the runtime memoised
            split = (
                f": the server's own work {own[name] - floor:.0f} (auth, validation, budget, "
                f"log, metrics, encoding; measured with Runtime.predict memoised) + the runtime "
                f"inside the server {cpu[name] - own[name]:.0f}"
                + (f" ({runtime:.0f} alone in a loop)" if runtime is not None else "")
            )
        elif runtime is not None:
            split = (
                f": Runtime.predict {runtime:.0f} (alone in a loop) + the rest "
                f"{added - runtime:.0f} (the server's own work, and the runtime running colder "
                "inside the server)"
            )
        else:
            split = " (auth, validation, scoring, answer, log, metrics, encoding)"
        print(f"    {name}: {cpu[name]:.0f} = floor {floor:.0f} + {added:.0f}{split}")
    print(
        f"    {batch_name}: {cpu[batch_name] / BATCH:.1f} per patient "
        f"({cpu[batch_name] / 1e3:.1f} ms a request)"
    )
    if config.workers != 1:
        print("  (targets are for one worker: run with --workers 1)")
        return []
    failed: list[str] = []

    def target(text: str, ok: bool) -> None:
        print(f"  target {text}: {'met' if ok else 'NOT met'}")
        if not ok:
            failed.append(text)

    for name in ("predict, no explanation", "predict"):
        target(
            f"{name!r} throughput >= {TARGET_RATIO[name]} x /health ({ratios[name]:.3f})",
            ratios[name] >= TARGET_RATIO[name],
        )
        target(
            f"{name!r} server CPU <= {TARGET_CPU_US[name]:.0f} µs ({cpu[name]:.0f})",
            cpu[name] <= TARGET_CPU_US[name],
        )
    p99 = max(results["predict"].p99_ms)
    target(f"explained p99 <= {TARGET_P99_MS:.0f} ms at {8} connections ({p99:.2f})", p99 <= 10)
    per_s = mean(results[batch_name].rps) * BATCH
    target(
        f"batch >= {TARGET_BATCH_PER_S:,} patients/s through HTTP ({per_s:,.0f})",
        per_s >= TARGET_BATCH_PER_S,
    )
    target(f"RSS <= {TARGET_RSS_MB:.0f} MB per worker ({memory[1]:.0f})", memory[1] <= 500)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("TRIAGE_HOME", ".triage"))
    parser.add_argument("--workers", type=int, default=1, help="workers (targets: 1)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per endpoint per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also measure the other uvicorn worker count and granian (if installed)",
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the in-process stage table")
    parser.add_argument(
        "--no-split",
        action="store_true",
        help="skip the second server (Runtime.predict memoised) that measures the server's own work",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    home = Path(args.home).resolve()
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")
    os.environ["TRIAGE_HOME"] = str(home)

    print(
        f"API benchmark: wrk, {args.connections} connections, {args.rounds} round(s) of "
        f"{args.duration} s per endpoint, home {home}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_explain import patients_from_landing

    batch = {"patients": patients_from_landing(home / "landing", BATCH)}
    failed: list[str] = []
    measured: list[tuple[Config, dict[str, Result], tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {}
        for name, body in (("predict", PATIENT), ("batch", batch)):
            scripts[name] = Path(tmp) / f"{name}.lua"
            scripts[name].write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(json.dumps(body))}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
            )
        chosen, *alternatives = configs(args.workers, args.compare)
        own: dict[str, float] | None = None
        if not args.no_split:  # the same server, Runtime.predict memoised: its own work
            split_endpoints = tuple(e for e in ENDPOINTS if e[0].startswith(("parse", "predict")))
            cached, _ = measure(
                chosen, home, args, scripts, split_endpoints, {CACHED_RUNTIME_ENV: "1"}
            )
            own = {name: mean(r.cpu_us) for name, r in cached.items()}
            print(
                "server CPU µs/req with Runtime.predict memoised (the server's own work): "
                + ", ".join(f"{name} {value:.0f}" for name, value in own.items())
            )
        for config in (chosen, *alternatives):
            measured.append((config, *measure(config, home, args, scripts)))
    print(f"load average {os.getloadavg()[0]:.2f} at the end of the HTTP runs")
    stages = None
    if not args.no_stages:  # first: the HTTP tables below split their cost by its figures
        import bench_inprocess

        print()
        stages = bench_inprocess.measure(["--home", str(home), "--batch", str(BATCH)])
    for config, results, memory in measured:
        failed += report(config, results, memory, stages, own if config is chosen else None)
    print(f"\ntargets not met: {len(failed)}" + "".join(f"\n  - {t}" for t in failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
