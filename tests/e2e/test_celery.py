"""Distributed execution: a run's steps execute on Celery workers started here, with the machine's
Redis as the broker (TRIAGE_EXECUTOR=celery, see orchestration.resources.build_executor).

The instance is SQLite under a temporary DAGSTER_HOME, shared by the worker and the run because
both are on this machine; across machines it would be PostgreSQL (tests/e2e/test_postgres_s3.py).
"""

import json
import os
import re
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


def _environment(tmp_path: Path, database: int) -> dict:
    """The runs' and workers' environment: a Dagster instance and TRIAGE_HOME under ``tmp_path``,
    the Celery executor, and Redis database ``database`` (emptied) as broker and result backend."""
    if not _redis_available():
        pytest.skip(f"no Redis at {REDIS[0]}:{REDIS[1]} to use as the Celery broker")
    # the database is this test's own: tasks left by an interrupted earlier run would be taken first
    with socket.create_connection(REDIS, timeout=2) as connection:
        connection.sendall(f"SELECT {database}\r\nFLUSHDB\r\n".encode())
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += connection.recv(64)
        assert replies == b"+OK\r\n+OK\r\n", replies
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    import dagster as dg

    # the SQLite storage created once, here: processes starting together on an empty instance
    # race to create its tables ("alembic_version has more than one head")
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "DAGSTER_"))}
    env.update(
        {
            "TRIAGE_HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(dagster_home),
            "TRIAGE_EXECUTOR": "celery",
            # a database number of its own, so no other Celery user of this Redis sees the tasks
            "DAGSTER_CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{database}",
            "OMP_NUM_THREADS": "1",
            # dagster-celery starts the `celery` program by name
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _wait_for_run(run, workers: dict, log_of, seconds: float) -> None:
    """Wait for the run's process; a run whose worker died would wait for its steps forever, so
    fail with that worker's log (``log_of(name)``) instead, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while run.poll() is None:
        for name, worker in workers.items():
            assert worker.poll() is None, log_of(name)[-3000:]
        assert time.monotonic() < deadline, f"the Celery run did not finish in {seconds} s"
        time.sleep(1)


@pytest.fixture
def celery_env(tmp_path):
    env = _environment(tmp_path, 11)
    write_weekly_exports(
        Path(env["TRIAGE_HOME"]) / "landing",
        patients=500,
        weeks=1,
        seed=3,
        defect_rate=0.05,
        start=WEEK,
    )
    return env


def _start_worker(env: dict, name: str, *celery_args: str, stderr=subprocess.PIPE):
    """``dagster-celery worker start`` in a process group of its own (stopped by :func:`_stop`)."""
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
            *celery_args,
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )


def _stop(*processes: subprocess.Popen) -> None:
    """Stop each process's group (the worker's Celery pool with it), by its own process id."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_steps_run_on_celery_workers(celery_env):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    instance.add_dynamic_partitions("weekly_exports", [WEEK])

    worker_name = f"triage-test-{uuid.uuid4().hex[:8]}"
    worker = _start_worker(celery_env, worker_name, "-l", "warning")
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
        _wait_for_run(run, {"worker": worker}, lambda _: worker.stderr.read().decode(), 600)
        output = run.stdout.read().decode()
        assert run.returncode == 0, output[-3000:]
    finally:
        _stop(run, worker)

    instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
    runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    run = runs[0]
    events = instance.all_logs(run.run_id)
    step_pids = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    }
    run_pids = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type == dg.DagsterEventType.RUN_START
    }
    # every step started in a worker process, not in the process that launched the run (RUN_START
    # is stored as PIPELINE_START: compare the enum, not the stored string)
    assert step_pids and run_pids and not step_pids & run_pids
    materialised = {
        e.dagster_event.asset_key.to_user_string()
        for e in events
        if e.dagster_event is not None
        and e.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
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
        and e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and "celery" in (e.message or "").lower()
    ]
    assert submitted, "no engine event mentions Celery"


# Everything model_selection reads, materialised in one process before the Celery run (the
# upstream is not what this test is about): the weeks' validations, then the unpartitioned assets.
PREPARE_UPSTREAM = """
import sys
import dagster as dg
from orchestration.definitions import defs
instance = dg.DagsterInstance.get()
weeks = sys.argv[1:]
instance.add_dynamic_partitions("weekly_exports", weeks)
for week in weeks:
    result = defs.resolve_job_def("weekly_validation").execute_in_process(
        instance=instance, partition_key=week
    )
graph = defs.resolve_asset_graph()
upstream = [
    key
    for key in graph.upstream_key_iterator(dg.AssetKey("model_selection"))
    if graph.get(key).is_materializable and not graph.get(key).is_partitioned
]
defs.resolve_implicit_global_asset_job_def().execute_in_process(
    instance=instance, asset_selection=upstream
)
"""

SELECTION_WEEKS = ["2026-06-01", "2026-06-08"]


