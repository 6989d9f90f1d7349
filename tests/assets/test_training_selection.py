"""Model selection in the pipeline (issue 17): every candidate is its own step, the learning curve
that sized the sample is in the metadata, the candidates' MLflow runs are gathered with the
selected one tagged, and a run that adds a small week reuses the selection with its evidence."""

import shutil

import dagster as dg
import pytest

pytestmark = pytest.mark.slow


def _selections(instance) -> list:
    records = instance.fetch_materializations(dg.AssetKey("model_selection"), limit=100).records
    return sorted(records, key=lambda r: r.timestamp)


def test_candidates_run_as_steps_and_the_curve_and_runs_are_recorded(deployed_home):
    instance = dg.DagsterInstance.get()
    first = _selections(instance)[0]
    meta = first.asset_materialization.metadata
    assert meta["reused"].value is False
    curve = meta["learning_curve_points"].value
    assert curve["rows_total"] == meta["training_rows"].value
    assert meta["sample_rows"].value <= meta["training_rows"].value
    assert "macro-F1" in meta["learning_curve"].value
    steps = {
        record.step_key
        for record in instance.all_logs(first.run_id)
        if record.dagster_event is not None
        and record.dagster_event.event_type_value == "STEP_SUCCESS"
    }
    candidate_steps = {s for s in steps if "cross_validate_step" in s}
    # 4 families x {none, class_weight}, then both resamplings for the best family (resample_top=1)
    assert len(candidate_steps) == 10, sorted(steps)
    assert any("[xgboost__class_weight]" in s for s in candidate_steps)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{deployed_home / 'mlflow' / 'mlflow.db'}")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.selected = 'True'",
        output_format="list",
    )
    selected = meta["selected"].value
    assert any(r.info.run_name == selected.replace(" + ", "+") for r in runs), selected


def test_a_small_new_week_reuses_the_last_selection_with_its_evidence(
    deployed_home, tmp_path, monkeypatch
):
    from diagnosis.simulation import write_weekly_exports
    from orchestration.pipeline import run_pipeline

    # a copy: the session's deployed home is shared by other suites and must stay as deployed
    home = tmp_path / "home"
    shutil.copytree(deployed_home, home)
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    instance = dg.DagsterInstance.get()
    ran = [
        r
        for r in _selections(instance)
        if r.asset_materialization.metadata["reused"].value is False
    ][-1]
    write_weekly_exports(
        home / "landing",
        patients=300,
        weeks=1,
        seed=21,
        defect_rate=0.0,
        start="2026-04-06",
    )
    # (whether the retrained model then passes the quality gate is not this test's concern)
    run_pipeline(seed_demo=False)
    latest = _selections(dg.DagsterInstance.get())[-1].asset_materialization.metadata
    assert latest["reused"].value is True, latest.get("run_reason")
    assert latest["reused_from_run"].value == ran.run_id
    assert "same code and settings" in latest["reuse_reason"].value
    # the evidence travels with it: the same comparison and curve as the run that selected
    before = ran.asset_materialization.metadata
    assert latest["comparison"].value == before["comparison"].value
    assert latest["selected"].value == before["selected"].value
    assert latest["training_rows_now"].value > before["training_rows"].value
