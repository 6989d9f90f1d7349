"""An auditor's path and an operator's rollback, on a home the real pipeline produced, with a real
API process:

prediction id -> GET /v1/predictions/{id} -> the manifest -> the MLflow run (tags, input datasets
with the manifest's digests) -> the Dagster run; ``triage trace`` prints the same with UI links;
``triage rollback`` re-points a serving API, moves the MLflow champion alias and records who and
why, and refuses a version that cannot be served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest

from diagnosis import artifacts, audit

TRIAGE = Path(sys.executable).parent / "triage"
TOKENS = {"clinician": "clin-e2e-0123456789", "auditor": "audit-e2e-0123456789"}
KEYS = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
PATIENT = {
    "age": 34,
    "sex": "female",
    "heart_rate": 104,
    "body_temperature": 38.9,
    "systolic_bp": 118,
    "diastolic_bp": 74,
    "symptoms": ["HP:0001945", "HP:0012735"],
}


def _call(base: str, path: str, role: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKENS[role]}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _triage(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TRIAGE), *args],
        env={**_env(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _env(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    return {**env, "TRIAGE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def _mlflow(home: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # a registered model's source resolves through this store
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def audit_home(deployed_home: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline's home (the asset storage left out: nothing here reads it)."""
    home = tmp_path / "home"
    shutil.copytree(
        deployed_home,
        home,
        ignore=lambda folder, names: (
            ["storage", "predictions", "labels"] if Path(folder) == deployed_home else []
        ),
    )
    return home


