"""Sensors that close the loop (labels, drift, refused models) and the alerts resource."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.resources import AlertsResource, MonitoringPolicy, TriageStorage
from orchestration.sensors import (
    TRIGGER_DRIFT,
    TRIGGER_TAG,
    drift_retraining_sensor,
    model_gate_alert_sensor,
    new_labels_sensor,
)

REPO = Path(__file__).resolve().parents[2]
DRIFT_KEY = dg.AssetKey("drift_report")


class Webhook:
    """A JSON-collecting HTTP server on 127.0.0.1 (an ephemeral port)."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def write_labels(directory: Path, start: int, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        tmp = directory / f".label-{i:04d}.tmp"
        tmp.write_text(
            json.dumps({"prediction_id": f"p{i}", "diagnosis": "J10", "severity": "acute"})
        )
        os.replace(tmp, directory / f"label-{i:04d}.json")
        time.sleep(0.002)  # distinct mtimes, as labels arriving one by one


def labels_context(home: Path, instance, cursor=None, **policy):
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "storage": TriageStorage(home=str(home)),
            "monitoring": MonitoringPolicy(**policy),
        },
    )


def test_new_labels_sensor_requests_one_retraining_per_batch_of_twenty_labels(tmp_path):
    with dg.instance_for_test() as instance:
        nothing = new_labels_sensor(labels_context(tmp_path, instance))
        assert isinstance(nothing, dg.SkipReason) and "0 new label" in nothing.skip_message

        write_labels(tmp_path / "labels", 0, 19)
        (tmp_path / "labels" / ".label-9999.tmp").write_text("{}")  # a writer's temp file
        waiting = new_labels_sensor(labels_context(tmp_path, instance))
        assert isinstance(waiting, dg.SkipReason) and "19 new label" in waiting.skip_message

        write_labels(tmp_path / "labels", 19, 1)
        first = new_labels_sensor(labels_context(tmp_path, instance))
        (request,) = first.run_requests
        assert request.run_key.endswith("label-0019.json")
        assert (
            request.tags[TRIGGER_TAG] == "new_labels" and request.tags["triage/new_labels"] == "20"
        )

        # the same labels never request a second run: the cursor moved past them
        again = new_labels_sensor(labels_context(tmp_path, instance, cursor=first.cursor))
        assert isinstance(again, dg.SkipReason) and "0 new label" in again.skip_message

        write_labels(tmp_path / "labels", 20, 20)
        second = new_labels_sensor(labels_context(tmp_path, instance, cursor=first.cursor))
        (request2,) = second.run_requests
        assert request2.run_key != request.run_key and request2.run_key.endswith("label-0039.json")


def test_new_labels_sensor_respects_the_minimum_and_the_cooldown(tmp_path):
    with dg.instance_for_test() as instance:
        write_labels(tmp_path / "labels", 0, 5)
        first = new_labels_sensor(
            labels_context(
                tmp_path, instance, min_new_labels=5, label_retrain_cooldown_seconds=3600
            )
        )
        assert len(first.run_requests) == 1
        write_labels(tmp_path / "labels", 5, 5)
        cooling = new_labels_sensor(
            labels_context(
                tmp_path,
                instance,
                cursor=first.cursor,
                min_new_labels=5,
                label_retrain_cooldown_seconds=3600,
            )
        )
        assert isinstance(cooling, dg.SkipReason) and "cooldown" in cooling.skip_message
        after = new_labels_sensor(
            labels_context(tmp_path, instance, cursor=first.cursor, min_new_labels=5)
        )
        assert len(after.run_requests) == 1


def report_drift(instance, passed: bool, share: float) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=DRIFT_KEY,
            check_name="drift_share",
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"drift_share": share},
        )
    )


def drift_context(instance, cursor=None, cooldown=3600):
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"monitoring": MonitoringPolicy(drift_retrain_cooldown_seconds=cooldown)},
    )


