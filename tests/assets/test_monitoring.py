"""Monitoring assets: the prediction log, clinicians' labels, labelled feedback, drift and live
performance, on a copy of the deployed demo home served through the real API."""

import datetime as dt
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import msgspec
import numpy as np
import polars as pl
import pytest

from assets.monitoring.predictions import prediction_log
from diagnosis.simulation import write_weekly_exports
from diagnosis.training import monitoring
from diagnosis.training.dataset import SOURCE_CLINICIAN_LABEL, assemble_training_table
from orchestration.resources import TriageStorage
from schemas.validation import read_raw_export, validate_records

FEVER, COUGH = "HP:0001945", "HP:0012735"


# ------------------------------------------------------------------------------ helpers
def simulated_patients(tmp: Path, n: int, seed: int) -> pl.DataFrame:
    """Validated records of a simulated week without defects (the demo cohort's generator)."""
    (path,) = write_weekly_exports(
        tmp, patients=n, weeks=1, seed=seed, defect_rate=0.0, start="2026-03-30"
    )
    return validate_records(read_raw_export(path), b"k" * 32).valid


def influenza_season_of_older_patients(cohort: pl.DataFrame, n: int) -> pl.DataFrame:
    """A drifted week: 60 % influenza cases, the rest patients aged 65 or more."""
    rng = np.random.default_rng(5)
    flu = cohort.filter(pl.col("diagnosis") == "J10")
    old = cohort.filter((pl.col("age") >= 65) & (pl.col("diagnosis") != "J10"))
    pick = lambda frame, k: frame[rng.integers(0, frame.height, k).tolist()]  # noqa: E731
    return pl.concat([pick(flu, int(n * 0.6)), pick(old, n - int(n * 0.6))])


def api_body(row: dict) -> dict:
    keys = ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
    return {**{k: row[k] for k in keys}, "symptoms": list(row["symptoms"])}


def write_label(directory: Path, name: str, body) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    tmp.write_text(body if isinstance(body, str) else json.dumps(body))
    tmp.replace(directory / name)


def serve_with_the_deployed_classifier(home: Path, patients: list[dict]) -> list[dict]:
    """Answers of the deployed model's classifiers, appended with the service's own log writer.

    The pipeline's trained model (Dagster storage) scores the patients, so the logged top-1 and
    severity are the deployed model's; the lines are written by serving.prediction_log, so the
    format is the service's.
    """
    import pickle
    import uuid

    from diagnosis.categories import CATEGORY_ORPHAN, category_of
    from schemas.clinical import SEVERITIES
    from schemas.contracts import DifferentialEntry, Prediction, Severity
    from serving.prediction_log import PredictionLog

    model = pickle.loads((home / "storage" / "diagnosis_model").read_bytes())
    version = json.loads((home / "deployments" / "current.json").read_text())["version"]
    diagnosis, severity = model.predict_proba(model.spec.encode(patients))
    orphan = np.array([category_of(c) == CATEGORY_ORPHAN for c in model.classes])
    answers = []
    for p_dx, p_sev in zip(diagnosis, severity):
        order = np.argsort(-p_dx)[:3]
        answers.append(
            Prediction(
                prediction_id=uuid.uuid4().hex,
                model_version=version,
                differential=[
                    DifferentialEntry(
                        code=model.classes[i],
                        name=model.classes[i],
                        name_es=None,
                        category=category_of(model.classes[i]),
                        probability=min(float(p_dx[i]), 1.0),
                    )
                    for i in order
                ],
                orphan_probability=min(float(p_dx[orphan].sum()), 1.0),
                severity=Severity(
                    label=SEVERITIES[int(np.argmax(p_sev))],
                    probabilities={s: float(v) for s, v in zip(SEVERITIES, p_sev)},
                ),
            )
        )
    log = PredictionLog(home / "predictions")
    log.record(patients, answers)
    log.close()
    return [msgspec.to_builtins(answer) for answer in answers]


class Webhook:
    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ pure functions
