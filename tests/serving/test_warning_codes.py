"""Every warning of an answer carries a stable code and params (API v1.5) that the web form words
in English and Spanish; ``warnings`` keeps the English strings, in the same order."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from diagnosis import warning_codes
from diagnosis.knowledge import KnowledgeIndex
from serving.app import create_app

from .conftest import FEVER, auth, settings_for, write_deployment

APP_JS = Path(__file__).resolve().parents[2] / "serving" / "static" / "app.js"
UNKNOWN, UNKNOWN_ABSENT = "HP:9999999", "HP:9999998"  # well-formed ids no HPO release has
WHATS = (warning_codes.SYMPTOM, warning_codes.ABSENT_SYMPTOM)


def _strings(lang: str) -> dict[str, str]:
    """The web form's dictionary of one language (``I18N.<lang>`` in app.js), key -> text."""
    js = APP_JS.read_text(encoding="utf-8")
    block = re.search(r"\n    " + lang + r": \{(.*?)\n    \}", js, re.S)
    assert block, lang
    pairs = re.findall(r'(\w+): ("(?:[^"\\]|\\.)*")', block.group(1))
    return {key: json.loads(text) for key, text in pairs}


EN, ES = _strings("en"), _strings("es")


def _worded(strings: dict[str, str], detail: dict) -> str:
    """A warning as the form words it (``warningText`` in app.js): its code's text with the
    params put in, ``what`` itself translated."""
    params = dict(detail["params"])
    if "what" in params:
        params["what"] = strings["w_" + params["what"]]
    text = strings["warn_" + detail["code"]]
    for name, value in params.items():
        text = text.replace("{" + name + "}", value)
    assert not re.search(r"\{\w+\}", text), (text, detail)
    return text


def _checked(answer: dict) -> list[dict]:
    """The answer's warning details after checking they line up with ``warnings``."""
    details = answer["warning_details"]
    assert [d["message"] for d in details] == answer["warnings"]
    for detail in details:
        assert set(detail) == {"code", "message", "params"}
        assert detail["code"] in warning_codes.CODES
        assert all(isinstance(v, str) for v in detail["params"].values())
        # the form's English wording of the code is the API's message, word for word
        assert _worded(EN, detail) == detail["message"]
    return details


@pytest.fixture
def classifier_client(tmp_path: Path, built_model) -> Iterator[TestClient]:
    """The classifier-only model, in a home of its own (``client`` shares ``ranker_client``'s)."""
    home = tmp_path / "classifier"
    (home / "deployments").mkdir(parents=True)
    write_deployment(home, built_model, "2026-01-12-a")
    with TestClient(app=create_app(settings_for(home))) as api:
        yield api


def _release(home: Path) -> KnowledgeIndex:
    (path,) = (home / "deployments").glob("*/knowledge.json")
    return KnowledgeIndex.load(path, None)


