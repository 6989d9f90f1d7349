"""The whole graph on a small simulated cohort in a temporary TRIAGE_HOME, then the API on it."""

import json
import re
import signal
import sqlite3

import dagster as dg


def test_every_asset_materialised_and_every_raw_row_accounted_for(deployed_home, deployed_weeks):
    with dg.DagsterInstance.from_config(str(deployed_home / "dagster")) as instance:
        for name in [
            "disease_catalogue",
            "training_table",
            "training_features",
            "model_selection",
            "balanced_training_set",
            "diagnosis_model",
            "model_evaluation",
            "onnx_model",
            "deployed_model",
            "drift_report",
        ]:
            assert instance.get_latest_materialization_event(dg.AssetKey(name)), name
        for week in deployed_weeks:
            counts = {}
            for name in [
                "raw_patient_records",
                "validated_patient_records",
                "quarantined_patient_records",
            ]:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[week]),
                    limit=1,
                ).records
                counts[name] = records[0].asset_materialization.metadata["dagster/row_count"].value
            assert counts["raw_patient_records"] == 800
            assert counts["quarantined_patient_records"] > 0  # the cohort carries defects
            assert (
                counts["validated_patient_records"] + counts["quarantined_patient_records"]
                == counts["raw_patient_records"]
            )


def test_deployment_manifest_traces_the_model_to_its_runs_code_and_data(
    deployed_home, deployed_weeks
):
    pointer = json.loads((deployed_home / "deployments" / "current.json").read_text())
    manifest = json.loads((deployed_home / "deployments" / pointer["manifest"]).read_text())
    assert manifest["version"] == pointer["version"]
    assert sorted(manifest["data_versions"]["weekly_exports"]) == deployed_weeks
    assert manifest["hpo_release"] == "2025-01-16"
    assert manifest["dagster_run_id"] and manifest["mlflow_run_id"]
    assert manifest["metrics"]["onnx_max_abs_diff"] <= 1e-4
    categories = {c["category"] for c in manifest["classes"]}
    assert categories == {"common", "orphan", "healthy"}
    db = sqlite3.connect(deployed_home / "mlflow" / "mlflow.db")
    status = db.execute(
        "select status from runs where run_uuid = ?", (manifest["mlflow_run_id"],)
    ).fetchone()
    alias = db.execute(
        "select version from registered_model_aliases where alias = 'champion'"
    ).fetchone()
    assert status == ("FINISHED",)
    assert alias == (int(manifest["mlflow_model_version"]),)


def test_drift_report_written_with_methods_named(deployed_home, deployed_weeks):
    summary = json.loads(
        (deployed_home / "reports" / "drift" / f"drift_{deployed_weeks[-1]}.json").read_text()
    )
    assert (
        deployed_home / "reports" / "drift" / f"drift_{deployed_weeks[-1]}.html"
    ).stat().st_size > 10_000
    # before any prediction is logged, the newest weekly export stands in for the live window
    assert summary["current_source"].startswith(f"weekly export {deployed_weeks[-1]}")
    vitals = {"age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp"}
    kinds = {name: c["kind"] for name, c in summary["columns"].items()}
    assert {n for n, k in kinds.items() if k == "vital"} == vitals
    assert list(kinds).count("sex") == 1
    assert (
        sum(k == "symptom_prevalence" for k in kinds.values())
        == len(summary["tracked_symptoms"])
        > 0
    )
    assert all(c["method"] and c["threshold"] is not None for c in summary["columns"].values())