def test_prediction_lines_are_parsed_and_malformed_lines_counted_without_their_content():
    good = {
        "prediction_id": "a1",
        "time": "2026-04-01T10:00:00.000+00:00",
        "model_version": "v1",
        "inputs": {
            "age": 30,
            "sex": None,
            "heart_rate": None,
            "body_temperature": 38.5,
            "systolic_bp": 120,
            "diastolic_bp": 80,
            "symptoms": [FEVER],
        },
        "differential": [{"code": "J10", "probability": 0.9}, {"code": "NONE", "probability": 0.1}],
        "orphan_probability": 0.0,
        "severity": "acute",
    }
    lines = [
        json.dumps(good).encode(),
        b"{not json secret-text",
        b"",
        json.dumps({"x": 1}).encode(),
    ]
    rows, problems = monitoring.parse_prediction_lines(lines, "predictions-2026-04-01.jsonl")
    assert len(rows) == 1
    assert rows[0]["predicted"] == "J10" and rows[0]["sex"] == "unknown"
    assert rows[0]["heart_rate"] is None and rows[0]["day"] == "2026-04-01"
    assert problems[0] == "predictions-2026-04-01.jsonl:2: not JSON"
    assert problems[1].startswith("predictions-2026-04-01.jsonl:4: not a prediction log line")
    assert len(problems) == 2
    assert "secret" not in " ".join(problems)


def test_labels_are_validated_one_by_one_and_none_is_lost(tmp_path):
    labels = tmp_path / "labels"
    write_label(
        labels,
        "a.json",
        {
            "prediction_id": "p1",
            "diagnosis": "j10",
            "severity": "Aguda",
            "received_at": "2026-04-01T10:00:00Z",
        },
    )
    write_label(
        labels,
        "b.json",
        {
            "prediction_id": "p1",
            "diagnosis": "J18.9",
            "severity": "acute",
            "received_at": "2026-04-01T11:00:00Z",
        },
    )
    write_label(labels, "c.json", "{broken")
    write_label(labels, "d.json", {"prediction_id": "nope", "diagnosis": "flu", "severity": "bad"})
    write_label(labels, "e.json", ["not", "an", "object"])
    write_label(
        labels, "f.json", {"prediction_id": "p2", "diagnosis": "ORPHA:558", "severity": "crónica"}
    )
    (labels / ".g.json.tmp").write_text("{}")  # a writer's temporary file is not a label
    frame = monitoring.validate_label_files(monitoring.label_files(labels), {"p1", "p2"})
    by_file = {r["label_file"]: r for r in frame.to_dicts()}
    assert sorted(by_file) == ["a.json", "b.json", "c.json", "d.json", "e.json", "f.json"]
    assert by_file["a.json"]["status"] == "superseded"
    assert by_file["a.json"]["reasons"] == ["superseded by b.json"]
    assert by_file["b.json"]["status"] == "accepted" and by_file["b.json"]["diagnosis"] == "J18.9"
    assert by_file["c.json"]["reasons"] == ["file: not a JSON document"]
    assert by_file["d.json"]["reasons"] == [
        "prediction_id: not in the prediction log",
        "diagnosis: not NONE, ICD-10, ORPHA:n or OMIM:n",
        "severity: unknown label",
    ]
    assert by_file["e.json"]["reasons"] == ["file: not a JSON object"]
    assert (by_file["f.json"]["status"], by_file["f.json"]["severity"]) == ("accepted", "chronic")


