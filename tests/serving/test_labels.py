"""POST /v1/labels: confirmed diagnoses written durably, one JSON file per prediction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from litestar.testing import TestClient

from schemas.clinical import SEVERITIES
from serving.app import create_app
from serving.prediction_log import PredictionIndex

from .conftest import FEVER, HEADACHE, auth, settings_for

PATIENT = {
    "age": 34,
    "sex": "female",
    "heart_rate": 118,
    "body_temperature": 39.5,
    "symptoms": [FEVER, HEADACHE],
}


def _predict(client) -> dict:
    response = client.post("/v1/predict", json=PATIENT, headers=auth("clinician"))
    assert response.status_code == 200
    return response.json()


def _label_files(home: Path) -> list[Path]:
    """The latest label of each prediction (what the pipeline reads), not the revisions folder."""
    folder = home / "labels"
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def _revision_files(home: Path) -> list[Path]:
    folder = home / "labels" / "revisions"
    return sorted(p for p in folder.glob("*.json")) if folder.exists() else []


def test_label_is_written_as_one_canonical_json_file_before_202(client, served_home):
    served = _predict(client)
    response = client.post(
        "/v1/labels",
        json={
            "prediction_id": served["prediction_id"],
            "diagnosis": " j18.9 ",
            "severity": "Aguda",
        },
        headers=auth("clinician"),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["diagnosis"], body["severity"], body["replaced"]) == ("J18.9", "acute", False)
    files = _label_files(served_home)
    assert [f.name for f in files] == [f"{served['prediction_id']}.json"]
    stored = json.loads(files[0].read_text())
    assert stored == {
        "format": 1,
        "prediction_id": served["prediction_id"],
        "diagnosis": "J18.9",
        "severity": "acute",
        "labelled_at": body["labelled_at"],
        "labelled_by": "clinician",
        "model_version": served["model_version"],
        "predicted_at": stored["predicted_at"],
        "revision": 1,
        "confirmed_by": "clinician-1",  # the token's name (first of TRIAGE_API_KEYS), not the token
    }
    assert stored["predicted_at"] <= stored["labelled_at"]
    assert (body["revision"], body["confirmed_by"]) == (1, "clinician-1")
    assert "clin-token" not in files[0].read_text()


@pytest.mark.parametrize(
    ("spoken", "canonical"),
    [
        ("No enfermo", "not_ill"),
        ("leve", "mild"),
        ("aguda", "acute"),
        ("crónica", "chronic"),
        ("CRONICA", "chronic"),
        ("terminal", "terminal"),
        ("not_ill", "not_ill"),
        ("Mild", "mild"),
    ],
)
def test_spanish_and_english_severities_are_stored_canonically(
    client, served_home, spoken, canonical
):
    served = _predict(client)
    response = client.post(
        "/v1/labels",
        headers=auth("admin"),
        json={"prediction_id": served["prediction_id"], "diagnosis": "NONE", "severity": spoken},
    )
    assert response.status_code == 202, response.text
    stored = json.loads(_label_files(served_home)[0].read_text())
    assert stored["severity"] == canonical in SEVERITIES
    assert stored["labelled_by"] == "admin"


# E11 and N39.0 are curated common conditions this small model has no class for: the pipeline's
# disease_catalogue holds them, so a clinician can confirm them and the next model can learn them
@pytest.mark.parametrize(
    "code", ["NONE", "J10", "j18.9", "ORPHA:558", "orpha:558 ", "E11", "N39.0"]
)
def test_codes_of_the_deployed_catalogue_are_accepted(client, code):
    served = _predict(client)
    response = client.post(
        "/v1/labels",
        headers=auth(),
        json={"prediction_id": served["prediction_id"], "diagnosis": code, "severity": "mild"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["diagnosis"] == code.strip().upper()


@pytest.mark.parametrize("code", ["J11.1", "OMIM:154700", "OMIM:99999999999", "O73.BD3I"])
def test_well_formed_codes_outside_the_catalogue_are_422_naming_the_field(
    client, served_home, code
):
    served = _predict(client)
    response = client.post(
        "/v1/labels",
        headers=auth(),
        json={"prediction_id": served["prediction_id"], "diagnosis": code, "severity": "mild"},
    )
    assert response.status_code == 422, response.text
    (problem,) = response.json()["problems"]
    assert problem["field"] == "diagnosis" and "catalogue" in problem["message"]
    assert "2026-01-12-a" in problem["message"]  # the deployed version it was checked against
    assert _label_files(served_home) == [] and _revision_files(served_home) == []


def test_ranker_diseases_are_in_the_catalogue_too(ranker_client):
    served = ranker_client.post("/v1/predict", json=PATIENT, headers=auth()).json()
    body = {"prediction_id": served["prediction_id"], "severity": "chronic"}
    ok = ranker_client.post("/v1/labels", headers=auth(), json={**body, "diagnosis": "OMIM:154700"})
    assert ok.status_code == 202, ok.text
    refused = ranker_client.post("/v1/labels", headers=auth(), json={**body, "diagnosis": "J11.1"})
    assert refused.status_code == 422


def test_a_second_label_is_a_revision_and_both_are_kept_for_auditors(client, served_home):
    served = _predict(client)
    first = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "mild"}
    answer = client.post("/v1/labels", json=first, headers=auth()).json()
    assert (answer["replaced"], answer["revision"]) == (False, 1)
    second = client.post("/v1/labels", json={**first, "diagnosis": "J18.9"}, headers=auth("admin"))
    assert second.status_code == 202
    assert (second.json()["replaced"], second.json()["revision"]) == (True, 2)
    files = _label_files(served_home)
    assert len(files) == 1  # no temporary files left behind either
    latest = json.loads(files[0].read_text())
    assert (latest["diagnosis"], latest["revision"], latest["confirmed_by"]) == (
        "J18.9",
        2,
        "admin-3",
    )
    assert [json.loads(f.read_text())["diagnosis"] for f in _revision_files(served_home)] == [
        "J10",
        "J18.9",
    ]
    history = client.get(f"/v1/labels/{served['prediction_id']}", headers=auth("auditor"))
    assert history.status_code == 200, history.text
    revisions = history.json()["revisions"]
    assert [(r["revision"], r["diagnosis"], r["confirmed_by"]) for r in revisions] == [
        (1, "J10", "clinician-1"),
        (2, "J18.9", "admin-3"),
    ]
    assert revisions[0]["labelled_at"] <= revisions[1]["labelled_at"]
    assert client.get(f"/v1/labels/{served['prediction_id']}", headers=auth()).status_code == 403
    assert client.get(f"/v1/labels/{'0' * 32}", headers=auth("auditor")).status_code == 404
    malformed = client.get("/v1/labels/../../etc", headers=auth("auditor"))
    assert malformed.status_code in (400, 404)
    assert client.get("/v1/labels/not-an-id", headers=auth("auditor")).status_code == 400


def test_a_label_written_before_revisions_is_kept_as_revision_1(client, served_home):
    served = _predict(client)
    old = {  # a v1.3 record: no revision, no confirmed_by
        "format": 1,
        "prediction_id": served["prediction_id"],
        "diagnosis": "J10",
        "severity": "mild",
        "labelled_at": "2026-01-13T10:00:00.000+00:00",
        "labelled_by": "clinician",
        "model_version": served["model_version"],
        "predicted_at": None,
    }
    (served_home / "labels").mkdir()
    (served_home / "labels" / f"{served['prediction_id']}.json").write_text(json.dumps(old))
    body = {"prediction_id": served["prediction_id"], "diagnosis": "NONE", "severity": "not_ill"}
    answer = client.post("/v1/labels", json=body, headers=auth()).json()
    assert answer["revision"] == 2
    history = client.get(f"/v1/labels/{served['prediction_id']}", headers=auth("admin")).json()
    assert [(r["revision"], r["diagnosis"], r["confirmed_by"]) for r in history["revisions"]] == [
        (1, "J10", None),
        (2, "NONE", "clinician-1"),
    ]


def test_label_files_and_folders_are_private(client, served_home):
    served = _predict(client)
    body = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "mild"}
    assert client.post("/v1/labels", json=body, headers=auth()).status_code == 202
    labels = served_home / "labels"
    for folder in (labels, labels / "revisions", served_home / "predictions"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for path in [*_label_files(served_home), *_revision_files(served_home)]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (served_home / "predictions").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_unknown_prediction_id_is_404_and_writes_nothing(client, served_home):
    _predict(client)
    response = client.post(
        "/v1/labels",
        headers=auth(),
        json={"prediction_id": "0" * 32, "diagnosis": "J10", "severity": "mild"},
    )
    assert response.status_code == 404
    assert "no prediction" in response.json()["detail"]
    assert _label_files(served_home) == []


def test_bad_label_lists_every_problem_at_once(client, served_home):
    response = client.post(
        "/v1/labels",
        headers=auth(),
        json={
            "prediction_id": "../../etc/passwd",
            "diagnosis": "Influenza",
            "severity": "grave",
            "comment": "patient Jane Roe",
        },
    )
    assert response.status_code == 422
    problems = {p["field"]: p for p in response.json()["problems"]}
    assert set(problems) == {"prediction_id", "diagnosis", "severity", "comment"}
    assert "ORPHA" in problems["diagnosis"]["allowed"]
    assert "crónica" in problems["severity"]["allowed"]
    assert _label_files(served_home) == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"prediction_id", "diagnosis", "severity"}),
        (
            {"prediction_id": 7, "diagnosis": None, "severity": ["acute"]},
            {"prediction_id", "diagnosis", "severity"},
        ),
        ([1, 2], {"body"}),
    ],
)
def test_missing_or_mistyped_fields_are_422(client, body, fields):
    response = client.post("/v1/labels", json=body, headers=auth())
    assert response.status_code == 422
    assert {p["field"] for p in response.json()["problems"]} == fields


def test_prediction_logged_by_another_process_is_found_in_the_log_files(client, served_home):
    served = _predict(client)  # this app's in-memory index knows it; a second app does not
    with TestClient(app=create_app(settings_for(served_home))) as other:
        response = other.post(
            "/v1/labels",
            headers=auth(),
            json={
                "prediction_id": served["prediction_id"],
                "diagnosis": "J10",
                "severity": "acute",
            },
        )
        assert response.status_code == 202, response.text
        assert response.json()["model_version"] == served["model_version"]
    assert client.app.state.prediction_index.scans == 0


def test_log_index_reads_older_day_files_and_ignores_ids_not_at_a_line_start(tmp_path):
    directory = tmp_path / "predictions"
    directory.mkdir()
    old, other = "a" * 32, "b" * 32
    (directory / "predictions-2026-01-05.jsonl").write_text(
        json.dumps(
            {"prediction_id": old, "time": "2026-01-05T10:00:00.000+00:00", "model_version": "v1"},
            separators=(",", ":"),
        )
        + "\n"
    )
    (directory / "predictions-2026-01-06.jsonl").write_text(
        '{"note":{"prediction_id":"' + other + '"}}\n'
    )
    index = PredictionIndex(directory)
    assert index.find(old) == {
        "prediction_id": old,
        "time": "2026-01-05T10:00:00.000+00:00",
        "model_version": "v1",
    }
    assert index.find(other) is None
    assert index.find("not-an-id") is None


def test_unknown_ids_read_only_the_new_bytes_never_the_history_again(tmp_path):
    directory = tmp_path / "predictions"
    directory.mkdir()
    log = directory / "predictions-2026-01-05.jsonl"

    def line(prediction_id: str) -> str:
        entry = {"prediction_id": prediction_id, "time": "t", "model_version": "v1"}
        return json.dumps(entry, separators=(",", ":")) + "\n"

    ids = [f"{i:032x}" for i in range(1, 3001)]
    log.write_text("".join(line(i) for i in ids))
    index = PredictionIndex(directory)
    history = index.catch_up()  # built once (the app does it at start-up)
    assert history == log.stat().st_size
    for _ in range(20):  # unknown ids: a stat per file, no byte read
        assert index.find("f" * 32) is None
    assert index.bytes_read == history
    with log.open("a") as handle:  # another worker appends; a torn last line waits
        handle.write(line("e" * 32) + '{"prediction_id":"' + "d" * 32)
    assert index.find("e" * 32)["model_version"] == "v1"
    assert index.find("d" * 32) is None
    assert index.bytes_read == history + len(line("e" * 32))
    assert index.find(ids[1234]) is not None and index.find(ids[0]) is not None


def test_the_index_merges_into_sorted_arrays_and_still_finds_every_id(tmp_path, monkeypatch):
    from serving import prediction_log

    monkeypatch.setattr(prediction_log, "_MERGE_AT", 10)
    directory = tmp_path / "predictions"
    directory.mkdir()
    ids = [f"{i:016x}{i:016x}" for i in range(1, 101)] + ["0" * 16 + "f" * 16]  # a shared prefix
    lines = "".join(
        json.dumps({"prediction_id": i, "time": "t", "model_version": "v"}, separators=(",", ":"))
        + "\n"
        for i in ids
    )
    (directory / "predictions-2026-01-05.jsonl").write_text(lines)
    index = PredictionIndex(directory)
    index.catch_up()
    assert len(index._pending) == 0 and len(index._keys) == len(ids)
    assert all(index.find(i) is not None for i in ids)
    assert index.find("0" * 16 + "e" * 16) is None  # same first 64 bits as two others, not logged


def test_in_memory_index_is_bounded_and_evicted_ids_are_still_found_on_disk(served_home, client):
    index: PredictionIndex = client.app.state.prediction_index
    index.recent_max = 2
    ids = [_predict(client)["prediction_id"] for _ in range(3)]
    assert index.find(ids[2]) is not None and index.scans == 0
    assert index.find(ids[0]) is not None and index.scans == 1  # evicted from memory, found on disk


def test_write_is_fsynced_and_atomic(client, served_home, monkeypatch):
    served = _predict(client)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    body = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "acute"}
    assert client.post("/v1/labels", json=body, headers=auth()).status_code == 202
    assert len(synced) == 4  # the revision and the latest file, each then its directory

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    failed = client.post("/v1/labels", json={**body, "diagnosis": "J18.9"}, headers=auth())
    assert failed.status_code == 500
    assert "No space" not in failed.text
    files = _label_files(served_home)
    assert [f.name for f in files] == [f"{served['prediction_id']}.json"]  # no temp file left
    assert json.loads(files[0].read_text())["diagnosis"] == "J10"  # the old label is intact
    assert [f.name for f in _revision_files(served_home)] == [f"{served['prediction_id']}.1.json"]
    assert not [p for p in (served_home / "labels" / "revisions").iterdir() if ".tmp" in p.name]


def test_without_the_prediction_log_no_id_can_be_confirmed(served_home):
    with TestClient(app=create_app(settings_for(served_home, TRIAGE_PREDICTION_LOG="0"))) as c:
        served = c.post("/v1/predict", json=PATIENT, headers=auth()).json()
        response = c.post(
            "/v1/labels",
            headers=auth(),
            json={
                "prediction_id": served["prediction_id"],
                "diagnosis": "J10",
                "severity": "acute",
            },
        )
        assert response.status_code == 404