def test_the_api_serves_the_deployed_model(deployed_home, deployed_weeks):
    from litestar.testing import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings.from_env(
        {"TRIAGE_HOME": str(deployed_home), "TRIAGE_API_KEYS": "clinician:tok-c,auditor:tok-a"}
    )
    with TestClient(app=create_app(settings)) as client:
        febrile = {
            "age": 30,
            "sex": "male",
            "heart_rate": 108,
            "body_temperature": 39.4,
            "systolic_bp": 115,
            "diastolic_bp": 72,
            "symptoms": ["HP:0001945", "HP:0012735", "HP:0003326"],
        }
        answer = client.post(
            "/v1/predict?top_k=5", json=febrile, headers={"Authorization": "Bearer tok-c"}
        )
        assert answer.status_code in (200, 201), answer.text
        body = answer.json()
        assert len(body["differential"]) == 5
        probabilities = [d["probability"] for d in body["differential"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert body["differential"][0]["category"] in {"common", "orphan", "healthy"}
        card = client.get("/v1/model", headers={"Authorization": "Bearer tok-a"}).json()
        assert card["version"] == body["model_version"]
        assert card["mlflow_run_id"] and card["dagster_run_id"]
        assert client.post("/v1/predict", json=febrile).status_code == 401

        # only rare-disease symptoms (Marfan-like): ORPHA/OMIM diseases fill the differential,
        # including diseases that had no training record at all
        trained = {c["code"] for c in card["classes"]}
        rare = client.post(
            "/v1/predict?top_k=10",
            json={
                "age": 19,
                "sex": "male",
                "symptoms": ["HP:0001166", "HP:0001083", "HP:0000098", "HP:0002616"],
            },
            headers={"Authorization": "Bearer tok-c"},
        ).json()
        codes = [d["code"] for d in rare["differential"]]
        assert {"ORPHA:558", "OMIM:154700"} & set(codes[:5])  # Marfan syndrome
        untrained_orphans = [
            d
            for d in rare["differential"]
            if d["category"] == "orphan" and d["code"] not in trained
        ]
        assert len(untrained_orphans) >= 5
        assert rare["orphan_probability"] > 0.5


def test_a_second_run_validates_only_new_weeks_and_deploys_a_new_version(
    deployed_home, deployed_weeks, second_run
):
    """On a copy of the shared home (conftest ``second_run``): the shared home keeps its model."""
    assert second_run.exit_code == 0, second_run.out
    for week in deployed_weeks:
        assert f"weekly_validation {week}: unchanged" in second_run.out
    assert f"weekly_validation {second_run.new_week}: ok" in second_run.out
    home, before = second_run.home, second_run.pointer_before
    after = json.loads((home / "deployments" / "current.json").read_text())
    assert after["version"] != before["version"]
    manifest = json.loads((home / "deployments" / after["manifest"]).read_text())
    assert second_run.new_week in manifest["data_versions"]["weekly_exports"]
    # the previous version stays on disk, immutable, for audit and rollback
    assert (home / "deployments" / before["manifest"]).exists()
    shared = json.loads((deployed_home / "deployments" / "current.json").read_text())
    assert shared == before


def test_files_with_patient_data_written_by_the_pipeline_are_private(deployed_home):
    """Validated and quarantined tables, raw copies, labels, the pseudonym key: 0600 files in 0700
    folders (TRIAGE_HOME itself 0700)."""
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(deployed_home) == 0o700
    checked = []
    for area in ("storage", "landing", "secrets"):
        root = deployed_home / area
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                assert mode(path) == 0o700, path
            else:
                assert mode(path) & 0o077 == 0, path
            checked.append(path)
    names = {p.parent.name for p in checked}
    assert {
        "validated_patient_records",
        "quarantined_patient_records",
        "raw_patient_records",
    } <= names
    assert (deployed_home / "storage" / "clinician_labels") in checked
    assert (deployed_home / "secrets" / "pseudonym.key") in checked


def test_a_home_with_a_single_valid_week_trains_and_deploys(tmp_path, monkeypatch, capsys):
    """The IO manager hands one partition over as a bare frame, not {week: frame}: the assets that
    read every valid week (training_table, drift_report) take both shapes."""
    from diagnosis.simulation import write_weekly_exports
    from orchestration.pipeline import run_pipeline

    home = tmp_path / "home"
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("TRIAGE_MLFLOW_TRACKING_URI", raising=False)
    write_weekly_exports(
        home / "landing", patients=1500, weeks=1, seed=5, defect_rate=0.02, start="2026-04-06"
    )
    # as in a process started in the background: SIGINT ignored; SIGTERM must still stop it
    # (and the processes it starts) after the training run
    term = signal.getsignal(signal.SIGTERM)
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert run_pipeline(seed_demo=False) == 0, capsys.readouterr().err
        assert signal.getsignal(signal.SIGTERM) == term
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, interrupt)
    out = capsys.readouterr().out
    # the training run (dagster.execute_job, which picks its own run id) is found and followed
    run_id = re.search(r"^training: started \(run ([0-9a-f-]{36})\)$", out, re.M)
    assert run_id, out
    assert re.search(r"\[\s*[\d.]+ s\] diagnosis_model: done", out), out
    assert f"training: ok ({run_id.group(1)})" in out
    pointer = json.loads((home / "deployments" / "current.json").read_text())
    manifest = json.loads((home / "deployments" / pointer["manifest"]).read_text())
    assert list(manifest["data_versions"]["weekly_exports"]) == ["2026-04-06"]
    assert (home / "reports" / "drift").is_dir()