def test_labels_outside_the_catalogue_or_over_the_daily_cap_are_quarantined_with_the_reason(
    tmp_path,
):
    """Well-formed codes that no catalogue disease has never become classes; a token's labels
    beyond the daily cap are held back; revisions of one prediction are counted, the latest wins."""
    labels = tmp_path / "labels"
    catalogue = {"NONE", "J10", "ORPHA:558"}

    def label(name, prediction, code, at, token="clin-a"):
        write_label(
            labels,
            name,
            {
                "prediction_id": prediction,
                "diagnosis": code,
                "severity": "acute",
                "labelled_at": at,
                "labelled_by": "clinician",
                "confirmed_by": token,
            },
        )

    label("unknown.json", "p1", "OMIM:99999999999", "2026-04-01T08:00:00Z")
    label("odd.json", "p2", "O73.BD3I", "2026-04-01T08:01:00Z")
    label("r1.json", "p3", "J10", "2026-04-01T09:00:00Z")
    label("r2.json", "p3", "ORPHA:558", "2026-04-01T09:30:00Z", token="clin-b")
    label("c1.json", "p4", "J10", "2026-04-01T10:00:00Z")
    label("c2.json", "p5", "J10", "2026-04-01T11:00:00Z")  # clin-a's third valid label that day
    label("c3.json", "p6", "J10", "2026-04-02T11:00:00Z")  # a new day
    frame = monitoring.validate_label_files(
        monitoring.label_files(labels),
        {f"p{i}" for i in range(1, 7)},
        catalogue_codes=catalogue,
        max_labels_per_token_per_day=2,
    )
    rows = {r["label_file"]: r for r in frame.to_dicts()}
    assert len(rows) == 7  # none dropped
    assert rows["unknown.json"]["status"] == "rejected"
    assert rows["unknown.json"]["reasons"] == [
        "diagnosis: OMIM:99999999999 is not in the disease catalogue in use"
    ]
    assert rows["odd.json"]["reasons"] == [
        "diagnosis: O73.BD3I is not in the disease catalogue in use"
    ]
    assert (rows["r1.json"]["status"], rows["r2.json"]["status"]) == ("superseded", "accepted")
    assert rows["r1.json"]["revisions"] == rows["r2.json"]["revisions"] == 2
    assert rows["c1.json"]["status"] == "accepted"
    assert rows["c2.json"]["status"] == "rejected"
    assert rows["c2.json"]["reasons"] == ["cap: clin-a confirmed more than 2 labels on 2026-04-01"]
    assert rows["c3.json"]["status"] == "accepted"
    assert rows["c3.json"]["confirmed_by"] == "clin-a"
    # without a catalogue or a cap (older callers) the same codes pass the format check only
    loose = monitoring.validate_label_files(monitoring.label_files(labels), {"p1", "p2"})
    assert dict(loose.select("label_file", "status").iter_rows())["unknown.json"] == "accepted"


def test_labelled_feedback_becomes_training_rows_marked_as_clinician_labels(tmp_path):
    week = simulated_patients(tmp_path, 200, seed=3)
    catalogue = pl.DataFrame({"code": ["NONE"], "name": ["No disease"]})
    feedback = pl.DataFrame(
        {
            "prediction_id": ["p1", "p2"],
            "diagnosis": ["NONE", "NONE"],
            "severity": ["not_ill", "not_ill"],
            "received_at": [dt.datetime(2026, 4, 2, tzinfo=dt.UTC)] * 2,
            "label_file": ["l1.json", "l2.json"],
            "time": [dt.datetime(2026, 4, 1, 9, tzinfo=dt.UTC)] * 2,
            "model_version": ["v1", "v1"],
            "age": [30.0, 50.0],
            "heart_rate": [70.0, None],
            "body_temperature": [36.7, 36.9],
            "systolic_bp": [118.0, 121.0],
            "diastolic_bp": [75.0, 79.0],
            "sex": ["female", None],
            "symptoms": [[FEVER], []],
            "predicted": ["J10", "NONE"],
            "predicted_probability": [0.6, 0.9],
            "orphan_probability": [0.0, 0.0],
            "predicted_severity": ["acute", "not_ill"],
        },
        schema_overrides={
            "time": pl.Datetime("us", "UTC"),
            "received_at": pl.Datetime("us", "UTC"),
        },
    )
    table, _ = assemble_training_table(
        {"2026-03-30": week},
        catalogue,
        min_class_rows=2,
        evaluation_share=0.2,
        seed=7,
        feedback=feedback,
    )
    labelled = table.filter(pl.col("source") == SOURCE_CLINICIAN_LABEL)
    assert labelled.height == 2
    assert labelled["source_file"].sort().to_list() == ["l1.json", "l2.json"]
    assert labelled["week"].unique().to_list() == ["2026-03-30"]  # the Monday of the prediction
    assert labelled["patient_key"].null_count() == 2  # requests carry no identifier
    assert sorted(labelled["sex"].to_list()) == ["female", "unknown"]
    assert (
        table.filter(pl.col("source") == "weekly_export").height
        == week.filter(pl.col("diagnosis").is_in(table["diagnosis"].unique().to_list())).height
    )


