"""API v1.2 explanations (occlusion on the served model), on two real ONNX deployments.

* the small classifier-only model of :mod:`tests.serving.conftest` (4 classes, 7 symptoms);
* the pipeline's model (``deployed_home``): classifier + knowledge ranker + blend, the full
  ORPHA/OMIM catalogue.

The central check: an explanation's ``effect`` is the model's own number. Sending the same patient
again without the input, through the same API, must move the diagnosis's probability by exactly
the reported effect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from diagnosis.explain import (
    EXPLAINED_DIAGNOSES,
    MAX_ITEMS,
    MIN_EFFECT,
    RemovedInput,
    explanations,
    occlusion_rows,
)
from serving.app import create_app
from serving.explain_params import parse_explain

from .conftest import (
    ARACHNODACTYLY,
    COUGH,
    ECTOPIA_LENTIS,
    FEVER,
    HEADACHE,
    TALL,
    auth,
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
SEIZURE = "HP:0001250"  # a real HPO term outside the small model's 7-term vocabulary
MYALGIA = "HP:0003326"
AORTIC_ROOT_ANEURYSM = "HP:0002616"
INFLUENZA_LIKE = {
    "age": 34,
    "sex": "female",
    "heart_rate": 104,
    "body_temperature": 39.2,
    "systolic_bp": 118,
    "diastolic_bp": 76,
    "symptoms": [FEVER, COUGH, MYALGIA],
}


# ------------------------------------------------------------------ helpers
def _predict(client: TestClient, patient: dict, query: str = "") -> dict[str, Any]:
    response = client.post(f"/v1/predict?top_k=100{query}", json=patient, headers=auth())
    assert response.status_code == 200, response.text
    return response.json()


def _without(patient: dict, item: dict) -> dict:
    """The patient the API would get if the clinician had not entered this input."""
    if item["field"] == "symptoms":
        return {**patient, "symptoms": [t for t in patient["symptoms"] if t != item["value"]]}
    return {**patient, item["field"]: None}


def _items(entry: dict) -> list[dict]:
    return entry["explanation"]["supports"] + entry["explanation"]["against"]


def _check_effects_against_repredictions(client: TestClient, patient: dict) -> int:
    """Every reported effect of the explained entries equals P(with) - P(without) as the API
    answers both; returns how many effects were checked."""
    answer = _predict(client, patient)
    checked = 0
    for entry in answer["differential"][:EXPLAINED_DIAGNOSES]:
        for item in _items(entry):
            again = _predict(client, _without(patient, item))
            probabilities = {d["code"]: d["probability"] for d in again["differential"]}
            if entry["code"] in probabilities:
                assert entry["probability"] - probabilities[entry["code"]] == pytest.approx(
                    item["effect"], abs=1e-6
                ), (entry["code"], item)
            else:  # fell below the 100 most probable: its probability is below the last one
                assert entry["probability"] - item["effect"] <= min(probabilities.values())
            checked += 1
    return checked


# ------------------------------------------------------------------ occlusion rows and ranking
def test_occlusion_rows_remove_exactly_one_input_each():
    patient = {
        "age": 40.0,
        "sex": "female",
        "heart_rate": 90.0,
        "body_temperature": None,
        "systolic_bp": 120.0,
        "diastolic_bp": 80.0,
        "symptoms": [FEVER, COUGH, FEVER],
    }
    vitals = ("age", "heart_rate", "body_temperature", "systolic_bp")  # no diastolic_bp feature
    inputs, rows = occlusion_rows(patient, vitals, ("female", "male", "other", "unknown"))
    assert inputs == [
        RemovedInput("symptoms", FEVER),
        RemovedInput("symptoms", COUGH),
        RemovedInput("age", 40.0),
        RemovedInput("heart_rate", 90.0),
        RemovedInput("systolic_bp", 120.0),
        RemovedInput("sex", "female"),
    ]
    assert rows[0] == patient
    assert rows[1]["symptoms"] == [COUGH] and rows[2]["symptoms"] == [FEVER, FEVER]
    for removed, row in zip(inputs[2:], rows[3:]):
        assert row[removed.field] is None
        changed = {k for k in patient if row[k] != patient[k]}
        assert changed == {removed.field}
    # nothing to remove: a sex of "unknown" is what "not given" encodes to
    assert occlusion_rows({"sex": "unknown", "symptoms": []}, vitals, ("unknown",)) == (
        [],
        [{"sex": "unknown", "symptoms": []}],
    )


def test_explanations_sort_cut_and_drop_negligible_effects():
    inputs = [RemovedInput("symptoms", f"HP:000000{i}") for i in range(6)]
    base = np.array([0.60, 0.10])
    without = np.array(
        [
            [0.20, 0.10],  # +0.40 on the first diagnosis
            [0.65, 0.15],  # -0.05, -0.05
            [0.5995, 0.10],  # +0.0005: negligible
            [0.50, 0.30],  # +0.10, -0.20
            [0.55, 0.09],  # +0.05, +0.01
            [0.58, 0.10],  # +0.02
        ]
    )
    first, second = explanations(base, without, inputs)
    assert [i["value"] for i in first["supports"]] == ["HP:0000000", "HP:0000003", "HP:0000004"]
    assert [round(i["effect"], 9) for i in first["supports"]] == [0.4, 0.1, 0.05]
    assert [i["value"] for i in first["against"]] == ["HP:0000001"]
    assert [i["value"] for i in second["supports"]] == ["HP:0000004"]
    assert [i["value"] for i in second["against"]] == ["HP:0000003", "HP:0000001"]
    assert len(first["supports"]) == MAX_ITEMS
    for note in (first, second):
        for item in note["supports"] + note["against"]:
            assert abs(item["effect"]) >= MIN_EFFECT


def test_explain_flag_parsing():
    assert parse_explain(None, True) == (True, [])
    assert parse_explain(None, False) == (False, [])
    assert parse_explain("FALSE", True) == (False, [])
    assert parse_explain("1", False) == (True, [])
    value, problems = parse_explain("maybe", True)
    assert [p.field for p in problems] == ["explain"]


# ------------------------------------------------------------------ the small classifier-only model
@pytest.fixture(scope="module")
def small_client(tmp_path_factory, built_model) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("explain_small")
    (home / "deployments").mkdir()
    write_deployment(home, built_model, "2026-01-12-a")
    with TestClient(app=create_app(settings_for(home, TRIAGE_PREDICTION_LOG="0"))) as client:
        yield client


def test_small_model_effects_are_its_own_probability_differences(small_client):
    assert _check_effects_against_repredictions(small_client, FEBRILE) > 3
    assert _check_effects_against_repredictions(small_client, MARFAN) > 3


def test_only_the_top_three_entries_carry_an_explanation_with_labels(small_client):
    answer = _predict(small_client, FEBRILE)
    assert len(answer["differential"]) == 4
    assert ["explanation" in d for d in answer["differential"]] == [True, True, True, False]
    top = answer["differential"][0]
    assert top["code"] in {"J10", "J18.9"}
    items = {i["value"] if i["field"] == "symptoms" else i["field"]: i for i in _items(top)}
    assert FEVER in items, "fever must move the probability of a febrile diagnosis"
    assert (items[FEVER]["label"], items[FEVER]["label_es"]) == ("Fever", "Fiebre")  # HPO labels
    for field, (label, label_es, unit) in {
        "body_temperature": ("Temperature", "Temperatura", "°C"),
        "heart_rate": ("Heart rate", "Frecuencia cardíaca", "/min"),
    }.items():
        if field in items:
            assert (items[field]["label"], items[field]["label_es"], items[field]["unit"]) == (
                label,
                label_es,
                unit,
            )
            assert items[field]["value"] == FEBRILE[field]
    one = small_client.post("/v1/predict?top_k=1", json=FEBRILE, headers=auth()).json()
    assert len(one["differential"]) == 1 and "explanation" in one["differential"][0]


def test_hallmark_symptoms_are_the_support_of_their_disease(small_client):
    answer = _predict(small_client, MARFAN)
    top = answer["differential"][0]
    assert top["code"] == "ORPHA:558"
    supports = top["explanation"]["supports"]
    hallmarks = {ARACHNODACTYLY, ECTOPIA_LENTIS, TALL}
    assert supports and supports[0]["field"] == "symptoms" and supports[0]["value"] in hallmarks
    symptom_support = {i["value"] for i in supports if i["field"] == "symptoms"}
    assert len(symptom_support) >= 2
    assert not {i["value"] for i in top["explanation"]["against"]} & hallmarks
    # the same findings speak against "no disease" when it is among the first three
    for entry in answer["differential"][:EXPLAINED_DIAGNOSES]:
        if entry["code"] == "NONE":
            assert {i["value"] for i in entry["explanation"]["against"]} & hallmarks


def test_a_symptom_the_model_does_not_read_is_never_evidence(small_client):
    patient = {**FEBRILE, "symptoms": [*FEBRILE["symptoms"], SEIZURE]}
    answer = _predict(small_client, patient)
    assert any(SEIZURE in w for w in answer["warnings"])
    values = [i["value"] for d in answer["differential"][:EXPLAINED_DIAGNOSES] for i in _items(d)]
    assert FEVER in values and SEIZURE not in values


def test_explanations_can_be_turned_off_and_batches_skip_them_by_default(small_client):
    off = _predict(small_client, FEBRILE, "&explain=false")
    assert all(
        set(d) == {"code", "name", "name_es", "category", "probability"}
        for d in off["differential"]
    )
    on = _predict(small_client, FEBRILE)
    # the same model either way (explained rows are scored in one batched call: float32 order)
    assert [d["code"] for d in off["differential"]] == [d["code"] for d in on["differential"]]
    for a, b in zip(off["differential"], on["differential"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)

    body = {"patients": [FEBRILE, MARFAN]}
    batch = small_client.post("/v1/predict/batch", json=body, headers=auth()).json()
    assert not any("explanation" in d for p in batch["predictions"] for d in p["differential"])
    batch = small_client.post("/v1/predict/batch?explain=true", json=body, headers=auth()).json()
    single = [_predict(small_client, p) for p in (FEBRILE, MARFAN)]
    for mine, alone in zip(batch["predictions"], single):
        assert mine["differential"] == alone["differential"]


def test_a_bad_explain_value_is_listed_with_the_other_problems(small_client):
    response = small_client.post(
        "/v1/predict?explain=maybe&top_k=0", json={**FEBRILE, "heart_rate": 400}, headers=auth()
    )
    assert response.status_code == 422
    fields = {p["field"] for p in response.json()["problems"]}
    assert fields == {"explain", "top_k", "heart_rate"}


# ------------------------------------------------------------------ the pipeline's model
@pytest.fixture(scope="module")
def full_client(deployed_home: Path) -> Iterator[TestClient]:
    settings = settings_for(deployed_home, TRIAGE_PREDICTION_LOG="0")
    with TestClient(app=create_app(settings)) as client:
        yield client


def _imputation(home: Path) -> dict[str, float]:
    deployments = home / "deployments"
    pointer = json.loads((deployments / "current.json").read_text())
    manifest = json.loads((deployments / pointer["manifest"]).read_text())
    return manifest["imputation"]


def test_removing_the_top_supporting_symptom_lowers_the_probability_by_the_reported_effect(
    full_client,
):
    answer = _predict(full_client, INFLUENZA_LIKE)
    top = answer["differential"][0]
    symptoms = [i for i in top["explanation"]["supports"] if i["field"] == "symptoms"]
    assert symptoms, top
    strongest = symptoms[0]
    again = _predict(full_client, _without(INFLUENZA_LIKE, strongest))
    after = {d["code"]: d["probability"] for d in again["differential"]}[top["code"]]
    assert top["probability"] - after == pytest.approx(strongest["effect"], abs=1e-6)
    assert strongest["effect"] >= MIN_EFFECT
    # and every other reported effect of the three explained diagnoses, vitals and sex included
    assert _check_effects_against_repredictions(full_client, INFLUENZA_LIKE) >= 6


def test_annotated_findings_of_a_rare_disease_support_it(full_client):
    hallmarks = [ARACHNODACTYLY, ECTOPIA_LENTIS, TALL, AORTIC_ROOT_ANEURYSM]  # Marfan-like
    answer = _predict(full_client, {"symptoms": hallmarks})
    top = answer["differential"][0]
    assert top["category"] == "orphan", top
    supports = top["explanation"]["supports"]
    assert len(supports) >= 2
    assert all(i["field"] == "symptoms" and i["value"] in hallmarks for i in supports)
    assert top["explanation"]["against"] == []
    names = {i["value"]: i["label"] for i in supports}
    if ECTOPIA_LENTIS in names:
        assert names[ECTOPIA_LENTIS] == "Ectopia lentis"
    assert _check_effects_against_repredictions(full_client, {"symptoms": hallmarks}) >= 2


def test_an_unknown_sex_is_not_evidence_and_a_normal_vital_is_not_a_missing_one(
    full_client, deployed_home
):
    median = _imputation(deployed_home)["heart_rate"]
    patient = {
        "age": 41,
        "sex": "unknown",
        "heart_rate": median,
        "body_temperature": 39.4,
        "symptoms": [FEVER, COUGH],
    }
    answer = _predict(full_client, patient)
    fields = [i["field"] for d in answer["differential"][:EXPLAINED_DIAGNOSES] for i in _items(d)]
    # "unknown" is how a sex not given is encoded: removing it changes nothing
    assert "sex" not in fields
    assert "body_temperature" in fields and "symptoms" in fields  # the rest is evidence
    # a heart rate measured at the training median is a measured normal heart rate, which the
    # model reads apart from a missing one ("not measured" indicator): missing is not normal
    without = {k: v for k, v in patient.items() if k != "heart_rate"}
    plain = _predict(full_client, patient, "&explain=false")["differential"]
    missing = _predict(full_client, without, "&explain=false")["differential"]
    assert [d["probability"] for d in plain] != pytest.approx(
        [d["probability"] for d in missing], abs=1e-6
    )


def test_explained_and_plain_predictions_agree_on_the_pipeline_model(full_client):
    on = _predict(full_client, INFLUENZA_LIKE)
    off = _predict(full_client, INFLUENZA_LIKE, "&explain=false")
    plain = {d["code"]: d["probability"] for d in off["differential"]}
    for entry in on["differential"][:20]:
        assert entry["probability"] == pytest.approx(plain[entry["code"]], abs=1e-5)
    assert on["orphan_probability"] == pytest.approx(off["orphan_probability"], abs=1e-5)


def test_an_id_the_release_lacks_is_ignored_as_its_warning_says(full_client):
    """A well-formed id HPO does not have changes nothing but the warnings."""
    # common findings the classifier reads and a rare one it does not: an unknown id, if it were
    # counted, would change the blend's share of symptoms unseen by the classifier
    patient = {"age": 40, "body_temperature": 38.6, "symptoms": [FEVER, COUGH, ARACHNODACTYLY]}
    plain = _predict(full_client, patient, "&explain=false")
    with_unknown = _predict(
        full_client, {**patient, "symptoms": [*patient["symptoms"], "HP:9999999"]}, "&explain=false"
    )
    assert [d["code"] for d in with_unknown["differential"]] == [
        d["code"] for d in plain["differential"]
    ]
    for a, b in zip(with_unknown["differential"], plain["differential"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-9)
    assert with_unknown["orphan_probability"] == pytest.approx(
        plain["orphan_probability"], abs=1e-9
    )
    assert any("HP:9999999" in w and "ignored" in w for w in with_unknown["warnings"])
    assert not any("HP:9999999" in w for w in plain["warnings"])
