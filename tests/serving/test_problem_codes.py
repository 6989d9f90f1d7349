"""Every request problem carries a stable code (API v1.4) that the web form translates."""

from __future__ import annotations

import pytest

from serving.problem_codes import INVALID, problem_code

from .conftest import FEVER, auth


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/predict", {"age": 500}, {"age": "out_of_range"}),
        ("/v1/predict", {"body_temperature": 101}, {"body_temperature": "out_of_range_fahrenheit"}),
        ("/v1/predict", {"age": "old"}, {"age": "wrong_type"}),
        (
            "/v1/predict",
            {"systolic_bp": 100, "diastolic_bp": 120},
            {"diastolic_bp": "diastolic_not_below_systolic"},
        ),
        ("/v1/predict", {"sex": "x"}, {"sex": "unknown_sex"}),
        ("/v1/predict", {"symptoms": ["fever"]}, {"symptoms[0]": "not_hpo_id"}),
        (
            "/v1/predict",
            {"symptoms": [FEVER], "absent_symptoms": [FEVER]},
            {"absent_symptoms[0]": "present_and_absent"},
        ),
        ("/v1/predict", {"colour": "red"}, {"colour": "unknown_field"}),
        ("/v1/predict/batch", {"patients": []}, {"patients": "batch_size"}),
        (
            "/v1/labels",
            {"prediction_id": "x", "diagnosis": "??", "severity": "grave"},
            {
                "prediction_id": "not_prediction_id",
                "diagnosis": "not_diagnosis_code",
                "severity": "unknown_severity",
            },
        ),
        ("/v1/labels", {}, {"prediction_id": "required", "diagnosis": "required"}),
    ],
)
def test_each_problem_has_its_specific_code(client, path, body, expected):
    response = client.post(path, json=body, headers=auth())
    assert response.status_code == 422, response.text
    codes = {p["field"]: p["code"] for p in response.json()["problems"]}
    for field, code in expected.items():
        assert codes.get(field) == code, response.json()["problems"]
    assert INVALID not in codes.values()


def test_query_parameter_problems_have_codes(client):
    response = client.post("/v1/predict?top_k=0&explain=maybe", json={}, headers=auth())
    codes = {p["field"]: p["code"] for p in response.json()["problems"]}
    assert codes == {"top_k": "out_of_range", "explain": "not_boolean"}


def test_an_unknown_wording_falls_back_to_invalid():
    assert problem_code("something new") == INVALID