def test_live_metrics_per_model_version():
    feedback = pl.DataFrame(
        {
            "model_version": ["v1"] * 4 + ["v2"] * 2,
            "diagnosis": ["J10", "J10", "ORPHA:558", "NONE", "J10", "ORPHA:558"],
            "predicted": ["J10", "NONE", "ORPHA:558", "NONE", "J10", "J10"],
            "severity": ["acute"] * 6,
            "predicted_severity": ["acute"] * 3 + ["mild"] * 3,
        }
    )
    metrics = monitoring.live_metrics(feedback)
    assert metrics["v1"]["labelled"] == 4 and metrics["v1"]["accuracy"] == 0.75
    assert metrics["v1"]["orphan_labelled"] == 1 and metrics["v1"]["orphan_recall"] == 1.0
    assert metrics["v1"]["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3, abs=1e-4)
    assert metrics["v2"]["orphan_recall"] == 0.0 and metrics["v2"]["severity_accuracy"] == 0.0


def test_a_day_without_a_prediction_file_is_an_empty_partition(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [prediction_log],
            partition_key="2026-04-05",
            instance=instance,
            resources={
                "storage": TriageStorage(home=str(tmp_path)),
                "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "s")),
            },
        )
        frame = result.output_for_node("prediction_log")
        assert frame.height == 0 and frame.schema == pl.Schema(monitoring.PREDICTION_SCHEMA)
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["file_present"].value is False and meta["dagster/row_count"].value == 0


# ------------------------------------------------------------------------------ served demo
@pytest.fixture(scope="module")
def monitored(deployed_home, tmp_path_factory):
    """A copy of the deployed demo home; the API serves a drifted week (influenza season, older
    patients); clinicians confirm 30 diagnoses and send a few bad labels; the monitoring job runs
    with alerts to a local webhook."""
    from orchestration.definitions import defs

    home = tmp_path_factory.mktemp("monitored") / "home"
    shutil.copytree(deployed_home, home)
    for earlier in ("predictions", "labels"):  # other suites may have served from deployed_home
        shutil.rmtree(home / earlier, ignore_errors=True)
    cohort = simulated_patients(tmp_path_factory.mktemp("cohort"), 2000, seed=21)
    drifted = influenza_season_of_older_patients(cohort, 300)
    predictions = serve_with_the_deployed_classifier(
        home, [api_body(r) for r in drifted.to_dicts()]
    )
    truth = drifted.to_dicts()
    for i in range(30):
        write_label(
            home / "labels",
            f"label-{i:03d}.json",
            {
                "prediction_id": predictions[i]["prediction_id"],
                "diagnosis": truth[i]["diagnosis"],
                "severity": truth[i]["severity"],
            },
        )
    write_label(home / "labels", "bad-json.json", "{")
    write_label(
        home / "labels",
        "unknown.json",
        {"prediction_id": "0" * 32, "diagnosis": "J10", "severity": "acute"},
    )

    hook = Webhook()
    mp = pytest.MonkeyPatch()
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    mp.setenv("TRIAGE_ALERT_WEBHOOK", hook.url)
    try:
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            result = defs.resolve_job_def("monitoring").execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={
                    "resources": {
                        "monitoring": {
                            "config": {
                                "drift_share_threshold": 0.2,
                                "min_labels_for_performance": 20,
                                "min_live_accuracy": 0.99,
                            }
                        }
                    }
                },
            )
        yield {
            "home": home,
            "result": result,
            "alerts": hook.received,
            "predictions": predictions,
            "truth": truth,
        }
    finally:
        mp.undo()
        hook.close()


def test_labels_are_joined_to_their_predictions_as_labelled_feedback(monitored):
    result = monitored["result"]
    assert result.success
    labels = result.output_for_node("clinician_labels")
    assert labels.filter(pl.col("status") == "accepted").height == 30
    rejected = dict(
        labels.filter(pl.col("status") == "rejected").select("label_file", "reasons").iter_rows()
    )
    assert rejected == {
        "bad-json.json": ["file: not a JSON document"],
        "unknown.json": ["prediction_id: not in the prediction log"],
    }
    feedback = result.output_for_node("labelled_feedback")
    assert feedback.height == 30
    first = feedback.filter(pl.col("prediction_id") == monitored["predictions"][0]["prediction_id"])
    truth = monitored["truth"][0]
    assert first["diagnosis"][0] == truth["diagnosis"] and first["age"][0] == truth["age"]
    assert first["predicted"][0] == monitored["predictions"][0]["differential"][0]["code"]


