import dagster as dg
import pytest

from diagnosis.simulation import write_weekly_exports
from orchestration.definitions import defs
from orchestration.resources import AlertsResource, TriageStorage
from orchestration.sensors import weekly_export_sensor

STAGES = {
    "raw_patient_records": "ingestion",
    "validated_patient_records": "validation",
    "quarantined_patient_records": "validation",
    "hpo_release": "knowledge",
    "hpo_ontology": "knowledge",
    "disease_term_frequencies": "knowledge",
    "disease_catalogue": "knowledge",
    "training_table": "training",
    "training_features": "training",
    "balanced_training_set": "training",
    "model_selection": "training",
    "diagnosis_model": "training",
    "model_evaluation": "training",
    "reference_cases": "evaluation",
    "onnx_model": "deployment",
    "deployed_model": "deployment",
    "drift_report": "monitoring",
    "knowledge_ranker": "knowledge",
    "prediction_log": "monitoring",
    "clinician_labels": "monitoring",
    "labelled_feedback": "monitoring",
    "drift_reference": "monitoring",
    "live_performance": "monitoring",
    "orphan_screening": "screening",
}


def test_definitions_load_with_every_asset_in_its_stage_group_with_kinds_and_description():
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == set(STAGES)
    for name, group in STAGES.items():
        assert specs[name].group_name == group, name
        assert specs[name].kinds, name
        assert specs[name].description, name


def test_the_deployed_model_waits_for_blocking_checks_upstream():
    graph = defs.resolve_asset_graph()
    checks = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert checks["quality_gate"].blocking
    assert checks["onnx_parity"].blocking
    assert checks["row_accounting"].blocking
    assert checks["schema_conformance"].blocking
    assert not checks["quarantine_rate"].blocking
    assert not checks["class_minimum"].blocking
    upstream = graph.get(dg.AssetKey("deployed_model")).parent_keys
    assert {dg.AssetKey("model_evaluation"), dg.AssetKey("onnx_model")} <= upstream


def test_jobs_cover_the_graph():
    assert defs.resolve_job_def("weekly_validation").partitions_def is not None
    assert defs.resolve_job_def("training") is not None


@pytest.fixture
def landing(tmp_path):
    (tmp_path / "landing").mkdir()
    return tmp_path


def test_weekly_export_sensor_registers_each_new_file_once(landing):
    write_weekly_exports(landing / "landing", patients=20, weeks=1, seed=1, start="2026-01-05")
    (landing / "landing" / "notes.txt").write_text("not an export")
    storage = TriageStorage(home=str(landing))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"storage": storage, "alerts": AlertsResource()}
        )
        result = weekly_export_sensor(context)
        assert [r.partition_key for r in result.run_requests] == ["2026-01-05"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["2026-01-05"]
        instance.add_dynamic_partitions("weekly_exports", ["2026-01-05"])
        again = weekly_export_sensor(
            dg.build_sensor_context(
                instance=instance, resources={"storage": storage, "alerts": AlertsResource()}
            )
        )
        assert again.run_requests == []


def test_weekly_export_sensor_refuses_an_unreadable_file_and_registers_only_the_readable(landing):
    """Random bytes and an empty file never become partitions (a partition without a readable
    file blocked every later training run): they are moved to landing/refused/ with their reason,
    reported as a failed export_readable check and alerted; the readable week goes on."""
    write_weekly_exports(landing / "landing", patients=20, weeks=1, seed=1, start="2026-01-12")
    (landing / "landing" / "records_2026-01-05.txt").write_bytes(bytes(range(256)) * 8)
    (landing / "landing" / "records_2026-01-19.txt").write_bytes(b"")
    storage = TriageStorage(home=str(landing))
    sent = []

    class Alerts(dg.ConfigurableResource):
        def send(self, kind, summary, details=None, log=None):
            sent.append((kind, details["week"]))
            return True

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"storage": storage, "alerts": Alerts()}
        )
        result = weekly_export_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-01-12"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["2026-01-12"]
    failed = {e.metadata["week"].value: e for e in result.asset_events}
    assert sorted(failed) == ["2026-01-05", "2026-01-19"]
    assert all(not e.passed and e.check_name == "export_readable" for e in failed.values())
    assert "empty file" in failed["2026-01-19"].description
    assert sorted(sent) == [
        ("weekly_export_refused", "2026-01-05"),
        ("weekly_export_refused", "2026-01-19"),
    ]
    refused = landing / "landing" / "refused"
    assert sorted(p.name for p in refused.iterdir()) == [
        "records_2026-01-05.txt",
        "records_2026-01-05.txt.reason.json",
        "records_2026-01-19.txt",
        "records_2026-01-19.txt.reason.json",
    ]
    assert not (landing / "landing" / "records_2026-01-05.txt").exists()
    assert refused.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in refused.iterdir())


def test_the_generated_instance_has_no_telemetry_and_no_first_visit_popup(tmp_path, monkeypatch):
    from orchestration.pipeline import ensure_dagster_home
    from schemas.layout import TriagePaths

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ensure_dagster_home(TriagePaths(tmp_path))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False
        assert instance.telemetry_enabled is False
