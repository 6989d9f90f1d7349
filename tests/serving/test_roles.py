"""The role matrix (see serving.auth): every endpoint x every role, plus missing/unknown tokens."""

from __future__ import annotations

import pytest

from serving import metrics

from .conftest import FEVER, TOKENS, auth

PATIENT = {"age": 40, "sex": "female", "body_temperature": 39.1, "symptoms": [FEVER]}

# endpoint -> (method, path, the status a permitted role gets)
ENDPOINTS = {
    "predict": ("post", "/v1/predict", 200),
    "predict_batch": ("post", "/v1/predict/batch", 200),
    "predict_phenopacket": ("post", "/v1/predict/phenopacket", 200),
    "labels": ("post", "/v1/labels", 202),
    "symptoms": ("get", "/v1/symptoms?q=fever", 200),
    "diseases": ("get", "/v1/diseases?q=influenza", 200),
    "model": ("get", "/v1/model", 200),
    "metrics": ("get", "/metrics", 200),
}
ALLOWED = {
    "clinician": {
        "predict",
        "predict_batch",
        "predict_phenopacket",
        "labels",
        "symptoms",
        "diseases",
    },
    "auditor": {"symptoms", "diseases", "model"},
    "admin": set(ENDPOINTS),
}
MATRIX = [(role, endpoint) for role in ALLOWED for endpoint in ENDPOINTS]


def _call(client, endpoint: str, headers: dict[str, str]):
    method, path, _ = ENDPOINTS[endpoint]
    if endpoint == "metrics" and not metrics.AVAILABLE:
        pytest.skip("prometheus-client is not installed")
    body = None
    if endpoint == "predict":
        body = PATIENT
    elif endpoint == "predict_batch":
        body = {"patients": [PATIENT]}
    elif endpoint == "predict_phenopacket":
        body = {"subject": {"sex": "FEMALE"}, "phenotypicFeatures": [{"type": {"id": FEVER}}]}
    elif endpoint == "labels":
        served = client.post("/v1/predict", json=PATIENT, headers=auth("clinician")).json()
        body = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "acute"}
    if method == "post":
        return client.post(path, json=body, headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize(("role", "endpoint"), MATRIX, ids=[f"{r}-{e}" for r, e in MATRIX])
def test_role_matrix_cell(client, role, endpoint):
    response = _call(client, endpoint, auth(role))
    if endpoint in ALLOWED[role]:
        assert response.status_code == ENDPOINTS[endpoint][2], response.text
    else:
        assert response.status_code == 403, response.text
        assert role in response.json()["detail"]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nobody-has-this-token"},
        {"Authorization": f"Bearer {TOKENS['admin']}-revoked"},
    ],
    ids=["missing", "unknown", "suffixed-admin"],
)
def test_missing_or_unknown_token_is_401_everywhere(client, endpoint, headers):
    response = _call(client, endpoint, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_forbidden_request_is_rejected_before_anything_is_written(client, served_home):
    served = client.post("/v1/predict", json=PATIENT, headers=auth("clinician")).json()
    lines_before = next((served_home / "predictions").glob("*.jsonl")).read_text().count("\n")
    assert client.post("/v1/predict", json=PATIENT, headers=auth("auditor")).status_code == 403
    label = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "acute"}
    assert client.post("/v1/labels", json=label, headers=auth("auditor")).status_code == 403
    assert not (served_home / "labels").exists()
    assert (
        next((served_home / "predictions").glob("*.jsonl")).read_text().count("\n") == lines_before
    )


def test_web_page_and_static_files_need_no_token(client):
    assert client.get("/").status_code == 200
    assert client.get("/ui").status_code == 200
    assert client.get("/static/app.js").status_code == 200
