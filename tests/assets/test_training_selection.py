"""Model selection in the pipeline (issue 17): every candidate is its own step, the learning curve
that sized the sample is in the metadata, the candidates' MLflow runs are gathered with the
selected one tagged, and a run that adds a small week reuses the selection with its evidence."""

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


def test_a_small_new_week_reuses_the_last_selection_with_its_evidence(second_run):
    """The second run of conftest ``second_run`` (a copy of the shared home with one more week of
    600 records, a quarter of the training rows): the selection is reused, with its evidence."""
    # (whether the retrained model then passes the quality gate is not this test's concern)
    with dg.DagsterInstance.from_config(str(second_run.home / "dagster")) as instance:
        latest = _selections(instance)[-1].asset_materialization.metadata
    ran = second_run.selection_before
    assert latest["reused"].value is True, latest.get("run_reason")
    assert latest["reused_from_run"].value == ran["run_id"]
    assert "same code and settings" in latest["reuse_reason"].value
    # the evidence travels with it: the same comparison and curve as the run that selected
    before = ran["metadata"]
    assert latest["comparison"].value == before["comparison"]
    assert latest["selected"].value == before["selected"]
    assert latest["training_rows_now"].value > before["training_rows"]
