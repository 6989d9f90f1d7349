"""The gate: a deliberately worse challenger is refused and the champion keeps serving.

A challenger worse on the hospital's records (one depth-1 XGBoost tree per class) is refused in
tests/e2e/test_retraining_loop.py, where a running API is shown to keep its model; here, one worse
on real published cases, and an identical retrain that passes. What a clinician reads (the
orphan probability of rare patients): tests/assets/test_gate_served.py."""

import json
import shutil

import dagster as dg
import pytest


@pytest.fixture
def home_copy(deployed_home, tmp_path, monkeypatch):
    """The shared home as its deployment was trained: the predictions and labels other suites add
    to it through the API are left out (labels are training data)."""
    home = tmp_path / "home"
    shutil.copytree(
        deployed_home, home, symlinks=True, ignore=shutil.ignore_patterns("predictions", "labels")
    )
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def test_a_challenger_worse_on_real_cases_is_refused_and_the_served_model_stays(home_copy):
    """A knowledge ranker with its informative evidence switched off (launchpad override) ranks
    real published cases far worse than the champion: the gate names the real-case shortfall."""
    from orchestration.definitions import defs

    before = json.loads((home_copy / "deployments" / "current.json").read_text())
    blind = {"tm": 0.0, "icm": 0.0, "lf": 0.0, "notp": 0.0, "too_young": 0.0}
    run_config = {"ops": {"knowledge_ranker": {"config": {"weights_json": json.dumps(blind)}}}}
    with dg.DagsterInstance.from_config(str(home_copy / "dagster")) as instance:
        result = defs.resolve_job_def("training").execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False
        )
    gate = {e.check_name: e for e in result.get_asset_check_evaluations()}["quality_gate"]
    assert not gate.passed
    assert "real-case top-10" in gate.description
    assert gate.metadata["real_all_top10"].value < gate.metadata["champion_real_all_top10"].value
    assert json.loads((home_copy / "deployments" / "current.json").read_text()) == before


@pytest.mark.timeout(1200)  # a training run (minutes on two shared cores)
def test_an_identical_retrain_passes_the_gate(home_copy):
    """Retraining on the same data with the same code gives the same ONNX file as the deployed
    champion, and the gate lets it through: a challenger equal to the champion is never refused.
    (The copy holds exactly the exports and labels — none — the champion was trained on.)"""
    from orchestration.definitions import defs

    with dg.DagsterInstance.from_config(str(home_copy / "dagster")) as instance:
        champion = instance.get_latest_materialization_event(dg.AssetKey("deployed_model"))
        result = defs.resolve_job_def("training").execute_in_process(
            instance=instance, raise_on_error=False
        )
        deployed = instance.get_latest_materialization_event(dg.AssetKey("deployed_model"))
    gate = {e.check_name: e for e in result.get_asset_check_evaluations()}["quality_gate"]
    champion = champion.asset_materialization.metadata
    challenger = deployed.asset_materialization.metadata
    assert challenger["onnx_sha256"].value == champion["onnx_sha256"].value
    assert gate.passed, gate.description
    assert gate.metadata["champion_version"].value == champion["version"].value
    assert gate.metadata["macro_f1"].value == pytest.approx(
        gate.metadata["champion_macro_f1"].value, abs=1e-9
    )
    assert result.success
    print(
        f"identical retrain: ONNX {challenger['onnx_sha256'].value[:12]} == champion, gate "
        f"passed, macro_f1 {gate.metadata['macro_f1'].value:.4f} vs champion "
        f"{gate.metadata['champion_macro_f1'].value:.4f}"
    )
