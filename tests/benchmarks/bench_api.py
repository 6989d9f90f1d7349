"""Benchmark: the real API process under load on loopback, driven by wrk.

    python tests/benchmarks/bench_api.py [--home TRIAGE_HOME] [--workers 2] [--duration 8]
                                         [--rounds 2] [--connections 8] [--compare]

Starts the API on a free loopback port over a deployed TRIAGE_HOME (default ./.triage, as left by
``make pipeline``) exactly as shipped (``triage serve --workers N``, prediction log on), then runs
wrk (Debian package ``wrk``) with 8 connections against ``GET /health`` and ``POST /v1/predict``
(one febrile patient per request, top_k=10, the full catalogue of the deployed model), with the
explanation (the API's default for one patient) and with ``explain=false``.

The three are measured in alternation, ``--rounds`` times, so that a burst of load from other
jobs on a shared machine hits all of them: the ratio predict/health is computed round by round
(same server, same minute) and averaged; latencies are the worst round's. ``server CPU µs/req``
is the CPU time the server's processes spent per answered request (from /proc), a figure that
other jobs on the machine disturb much less than throughput.

``--compare`` also measures the alternatives the choice was made against: 1 uvicorn worker, and
granian with 1 and 2 workers when it is importable (``pip install granian``; it is not a
dependency). Each server is stopped by its own process group.
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
TARGET_RATIO = 0.5  # predict (no explanation) throughput / health throughput, same server
TARGET_P99_MS = 15.0
ENDPOINTS = (
    ("health", "/health"),
    ("predict", "/v1/predict?top_k=10"),  # explanation on: the default for one patient
    ("predict, no explanation", "/v1/predict?top_k=10&explain=false"),
)


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
    triage = str(Path(sys.executable).parent / "triage")

    def uvicorn(n: int) -> Config:
        return Config(
            f"triage serve (uvicorn), {n} worker(s)",
            [triage, "serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(n)],
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
                    "serving.app:create_app",
                ],
                n,
            )
            for n in (1, 2)
        ]
    else:
        print("granian is not importable: its rows are skipped (pip install granian)")
    return chosen + alternatives


def start_server(config: Config, home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "TRIAGE_HOME": str(home),
        "TRIAGE_API_KEYS": f"clinician:{TOKEN}",
        "OMP_NUM_THREADS": "1",
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


def rss_mb(pgid: int) -> float:
    total = 0
    for pid in group_pids(pgid):
        try:
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        total += int(match.group(1)) if match else 0
    return total / 1024


def wrk(url: str, duration: int, connections: int, script: Path | None) -> tuple[dict, str]:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency"]
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


def measure(
    config: Config, home: Path, args: argparse.Namespace, script: Path
) -> tuple[dict, float]:
    process, base = start_server(config, home)
    results = {name: Result() for name, _ in ENDPOINTS}
    try:
        for name, path in ENDPOINTS:  # warm-up: caches, first explanation, connection set-up
            wrk(base + path, 2, args.connections, None if name == "health" else script)
        for _ in range(args.rounds):
            for name, path in ENDPOINTS:
                before = cpu_seconds(process.pid)
                run, _ = wrk(
                    base + path,
                    args.duration,
                    args.connections,
                    None if name == "health" else script,
                )
                spent = cpu_seconds(process.pid) - before
                result = results[name]
                result.rps.append(run["rps"])
                result.p50_ms.append(run["p50_ms"])
                result.p99_ms.append(run["p99_ms"])
                result.cpu_us.append(1e6 * spent / max(run["requests"], 1))
                result.non_2xx += run["non_2xx"]
        memory = rss_mb(process.pid)
    finally:
        stop(process)
    return results, memory


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(config: Config, results: dict[str, Result], memory: float) -> bool:
    health = results["health"]
    print(f"\n{config.name}  (RSS {memory:.0f} MB)")
    print(
        f"  {'endpoint':<24} | {'req/s':>7} | {'ratio to health':>15} | {'p50 ms':>6} | "
        f"{'p99 ms':>6} | {'server CPU µs/req':>17} | {'non-2xx':>7}"
    )
    ratios = {}
    for name, _ in ENDPOINTS:
        r = results[name]
        # per round: predict and health measured on the same server within seconds
        ratio = mean([p / h for p, h in zip(r.rps, health.rps)])
        ratios[name] = ratio
        print(
            f"  {name:<24} | {mean(r.rps):>7.0f} | {ratio:>15.3f} | {max(r.p50_ms):>6.2f} | "
            f"{max(r.p99_ms):>6.2f} | {mean(r.cpu_us):>17.0f} | {r.non_2xx:>7}"
        )
    met = True
    for name in ("predict", "predict, no explanation"):
        p99 = max(results[name].p99_ms)
        ok = ratios[name] >= TARGET_RATIO and p99 <= TARGET_P99_MS
        met = met and ok
        print(
            f"  target for {name!r}: ratio >= {TARGET_RATIO} ({ratios[name]:.3f}), "
            f"p99 <= {TARGET_P99_MS:.0f} ms ({p99:.2f}): {'met' if ok else 'NOT met'}"
        )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("TRIAGE_HOME", ".triage"))
    parser.add_argument("--workers", type=int, default=2, help="workers of the shipped config")
    parser.add_argument("--duration", type=int, default=8, help="seconds per endpoint per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also measure 1 vs 2 uvicorn workers and granian (if installed)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    home = Path(args.home).resolve()
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")

    print(
        f"API benchmark: wrk, {args.connections} connections, {args.rounds} round(s) of "
        f"{args.duration} s per endpoint, home {home}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "predict.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(PATIENT))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        )
        for config in configs(args.workers, args.compare):
            results, memory = measure(config, home, args, script)
            report(config, results, memory)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
