"""/metrics adds up under several workers: a real ``triage serve --workers 2`` process on a
deployed model, N predictions, and every one of several scrapes (whichever worker answers it)
reports all N. Without multiprocess mode each scrape read one worker's counters only."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving import metrics

from .conftest import API_KEYS, FEVER, TOKENS

TRIAGE = Path(sys.executable).parent / "triage"
N_PREDICTIONS = 60
N_SCRAPES = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not metrics.AVAILABLE, reason="prometheus-client missing"),
]


def _request(url: str, token: str, body: dict | None = None) -> bytes:
    """One request on a new connection (so the kernel spreads them over the workers)."""
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read()


def _total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture
def two_workers(served_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # as `make serve` runs it: no PROMETHEUS_MULTIPROC_DIR given, `triage serve` makes one
    env = {**os.environ, "TRIAGE_HOME": str(served_home), "TRIAGE_API_KEYS": API_KEYS}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the API was not ready within 90 s"
            time.sleep(0.3)
        yield base, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _sample_folder(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR ``triage serve`` gave its workers (read from a worker's
    environment: the variable is set by the server itself, not by this test)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for item in environ:
            if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError(f"no worker of {pid} has PROMETHEUS_MULTIPROC_DIR")


def test_every_scrape_reports_every_prediction_of_both_workers(two_workers):
    base, pid = two_workers
    # both workers up: "loaded" is the minimum over the live workers
    deadline = time.monotonic() + 60
    while _total(_request(f"{base}/metrics", TOKENS["admin"]).decode(), "triage_model_loaded") != 1:
        assert time.monotonic() < deadline, "the workers did not all load the model"
        time.sleep(0.5)
    with ThreadPoolExecutor(8) as pool:  # concurrent requests keep both workers busy
        list(
            pool.map(
                lambda i: _request(
                    f"{base}/v1/predict", TOKENS["clinician"], {"symptoms": [FEVER], "age": i}
                ),
                range(N_PREDICTIONS),
            )
        )
    scrapes = [_request(f"{base}/metrics", TOKENS["admin"]).decode() for _ in range(N_SCRAPES)]
    for text in scrapes:
        assert _total(text, "triage_predictions_total") == N_PREDICTIONS
        assert (
            _total(text, "triage_request_duration_seconds_count", path="/v1/predict")
            == N_PREDICTIONS
        )
        assert _total(text, "triage_model_info", version="2026-01-12-a") == 1
        assert _total(text, "triage_model_loaded") == 1
    # both workers served predictions: each wrote its own histogram samples
    assert len(list(_sample_folder(pid).glob("histogram_*.db"))) == 2
