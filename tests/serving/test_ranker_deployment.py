"""The API on a deployment with the knowledge ranker (classifier heads + ranker + blend +
knowledge.json), written by the pipeline's export and writer (``ranker_model`` in conftest): the
fast counterpart of the whole-pipeline fixture."""

from __future__ import annotations

import json

import pytest

from diagnosis.runtime import load_deployment

from .conftest import (
    ARACHNODACTYLY,
    CLASSES,
    COUGH,
    ECTOPIA_LENTIS,
    FEVER,
    HEADACHE,
    RANKER_DISEASES,
    TALL,
    auth,
)

FEBRILE = {
    "age": 34,
    "sex": "female",
    "heart_rate": 118,
    "body_temperature": 39.5,
    "symptoms": [FEVER, HEADACHE, COUGH],
}
MARFAN = {
    "age": 27,
    "sex": "male",
    "heart_rate": 70,
    "body_temperature": 36.7,
    "symptoms": [ARACHNODACTYLY, ECTOPIA_LENTIS, TALL],
}


def _predict(client, patient: dict, query: str = "") -> dict:
    response = client.post(f"/v1/predict?top_k=100{query}", json=patient, headers=auth())
    assert response.status_code == 200, response.text
    return response.json()


def test_the_written_deployment_is_what_the_runtime_loads(ranker_home, tiny_ranker):
    runtime = load_deployment(ranker_home / "deployments")
    assert runtime.knowledge is not None and runtime.blend_params is not None
    assert runtime.knowledge.codes == tiny_ranker.diseases
    assert set(runtime.knowledge.codes) == set(RANKER_DISEASES)
    manifest = json.loads((ranker_home / "deployments/2026-01-12-k/manifest.json").read_text())
    assert manifest["knowledge_file"] == "knowledge.json"
    assert manifest["hpo_release"] == tiny_ranker.hpo_release


def test_the_differential_covers_the_classes_and_the_rankers_diseases(ranker_client):
    answer = _predict(ranker_client, FEBRILE)
    codes = [d["code"] for d in answer["differential"]]
    assert set(codes) == {c["code"] for c in CLASSES} | set(RANKER_DISEASES)
    assert codes[0] in {"J10", "J18.9"}
    total = sum(d["probability"] for d in answer["differential"])
    assert total == pytest.approx(1.0, abs=1e-5)
    assert answer["orphan_probability"] == pytest.approx(
        sum(d["probability"] for d in answer["differential"] if d["category"] == "orphan"), abs=1e-5
    )
    marfan = _predict(ranker_client, MARFAN)
    assert marfan["differential"][0]["category"] == "orphan"
    assert marfan["differential"][0]["code"] in {"ORPHA:558", "OMIM:154700"}
    assert marfan["orphan_probability"] > answer["orphan_probability"]


def test_release_warnings_and_ids_it_lacks_change_nothing(ranker_client):
    plain = _predict(ranker_client, MARFAN, "&explain=false")
    unknown = _predict(
        ranker_client, {**MARFAN, "symptoms": [*MARFAN["symptoms"], "HP:9999999"]}, "&explain=false"
    )
    assert unknown["differential"] == [
        {**d, "probability": pytest.approx(d["probability"], abs=1e-9)}
        for d in plain["differential"]
    ]
    assert any("HP:9999999" in w and "ignored" in w for w in unknown["warnings"])
    old = _predict(ranker_client, {"symptoms": ["HP:0001275"]}, "&explain=false")  # alt_id
    assert any("HP:0001275" in w and "HP:0001250" in w for w in old["warnings"])


def test_explained_effects_are_the_served_probability_differences(ranker_client):
    answer = _predict(ranker_client, MARFAN)
    checked = 0
    for entry in answer["differential"][:3]:
        for item in entry["explanation"]["supports"] + entry["explanation"]["against"]:
            if item["field"] == "symptoms":
                without = {
                    **MARFAN,
                    "symptoms": [t for t in MARFAN["symptoms"] if t != item["value"]],
                }
            else:
                without = {**MARFAN, item["field"]: None}
            again = {
                d["code"]: d["probability"]
                for d in _predict(ranker_client, without)["differential"]
            }
            assert entry["probability"] - again[entry["code"]] == pytest.approx(
                item["effect"], abs=1e-6
            )
            checked += 1
    assert checked >= 3


def test_model_card_and_batch(ranker_client, tiny_ranker):
    card = ranker_client.get("/v1/model", headers=auth("auditor")).json()
    assert card["hpo_release"] == tiny_ranker.hpo_release
    assert card["n_classes"] == len(CLASSES)
    batch = ranker_client.post(
        "/v1/predict/batch?top_k=3", json={"patients": [FEBRILE, MARFAN]}, headers=auth()
    ).json()["predictions"]
    assert [len(p["differential"]) for p in batch] == [3, 3]
    assert batch[1]["differential"][0]["category"] == "orphan"
