"""The drift report a browser can open: the Evidently HTML attached to the serving model's MLflow
run and linked by URL from the Dagster metadata; the check follows Evidently's own verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from diagnosis import artifacts


def test_the_drift_report_is_an_mlflow_artifact_linked_from_dagster(deployed_home, tmp_path):
    from orchestration.definitions import defs

    home = tmp_path / "home"
    shutil.copytree(deployed_home, home, ignore=shutil.ignore_patterns("predictions", "labels"))
    mp = pytest.MonkeyPatch()
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    mp.setenv("TRIAGE_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    try:
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            result = defs.resolve_job_def("monitoring").execute_in_process(
                instance=instance, raise_on_error=False
            )
    finally:
        mp.undo()
    assert result.success
    summary = result.output_for_node("drift_report")
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("drift_report")
    )
    deployments = home / "deployments"
    manifest = artifacts.read_deployed_manifest(
        deployments, artifacts.read_current(deployments).version
    )
    html = Path(summary["report_html"])
    link = meta["report"]
    assert isinstance(link, dg.UrlMetadataValue)
    assert link.value.startswith("http://mlflow.example:5000/#/experiments/")
    assert f"/runs/{manifest.mlflow_run_id}/artifactPath/drift/" in link.value
    assert link.value.endswith(html.name) and summary["report_url"] == link.value

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    folder = link.value.split("/artifactPath/")[1].rsplit("/", 1)[0]
    logged = {a.path for a in client.list_artifacts(manifest.mlflow_run_id, folder)}
    assert f"{folder}/{html.name}" in logged
    # the check reads Evidently's verdict, made with the policy's threshold
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["drift_share"]
    assert check.passed is (not summary["dataset_drift"])
    assert summary["drift_share_threshold"] == 0.5
    assert summary["dataset_test"]["name"].endswith("0.500")
