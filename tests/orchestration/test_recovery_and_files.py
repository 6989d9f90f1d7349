"""Half-open runs are swept at start-up, MLflow locations follow a moved home, and the files the
pipeline writes with patient data are private."""

import os
import sqlite3
import stat
import subprocess
import sys
import uuid

import dagster as dg
import pytest

from diagnosis.files import atomic_write, make_private, move_private
from orchestration.recovery import HOST_TAG, PID_TAG, process_tags, sweep_orphaned_runs
from orchestration.resources import relocate_artifact_root


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _started_run(instance, tags) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="training", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags
        )
    )
    return run_id


def test_a_started_run_whose_process_is_gone_is_marked_failed_and_live_or_foreign_runs_kept():
    with dg.instance_for_test() as instance:
        here = process_tags()[HOST_TAG]
        orphan = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: here})
        alive = _started_run(instance, process_tags())
        elsewhere = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: "other-host"})
        daemon = _started_run(instance, {})
        assert sweep_orphaned_runs(instance) == [orphan]
        status = {r: instance.get_run_by_id(r).status for r in (orphan, alive, elsewhere, daemon)}
    assert status[orphan] == dg.DagsterRunStatus.FAILURE
    assert {status[alive], status[elsewhere], status[daemon]} == {dg.DagsterRunStatus.STARTED}


def test_a_reused_pid_does_not_keep_an_orphan_open():
    tags = process_tags()
    if "triage/pid_start" not in tags:
        pytest.skip("no /proc on this system: a process start time cannot be read")
    with dg.instance_for_test() as instance:
        reused = _started_run(instance, {**tags, "triage/pid_start": "1"})
        assert sweep_orphaned_runs(instance) == [reused]


def test_a_copied_home_has_its_mlflow_locations_rewritten_to_itself(tmp_path):
    old_root, new_root = tmp_path / "old" / "mlflow" / "artifacts", tmp_path / "new" / "artifacts"
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE experiments (name TEXT, artifact_location TEXT)")
        connection.execute("CREATE TABLE runs (artifact_uri TEXT)")
        connection.execute("CREATE TABLE model_versions (source TEXT, storage_location TEXT)")
        connection.executemany(
            "INSERT INTO experiments VALUES (?, ?)",
            [("triage-diagnosis", old_root.as_uri()), ("Default", "/elsewhere/mlruns/0")],
        )
        connection.execute("INSERT INTO runs VALUES (?)", (f"{old_root.as_uri()}/abc/artifacts",))
        connection.execute(
            "INSERT INTO model_versions VALUES (?, ?)",
            ("models:/m-1", f"{old_root.as_uri()}/models/m-1/artifacts"),
        )
    assert relocate_artifact_root(database, "triage-diagnosis", new_root) == str(old_root)
    with sqlite3.connect(database) as connection:
        locations = dict(connection.execute("SELECT name, artifact_location FROM experiments"))
        runs = [r[0] for r in connection.execute("SELECT artifact_uri FROM runs")]
        versions = connection.execute(
            "SELECT source, storage_location FROM model_versions"
        ).fetchall()
    assert locations == {"triage-diagnosis": new_root.as_uri(), "Default": "/elsewhere/mlruns/0"}
    assert runs == [f"{new_root.as_uri()}/abc/artifacts"]
    assert versions == [("models:/m-1", f"{new_root.as_uri()}/models/m-1/artifacts")]
    # a second start finds nothing to move
    assert relocate_artifact_root(database, "triage-diagnosis", new_root) is None


def test_atomic_and_moved_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a" / "b" / "label.json", b"{}")
        loose = tmp_path / "export.txt"
        loose.write_bytes(b"x")
        move_private(loose, tmp_path / "refused" / "export.txt")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path / "a" / "b" / "label.json") == 0o600
    assert _mode(tmp_path / "refused") == 0o700
    assert _mode(tmp_path / "refused" / "export.txt") == 0o600


def test_make_private_tightens_state_written_with_an_open_mask(tmp_path):
    area = tmp_path / "storage"
    (area / "validated_patient_records").mkdir(parents=True)
    table = area / "validated_patient_records" / "2026-01-05"
    table.write_bytes(b"rows")
    table.chmod(0o644)
    (area / "validated_patient_records").chmod(0o755)
    area.chmod(0o755)  # explicit: an earlier in-process pipeline run may have left a 077 umask
    assert make_private(area) == 3
    assert _mode(area) == _mode(area / "validated_patient_records") == 0o700
    assert _mode(table) == 0o600
    assert make_private(area) == 0
