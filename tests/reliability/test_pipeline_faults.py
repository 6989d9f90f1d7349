"""Reliability of the pipeline under faults, as an operator meets them (``make test-reliability``).

Every test drives the real ``triage pipeline`` command in its own process over its own copy of a
TRIAGE_HOME (copying a home is itself the relocation case), and prints its counts:

- a garbage weekly export is refused whole, the other weeks are validated, training deploys; once
  the garbage is gone the next run exits 0 with no manual step, keeping that deployment (nothing
  that determines the model changed) (also when an older version left the week registered without
  a materialisation);
- ``kill -9`` of ``triage pipeline`` mid-training leaves its Dagster run STARTED and its MLflow run
  RUNNING; the next run sweeps both (failed / KILLED) and succeeds;
- a home copied to a new path, the old one deleted: the pipeline writes only under the new one;
- a clinician label with a code outside the disease catalogue is quarantined with its reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import msgspec
import pytest

from diagnosis.simulation import write_weekly_exports

# several full pipeline runs per test: minutes each on two shared cores
pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(3600)]

TRIAGE = Path(sys.executable).parent / "triage"
WEEKS = ["2026-03-02", "2026-03-09", "2026-03-16"]
GARBAGE_WEEK = "2026-03-23"
NEW_WEEK = "2026-03-30"


def pipeline_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TRIAGE_MLFLOW_TRACKING_URI", "TRIAGE_S3_BUCKET", "TRIAGE_ALERT_WEBHOOK"}
    }
    env.update(
        TRIAGE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        OMP_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
    )
    return env


def run_triage_pipeline(
    home: Path, *options: str, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``triage pipeline --no-seed [options]`` over ``home``, to completion."""
    return subprocess.run(
        [str(TRIAGE), "pipeline", "--no-seed", *options],
        env=pipeline_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def current_version(home: Path) -> str:
    return json.loads((home / "deployments" / "current.json").read_text())["version"]


@pytest.fixture(scope="module")
def base_home(tmp_path_factory) -> Path:
    """A home after one successful ``triage pipeline`` over three weekly exports (the cohort of
    the shared ``deployed_home``: a new week of 600 patients passes the gate against it)."""
    home = tmp_path_factory.mktemp("reliability") / "base"
    write_weekly_exports(
        home / "landing", patients=2400, weeks=len(WEEKS), seed=11, defect_rate=0.04, start=WEEKS[0]
    )
    done = run_triage_pipeline(home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home


# ------------------------------------------------------------------------------ bad week
def test_a_garbage_week_is_refused_the_others_go_on_and_removing_it_needs_no_manual_step(
    base_home, tmp_path
):
    home = copy_home(base_home, tmp_path / "home")
    before = current_version(home)
    landing = home / "landing"
    garbage = landing / f"records_{GARBAGE_WEEK}.txt"
    garbage.write_bytes(os.urandom(4096))
    empty_week = "2026-04-06"
    (landing / f"records_{empty_week}.txt").write_bytes(b"")
    # the failure mode of older versions: a week registered, its file gone, never materialised
    stale_week = "2026-04-13"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        instance.add_dynamic_partitions("weekly_exports", [stale_week])
    # a good week after the garbage one must be validated in the same run
    write_weekly_exports(landing, patients=600, weeks=1, seed=12, defect_rate=0.04, start=NEW_WEEK)

    first = run_triage_pipeline(home)
    out = first.stdout
    assert first.returncode == 0, out[-3000:] + first.stderr[-3000:]
    refused_lines = [line for line in out.splitlines() if line.startswith("REFUSED week")]
    assert len(refused_lines) == 2, out
    garbage_line = next(line for line in refused_lines if GARBAGE_WEEK in line)
    # one line: what, why, where it went, how to recover
    assert "undecodable" in garbage_line or "not" in garbage_line
    assert "landing/refused/" in garbage_line and "rerun `triage pipeline`" in garbage_line
    assert f"weekly_validation {NEW_WEEK}: ok" in out
    assert f"week {stale_week}: registered but never validated" in out
    assert "training: ok" in out
    assert not garbage.exists()
    refused_dir = landing / "refused"
    assert (refused_dir / garbage.name).is_file()
    reason = json.loads((refused_dir / f"{garbage.name}.reason.json").read_text())
    assert reason["week"] == GARBAGE_WEEK and reason["reason"]
    assert (refused_dir / garbage.name).stat().st_mode & 0o077 == 0
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        weeks = set(instance.get_dynamic_partitions("weekly_exports"))
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("raw_patient_records"), "export_readable"), limit=10
        )
    assert weeks == {*WEEKS, NEW_WEEK}
    latest = max(history, key=lambda r: r.id)
    assert latest.status.value == "FAILED"  # after this run's successful validations
    failed_weeks = {
        r.evaluation.metadata["week"].value for r in history if r.status.value == "FAILED"
    }
    assert failed_weeks == {GARBAGE_WEEK, empty_week}
    after_first = current_version(home)
    assert after_first != before

    # the operator deletes the refused file: the next run succeeds, no manual step; nothing that
    # determines the model changed, so it keeps the deployment the first run made
    shutil.rmtree(refused_dir)
    second = run_triage_pipeline(home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"kept deployment {after_first}: " in second.stdout and "REFUSED" not in second.stdout
    assert current_version(home) == after_first
    print(
        f"\nbad week: {len(refused_lines)} files refused, {len(weeks)} weeks validated, "
        f"1 stale partition pruned, run 1 exit {first.returncode}, "
        f"after removal run 2 exit {second.returncode}, versions {before} -> {after_first} -> "
        f"{current_version(home)}"
    )


# ------------------------------------------------------------------------------ kill -9
def _started_training_run(home: Path, pid: int) -> str | None:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(
                job_name="training",
                statuses=[dg.DagsterRunStatus.STARTED],
                tags={"triage/pid": str(pid)},
            )
        )
    return runs[0].run_id if runs else None


