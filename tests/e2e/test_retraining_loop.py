"""The monitoring loop with the real pieces: serve, predict, confirm labels through the API, the
sensor requests retraining, the run passes (the service reloads) or the gate refuses (the service
keeps its model) — asserted at each step."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import dagster as dg
import polars as pl
import pytest

from diagnosis.simulation import simulate_cohort
from orchestration.resources import MonitoringPolicy, TriageStorage
from orchestration.sensors import new_labels_sensor
from schemas.validation import validate_records

CLINICIAN, AUDITOR = "loop-clinician", "loop-auditor"


def call(url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def loop_home(deployed_home, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(deployed_home, home)
    for folder in ("predictions", "labels"):
        shutil.rmtree(home / folder, ignore_errors=True)
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


@pytest.fixture
def api(loop_home, start_api):
    return start_api(
        loop_home, f"clinician:{CLINICIAN},auditor:{AUDITOR}", TRIAGE_RELOAD_INTERVAL="0.2"
    )


def served_version(base):
    return call(f"{base}/v1/model", token=AUDITOR)[1]["version"]


def confirm_labels(base, n, seed):
    """Predict for n simulated patients through the API, then confirm their true diagnoses."""
    raw = simulate_cohort(n, 1, seed, defect_rate=0.0, start="2026-04-06")[0][1].with_columns(
        pl.lit("loop").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    records = validate_records(raw, b"loop").valid
    assert records.height >= n - 2
    for row in records.iter_rows(named=True):
        body = {
            k: row[k]
            for k in (
                "age",
                "sex",
                "heart_rate",
                "body_temperature",
                "systolic_bp",
                "diastolic_bp",
                "symptoms",
            )
        }
        status, answer = call(f"{base}/v1/predict", body, token=CLINICIAN)
        assert status == 200, answer
        status, _ = call(
            f"{base}/v1/labels",
            {
                "prediction_id": answer["prediction_id"],
                "diagnosis": row["diagnosis"],
                "severity": row["severity"],
            },
            token=CLINICIAN,
        )
        assert status == 202
    return records.height


RUN_TRAINING = """
import json, sys
import dagster as dg
from orchestration.definitions import defs
tags, run_config = json.loads(sys.argv[1]), json.loads(sys.argv[2])
with dg.DagsterInstance.get() as instance:
    run = defs.resolve_job_def("training").execute_in_process(
        instance=instance, tags=tags, run_config=run_config, raise_on_error=False)
gate = {e.check_name: e for e in run.get_asset_check_evaluations()}.get("quality_gate")
feedback = run.output_for_node("labelled_feedback") if run.success else None
materialised = sorted({e.asset_key.to_user_string() for e in run.all_events
                       if e.event_type_value == "ASSET_MATERIALIZATION"})
print(json.dumps({"success": run.success, "gate_passed": gate.passed if gate else None,
                  "gate_description": gate.description if gate else None,
                  "gate_champion": gate.metadata["champion_version"].value if gate else None,
                  "materialised": materialised,
                  "feedback_rows": feedback.height if feedback is not None else None}))
"""


def run_training(home, tags, run_config=None):
    """Execute the requested training run in its own process, as the Dagster daemon would
    (MLflow keeps process-wide state, so one process serves one TRIAGE_HOME)."""
    env = {**os.environ, "TRIAGE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    out = subprocess.run(
        [sys.executable, "-c", RUN_TRAINING, json.dumps(dict(tags)), json.dumps(run_config or {})],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def sensor_tick(instance, home, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"storage": TriageStorage(home=str(home)), "monitoring": MonitoringPolicy()},
    )
    return new_labels_sensor(context), context


def test_labels_close_the_loop_through_the_gate(loop_home, api):
    first = served_version(api)
    with dg.DagsterInstance.from_config(str(loop_home / "dagster")) as instance:
        # no labels yet: the sensor asks for nothing
        result, _ = sensor_tick(instance, loop_home)
        assert isinstance(result, dg.SkipReason)

        labelled = confirm_labels(api, 30, seed=21)
        assert len(list((loop_home / "labels").glob("*.json"))) == labelled >= 20
        result, context = sensor_tick(instance, loop_home)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]

        # the requested run retrains on the confirmed labels and passes the gate
        run = run_training(loop_home, request.tags)
        assert run["success"] and run["gate_passed"]
        assert run["feedback_rows"] == labelled
        pointer = json.loads((loop_home / "deployments" / "current.json").read_text())
        assert pointer["version"] != first

        # the running service picks the new model up without a restart
        deadline = time.monotonic() + 20
        while served_version(api) != pointer["version"]:
            assert time.monotonic() < deadline, "the API did not reload the new model"
            time.sleep(0.3)

        # more labels; this time the requested run trains a deliberately weak challenger
        confirm_labels(api, 25, seed=22)
        result, _ = sensor_tick(instance, loop_home, cursor=result.cursor)
        assert len(result.run_requests) == 1
        weak = {
            "ops": {
                "diagnosis_model": {
                    "config": {
                        "family": "xgboost",
                        "balancing": "random_over_sampling",
                        "n_estimators": 1,
                        "max_depth": 1,
                    }
                }
            }
        }
        refused = run_training(loop_home, result.run_requests[0].tags, weak)
        assert not refused["success"] and refused["gate_passed"] is False
        # refused for being worse than the champion it names; evaluated, never deployed
        assert "champion" in refused["gate_description"]
        assert refused["gate_champion"] == pointer["version"]
        assert "model_evaluation" in refused["materialised"]
        assert "deployed_model" not in refused["materialised"]
        time.sleep(1.0)  # several reload intervals
        assert served_version(api) == pointer["version"]
        assert json.loads((loop_home / "deployments" / "current.json").read_text()) == pointer