def test_drift_sensor_retrains_on_a_failed_drift_check_once_then_cools_down():
    with dg.instance_for_test() as instance:
        assert isinstance(drift_retraining_sensor(drift_context(instance)), dg.SkipReason)

        report_drift(instance, passed=True, share=0.1)
        calm = drift_retraining_sensor(drift_context(instance))
        assert not calm.run_requests and "within threshold" in calm.skip_reason.skip_message

        report_drift(instance, passed=False, share=0.7)
        drifted = drift_retraining_sensor(drift_context(instance, calm.cursor))
        (request,) = drifted.run_requests
        assert request.tags[TRIGGER_TAG] == TRIGGER_DRIFT
        assert request.tags["triage/drift_share"] == "0.700"
        assert request.run_key.startswith("drift-")

        # the same evaluation is not acted on twice
        same = drift_retraining_sensor(drift_context(instance, drifted.cursor))
        assert isinstance(same, dg.SkipReason) and "no new" in same.skip_message

        # a new failure within the cooldown waits; with the cooldown over it retrains
        report_drift(instance, passed=False, share=0.8)
        cooling = drift_retraining_sensor(drift_context(instance, drifted.cursor))
        assert isinstance(cooling, dg.SkipReason) and "cooldown" in cooling.skip_message
        later = drift_retraining_sensor(drift_context(instance, drifted.cursor, cooldown=0))
        assert len(later.run_requests) == 1 and later.run_requests[0].run_key != request.run_key


def test_alerts_resource_posts_json_to_the_webhook_and_warns_when_unset(
    webhook, monkeypatch, caplog
):
    assert AlertsResource(webhook_url=webhook.url).send("drift_detected", "age drifted", {"x": 1})
    (payload,) = webhook.received
    assert payload["kind"] == "drift_detected" and payload["summary"] == "age drifted"
    assert payload["details"] == {"x": 1} and payload["source"] == "triage" and payload["sent_at"]

    monkeypatch.setenv("TRIAGE_ALERT_WEBHOOK", webhook.url)
    assert AlertsResource().send("live_performance_below_floor", "low")  # read at send time
    assert webhook.received[-1]["kind"] == "live_performance_below_floor"

    monkeypatch.delenv("TRIAGE_ALERT_WEBHOOK")
    with caplog.at_level("WARNING"):
        assert not AlertsResource().send("drift_detected", "nobody listens")
    assert "TRIAGE_ALERT_WEBHOOK is not set" in caplog.text
    assert len(webhook.received) == 2

    # an unreachable webhook is an error in the log and False, never an exception
    dead = Webhook()
    dead.close()
    assert not AlertsResource(webhook_url=dead.url, timeout_seconds=1).send("drift_detected", "x")


def test_gate_alert_sensor_alerts_once_per_refused_model(webhook):
    with dg.instance_for_test() as instance:
        context = lambda cursor=None: dg.build_sensor_context(  # noqa: E731
            instance=instance,
            cursor=cursor,
            resources={"alerts": AlertsResource(webhook_url=webhook.url)},
        )
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("model_evaluation"),
                check_name="quality_gate",
                passed=False,
                description="macro_f1 0.310 < 0.5",
                metadata={"macro_f1": 0.31},
            )
        )
        first = context()
        model_gate_alert_sensor(first)
        (alert,) = webhook.received
        assert alert["kind"] == "model_refused_by_gate"
        assert "macro_f1 0.310 < 0.5" in alert["summary"]
        assert alert["details"]["metadata"] == {"macro_f1": 0.31}
        model_gate_alert_sensor(context(first.cursor))
        assert len(webhook.received) == 1


def test_definitions_register_the_loop_sensors_with_the_training_job():
    for name in ("new_labels_sensor", "drift_retraining_sensor"):
        assert defs.resolve_sensor_def(name).job_name == "training"
    assert defs.resolve_sensor_def("model_gate_alert_sensor")
    training = defs.resolve_job_def("training").asset_layer.executable_asset_keys
    assert dg.AssetKey("labelled_feedback") in training
    assert dg.AssetKey("prediction_log") not in training  # daily partitions: own job


@pytest.mark.slow
def test_dagster_sensor_preview_shows_a_run_request_only_after_twenty_labels(tmp_path):
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).parent / "dagster"

    def preview() -> str:
        done = subprocess.run(
            [str(dagster), "sensor", "preview", "new_labels_sensor", "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    before = preview()
    assert "Sensor returned false for new_labels_sensor" in before
    assert "0 new label(s)" in before and "run requests" not in before
    write_labels(tmp_path / "labels", 0, 20)
    after = preview()
    assert "Sensor returning run requests for 1 run(s)" in after, after
