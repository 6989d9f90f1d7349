"""`triage serve` as a real process on a deployed TRIAGE_HOME, spoken to over loopback HTTP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

TRIAGE = Path(sys.executable).parent / "triage"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def server(deployed_home):
    port = free_port()
    env = {**os.environ, "TRIAGE_HOME": str(deployed_home),
           "TRIAGE_API_KEYS": "clinician:e2e-clinician,auditor:e2e-auditor"}
    process = subprocess.Popen(
        [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(f"{base}/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        else:
            pytest.fail("the API did not become ready within 60 s")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_served_prediction_for_a_febrile_patient_and_provenance(server):
    febrile = {"age": 41, "sex": "female", "heart_rate": 112, "body_temperature": 39.6,
               "systolic_bp": 112, "diastolic_bp": 70,
               "symptoms": ["HP:0001945", "HP:0012735"]}
    status, body = call(f"{server}/v1/predict?top_k=5", febrile, token="e2e-clinician")
    assert status == 200, body
    assert len(body["differential"]) == 5
    assert 0.0 <= body["orphan_probability"] <= 1.0
    assert body["severity"]["label"] in body["severity"]["probabilities"]
    status, card = call(f"{server}/v1/model", token="e2e-auditor")
    assert status == 200
    assert card["version"] == body["model_version"]
    assert card["onnx_sha256"] and card["mlflow_run_id"] and card["dagster_run_id"]
    assert call(f"{server}/v1/predict?top_k=5", febrile)[0] == 401
    assert call(f"{server}/v1/predict?top_k=5", febrile, token="wrong")[0] == 401