def test_live_performance_is_measured_per_model_version_and_alerts_below_the_floor(monitored):
    result = monitored["result"]
    feedback = result.output_for_node("labelled_feedback")
    (version,) = feedback["model_version"].unique().to_list()
    metrics = result.output_for_node("live_performance")[version]
    assert metrics["labelled"] == 30
    assert metrics["accuracy"] == pytest.approx(feedback["correct"].mean(), abs=1e-4)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    floor = checks["live_performance_floors"]
    assert not floor.passed and floor.severity == dg.AssetCheckSeverity.WARN  # floor set to 0.99
    (alert,) = [a for a in monitored["alerts"] if a["kind"] == "live_performance_below_floor"]
    assert alert["details"]["model_version"] == version


def test_a_drifted_week_is_flagged_feature_by_feature_with_the_report_on_disk(monitored):
    result = monitored["result"]
    summary = result.output_for_node("drift_report")
    assert summary["current_source"].startswith("prediction log")
    assert summary["current_rows"] == 300 and summary["reference"] == "serving model"
    columns = summary["columns"]
    # older patients and influenza: age, temperature, fever prevalence and predicted class shift
    for feature in ("age", "body_temperature", f"symptom {FEVER}", "predicted"):
        assert columns[feature]["drifted"], (feature, columns[feature])
    assert columns["age"]["current_mean"] > columns["age"]["reference_mean"] + 5
    fever = columns[f"symptom {FEVER}"]
    assert fever["current_prevalence"] > fever["reference_prevalence"]
    assert all(c["method"] and c["threshold"] is not None for c in columns.values())
    assert summary["drift_share"] > 0.2

    event = result.get_asset_materialization_events()
    meta = next(
        e for e in event if e.asset_key == dg.AssetKey("drift_report")
    ).materialization.metadata
    html = Path(meta["report_html"].value)
    assert html.parent == monitored["home"] / "reports" / "drift" and html.stat().st_size > 10_000
    assert (
        json.loads(Path(meta["summary_json"].value).read_text())["drifted_columns"]
        == (summary["drifted_columns"])
    )

    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["drift_share"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    (alert,) = [a for a in monitored["alerts"] if a["kind"] == "drift_detected"]
    assert "age" in alert["details"]["drifted_columns"]


def test_the_training_week_itself_shows_no_drift_against_its_reference(monitored):
    """Control: patients like the training population keep the drift share under the threshold."""
    home = monitored["home"]
    summary = monitored["result"].output_for_node("drift_report")
    reference = pl.read_parquet(summary["reference_path"])
    same_population = reference.sample(1500, seed=1)
    control = monitoring.drift_summary(
        reference, same_population, home / "control.html", tracked_symptoms=10, with_predicted=True
    )
    assert control["drifted_columns"] == [] and control["drift_share"] == 0.0


def test_the_drifted_week_makes_the_drift_sensor_request_retraining(monitored):
    from orchestration.resources import MonitoringPolicy
    from orchestration.sensors import TRIGGER_DRIFT, TRIGGER_TAG, drift_retraining_sensor

    with dg.DagsterInstance.from_config(str(monitored["home"] / "dagster")) as instance:
        result = drift_retraining_sensor(
            dg.build_sensor_context(instance=instance, resources={"monitoring": MonitoringPolicy()})
        )
    (request,) = result.run_requests
    assert request.tags[TRIGGER_TAG] == TRIGGER_DRIFT
    assert float(request.tags["triage/drift_share"]) > 0.2


def test_the_apis_label_revisions_are_read_once_each_and_the_latest_wins(tmp_path):
    """The API keeps every revision under labels/revisions/ and a copy of the latest as
    labels/<id>.json: the pipeline reads each revision once (the copy is not a third label)."""
    from serving.labels import LabelStore

    labels = tmp_path / "labels"
    store = LabelStore(labels)
    pid = "a" * 32
    prediction = {"model_version": "v1", "time": "2026-01-12T10:00:00+00:00"}
    fields = {"prediction_id": pid, "diagnosis": "J18", "severity": "acute"}
    store.write(fields, "clinician", prediction, confirmed_by="dr-a")
    store.write({**fields, "diagnosis": "J20"}, "clinician", prediction, confirmed_by="dr-a")

    frame = monitoring.validate_label_files(monitoring.label_files(labels), {pid})
    assert frame.height == 2
    accepted = frame.filter(pl.col("status") == monitoring.STATUS_ACCEPTED)
    assert accepted["diagnosis"].to_list() == ["J20"]
    assert accepted["revisions"].to_list() == [2]
    assert frame.filter(pl.col("status") == monitoring.STATUS_SUPERSEDED).height == 1