def _wait_ready(workers: dict, logs: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(workers)
    while waiting:
        for name in sorted(waiting):
            assert workers[name].poll() is None, logs[name].read_text()[-3000:]
            if re.search(rf"\] {re.escape(name)}@\S+ ready\.", logs[name].read_text()):
                waiting.discard(name)
        assert time.monotonic() < deadline, f"Celery workers {sorted(waiting)} not ready"
        time.sleep(0.5)


def test_selection_candidates_run_on_two_celery_workers_and_are_gathered(tmp_path):
    """Issue 17: model_selection's per-candidate steps (family x balancing) go to two Celery
    workers (separate process groups, one pool process each); the event log shows which worker
    executed each step, and choose_selection tags every candidate's MLflow run."""
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from diagnosis.training.candidates import BALANCINGS, FAMILIES, RESAMPLING

    env = _environment(tmp_path, 12)
    home = Path(env["TRIAGE_HOME"])
    write_weekly_exports(
        home / "landing", patients=600, weeks=len(SELECTION_WEEKS), seed=5, start=WEEK
    )
    tag = uuid.uuid4().hex[:6]
    names = [f"triage-sel-{i}-{tag}" for i in range(2)]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    workers = {}
    started = time.monotonic()
    try:
        for name in names:
            with logs[name].open("wb") as log:
                # one pool process per worker: two workers, two step-executing processes
                workers[name] = _start_worker(
                    env,
                    name,
                    "-l",
                    "info",
                    "-i",
                    "orchestration.definitions",
                    "--",
                    "--concurrency=1",
                    stderr=log,
                )
        # the upstream, in process, while the workers import the code location
        prepared = subprocess.run(
            [sys.executable, "-c", PREPARE_UPSTREAM, *SELECTION_WEEKS],
            env={**env, "TRIAGE_EXECUTOR": "in_process"},
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        assert prepared.returncode == 0, prepared.stderr.decode()[-3000:]
        _wait_ready(workers, logs, timeout=120)
        run = subprocess.Popen(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "orchestration.definitions",
                "--select",
                "model_selection",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_run(run, workers, lambda name: logs[name].read_text(), 300)
            assert run.returncode == 0, run.stdout.read().decode()[-3000:]
        finally:
            _stop(run)
    finally:
        _stop(*workers.values())
    print(f"upstream, workers and the Celery selection run: {time.monotonic() - started:.0f} s")

    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    (selection_run,) = [
        r
        for r in instance.get_runs()
        if dg.AssetKey("model_selection") in (r.asset_selection or ())
    ]
    assert selection_run.status == dg.DagsterRunStatus.SUCCESS
    events = [e for e in instance.all_logs(selection_run.run_id) if e.dagster_event is not None]
    (run_pid,) = {
        e.dagster_event.pid
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.RUN_START
    }
    # written by the Celery task inside the worker that took the step: the worker's name
    worker_of = {
        e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].text
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and "Celery worker" in e.dagster_event.engine_event_data.metadata
    }
    pid_of = {
        e.step_key: e.dagster_event.pid
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    }
    candidates = {k: v for k, v in pid_of.items() if ".cross_validate_step" in k}
    first = [(f, b) for f in FAMILIES for b in BALANCINGS if b not in RESAMPLING]
    # every first-stage candidate, and the resamplings of the best family (resample_top = 1)
    assert len(candidates) == len(first) + len(RESAMPLING), sorted(candidates)
    for step, pid in sorted(pid_of.items()):
        print(f"{step}: {worker_of[step]} pid {pid}")
    assert set(worker_of) == set(pid_of)  # every step went through a Celery task
    hosts = {worker_of[step].split("@")[0] for step in candidates}
    assert hosts == set(names), hosts  # both workers executed candidates
    assert run_pid not in pid_of.values()
    assert len(set(candidates.values())) == 2  # one pool process per worker
    assert all(
        len({pid_of[s] for s in candidates if worker_of[s].startswith(f"{name}@")}) == 1
        for name in names
    )

    # choose_selection gathered every candidate: each one's nested MLflow run carries its tag
    event = instance.get_latest_materialization_event(dg.AssetKey("model_selection"))
    meta = event.asset_materialization.metadata
    assert meta["reused"].value is False
    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    runs = {
        r.info.run_name: r
        for experiment in client.search_experiments()
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("mlflow.parentRunId")
    }
    parents = set()
    for step in candidates:
        family, balancing = step.split("[")[1].rstrip("]").split("__")
        name = f"{family}+{balancing}"
        assert name in runs, sorted(runs)
        assert runs[name].data.tags.get("selected") in ("True", "False"), name
        parents.add(runs[name].data.tags["mlflow.parentRunId"])
        assert f"| {family} | {balancing} |" in meta["comparison"].value
    assert len(parents) == 1  # one parent run: the run's, shared by both workers
    chosen = [n for n, r in runs.items() if r.data.tags.get("selected") == "True"]
    assert chosen == [meta["selected"].value.replace(" + ", "+")], chosen
