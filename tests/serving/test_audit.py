"""The audit endpoints: a prediction id leads to its logged inputs, its answer and the provenance
of the model version that gave it; any deployed version's provenance; roles enforced."""

from __future__ import annotations

from litestar.testing import TestClient

from diagnosis import audit
from serving.app import create_app
from tests.serving.conftest import (
    COUGH,
    FEVER,
    PROVENANCE,
    auth,
    point_to,
    settings_for,
    write_deployment,
)

PATIENT = {
    "age": 41,
    "sex": "female",
    "heart_rate": 118,
    "body_temperature": 39.4,
    "systolic_bp": 121,
    "diastolic_bp": 77,
    "symptoms": [FEVER, COUGH],
}


def _predict(client: TestClient) -> dict:
    answer = client.post("/v1/predict", json=PATIENT, headers=auth("clinician"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_prediction_record_holds_inputs_answer_and_provenance(client: TestClient) -> None:
    served = _predict(client)
    record = client.get(f"/v1/predictions/{served['prediction_id']}", headers=auth("auditor"))
    assert record.status_code == 200, record.text
    body = record.json()
    assert body["prediction_id"] == served["prediction_id"]
    assert body["model_version"] == served["model_version"] == "2026-01-12-a"
    assert body["inputs"]["symptoms"] == [FEVER, COUGH]
    assert body["inputs"]["heart_rate"] == 118
    assert [e["code"] for e in body["differential"]] == [e["code"] for e in served["differential"]]
    assert body["orphan_probability"] == served["orphan_probability"]
    assert body["severity"] == served["severity"]["label"]
    model = body["model"]
    assert body["model_problem"] is None
    assert model["version"] == "2026-01-12-a" and model["current"] is True
    for key in ("mlflow_run_id", "mlflow_model_version", "dagster_run_id", "code_version"):
        assert model[key] == PROVENANCE[key]
    assert model["data_versions"] == PROVENANCE["data_versions"]


def test_prediction_record_found_after_a_restart(served_home, client: TestClient) -> None:
    """A new process has no id in memory: the record comes from the log file."""
    served = _predict(client)
    with TestClient(app=create_app(settings_for(served_home))) as fresh:
        record = fresh.get(f"/v1/predictions/{served['prediction_id']}", headers=auth("admin"))
        assert record.status_code == 200, record.text
        assert record.json()["inputs"]["body_temperature"] == 39.4
        index = fresh.app.state.prediction_index
        # found through the file index (built at start-up, or caught up by this look-up)
        assert index.bytes_read > 0 and index.scans <= 1


def test_prediction_record_roles_and_bad_ids(client: TestClient) -> None:
    served = _predict(client)
    url = f"/v1/predictions/{served['prediction_id']}"
    assert client.get(url, headers=auth("clinician")).status_code == 403
    assert client.get(url).status_code == 401
    bad = client.get("/v1/predictions/not-an-id", headers=auth("auditor"))
    assert bad.status_code == 400, bad.text
    missing = client.get("/v1/predictions/" + "0" * 32, headers=auth("auditor"))
    assert missing.status_code == 404


def test_any_deployed_version_and_rollback_records(
    served_home, built_model, client: TestClient
) -> None:
    write_deployment(served_home, built_model, "2026-01-19-b")  # now serving b
    older = client.get("/v1/models/2026-01-12-a", headers=auth("auditor"))
    assert older.status_code == 200, older.text
    assert older.json()["current"] is False
    assert older.json()["mlflow_run_id"] == PROVENANCE["mlflow_run_id"]
    assert older.json()["rollbacks_to_this_version"] == []
    # a rollback recorded the way `triage rollback` records it
    deployments = served_home / "deployments"
    point_to(served_home, "2026-01-12-a")
    audit.write_rollback_record(
        deployments,
        audit.RollbackRecord(
            at=audit.now_utc(),
            by="ana",
            reason="b misranks influenza",
            from_version="2026-01-19-b",
            to_version="2026-01-12-a",
        ),
    )
    after = client.get("/v1/models/2026-01-12-a", headers=auth("admin")).json()
    assert after["current"] is True
    assert [(r["by"], r["reason"]) for r in after["rollbacks_to_this_version"]] == [
        ("ana", "b misranks influenza")
    ]
    assert client.get("/v1/models/2026-01-12-a", headers=auth("clinician")).status_code == 403
    assert client.get("/v1/models/2099-01-01-x", headers=auth("auditor")).status_code == 404
    assert client.get("/v1/models/current.json", headers=auth("auditor")).status_code == 404
    assert client.get("/v1/models/audit", headers=auth("auditor")).status_code == 404
    assert client.get("/v1/models/..hidden", headers=auth("auditor")).status_code == 400
