"""API contract v1, exercised through Litestar's TestClient (lifespan included) on a real ONNX model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from schemas.clinical import SEVERITIES
from serving.app import create_app
from serving.auth import TokenTable
from serving.model_store import ModelStore
from serving.settings import ApiKey, Settings, SettingsError, parse_api_keys

from .conftest import (
    ARACHNODACTYLY,
    CLASSES,
    COUGH,
    ECTOPIA_LENTIS,
    FEVER,
    HEADACHE,
    TALL,
    TOKENS,
    auth,
    point_to,
    settings_for,
    write_deployment,
)

FEBRILE = {
    "age": 34,
    "sex": "female",
    "heart_rate": 118,
    "body_temperature": 39.5,
    "systolic_bp": 118,
    "diastolic_bp": 74,
    "symptoms": [FEVER, HEADACHE, COUGH],
}
MARFAN = {
    "age": 27,
    "sex": "male",
    "heart_rate": 70,
    "body_temperature": 36.7,
    "symptoms": [ARACHNODACTYLY, ECTOPIA_LENTIS, TALL],
}
HEALTHY = {
    "age": 50,
    "sex": "other",
    "heart_rate": 68,
    "body_temperature": 36.6,
    "systolic_bp": 121,
    "diastolic_bp": 78,
    "symptoms": [],
}
CODES = [c["code"] for c in CLASSES]


def _problems(response) -> dict[str, dict]:
    return {p["field"]: p for p in response.json()["problems"]}


# ------------------------------------------------------------------ authentication
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-configured-token"},
        {"Authorization": f"Bearer {TOKENS['clinician']}x"},
        {"Authorization": f"Basic {TOKENS['clinician']}"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "unknown", "suffixed", "wrong-scheme", "empty"],
)
def test_protected_endpoints_answer_401_with_bearer_challenge(client, headers):
    for method, path in (
        ("post", "/v1/predict"),
        ("post", "/v1/predict/batch"),
        ("get", "/v1/model"),
    ):
        kwargs = {"json": FEBRILE} if method == "post" else {}
        response = getattr(client, method)(path, headers=headers, **kwargs)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert TOKENS["clinician"] not in response.text


@pytest.mark.parametrize("role", ["clinician", "auditor", "admin"])
def test_every_configured_role_token_is_accepted(client, role):
    assert client.get("/v1/symptoms?q=fever", headers=auth(role)).status_code == 200


def test_token_table_maps_each_token_to_its_role_and_rejects_near_misses():
    table = TokenTable((ApiKey("clinician", "abc123"), ApiKey("admin", "zzz999")))
    assert table.role_for("abc123") == "clinician"
    assert table.role_for("zzz999") == "admin"
    assert table.role_for("abc12") is None
    assert table.role_for("abc1234") is None
    assert table.role_for("") is None


def test_guard_attaches_the_role_and_honours_per_handler_role_limits():
    from litestar import Litestar, Request, get
    from litestar.datastructures import State

    from serving.auth import require_api_key

    @get("/whoami", guards=[require_api_key])
    async def whoami(request: Request) -> dict:
        return {"role": request.user.role}

    @get("/admin-only", guards=[require_api_key], opt={"roles": ("admin",)})
    async def admin_only() -> dict:
        return {}

    app = Litestar(
        [whoami, admin_only],
        state=State(
            {
                "tokens": TokenTable(
                    (ApiKey("auditor", TOKENS["auditor"]), ApiKey("admin", TOKENS["admin"]))
                )
            }
        ),
    )
    with TestClient(app=app) as c:
        assert c.get("/whoami", headers=auth("auditor")).json() == {"role": "auditor"}
        assert c.get("/admin-only", headers=auth("auditor")).status_code == 403
        assert c.get("/admin-only", headers=auth("admin")).status_code == 200


def test_public_endpoints_need_no_token(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "2026-01-12-a"
    spec = client.get("/schema/openapi.json")
    assert spec.status_code == 200
    doc = spec.json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/health", "/ready"} <= set(
        doc["paths"]
    )
    assert doc["paths"]["/v1/predict"]["post"]["operationId"] == "predictDifferential"
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    patient = doc["components"]["schemas"]["Patient"]["properties"]
    assert (patient["heart_rate"]["minimum"], patient["heart_rate"]["maximum"]) == (20, 250)
    assert "°F is not accepted" in patient["body_temperature"]["description"]


# ------------------------------------------------------------------ prediction
def test_predict_returns_top_k_sorted_with_contract_fields(client):
    response = client.post("/v1/predict?top_k=3", json=FEBRILE, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "prediction_id",
        "model_version",
        "differential",
        "orphan_probability",
        "severity",
        "warnings",
        "warning_details",  # v1.5
    }
    assert body["model_version"] == "2026-01-12-a"
    assert len(body["prediction_id"]) >= 16
    differential = body["differential"]
    assert len(differential) == 3
    probabilities = [d["probability"] for d in differential]
    assert probabilities == sorted(probabilities, reverse=True)
    for entry in differential:  # v1.2 adds an `explanation` (tests/serving/test_explain.py)
        assert set(entry) - {"explanation"} == {
            "code",
            "name",
            "name_es",
            "category",
            "probability",
        }
        assert entry["category"] in {"common", "orphan", "healthy"}
    assert body["severity"]["label"] in SEVERITIES
    assert set(body["severity"]["probabilities"]) == set(SEVERITIES)
    assert math.isclose(sum(body["severity"]["probabilities"].values()), 1.0, abs_tol=1e-4)
    assert body["warnings"] == [] and body["warning_details"] == []


def test_top_k_beyond_class_count_returns_every_class_and_orphan_sum(client):
    body = client.post("/v1/predict?top_k=100", json=MARFAN, headers=auth()).json()
    assert sorted(d["code"] for d in body["differential"]) == sorted(CODES)
    assert math.isclose(sum(d["probability"] for d in body["differential"]), 1.0, abs_tol=1e-4)
    orphan = sum(d["probability"] for d in body["differential"] if d["category"] == "orphan")
    assert math.isclose(body["orphan_probability"], orphan, rel_tol=1e-6)


def test_default_top_k_is_ten_capped_by_classes(client):
    body = client.post("/v1/predict", json=HEALTHY, headers=auth()).json()
    assert len(body["differential"]) == len(CLASSES)


def test_febrile_patient_gets_an_infection_first_and_little_orphan_mass(client):
    body = client.post("/v1/predict", json=FEBRILE, headers=auth()).json()
    assert body["differential"][0]["code"] in {"J10", "J18.9"}
    assert body["orphan_probability"] < 0.1
    assert body["severity"]["label"] != "not_ill"


def test_marfan_findings_put_the_orphan_disease_first(client):
    body = client.post("/v1/predict", json=MARFAN, headers=auth()).json()
    assert body["differential"][0]["code"] == "ORPHA:558"
    assert body["orphan_probability"] > 0.5


def test_unknown_but_well_formed_symptom_is_a_warning_not_an_error(client):
    body = client.post(
        "/v1/predict", json={**FEBRILE, "symptoms": [FEVER, "HP:0000001"]}, headers=auth()
    ).json()
    assert body["warnings"] == ["symptom HP:0000001 is not used by this model"]


def test_empty_body_object_is_scored_with_a_base_rate_warning(client):
    response = client.post("/v1/predict", json={}, headers=auth())
    assert response.status_code == 200
    assert any("base rates" in w for w in response.json()["warnings"])


def test_batch_keeps_request_order_and_matches_single_predictions(client):
    patients = [HEALTHY, MARFAN, FEBRILE, MARFAN]
    response = client.post("/v1/predict/batch?top_k=2", json={"patients": patients}, headers=auth())
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 4
    assert len({p["prediction_id"] for p in predictions}) == 4
    for patient, batch_answer in zip(patients, predictions):
        single = client.post("/v1/predict?top_k=2", json=patient, headers=auth()).json()
        assert [d["code"] for d in batch_answer["differential"]] == [
            d["code"] for d in single["differential"]
        ]
        for a, b in zip(batch_answer["differential"], single["differential"]):
            assert math.isclose(a["probability"], b["probability"], abs_tol=1e-6)


# ------------------------------------------------------------------ validation
def test_bad_body_lists_every_problem_at_once(client):
    response = client.post(
        "/v1/predict",
        json={"heart_rate": 400, "sex": "x", "symptoms": [FEVER, "HP:12"]},
        headers=auth(),
    )
    assert response.status_code == 422
    problems = _problems(response)
    assert set(problems) == {"heart_rate", "sex", "symptoms[1]"}
    assert problems["heart_rate"]["value"] == 400
    assert problems["heart_rate"]["allowed"] == "20–250 /min"
    assert problems["sex"]["value"] == "x"
    assert "female" in problems["sex"]["allowed"]
    assert problems["symptoms[1]"]["value"] == "HP:12"
    assert "3 problem" in response.json()["detail"]


def test_cross_field_unit_type_and_unknown_field_problems(client):
    response = client.post(
        "/v1/predict?top_k=0",
        json={
            "systolic_bp": 90,
            "diastolic_bp": 120,
            "body_temperature": 101.3,
            "age": "forty",
            "symptoms": "HP:0001945",
            "patient_name": "Jane Roe",
        },
        headers=auth(),
    )
    assert response.status_code == 422
    problems = _problems(response)
    assert set(problems) == {
        "top_k",
        "diastolic_bp",
        "body_temperature",
        "age",
        "symptoms",
        "patient_name",
    }
    assert "below systolic" in problems["diastolic_bp"]["message"]
    assert "°F" in problems["body_temperature"]["message"]
    assert problems["body_temperature"]["allowed"] == "25–45 °C"
    assert problems["patient_name"]["message"] == "unknown field"


def test_batch_problems_carry_patient_paths(client):
    response = client.post(
        "/v1/predict/batch",
        json={"patients": [HEALTHY, {"heart_rate": 10}, HEALTHY, {"sex": 3, "age": 130}]},
        headers=auth(),
    )
    assert response.status_code == 422
    assert set(_problems(response)) == {
        "patients[1].heart_rate",
        "patients[3].sex",
        "patients[3].age",
    }


@pytest.mark.parametrize("top_k", ["0", "101", "-3", "abc", "2.5"])
def test_top_k_outside_1_to_100_is_rejected(client, top_k):
    response = client.post(f"/v1/predict?top_k={top_k}", json=HEALTHY, headers=auth())
    assert response.status_code == 422
    assert set(_problems(response)) == {"top_k"}


@pytest.mark.parametrize("top_k, expected", [("1", 1), ("100", len(CLASSES))])
def test_top_k_bounds_are_inclusive(client, top_k, expected):
    response = client.post(
        f"/v1/predict/batch?top_k={top_k}", json={"patients": [HEALTHY]}, headers=auth()
    )
    assert len(response.json()["predictions"][0]["differential"]) == expected


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_outside_1_to_1000_is_rejected(client, size):
    response = client.post("/v1/predict/batch", json={"patients": [HEALTHY] * size}, headers=auth())
    assert response.status_code == 422
    assert "patients" in _problems(response)


def test_batch_of_1000_is_accepted(client):
    response = client.post(
        "/v1/predict/batch?top_k=1", json={"patients": [FEBRILE] * 1000}, headers=auth()
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b"42",
        b'"text"',
        b'{"age": NaN}',
        b'{"age": 1e400}',
        b'{"patients": {}}',
        b"\xff\xfe",
        b'{"age": 99999999999999999999999999999999}',
    ],
)
def test_malformed_bodies_are_client_errors(client, content):
    for path in ("/v1/predict", "/v1/predict/batch"):
        response = client.post(
            path, content=content, headers={**auth(), "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), (path, content, response.text)
        assert response.json()["detail"]


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_field_values = st.fixed_dictionaries(
    {},
    optional={
        "age": _json,
        "sex": st.sampled_from(["female", "male", "x"]) | _json,
        "heart_rate": st.floats(0, 300) | _json,
        "body_temperature": st.floats(20, 50),
        "systolic_bp": st.integers(0, 300),
        "diastolic_bp": st.integers(0, 300),
        "symptoms": st.lists(st.sampled_from([FEVER, "HP:0000001", "HP:1"]) | _json, max_size=3),
    },
)


@hyp_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_field_values | _json)
def test_no_json_body_produces_a_server_error(client, body):
    response = client.post("/v1/predict", json=body, headers=auth())
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["problems"]


# ------------------------------------------------------------------ model card and readiness
def test_model_card_reports_provenance_from_the_manifest(client, served_home):
    card = client.get("/v1/model", headers=auth("auditor")).json()
    manifest = json.loads((served_home / "deployments/2026-01-12-a/manifest.json").read_text())
    for key in (
        "version",
        "trained_at",
        "onnx_sha256",
        "metrics",
        "mlflow_run_id",
        "mlflow_model_version",
        "dagster_run_id",
        "code_version",
        "data_versions",
        "hpo_release",
    ):
        assert card[key] == manifest[key], key
    assert card["n_classes"] == len(CLASSES)
    assert card["severity_labels"] == list(SEVERITIES)


def test_without_deployment_ready_and_predict_answer_503_until_one_appears(
    empty_client, home, built_model
):
    ready = empty_client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    predict = empty_client.post("/v1/predict", json=FEBRILE, headers=auth())
    assert predict.status_code == 503
    assert "no model" in predict.json()["detail"]
    assert empty_client.get("/v1/model", headers=auth("auditor")).status_code == 503
    assert empty_client.get("/health").status_code == 200

    write_deployment(home, built_model, "2026-01-19-a")
    assert empty_client.get("/ready").status_code == 200
    assert (
        empty_client.post("/v1/predict", json=FEBRILE, headers=auth()).json()["model_version"]
        == "2026-01-19-a"
    )


def test_hash_mismatch_is_refused(home, built_model):
    write_deployment(home, built_model, "tampered", sha256="0" * 64)
    with TestClient(app=create_app(settings_for(home))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "sha256" in ready.json()["last_reload_error"]
        assert client.post("/v1/predict", json=FEBRILE, headers=auth()).status_code == 503


def test_manifest_disagreeing_with_model_outputs_is_refused(home, built_model):
    directory = write_deployment(home, built_model, "v-bad-classes")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["classes"] = manifest["classes"][:3]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    store = ModelStore(home / "deployments")
    assert store.load() is False
    assert "3 classes" in store.last_error


def test_hot_reload_serves_the_new_version_on_the_next_request(client, served_home, built_model):
    assert (
        client.post("/v1/predict", json=FEBRILE, headers=auth()).json()["model_version"]
        == "2026-01-12-a"
    )
    write_deployment(served_home, built_model, "2026-01-19-b")
    assert (
        client.post("/v1/predict", json=FEBRILE, headers=auth()).json()["model_version"]
        == "2026-01-19-b"
    )
    assert client.get("/v1/model", headers=auth("admin")).json()["version"] == "2026-01-19-b"


@pytest.mark.parametrize("corruption", ["tampered-bytes", "not-onnx"])
def test_corrupt_new_artifact_keeps_the_old_model(client, served_home, built_model, corruption):
    if corruption == "tampered-bytes":  # bytes no longer match the manifest's sha256
        directory = write_deployment(served_home, built_model, "v2", point=False)
        (directory / "model.onnx").write_bytes(built_model.onnx_bytes[:-10])
        point_to(served_home, "v2")
    else:  # consistent hash, but not a loadable graph
        write_deployment(served_home, built_model, "v2", onnx_bytes=b"not an onnx graph")
    response = client.post("/v1/predict", json=FEBRILE, headers=auth())
    assert response.status_code == 200
    assert response.json()["model_version"] == "2026-01-12-a"
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model_version"] == "2026-01-12-a"
    assert "v2" in ready["last_reload_error"]
    # a fixed deployment is picked up afterwards
    write_deployment(served_home, built_model, "v3")
    assert client.post("/v1/predict", json=FEBRILE, headers=auth()).json()["model_version"] == "v3"
    assert client.get("/ready").json()["last_reload_error"] is None


def test_reload_checks_are_throttled_by_the_interval(served_home, built_model):
    store = ModelStore(served_home / "deployments", interval_s=3600)
    store.load()
    assert store.model.version == "2026-01-12-a"
    write_deployment(served_home, built_model, "later")
    store.reload_if_changed()  # first check is due
    assert store.model.version == "later"
    write_deployment(served_home, built_model, "even-later")
    assert store.reload_if_changed() is False  # within the interval: not even a stat
    assert store.model.version == "later"


# ------------------------------------------------------------------ prediction log
def test_prediction_log_has_one_line_per_prediction_with_inputs_only(client, served_home):
    single = client.post("/v1/predict?top_k=2", json=FEBRILE, headers=auth()).json()
    batch = client.post(
        "/v1/predict/batch", json={"patients": [HEALTHY, MARFAN]}, headers=auth()
    ).json()
    rejected = client.post(
        "/v1/predict", json={**HEALTHY, "note": "Jane Roe, 12 Main St"}, headers=auth()
    )
    assert rejected.status_code == 422

    files = list((served_home / "predictions").glob("predictions-*.jsonl"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "Jane Roe" not in text and TOKENS["clinician"] not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["prediction_id"] for line in lines] == [single["prediction_id"]] + [
        p["prediction_id"] for p in batch["predictions"]
    ]
    first = lines[0]
    assert set(first) == {
        "prediction_id",
        "time",
        "model_version",
        "inputs",
        "differential",
        "orphan_probability",
        "severity",
    }
    assert set(first["inputs"]) == {
        "age",
        "sex",
        "heart_rate",
        "body_temperature",
        "systolic_bp",
        "diastolic_bp",
        "absent_symptoms",  # API v1.3
        "symptoms",
    }
    assert first["inputs"]["symptoms"] == FEBRILE["symptoms"]
    assert first["differential"] == [
        {"code": d["code"], "probability": d["probability"]} for d in single["differential"]
    ]
    assert first["severity"] == single["severity"]["label"]


def test_prediction_log_can_be_turned_off(served_home):
    with TestClient(app=create_app(settings_for(served_home, TRIAGE_PREDICTION_LOG="0"))) as c:
        assert c.post("/v1/predict", json=FEBRILE, headers=auth()).status_code == 200
    assert not (served_home / "predictions").exists()


# ------------------------------------------------------------------ errors, settings, imports
def test_unexpected_failure_is_a_generic_500_without_details(client, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.model_store, "require", boom)  # the predict handlers' path
    response = client.post("/v1/predict", json=FEBRILE, headers=auth())
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert response.json()["detail"].startswith("internal error (reference ")


def test_unknown_route_is_404_json(client):
    response = client.get("/v1/nothing", headers=auth())
    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        "clinician",
        "clinician:",
        "doctor:abc",
        "clinician:abc,,admin:def",
        "clinician:a b",
        "clinician:abc,admin:abc",
    ],
)
def test_malformed_api_keys_fail_at_startup_without_echoing_tokens(raw):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"TRIAGE_API_KEYS": raw})
    assert "TRIAGE_API_KEYS" in str(info.value)
    assert "abc" not in str(info.value) and "def" not in str(info.value)


def test_settings_from_env_resolves_home_and_parses_keys(tmp_path):
    s = Settings.from_env(
        {
            "TRIAGE_HOME": str(tmp_path / "x" / ".." / "h"),
            "TRIAGE_API_KEYS": " clinician:t1 , auditor:t2 ",
        }
    )
    assert s.triage_home == (tmp_path / "h").resolve()
    assert s.deployments_dir == s.triage_home / "deployments"
    assert [(k.role, k.token) for k in s.api_keys] == [("clinician", "t1"), ("auditor", "t2")]
    assert "t1" not in repr(s)
    assert parse_api_keys("") == ()


def test_serving_never_imports_dagster_orchestration_or_assets():
    code = (
        "import sys, serving.app, serving.controllers, serving.model_store;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'dagster', 'orchestration', 'assets', 'mlflow', 'evidently'});"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