def test_prediction_to_manifest_to_mlflow_run_to_dagster_run(audit_home: Path, start_api) -> None:
    base = start_api(audit_home, KEYS)
    status, served = _call(base, "/v1/predict", "clinician", PATIENT)
    assert status == 200, served
    prediction_id = served["prediction_id"]

    status, record = _call(base, f"/v1/predictions/{prediction_id}", "auditor")
    assert status == 200, record
    assert record["inputs"]["symptoms"] == PATIENT["symptoms"]
    assert record["differential"][0]["code"] == served["differential"][0]["code"]
    assert _call(base, f"/v1/predictions/{prediction_id}", "clinician")[0] == 403

    # the manifest of the version that answered
    deployments = audit_home / "deployments"
    manifest = artifacts.read_deployed_manifest(deployments, served["model_version"])
    model = record["model"]
    assert model["version"] == manifest.version and model["current"] is True
    assert model["mlflow_run_id"] == manifest.mlflow_run_id
    assert model["dagster_run_id"] == manifest.dagster_run_id
    assert model["code_version"] == manifest.code_version and len(model["code_version"]) == 40
    data = manifest.data_versions
    assert model["data_versions"]["training_table"] == data["training_table"]
    assert data["training_table"]["rows"] > 1000 and len(data["training_table"]["digest"]) == 64

    # the MLflow run: tagged with the Dagster run (id and URL) and the commit; its input datasets
    # carry the digests the manifest lists
    client = _mlflow(audit_home)
    run = client.get_run(manifest.mlflow_run_id)
    tags = run.data.tags
    assert tags["dagster_run_id"] == manifest.dagster_run_id
    assert tags["dagster_run_url"] == f"http://127.0.0.1:3000/runs/{manifest.dagster_run_id}"
    assert tags["git_commit"] == manifest.code_version
    assert tags["deployed_version"] == manifest.version
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert inputs["training_table"].digest == data["training_table"]["mlflow_digest"]
    assert inputs["label_set"].digest == data["label_set"]["mlflow_digest"]
    assert data["training_table"]["digest"].startswith(inputs["training_table"].digest)
    artifacts_logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    for figure in ("reliability_records.png", "per_class_recall.png", "confusion_matrix.png"):
        assert f"evaluation/{figure}" in artifacts_logged
    version = client.get_model_version(manifest.mlflow_model_name, manifest.mlflow_model_version)
    assert version.run_id == manifest.mlflow_run_id
    champion = client.get_model_version_by_alias(manifest.mlflow_model_name, "champion")
    assert str(champion.version) == manifest.mlflow_model_version

    # the Dagster run that built it, in the home's instance; its deployment metadata links back
    import dagster as dg

    with dg.DagsterInstance.from_config(str(audit_home / "dagster")) as instance:
        dagster_run = instance.get_run_by_id(manifest.dagster_run_id)
        assert dagster_run is not None and dagster_run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("deployed_model"))
        meta = event.asset_materialization.metadata
        assert event.run_id == manifest.dagster_run_id
        assert isinstance(meta["mlflow_run"], dg.UrlMetadataValue)
        assert meta["mlflow_run"].value.endswith(
            f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
        assert meta["mlflow_registered_model"].value.endswith(
            f"/#/models/{manifest.mlflow_model_name}/versions/{manifest.mlflow_model_version}"
        )
        evaluation = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
        emeta = evaluation.asset_materialization.metadata
        assert isinstance(emeta["per_class_recall"], dg.TableMetadataValue)
        assert {r.data["group"] for r in emeta["recall_by_group"].value.records} == {
            "category",
            "sex",
            "age_band",
        }

    # triage trace prints the same, with the UI links
    traced = _triage(audit_home, "trace", prediction_id, "--json")
    assert traced.returncode == 0, traced.stderr
    printed = json.loads(traced.stdout)
    assert printed["prediction"]["prediction_id"] == prediction_id
    assert printed["model"]["mlflow_run_id"] == manifest.mlflow_run_id
    assert printed["links"]["mlflow_run"] == (
        f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert printed["links"]["dagster_run"].endswith(f"/runs/{manifest.dagster_run_id}")
    text = _triage(audit_home, "trace", prediction_id)
    assert text.returncode == 0 and manifest.mlflow_run_id in text.stdout
    assert _triage(audit_home, "trace", "0" * 32).returncode == 1
    assert _triage(audit_home, "trace", "not-an-id").returncode == 2


def _second_deployment(home: Path, version: str) -> tuple[str, str]:
    """Deploy the pipeline's model again as ``version`` (the pipeline's writer, a new registered
    MLflow version with the champion alias), as a new training run would; returns (first
    version, its registered version)."""
    deployments = home / "deployments"
    first = artifacts.read_current(deployments).version
    manifest = artifacts.read_deployed_manifest(deployments, first)
    files = {
        p.name: p.read_bytes() for p in (deployments / first).iterdir() if p.name != "manifest.json"
    }
    client = _mlflow(home)
    source = client.get_model_version(manifest.mlflow_model_name, manifest.mlflow_model_version)
    new = client.create_model_version(
        manifest.mlflow_model_name, source.source, run_id=source.run_id
    )
    client.set_registered_model_alias(manifest.mlflow_model_name, "champion", new.version)
    artifacts.write_deployment(
        deployments,
        msgspec.structs.replace(manifest, version=version, mlflow_model_version=str(new.version)),
        files,
    )
    return first, manifest.mlflow_model_version


def _served_version(base: str) -> str:
    return _call(base, "/v1/predict", "clinician", PATIENT)[1]["model_version"]


def test_rollback_repoints_a_serving_api_moves_the_alias_and_records_who_and_why(
    audit_home: Path, start_api
) -> None:
    first, first_registered = _second_deployment(audit_home, "29990101T000000Z-second")
    base = start_api(audit_home, KEYS, TRIAGE_RELOAD_INTERVAL="0.2")
    assert _served_version(base) == "29990101T000000Z-second"

    done = _triage(
        audit_home, "rollback", first, "--reason", "second model misranks fever", "--by", "ana"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "champion: moved" in done.stdout

    deadline = time.monotonic() + 20  # the API polls current.json every 0.2 s
    while _served_version(base) != first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_version(base) == first

    client = _mlflow(audit_home)
    manifest = artifacts.read_deployed_manifest(audit_home / "deployments", first)
    champion = client.get_model_version_by_alias(manifest.mlflow_model_name, "champion")
    assert str(champion.version) == first_registered
    assert champion.tags["rollback_reason"] == "second model misranks fever"
    assert champion.tags["rollback_by"] == "ana"

    (record,) = audit.rollback_records(audit_home / "deployments")
    assert (record.by, record.reason) == ("ana", "second model misranks fever")
    assert (record.from_version, record.to_version) == ("29990101T000000Z-second", first)
    assert record.mlflow_alias == "moved" and record.s3_pointer == "not configured"
    status, card = _call(base, f"/v1/models/{first}", "auditor")
    assert status == 200 and card["current"] is True
    assert card["rollbacks_to_this_version"][0]["reason"] == "second model misranks fever"


def test_rollback_refuses_what_cannot_be_served_and_changes_nothing(audit_home: Path) -> None:
    deployments = audit_home / "deployments"
    serving = artifacts.read_current(deployments).version
    manifest = artifacts.read_deployed_manifest(deployments, serving)
    files = {
        p.name: p.read_bytes()
        for p in (deployments / serving).iterdir()
        if p.name != "manifest.json"
    }
    # a deployment whose model file does not match its manifest's hash
    artifacts.write_deployment(
        deployments,
        msgspec.structs.replace(
            manifest, version="29990101T000000Z-tampered", onnx_sha256="0" * 64
        ),
        files,
        point=False,
    )
    bad = _triage(audit_home, "rollback", "29990101T000000Z-tampered", "--reason", "test")
    assert bad.returncode == 2 and "cannot be served" in bad.stderr
    unknown = _triage(audit_home, "rollback", "19990101T000000Z-none", "--reason", "test")
    assert unknown.returncode == 2 and serving in unknown.stderr  # lists the known versions
    no_reason = _triage(audit_home, "rollback", serving, "--reason", "  ")
    assert no_reason.returncode == 2
    assert artifacts.read_current(deployments).version == serving
    assert audit.rollback_records(deployments) == []