def _mlflow_runs(home: Path, dagster_run_id: str) -> list[tuple[str, str]]:
    """(MLflow run id, status) of the runs tagged with ``dagster_run_id``."""
    with sqlite3.connect(home / "mlflow" / "mlflow.db", timeout=30) as connection:
        return connection.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'dagster_run_id' AND t.value = ?",
            (dagster_run_id,),
        ).fetchall()


def test_kill_9_mid_training_leaves_no_half_open_run_after_the_next_start(base_home, tmp_path):
    home = copy_home(base_home, tmp_path / "home")
    process = subprocess.Popen(
        # the base home is deployed from these very inputs: --retrain, or nothing would train
        [str(TRIAGE), "pipeline", "--no-seed", "--retrain"],
        env=pipeline_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run_id = mlflow_run = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            run_id = run_id or _started_training_run(home, process.pid)
            if run_id:
                running = [r for r, status in _mlflow_runs(home, run_id) if status == "RUNNING"]
                if running:
                    mlflow_run = running[0]
                    break
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert run_id and mlflow_run, "the training run never reached MLflow before it finished"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert dict(_mlflow_runs(home, run_id))[mlflow_run] == "RUNNING"

    again = run_triage_pipeline(home)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"swept run {run_id}" in again.stdout
    assert f"swept MLflow run {mlflow_run}" in again.stdout
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        half_open = instance.get_runs(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
            )
        )
    assert dict(_mlflow_runs(home, run_id))[mlflow_run] == "KILLED"
    with sqlite3.connect(home / "mlflow" / "mlflow.db") as connection:
        still_running = connection.execute(
            "SELECT count(*) FROM runs WHERE status = 'RUNNING'"
        ).fetchone()[0]
    assert half_open == [] and still_running == 0
    print(
        f"\nkill -9: 1 Dagster run STARTED -> FAILURE, 1 MLflow run RUNNING -> KILLED, "
        f"re-run exit {again.returncode}, {len(half_open)} Dagster and {still_running} MLflow "
        "runs left open"
    )