def test_every_warning_the_runtime_emits_has_its_code_and_params(
    classifier_client, ranker_client, ranker_home
):
    codes = warning_codes
    seen: list[dict] = []

    def warned(api, body: dict) -> list[tuple[str, dict]]:
        details = _checked(api.post("/v1/predict", json=body, headers=auth()).json())
        seen.extend(details)
        return [(d["code"], d["params"]) for d in details]

    # a classifier-only model: an id outside its vocabulary, one finding without vital signs
    client = classifier_client
    assert warned(client, {"symptoms": ["HP:0000001"]}) == [
        (codes.SYMPTOM_NOT_USED, {"term": "HP:0000001"}),
        (codes.FEW_FINDINGS, {}),
    ]
    assert warned(client, {}) == [(codes.BASE_RATES_ONLY, {})]
    assert warned(client, {"age": 30, "heart_rate": 80, "symptoms": [FEVER]}) == []

    # the knowledge ranker's release: ids it lacks and old ids, in both request lists
    index = _release(ranker_home)
    olds = [t for t in sorted(index.aliases) if index.canonical(t) not in (None, t)]
    old = olds[0]  # two old ids read as two different current terms
    old_absent = next(t for t in olds if index.canonical(t) != index.canonical(old))
    release = ranker_client.get("/v1/model", headers=auth("admin")).json()["hpo_release"]
    body = {"symptoms": [UNKNOWN, old], "absent_symptoms": [UNKNOWN_ABSENT, old_absent]}
    assert warned(ranker_client, body) == [
        (codes.SYMPTOM_NOT_IN_RELEASE, {"what": "symptom", "term": UNKNOWN, "release": release}),
        (codes.SYMPTOM_OLD_ID, {"what": "symptom", "term": old, "current": index.canonical(old)}),
        (
            codes.SYMPTOM_NOT_IN_RELEASE,
            {"what": "absent_symptom", "term": UNKNOWN_ABSENT, "release": release},
        ),
        (
            codes.SYMPTOM_OLD_ID,
            {"what": "absent_symptom", "term": old_absent, "current": index.canonical(old_absent)},
        ),
    ]
    assert seen[-2]["message"] == (
        f"absent symptom {UNKNOWN_ABSENT} is not in HPO release {release}; it was ignored"
    )
    assert warned(ranker_client, {}) == [(codes.BASE_RATES_ONLY, {})]
    assert warned(ranker_client, {"symptoms": [FEVER]}) == [(codes.FEW_FINDINGS, {})]
    assert {d["code"] for d in seen} == set(codes.CODES)


def test_batch_answers_carry_the_same_details_as_single_ones(classifier_client, ranker_client):
    for api, patients in (
        (classifier_client, [{"symptoms": ["HP:0000001"]}, {}, {"age": 40, "heart_rate": 70}]),
        (
            ranker_client,
            [
                {"symptoms": [UNKNOWN, FEVER]},
                {"absent_symptoms": [UNKNOWN_ABSENT]},
                {"symptoms": ["HP:0001275"]},
            ],
        ),
    ):
        response = api.post("/v1/predict/batch", json={"patients": patients}, headers=auth())
        batch = response.json()["predictions"]
        assert len(batch) == len(patients)
        for patient, answer in zip(patients, batch):
            single = api.post("/v1/predict?explain=false", json=patient, headers=auth()).json()
            assert _checked(answer) == _checked(single)
            assert answer["warnings"] == single["warnings"]
        assert any(answer["warning_details"] for answer in batch)


def test_every_code_has_an_english_and_a_spanish_wording_in_the_form():
    for code in warning_codes.CODES:
        english, spanish = EN["warn_" + code], ES["warn_" + code]
        assert english != spanish, code
        # the same params in both languages: nothing the API names is lost in translation
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", spanish)), code
    for what in WHATS:
        assert EN["w_" + what] and ES["w_" + what] and EN["w_" + what] != ES["w_" + what]


def test_the_runtime_words_every_code_as_the_form_does_in_english():
    """Each code built directly, with values of every kind, worded by the form's English text."""
    details = [
        warning_codes.symptom_not_used("HP:0000001"),
        warning_codes.base_rates_only(),
        warning_codes.few_findings(),
    ]
    for what in WHATS:
        details += [
            warning_codes.symptom_not_in_release(what, UNKNOWN, "2025-01-16"),
            warning_codes.symptom_old_id(what, "HP:0001275", "HP:0001250"),
        ]
    assert {d.code for d in details} == set(warning_codes.CODES)
    for detail in details:
        as_json = {"code": detail.code, "message": detail.message, "params": detail.params}
        assert _worded(EN, as_json) == detail.message
        spanish = _worded(ES, as_json)
        assert spanish != detail.message
        for value in detail.params.values():  # ids and releases appear as sent
            if value not in WHATS:
                assert value in spanish


def test_openapi_documents_the_warning_details(classifier_client):
    doc = classifier_client.get("/schema/openapi.json").json()
    assert doc["info"]["version"] == "1.5.0"
    schemas = doc["components"]["schemas"]
    details = schemas["Prediction"]["properties"]["warning_details"]
    assert details["type"] == "array"
    detail = schemas[details["items"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["properties"]) == {"code", "message", "params"}
    assert {"code", "message"} <= set(detail["required"])
    assert detail["properties"]["params"]["additionalProperties"] == {"type": "string"}
