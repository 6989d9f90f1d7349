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
    return sorted((home / "labels").iterdir()) if (home / "labels").exists() else []


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
    }
    assert stored["predicted_at"] <= stored["labelled_at"]


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


@pytest.mark.parametrize("code", ["NONE", "J10", "E11", "N39.0", "ORPHA:558", "omim:154700"])
def test_every_diagnosis_form_of_the_contract_is_accepted(client, code):
    served = _predict(client)
    response = client.post(
        "/v1/labels",
        headers=auth(),
        json={"prediction_id": served["prediction_id"], "diagnosis": code, "severity": "mild"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["diagnosis"] == code.upper()


def test_a_second_label_replaces_the_first_and_says_so(client, served_home):
    served = _predict(client)
    first = {"prediction_id": served["prediction_id"], "diagnosis": "J10", "severity": "mild"}
    assert client.post("/v1/labels", json=first, headers=auth()).json()["replaced"] is False
    second = client.post("/v1/labels", json={**first, "diagnosis": "J18.9"}, headers=auth())
    assert second.status_code == 202 and second.json()["replaced"] is True
    files = _label_files(served_home)
    assert len(files) == 1  # no temporary files left behind either
    assert json.loads(files[0].read_text())["diagnosis"] == "J18.9"


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
        assert other.app.state.prediction_index.scans == 1
    assert client.app.state.prediction_index.scans == 0


def test_log_scan_reads_older_day_files_and_ignores_ids_not_at_a_line_start(tmp_path):
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
    assert len(synced) == 2  # the file, then its directory after the rename

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    failed = client.post("/v1/labels", json={**body, "diagnosis": "J18.9"}, headers=auth())
    assert failed.status_code == 500
    assert "No space" not in failed.text
    files = _label_files(served_home)
    assert [f.name for f in files] == [f"{served['prediction_id']}.json"]  # no temp file left
    assert json.loads(files[0].read_text())["diagnosis"] == "J10"  # the old label is intact


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
