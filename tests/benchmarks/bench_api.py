"""Benchmark: the real API process under load on loopback, driven by wrk.

    python tests/benchmarks/bench_api.py [--home TRIAGE_HOME] [--workers 1] [--duration 10]

Starts ``triage serve`` on a free loopback port over a deployed TRIAGE_HOME (default ./.triage,
as left by ``make pipeline``), then runs wrk (Debian package ``wrk``) with 8 connections against
``GET /health`` and ``POST /v1/predict`` (one febrile patient, top_k=10, the full catalogue of the
deployed model), one after the other in the same run, with and without the prediction log. Prints
throughput, the predict/health ratio, p50/p99 latency and the server's resident memory. The server
is stopped by its own process group at the end.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

TOKEN = "bench-clinician-token"
PATIENT = {
    "age": 41, "sex": "female", "heart_rate": 112, "body_temperature": 39.4,
    "systolic_bp": 112, "diastolic_bp": 70, "symptoms": ["HP:0001945", "HP:0012735"],
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, workers: int, log_predictions: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "TRIAGE_HOME": str(home),
        "TRIAGE_API_KEYS": f"clinician:{TOKEN}",
        "TRIAGE_PREDICTION_LOG": "1" if log_predictions else "0",
        "OMP_NUM_THREADS": "1",
    }
    triage = Path(sys.executable).parent / "triage"
    process = subprocess.Popen(
        [str(triage), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return process, base
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit("the API exited before it was ready")
        time.sleep(0.3)
    stop(process)
    raise SystemExit("the API was not ready within 90 s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        status = Path(f"/proc/{p}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            total += int(match.group(1)) if match else 0
    return total / 1024


def wrk(url: str, duration: int, connections: int, script: Path | None = None) -> dict:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        latency[pct] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"],
            "non_2xx": int(errors.group(1)) if errors else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("TRIAGE_HOME", ".triage"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    home = Path(args.home).resolve()
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "predict.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(PATIENT))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        )
        rows = []
        for log_predictions in (True, False):
            process, base = start_server(home, args.workers, log_predictions)
            try:
                wrk(f"{base}/health", 2, args.connections)  # warm-up
                health = wrk(f"{base}/health", args.duration, args.connections)
                wrk(f"{base}/v1/predict?top_k=10", 2, args.connections, script)
                predict = wrk(f"{base}/v1/predict?top_k=10", args.duration, args.connections,
                              script)
                rows.append((log_predictions, health, predict, rss_mb(process.pid)))
            finally:
                stop(process)

    print(f"API benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"{args.duration} s per endpoint, home {home}")
    print(f"{'prediction log':>14} | {'health req/s':>12} | {'predict req/s':>13} | "
          f"{'ratio':>5} | {'p50 ms':>6} | {'p99 ms':>6} | {'non-2xx':>7} | {'RSS MB':>6}")
    for log_predictions, health, predict, rss in rows:
        print(f"{'on' if log_predictions else 'off':>14} | {health['rps']:>12.0f} | "
              f"{predict['rps']:>13.0f} | {predict['rps'] / health['rps']:>5.2f} | "
              f"{predict['p50_ms']:>6.2f} | {predict['p99_ms']:>6.2f} | "
              f"{predict['non_2xx']:>7} | {rss:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
