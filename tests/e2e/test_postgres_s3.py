"""The production path on real engines: Dagster on PostgreSQL, files and asset outputs in S3,
MLflow on PostgreSQL with S3 artifacts, and the API serving the model it finds in S3.

PostgreSQL is the machine's own server (127.0.0.1:5432); the test creates and drops its own
databases. The S3 server is moto's threaded server, started here: it speaks the S3 HTTP API, so
the pipeline and the API (separate processes) reach it exactly as they would reach AWS or MinIO.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from diagnosis.simulation import write_weekly_exports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = Path(sys.executable).parent / "triage"
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("TRIAGE_TEST_PGUSER", "postgres")}
BUCKET = "triage-it"
WEEKS = ["2026-05-04", "2026-05-11"]


def _admin_connection():
    import psycopg2

    connection = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="module")
def databases():
    """Two fresh databases (Dagster, MLflow), dropped afterwards; skip without a server."""
    try:
        admin = _admin_connection()
    except Exception as exc:  # no server, or no role: this path cannot be tested here
        pytest.skip(f"no PostgreSQL at {PG['host']}:{PG['port']} as {PG['user']}: {exc}")
    suffix = uuid.uuid4().hex[:8]
    names = {"dagster": f"triage_it_dagster_{suffix}", "mlflow": f"triage_it_mlflow_{suffix}"}
    with admin.cursor() as cursor:
        for name in names.values():
            cursor.execute(f'CREATE DATABASE "{name}"')
    yield {
        key: f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
        for key, name in names.items()
    }
    with admin.cursor() as cursor:
        for name in names.values():
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def s3_server():
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3(s3_server):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=BUCKET)
    return client


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


@pytest.fixture(scope="module")
def production_env(tmp_path_factory, databases, s3_server):
    """The environment of one production process; each process gets its own TRIAGE_HOME."""
    dagster_home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "orchestration" / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "MLFLOW_"))}
    env.update(
        {
            "TRIAGE_ENV": "prod",
            "TRIAGE_S3_BUCKET": BUCKET,
            "TRIAGE_S3_PREFIX": "hospital-net",
            "AWS_ENDPOINT_URL": s3_server,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_PG_URL": databases["dagster"],
            "TRIAGE_MLFLOW_TRACKING_URI": databases["mlflow"],
            "TRIAGE_PSEUDONYM_KEY": "integration-test-key-not-a-secret",
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, production_env, s3):
    """Hospitals drop two weekly exports into the bucket; ``triage pipeline`` runs on a machine
    whose TRIAGE_HOME starts empty."""
    exports = tmp_path_factory.mktemp("hospital_exports")
    for path in write_weekly_exports(
        exports, patients=1600, weeks=2, seed=5, defect_rate=0.03, start=WEEKS[0]
    ):
        s3.upload_file(str(path), BUCKET, f"hospital-net/landing/{path.name}")
    home = tmp_path_factory.mktemp("pipeline_home")
    started = time.monotonic()
    result = subprocess.run(
        [str(TRIAGE), "pipeline", "--no-seed"],
        env={**production_env, "TRIAGE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"home": home, "stdout": result.stdout, "seconds": time.monotonic() - started}


def test_pipeline_runs_on_postgres_and_s3(pipeline_run, production_env, databases, s3):
    import psycopg2

    assert "s3://triage-it/hospital-net/deployments" in pipeline_run["stdout"]
    # Dagster's runs and events are in PostgreSQL, not in the process's TRIAGE_HOME
    with (
        psycopg2.connect(databases["dagster"].replace("+psycopg2", "")) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
        statuses = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(DISTINCT asset_key) FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        materialised = cursor.fetchone()[0]
    # one validation per week, the HPO release observation, training
    assert statuses == {"SUCCESS": len(WEEKS) + 2}, statuses
    assert materialised >= 15
    assert not (pipeline_run["home"] / "dagster").exists()

    # asset outputs through dagster-aws's IO manager; the deployment, version folder then pointer
    storage = _keys(s3, "hospital-net/storage/")
    assert any(key.endswith("/training_table") or "training_table" in key for key in storage), (
        storage
    )
    pointer = json.loads(
        s3.get_object(Bucket=BUCKET, Key="hospital-net/deployments/current.json")["Body"].read()
    )
    version_files = _keys(s3, f"hospital-net/deployments/{pointer['version']}/")
    assert {Path(k).name for k in version_files} >= {"manifest.json", "model.onnx"}
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"hospital-net/deployments/{pointer['manifest']}")[
            "Body"
        ].read()
    )
    # drift reference and report, published for every process
    assert _keys(s3, "hospital-net/reports/drift/reference/")
    assert any(k.endswith(".html") for k in _keys(s3, "hospital-net/reports/drift/"))

    # MLflow: runs and the registry in PostgreSQL, the model's artifacts in S3
    with (
        psycopg2.connect(databases["mlflow"].replace("+psycopg2", "")) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT name, version FROM registered_model_aliases WHERE alias = 'champion'"
        )
        aliases = cursor.fetchall()
        cursor.execute("SELECT artifact_location FROM experiments WHERE name = 'triage-diagnosis'")
        artifact_location = cursor.fetchone()[0]
    assert aliases == [("triage-diagnosis", int(manifest["mlflow_model_version"]))]
    assert artifact_location == "s3://triage-it/hospital-net/mlflow"
    assert _keys(s3, "hospital-net/mlflow/")


def test_api_serves_the_model_it_finds_in_s3(pipeline_run, production_env, s3, start_api, tmp_path):
    pointer = json.loads(
        s3.get_object(Bucket=BUCKET, Key="hospital-net/deployments/current.json")["Body"].read()
    )
    home = tmp_path / "api_home"  # a fresh host: nothing local but what it mirrors
    base = start_api(
        home,
        "clinician:it-clinician",
        **{k: v for k, v in production_env.items() if k.startswith(("TRIAGE_", "AWS_"))},
        TRIAGE_S3_LOG_INTERVAL="1",
    )
    headers = {"Authorization": "Bearer it-clinician", "Content-Type": "application/json"}
    patient = {
        "age": 34,
        "sex": "female",
        "heart_rate": 104,
        "body_temperature": 38.9,
        "systolic_bp": 118,
        "diastolic_bp": 76,
        "symptoms": ["HP:0001945", "HP:0012735"],
    }
    request = urllib.request.Request(f"{base}/v1/predict", json.dumps(patient).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        prediction = json.loads(answer.read())
    assert prediction["model_version"] == pointer["version"]
    assert prediction["differential"]

    label = {"prediction_id": prediction["prediction_id"], "diagnosis": "J10", "severity": "mild"}
    request = urllib.request.Request(f"{base}/v1/labels", json.dumps(label).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
    # the label is in the bucket when the 202 arrives
    stored = s3.get_object(
        Bucket=BUCKET, Key=f"hospital-net/labels/{prediction['prediction_id']}.json"
    )["Body"].read()
    assert json.loads(stored)["diagnosis"] == "J10"

    # the prediction log reaches the bucket within the shipping interval
    deadline = time.monotonic() + 20
    segments: list[str] = []
    while time.monotonic() < deadline and not segments:
        segments = _keys(s3, "hospital-net/predictions/")
        time.sleep(0.5)
    assert segments, "no prediction-log segment was shipped"
    shipped = b"".join(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in segments)
    assert prediction["prediction_id"].encode() in shipped
    assert b"Bearer" not in shipped and b"it-clinician" not in shipped


def test_api_refuses_a_corrupt_model_published_to_s3(
    pipeline_run, production_env, s3, start_api, tmp_path
):
    """A new pointer naming a version whose ONNX file does not match its manifest's hash: the API
    mirrors it, refuses it and keeps serving the model it had."""
    prefix = "hospital-net/deployments"
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/current.json")["Body"].read())
    base = start_api(
        tmp_path / "api_home",
        "auditor:it-auditor",
        **{k: v for k, v in production_env.items() if k.startswith(("TRIAGE_", "AWS_"))},
        TRIAGE_RELOAD_INTERVAL="0.5",
    )
    headers = {"Authorization": "Bearer it-auditor"}

    def card() -> dict:
        request = urllib.request.Request(f"{base}/v1/model", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    assert card()["version"] == pointer["version"]
    bad = "29990101T000000Z-corrupt0"
    for key in _keys(s3, f"{prefix}/{pointer['version']}/"):
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        name = key.rsplit("/", 1)[1]
        if name == "manifest.json":
            body = json.dumps({**json.loads(body), "version": bad}).encode()
        elif name == "model.onnx":
            body = body[:-64] + b"\0" * 64  # same size, wrong bytes
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{bad}/{name}", Body=body)
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{prefix}/current.json",
        Body=json.dumps({"version": bad, "manifest": f"{bad}/manifest.json"}).encode(),
    )
    try:
        deadline = time.monotonic() + 20
        mirrored = tmp_path / "api_home" / "deployments" / bad / "model.onnx"
        while time.monotonic() < deadline and not mirrored.exists():
            time.sleep(0.3)
        assert mirrored.exists(), "the API host never mirrored the new deployment"
        time.sleep(2)  # a few reload intervals
        assert card()["version"] == pointer["version"]
        with urllib.request.urlopen(f"{base}/ready", timeout=10) as answer:
            assert answer.status == 200
    finally:  # leave the bucket as the pipeline left it for other tests
        s3.put_object(
            Bucket=BUCKET, Key=f"{prefix}/current.json", Body=json.dumps(pointer).encode()
        )
