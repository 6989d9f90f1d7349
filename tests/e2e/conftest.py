"""Shared by the end-to-end suites: the real API process on a free loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

TRIAGE = Path(sys.executable).parent / "triage"


@pytest.fixture
def start_api():
    """``start(home, api_keys, **env) -> base URL``: runs ``triage serve`` over ``home``, waits
    until /ready answers 200, and stops each process by its own process group after the test."""
    started: list[subprocess.Popen] = []

    def start(home: Path, api_keys: str, **extra_env: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_API_KEYS": api_keys, **extra_env}
        process = subprocess.Popen(
            [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return base
            except OSError:  # not listening yet, or 503 while the model loads
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        pytest.fail("the API did not become ready within 60 s")

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
