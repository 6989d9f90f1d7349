"""`make run`'s start-up script (orchestration/run_local.sh) fails loudly instead of printing its
banner: a taken port stops it before anything starts, a service that exits or never answers stops
it with the reason, and everything it started is stopped. The script runs for real; the services
are stand-ins (a fake virtualenv) where the point is how the script reacts to them."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "orchestration" / "run_local.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, ports: tuple[int, int, int], venv: Path, timeout_s: int = 5):
    env = {
        **os.environ,
        "TRIAGE_HOME": str(tmp_path / "home"),
        "TRIAGE_API_KEYS": "clinician:c-token,admin:a-token",
        "VENV": str(venv),
        "RUN_TIMEOUT": str(timeout_s),
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    ui, api, mlflow = ports
    return subprocess.run(
        ["bash", str(SCRIPT), "127.0.0.1", str(ui), str(api), str(mlflow)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fake_venv(tmp_path: Path, triage: str) -> Path:
    """Stand-in services: ``dagster`` and ``mlflow`` run but never answer; ``triage`` is given.
    Each records its PID, so the test can check it was stopped."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (
        ("dagster", "exec sleep 300"),
        ("mlflow", "exec sleep 300"),
        ("triage", triage),
    ):
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\necho $$ >> {tmp_path}/pids\n{body}\n")
        path.chmod(0o755)
    return tmp_path / "venv"


def _all_stopped(tmp_path: Path) -> bool:
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_a_taken_api_port_fails_with_a_clear_message_before_anything_starts(tmp_path):
    venv = _fake_venv(tmp_path, "exec sleep 300")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        done = _run(tmp_path, (_free_port(), api_port, _free_port()), venv)
    assert done.returncode == 1
    assert f"port {api_port} on 127.0.0.1 (for the API) is already in use" in done.stderr
    assert "Web form" not in done.stdout  # no banner
    assert not (tmp_path / "pids").exists()  # nothing was started
    assert not (tmp_path / "home" / "api.log").exists()


def test_a_service_that_exits_during_start_up_stops_everything_with_its_log(tmp_path):
    venv = _fake_venv(tmp_path, "echo 'cannot load the deployment' >&2; exit 3")
    done = _run(tmp_path, (_free_port(), _free_port(), _free_port()), venv)
    assert done.returncode == 1
    assert "the API exited during start-up" in done.stderr
    assert "cannot load the deployment" in done.stderr  # the last lines of its log
    assert "Web form" not in done.stdout
    assert _all_stopped(tmp_path)


def test_services_that_never_answer_fail_after_the_timeout_naming_them(tmp_path):
    venv = _fake_venv(tmp_path, "exec sleep 300")
    started = time.monotonic()
    done = _run(tmp_path, (_free_port(), _free_port(), _free_port()), venv, timeout_s=2)
    assert done.returncode == 1
    assert "never came up within 2s: Dagster UI API MLflow UI" in done.stderr
    assert time.monotonic() - started < 30
    assert "Web form" not in done.stdout
    assert _all_stopped(tmp_path)
