"""`triage serve` as a real process on a deployed TRIAGE_HOME, spoken to over loopback HTTP."""

import json
import urllib.error
import urllib.request

import pytest


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def server(deployed_home, start_api):
    return start_api(deployed_home, "clinician:e2e-clinician,auditor:e2e-auditor")


def test_served_prediction_for_a_febrile_patient_and_provenance(server):
    febrile = {
        "age": 41,
        "sex": "female",
        "heart_rate": 112,
        "body_temperature": 39.6,
        "systolic_bp": 112,
        "diastolic_bp": 70,
        "symptoms": ["HP:0001945", "HP:0012735"],
    }
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
