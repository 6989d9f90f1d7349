"""API v1.3: excluded findings (``absent_symptoms``) in the predict bodies, and
``POST /v1/predict/phenopacket`` answering exactly as ``/v1/predict`` for the same patient."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diagnosis.explain import RemovedInput, explanations
from serving.explain_params import symptom_namer
from serving.phenopacket import PHENOPACKET_EXAMPLE

from .conftest import ARACHNODACTYLY, COUGH, ECTOPIA_LENTIS, FEVER, HEADACHE, TALL, auth

MARFAN_CODES = ("ORPHA:558", "OMIM:154700")

# The same patient twice: as a phenopacket and as a /v1/predict body.
PACKET: dict[str, Any] = {
    "id": "PMID_0000000_patient_7",  # identifiers and free text: ignored, never logged
    "subject": {
        "id": "Jane Roe, 12 Main St",
        "sex": "MALE",
        "timeAtLastEncounter": {"age": {"iso8601duration": "P27Y"}},
        "vitalStatus": {"status": "ALIVE"},
    },
    "phenotypicFeatures": [
        {"type": {"id": ARACHNODACTYLY, "label": "Arachnodactyly"}},
        {"type": {"id": FEVER, "label": "Fever"}, "excluded": True},
        {
            "type": {"id": TALL, "label": "Tall stature"},
            "onset": {"age": {"iso8601duration": "P5Y"}},
        },
        {"type": {"id": ECTOPIA_LENTIS, "label": "Ectopia lentis"}, "excluded": False},
    ],
    "measurements": [
        {
            "assay": {"id": "LOINC:8867-4", "label": "Heart rate"},
            "value": {"quantity": {"unit": {"id": "UCUM:/min"}, "value": 70}},
        },
        {
            "assay": {"id": "LOINC:2345-7", "label": "Glucose"},  # not read by the model
            "value": {"quantity": {"unit": {"id": "UCUM:mg/dL"}, "value": 95}},
        },
        {
            "assay": {"id": "LOINC:8310-5", "label": "Body temperature"},
            "value": {"quantity": {"unit": {"id": "UCUM:Cel"}, "value": 36.7}},
        },
    ],
    "diseases": [{"term": {"id": "OMIM:154700", "label": "Marfan syndrome"}}],
    "metaData": {"created": "2026-01-12T00:00:00Z", "createdBy": "Dr. Example"},
}
SAME_PATIENT = {
    "age": 27,
    "sex": "male",
    "heart_rate": 70,
    "body_temperature": 36.7,
    "symptoms": [ARACHNODACTYLY, TALL, ECTOPIA_LENTIS],
    "absent_symptoms": [FEVER],
}


def _problems(response) -> dict[str, dict]:
    assert response.status_code == 422, response.text
    return {p["field"]: p for p in response.json()["problems"]}


def _without_id(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "prediction_id"}


def _log_lines(home: Path) -> list[dict]:
    files = sorted((home / "predictions").glob("predictions-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def _measure(loinc: str, value: Any, unit: str) -> dict:
    return {
        "assay": {"id": f"LOINC:{loinc}"},
        "value": {"quantity": {"unit": {"id": f"UCUM:{unit}"}, "value": value}},
    }


# ------------------------------------------------------------------ absent_symptoms in the bodies
def test_an_id_in_both_lists_is_a_problem_naming_the_absent_field(client):
    response = client.post(
        "/v1/predict",
        json={"symptoms": [FEVER, COUGH], "absent_symptoms": [HEADACHE, COUGH]},
        headers=auth(),
    )
    problems = _problems(response)
    assert list(problems) == ["absent_symptoms[1]"]
    assert problems["absent_symptoms[1]"]["value"] == COUGH
    assert "also in symptoms" in problems["absent_symptoms[1]"]["message"]


def test_absent_ids_are_validated_like_symptoms_every_problem_listed(client):
    response = client.post(
        "/v1/predict",
        json={
            "heart_rate": 400,
            "symptoms": ["fever"],
            "absent_symptoms": [COUGH, "HP:12", 7, None, "hp:0001945"],
        },
        headers=auth(),
    )
    problems = _problems(response)
    assert set(problems) == {
        "heart_rate",
        "symptoms[0]",
        "absent_symptoms[1]",
        "absent_symptoms[2]",
        "absent_symptoms[3]",
        "absent_symptoms[4]",
    }
    assert problems["absent_symptoms[2]"]["value"] == 7
    assert problems["absent_symptoms[1]"]["message"] == "not an HPO id"

    not_a_list = client.post("/v1/predict", json={"absent_symptoms": FEVER}, headers=auth())
    assert _problems(not_a_list)["absent_symptoms"]["message"].startswith("must be an array")
    too_many = client.post(
        "/v1/predict",
        json={"absent_symptoms": [f"HP:{i:07d}" for i in range(257)]},
        headers=auth(),
    )
    assert "at most 256" in _problems(too_many)["absent_symptoms"]["message"]


def test_batch_problems_carry_the_patient_path(client):
    response = client.post(
        "/v1/predict/batch",
        json={
            "patients": [
                {"symptoms": [FEVER], "absent_symptoms": [COUGH]},
                {"absent_symptoms": ["HP:1"]},
                {"symptoms": [FEVER, COUGH], "absent_symptoms": [COUGH, FEVER]},
            ]
        },
        headers=auth(),
    )
    problems = _problems(response)
    assert set(problems) == {
        "patients[1].absent_symptoms[0]",
        "patients[2].absent_symptoms[0]",
        "patients[2].absent_symptoms[1]",
    }
    assert "also in symptoms" in problems["patients[2].absent_symptoms[1]"]["message"]


def test_the_prediction_log_records_the_absent_symptoms(client, served_home):
    single = client.post(
        "/v1/predict?top_k=2",
        json={"symptoms": [FEVER], "absent_symptoms": [COUGH, HEADACHE, COUGH]},
        headers=auth(),
    )
    batch = client.post(
        "/v1/predict/batch",
        json={"patients": [{"absent_symptoms": [TALL]}, {"symptoms": [TALL]}]},
        headers=auth(),
    )
    assert single.status_code == 200 and batch.status_code == 200
    lines = _log_lines(served_home)
    assert [line["inputs"]["absent_symptoms"] for line in lines] == [[COUGH, HEADACHE], [TALL], []]
    assert [line["inputs"]["symptoms"] for line in lines] == [[FEVER], [], [TALL]]


def test_absent_symptoms_the_release_lacks_are_ignored_with_a_warning(ranker_client):
    plain = ranker_client.post(
        "/v1/predict?explain=false", json={"symptoms": [ARACHNODACTYLY]}, headers=auth()
    ).json()
    unknown = ranker_client.post(
        "/v1/predict?explain=false",
        json={"symptoms": [ARACHNODACTYLY], "absent_symptoms": ["HP:9999999"]},
        headers=auth(),
    ).json()
    assert [d["probability"] for d in unknown["differential"]] == [
        d["probability"] for d in plain["differential"]
    ]
    assert any("HP:9999999" in w and "ignored" in w for w in unknown["warnings"])


def test_openapi_documents_absent_symptoms_and_the_phenopacket_operation(client):
    doc = client.get("/schema/openapi.json").json()
    assert doc["info"]["version"] == "1.5.0"
    absent = doc["components"]["schemas"]["Patient"]["properties"]["absent_symptoms"]
    assert absent["items"]["pattern"] == r"^HP:\d{7}$" and absent["maxItems"] == 256
    operation = doc["paths"]["/v1/predict/phenopacket"]["post"]
    assert operation["operationId"] == "predictDifferentialFromPhenopacket"
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is True
    assert "Phenopacket" in schema["description"]
    assert schema["examples"] == [PHENOPACKET_EXAMPLE]
    assert {"200", "401", "403", "422", "503"} <= set(operation["responses"])


# ------------------------------------------------------------------ explanations
def test_the_api_symptom_namer_labels_absent_items(client):
    namer = symptom_namer(client.app.state.services.knowledge)
    inputs = [RemovedInput("symptoms", ARACHNODACTYLY), RemovedInput("absent_symptoms", FEVER)]
    (note,) = explanations(np.array([0.5]), np.array([[0.2], [0.6]]), inputs, namer)
    (absent,) = note["against"]
    assert absent["field"] == "absent_symptoms" and absent["value"] == FEVER
    assert (absent["label"], absent["label_es"]) == ("Fever (absent)", "Fiebre (descartado)")


def test_the_explanation_lists_an_excluded_finding_with_its_label(ranker_client):
    answer = ranker_client.post(
        "/v1/predict",
        json={"symptoms": [TALL], "absent_symptoms": [ECTOPIA_LENTIS]},
        headers=auth(),
    ).json()
    items = [
        item
        for entry in answer["differential"]
        if entry["code"] in MARFAN_CODES and entry.get("explanation")
        for item in entry["explanation"]["against"]
    ]
    absent = [i for i in items if i["field"] == "absent_symptoms"]
    assert absent, answer["differential"]
    assert absent[0]["value"] == ECTOPIA_LENTIS
    assert absent[0]["label"] == "Ectopia lentis (absent)"
    assert absent[0]["label_es"] == "Ectopia del cristalino (descartado)"  # the HPO label


def test_an_excluded_finding_lowers_the_diseases_annotated_with_it(ranker_client):
    def marfan(body: dict) -> float:
        answer = ranker_client.post(
            "/v1/predict?top_k=100&explain=false", json=body, headers=auth()
        ).json()
        return sum(d["probability"] for d in answer["differential"] if d["code"] in MARFAN_CODES)

    # tall stature alone: Marfan about 0.76 (ORPHA and OMIM entries), far from saturated
    stated = {"symptoms": [TALL]}
    # at least 0.1 percentage point, the smallest effect an explanation shows
    assert marfan({**stated, "absent_symptoms": [ECTOPIA_LENTIS]}) < marfan(stated) - 1e-3


# ------------------------------------------------------------------ phenopacket
@pytest.mark.parametrize("fixture", ["client", "ranker_client"])
def test_a_phenopacket_is_answered_as_the_same_patient_through_predict(fixture, request):
    api = request.getfixturevalue(fixture)
    for query in ("?top_k=5", "?top_k=3&explain=false"):
        packet = api.post(f"/v1/predict/phenopacket{query}", json=PACKET, headers=auth())
        body = api.post(f"/v1/predict{query}", json=SAME_PATIENT, headers=auth())
        assert packet.status_code == body.status_code == 200, packet.text
        assert _without_id(packet.json()) == _without_id(body.json())
        assert packet.json()["prediction_id"] != body.json()["prediction_id"]
    assert _without_id(packet.json())["differential"]  # something was compared


def test_the_phenopacket_prediction_is_logged_like_predict_without_identifiers(client, served_home):
    answers = [
        client.post("/v1/predict/phenopacket", json=PACKET, headers=auth()).json(),
        client.post("/v1/predict", json=SAME_PATIENT, headers=auth()).json(),
    ]
    lines = _log_lines(served_home)
    assert [line["prediction_id"] for line in lines] == [a["prediction_id"] for a in answers]
    assert lines[0]["inputs"] == lines[1]["inputs"]
    assert lines[0]["inputs"]["absent_symptoms"] == [FEVER]
    text = (
        (served_home / "predictions")
        .joinpath(next(iter(p.name for p in (served_home / "predictions").iterdir())))
        .read_text()
    )
    for secret in ("Jane Roe", "PMID_0000000", "Dr. Example", "Marfan syndrome", "Glucose"):
        assert secret not in text


def test_the_documented_example_is_answered(client):
    response = client.post("/v1/predict/phenopacket", json=PHENOPACKET_EXAMPLE, headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["differential"]


def test_an_empty_phenopacket_is_a_patient_without_findings(client):
    packet = client.post("/v1/predict/phenopacket?explain=false", json={}, headers=auth())
    body = client.post("/v1/predict?explain=false", json={}, headers=auth())
    assert _without_id(packet.json()) == _without_id(body.json())


def test_phenopacket_problems_are_all_listed_at_the_phenopacket_paths(client, served_home):
    packet = copy.deepcopy(PACKET)
    packet["subject"]["sex"] = "F"
    packet["phenotypicFeatures"][2]["type"]["id"] = "HP:12345"
    packet["phenotypicFeatures"].append({"type": {"id": ARACHNODACTYLY}, "excluded": True})
    packet["phenotypicFeatures"].append({"type": {"label": "no id"}})
    packet["measurements"][0] = _measure("8867-4", 70, "/s")  # a unit the API does not take
    packet["measurements"][2] = _measure("8310-5", 98.6, "Cel")  # °F given as °C
    problems = _problems(
        client.post("/v1/predict/phenopacket?top_k=0", json=packet, headers=auth())
    )
    assert set(problems) == {
        "top_k",
        "subject.sex",
        "phenotypicFeatures[2].type.id",
        "phenotypicFeatures[4].type.id",  # ARACHNODACTYLY, also observed
        "phenotypicFeatures[5].type.id",
        "measurements[0].value.quantity.unit.id",
        "measurements[2].value.quantity.value",
    }
    assert problems["subject.sex"]["value"] == "F"
    assert problems["subject.sex"]["allowed"] == "FEMALE | MALE | OTHER_SEX | UNKNOWN_SEX"
    assert problems["phenotypicFeatures[2].type.id"]["message"] == "not an HPO id"
    assert "also in symptoms" in problems["phenotypicFeatures[4].type.id"]["message"]
    assert problems["measurements[0].value.quantity.unit.id"]["value"] == "/s"
    assert "°F" in problems["measurements[2].value.quantity.value"]["message"]
    assert not (served_home / "predictions").exists()  # nothing was scored


def test_a_range_problem_points_at_the_measurement_the_value_came_from(client):
    packet = copy.deepcopy(PACKET)
    packet["measurements"] = [
        _measure("8310-5", 50, "Cel"),  # out of range: the value scored if the next were read
        _measure("8310-5", 37, "[degF]"),  # a unit the API does not take: not read
        _measure("8867-4", 19, "/min"),  # out of range
    ]
    problems = _problems(client.post("/v1/predict/phenopacket", json=packet, headers=auth()))
    assert set(problems) == {
        "measurements[0].value.quantity.value",
        "measurements[1].value.quantity.unit.id",
        "measurements[2].value.quantity.value",
    }
    assert problems["measurements[0].value.quantity.value"]["value"] == 50


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda p: p["subject"].update(timeAtLastEncounter={"age": {"iso8601duration": "3y"}}),
            "subject.timeAtLastEncounter.age.iso8601duration",
        ),
        (
            lambda p: p["subject"].update(
                timeAtLastEncounter={"age": {"iso8601duration": "P130Y"}}
            ),
            "subject.timeAtLastEncounter.age.iso8601duration",
        ),
        (lambda p: p["subject"].update(sex=["MALE"]), "subject.sex"),
        (lambda p: p.update(subject="Jane"), "subject"),
        (lambda p: p.update(phenotypicFeatures={"type": {"id": FEVER}}), "phenotypicFeatures"),
        (
            lambda p: p["phenotypicFeatures"][1].update(excluded="yes"),
            "phenotypicFeatures[1].excluded",
        ),
        (lambda p: p.update(measurements=[5]), "measurements[0]"),
        (lambda p: p["measurements"][2].update(value=36.7), "measurements[2].value"),
        (
            lambda p: p["measurements"][2]["value"].update(quantity=[36.7]),
            "measurements[2].value.quantity",
        ),
        (
            lambda p: p["measurements"][2]["value"]["quantity"].update(unit="Cel"),
            "measurements[2].value.quantity.unit",
        ),
        (
            lambda p: p["measurements"][2]["value"]["quantity"].update(value="36.7"),
            "measurements[2].value.quantity.value",
        ),
        (
            lambda p: (
                p["measurements"].append(_measure("8462-4", 90, "mm[Hg]"))
                or p["measurements"].append(_measure("8480-6", 85, "mm[Hg]"))
            ),
            "measurements[3].value.quantity.value",
        ),  # diastolic not below systolic
    ],
    ids=[
        "age-format",
        "age-range",
        "sex-type",
        "subject-type",
        "features-type",
        "excluded-type",
        "measurement-type",
        "value-type",
        "quantity-type",
        "unit-type",
        "number-type",
        "diastolic-above-systolic",
    ],
)
def test_a_bad_phenopacket_field_is_a_422_at_its_path(client, change, path):
    packet = copy.deepcopy(PACKET)
    change(packet)
    problems = _problems(client.post("/v1/predict/phenopacket", json=packet, headers=auth()))
    assert list(problems) == [path]


@pytest.mark.parametrize("body", [[PACKET], "phenopacket", 3, None])
def test_a_phenopacket_body_must_be_an_object(client, body):
    response = client.post(
        "/v1/predict/phenopacket",
        content=json.dumps(body),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert list(_problems(response)) == ["body"]