# ------------------------------------------------------------------------------ relocation
def test_a_moved_home_writes_only_under_itself(base_home, tmp_path):
    old = copy_home(base_home, tmp_path / "old")
    new = tmp_path / "new"
    shutil.copytree(old, new, symlinks=True)
    shutil.rmtree(old)
    done = run_triage_pipeline(new, "--retrain")  # a training run: MLflow writes artifacts
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not old.exists(), f"written outside the home: {sorted(old.rglob('*'))[:10]}"
    root = (new / "mlflow" / "artifacts").as_uri()
    with sqlite3.connect(new / "mlflow" / "mlflow.db") as connection:
        experiments = connection.execute(
            "SELECT artifact_location FROM experiments WHERE name = 'triage-diagnosis'"
        ).fetchall()
        runs = [r[0] for r in connection.execute("SELECT artifact_uri FROM runs")]
    assert experiments == [(root,)]
    outside = [uri for uri in runs if not uri.startswith(root)]
    assert runs and outside == []
    print(
        f"\nrelocation: {len(runs)} MLflow runs, {len(outside)} artifact locations outside the "
        f"new home, old home recreated: {old.exists()}"
    )


# ------------------------------------------------------------------------------ labels
def test_a_label_with_a_code_outside_the_catalogue_is_quarantined(base_home, tmp_path):
    from orchestration.definitions import defs
    from schemas.contracts import LabelRecord

    home = copy_home(base_home, tmp_path / "home")
    predictions = home / "predictions"
    predictions.mkdir(exist_ok=True)
    line = {
        "prediction_id": "rel-0001",
        "time": "2026-05-20T10:00:00+00:00",
        "model_version": current_version(home),
        "inputs": {
            "age": 40.0,
            "heart_rate": 80.0,
            "body_temperature": 37.0,
            "systolic_bp": 120.0,
            "diastolic_bp": 80.0,
            "sex": "female",
            "symptoms": [],
        },
        "differential": [{"code": "NONE", "probability": 0.9}],
        "orphan_probability": 0.0,
        "severity": "not_ill",
    }
    (predictions / "predictions-2026-05-20.jsonl").write_text(json.dumps(line) + "\n")
    labels = home / "labels"
    labels.mkdir(exist_ok=True)
    for name, code in (("unknown.json", "OMIM:99999999999"), ("odd.json", "O73.BD3I")):
        record = LabelRecord(
            prediction_id="rel-0001",
            diagnosis=code,
            severity="acute",
            labelled_at="2026-05-21T10:00:00+00:00",
            labelled_by="clinician",
        )
        (labels / name).write_bytes(msgspec.json.encode(record))
    record = LabelRecord(
        prediction_id="rel-0001",
        diagnosis="NONE",
        severity="not_ill",
        labelled_at="2026-05-21T09:00:00+00:00",
        labelled_by="clinician",
    )
    (labels / "known.json").write_bytes(msgspec.json.encode(record))
    env = pipeline_env(home)
    saved = {k: os.environ.get(k) for k in ("TRIAGE_HOME", "DAGSTER_HOME")}
    os.environ.update(TRIAGE_HOME=env["TRIAGE_HOME"], DAGSTER_HOME=env["DAGSTER_HOME"])
    try:
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            result = defs.resolve_job_def("monitoring").execute_in_process(
                instance=instance, raise_on_error=False
            )
            labelled = result.output_for_node("clinician_labels")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    rows = {r["label_file"]: r for r in labelled.to_dicts()}
    assert rows["unknown.json"]["status"] == "rejected"
    assert rows["unknown.json"]["reasons"] == [
        "diagnosis: OMIM:99999999999 is not in the disease catalogue in use"
    ]
    assert rows["odd.json"]["status"] == "rejected"
    assert rows["known.json"]["status"] == "accepted"
    feedback = result.output_for_node("labelled_feedback")
    assert feedback["diagnosis"].to_list() == ["NONE"]
    print(
        f"\nlabels: {len(rows)} read, "
        f"{sum(r['status'] == 'rejected' for r in rows.values())} quarantined (outside the "
        f"catalogue), {feedback.height} reached training"
    )
