"""Answers a clinician would send at triage, on the pipeline's model (issue 12, items 7 and 8):
missing vitals are not normal ones, and severity does not contradict the differential."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from serving.app import create_app

from .conftest import COUGH, FEVER, auth, settings_for

pytestmark = pytest.mark.slow

SEIZURE, DEVELOPMENTAL_DELAY, MICROCEPHALY = "HP:0001250", "HP:0001263", "HP:0000252"


@pytest.fixture(scope="module")
def pipeline_client(deployed_home: Path) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings_for(deployed_home, TRIAGE_PREDICTION_LOG="0"))) as c:
        yield c


def predict(client: TestClient, patient: dict) -> dict:
    response = client.post("/v1/predict?top_k=100&explain=false", json=patient, headers=auth())
    assert response.status_code == 200, response.text
    return response.json()


def test_fever_without_a_temperature_is_neither_no_disease_first_nor_not_ill(pipeline_client):
    answer = predict(pipeline_client, {"symptoms": [FEVER]})
    assert answer["differential"][0]["code"] != "NONE"
    assert answer["severity"]["label"] != "not_ill"
    # and the answer says the data are thin rather than sounding sure
    assert any("few findings" in w for w in answer["warnings"])


def test_a_missing_temperature_is_not_read_as_a_normal_one(pipeline_client):
    base = {"age": 30, "sex": "female", "symptoms": [FEVER, COUGH]}
    missing = predict(pipeline_client, base)
    normal = predict(pipeline_client, {**base, "body_temperature": 36.8})
    p_none = {
        a: next((d["probability"] for d in r["differential"] if d["code"] == "NONE"), 0.0)
        for a, r in (("missing", missing), ("normal", normal))
    }
    assert p_none["missing"] < 0.5
    assert missing["differential"] != normal["differential"]


def test_severity_is_coherent_with_the_differential(pipeline_client):
    child = predict(
        pipeline_client,
        {"age": 3, "symptoms": [SEIZURE, DEVELOPMENTAL_DELAY, MICROCEPHALY]},
    )
    assert child["orphan_probability"] > 0.5
    assert child["severity"]["label"] != "not_ill"
    child_none = next((d["probability"] for d in child["differential"] if d["code"] == "NONE"), 0.0)
    # not ill is the probability of NONE (below the last listed entry when NONE is not listed)
    bound = child_none or child["differential"][-1]["probability"]
    assert child["severity"]["probabilities"]["not_ill"] <= bound + 1e-6
    flu = predict(
        pipeline_client,
        {
            "age": 34,
            "sex": "female",
            "heart_rate": 104,
            "body_temperature": 39.2,
            "systolic_bp": 118,
            "diastolic_bp": 76,
            "symptoms": [FEVER, COUGH, "HP:0003326"],
        },
    )
    assert flu["differential"][0]["code"] == "J10"
    assert flu["severity"]["probabilities"]["terminal"] < 0.05
    healthy = predict(
        pipeline_client,
        {
            "age": 40,
            "sex": "male",
            "heart_rate": 70,
            "body_temperature": 36.7,
            "systolic_bp": 120,
            "diastolic_bp": 78,
        },
    )
    none = next(d["probability"] for d in healthy["differential"] if d["code"] == "NONE")
    # "not ill" is never more likely than no disease at all
    assert healthy["severity"]["probabilities"]["not_ill"] <= none + 1e-6
