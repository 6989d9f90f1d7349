"""Distributed execution: a run's steps execute on Celery workers started here, with the machine's
Redis as the broker (TRIAGE_EXECUTOR=celery, see orchestration.resources.build_executor).

The instance is SQLite under a temporary DAGSTER_HOME, shared by the worker and the run because
both are on this machine; across machines it would be PostgreSQL (tests/e2e/test_postgres_s3.py).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diagnosis.simulation import write_weekly_exports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS = ("127.0.0.1", 6379)
WEEK = "2026-06-01"


def _redis_available() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def celery_env(tmp_path):
    if not _redis_available():
        pytest.skip(f"no Redis at {REDIS[0]}:{REDIS[1]} to use as the Celery broker")
    home = tmp_path / "home"
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_weekly_exports(
        home / "landing", patients=500, weeks=1, seed=3, defect_rate=0.05, start=WEEK
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "DAGSTER_"))}
    env.update(
        {
            "TRIAGE_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "TRIAGE_EXECUTOR": "celery",
            # a database number of its own, so no other Celery user of this Redis sees the tasks
            "DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:6379/11",
            "OMP_NUM_THREADS": "1",
            # dagster-celery starts the `celery` program by name
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def test_steps_run_on_celery_workers(celery_env):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    instance.add_dynamic_partitions("weekly_exports", [WEEK])

    worker_name = f"triage-test-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [
            str(BIN / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            "-y",
            str(ROOT / "orchestration" / "deploy" / "celery.yaml"),
            "-n",
            worker_name,
            "-l",
            "warning",
        ],
        env=celery_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    run = subprocess.Popen(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "orchestration.definitions",
            "-j",
            "weekly_validation",
            "--tags",
            json.dumps({"dagster/partition": WEEK}),
        ],
        env=celery_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while run.poll() is None:
            # a run whose worker died would wait for its steps forever: fail with the reason
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the Celery run did not finish in 10 minutes"
            time.sleep(1)
        output = run.stdout.read().decode()
        assert run.returncode == 0, output[-3000:]
    finally:
        for process in (run, worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    run = runs[0]
    events = instance.all_logs(run.run_id)
    step_pids = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START"
    }
    run_pids = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event is not None and e.dagster_event.event_type_value == "RUN_START"
    }
    # every step started in a worker process, not in the process that launched the run
    assert step_pids and not step_pids & run_pids
    materialised = {
        e.dagster_event.asset_key.to_user_string()
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert {
        "raw_patient_records",
        "validated_patient_records",
        "quarantined_patient_records",
    } <= materialised
    submitted = [
        e.message
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and "celery" in (e.message or "").lower()
    ]
    assert submitted, "no engine event mentions Celery"
