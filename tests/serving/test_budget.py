"""API v1.4 reliability rules, in process: the work budget (413), chunked scoring that answers
exactly as unchunked scoring, abandoned scoring (503), hostile bodies and paths (4xx), named
tokens, last known good at start-up. The real-process checks are in tests/reliability."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import anyio
import pytest
from litestar.testing import TestClient

from serving import scoring
from serving.app import create_app
from serving.scoring import ScoringAbandoned, ScoringPool, chunks, patient_work, request_work
from serving.settings import SettingsError, parse_api_keys

from .conftest import (
    ARACHNODACTYLY,
    COUGH,
    FEVER,
    HEADACHE,
    TALL,
    auth,
    settings_for,
    write_deployment,
)

VITALS = ("age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
PATIENT = {"age": 34, "sex": "female", "heart_rate": 118, "body_temperature": 39.5}


def _batch(n: int) -> dict:
    terms = [FEVER, COUGH, HEADACHE, ARACHNODACTYLY, TALL]
    return {
        "patients": [{**PATIENT, "age": 20 + i, "symptoms": terms[: 1 + i % 5]} for i in range(n)]
    }


def _without_ids(answers: list[dict]) -> list[dict]:
    """The answers without their (random) ids; severity probabilities to 12 decimals: the
    severity is a matrix product over the whole catalogue whose last bits depend on how many rows
    it multiplies at once (as between /v1/predict and a batch already, before chunking)."""
    out = []
    for answer in answers:
        answer = {k: v for k, v in answer.items() if k != "prediction_id"}
        severity = answer["severity"]
        answer["severity"] = {
            "label": severity["label"],
            "probabilities": {k: round(v, 12) for k, v in severity["probabilities"].items()},
        }
        out.append(answer)
    return out


# ------------------------------------------------------------------ pricing
def test_work_grows_with_symptoms_and_explanation_rows():
    plain = {"symptoms": []}
    many = {"symptoms": [f"HP:{i:07d}" for i in range(256)], "age": 40.0, "sex": "female"}
    assert patient_work(plain, False, VITALS) == 1.0
    assert patient_work(many, False, VITALS) == 1 + 256 / 32
    # explained: the patient, then one row per symptom, measured vital and the sex
    assert patient_work(many, True, VITALS) == (1 + 256 + 1 + 1) * (1 + 256 / 32)
    assert request_work([plain, many], False, VITALS) == [1.0, 9.0]


def test_chunks_cover_every_patient_in_order_within_the_limit():
    costs = [100.0, 100.0, 100.0, 400.0, 10.0, 10.0]
    parts = chunks(costs, limit=250)
    assert [list(p) for p in parts] == [[0, 1], [2], [3], [4, 5]]  # an expensive one alone
    assert [i for p in parts for i in p] == list(range(len(costs)))
    assert chunks([], limit=250) == []


def test_budget_check_names_the_limit():
    pool = ScoringPool(max_work=100)
    assert pool.check_budget([50, 50], explain=False) == 100
    with pytest.raises(scoring.WorkBudgetExceeded) as refused:
        pool.check_budget([60, 50], explain=True)
    assert "110 work units" in str(refused.value) and "limit is 100" in str(refused.value)
    assert "explain=false" in refused.value.problems[0].message
    assert pool.refused == 1


# ------------------------------------------------------------------ over HTTP
def test_a_request_over_the_budget_is_413_naming_the_limit_and_nothing_is_logged(served_home):
    settings = settings_for(served_home, TRIAGE_MAX_REQUEST_WORK="20")
    with TestClient(app=create_app(settings)) as client:
        fits = client.post("/v1/predict/batch", json=_batch(10), headers=auth())
        assert fits.status_code == 200, fits.text
        too_many = client.post("/v1/predict/batch", json=_batch(40), headers=auth())
        assert too_many.status_code == 413
        body = too_many.json()
        assert "the limit is 20" in body["detail"]
        assert body["problems"][0]["field"] == "patients"
        assert "at most 20 work units" in body["problems"][0]["allowed"]
        explained = client.post(
            "/v1/predict", json={**PATIENT, "symptoms": [FEVER, COUGH]}, headers=auth()
        )  # 1 + 2 symptoms + 3 vitals + sex = 7 rows x 1.0625: fits
        assert explained.status_code == 200
    logged = (served_home / "predictions").glob("*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in logged) == 11  # 10 + 1, not the 40


@pytest.mark.parametrize("explain", ["false", "true"])
def test_chunked_scoring_answers_as_one_call(ranker_client, monkeypatch, explain):
    body = _batch(12)
    url = f"/v1/predict/batch?top_k=10&explain={explain}"
    whole = ranker_client.post(url, json=body, headers=auth()).json()["predictions"]
    monkeypatch.setattr(scoring, "CHUNK_WORK", 1.0)  # one patient per chunk
    calls = []
    pool: ScoringPool = ranker_client.app.state.scoring_pool
    real = pool.run_chunks

    async def counting(costs, score, disconnected=lambda: False):
        calls.append(len(chunks(costs, scoring.CHUNK_WORK)))
        return await real(costs, score, disconnected)

    monkeypatch.setattr(pool, "run_chunks", counting)
    chunked = ranker_client.post(url, json=body, headers=auth()).json()["predictions"]
    assert calls == [12]
    assert _without_ids(chunked) == _without_ids(whole)


def test_a_small_request_is_scored_on_the_event_loop_unless_a_thread_slot_is_busy():
    """One small chunk (<= INLINE_WORK) runs on the event loop's thread; a larger request, or a
    small one arriving while a chunk holds the thread slot, goes through the worker threads; the
    stop checks apply to both paths."""

    async def where(pool: ScoringPool, costs: list[float], busy: bool = False) -> set[int]:
        seen: set[int] = set()

        def score(part: range) -> list[int]:
            seen.add(threading.get_ident())
            return list(part)

        holder = object()
        if busy:  # another request's chunk holds the only slot; released after a moment
            await pool.limiter.acquire_on_behalf_of(holder)

            async def release() -> None:
                await anyio.sleep(0.05)
                pool.limiter.release_on_behalf_of(holder)

            async with anyio.create_task_group() as group:
                group.start_soon(release)
                assert await pool.run_chunks(costs, score) == list(range(len(costs)))
        else:
            assert await pool.run_chunks(costs, score) == list(range(len(costs)))
        return seen

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        pool = ScoringPool()
        assert await where(pool, [1.0]) == {loop_thread}
        assert await where(pool, [scoring.INLINE_WORK / 2] * 2) == {loop_thread}
        assert loop_thread not in await where(pool, [scoring.INLINE_WORK + 1])
        assert loop_thread not in await where(pool, [1.0], busy=True)
        assert loop_thread not in await where(pool, [1.0] * 400)  # several chunks
        pool.stopping = True
        with pytest.raises(ScoringAbandoned, match="shutting down"):
            await where(pool, [1.0])
        pool.stopping = False
        with pytest.raises(ScoringAbandoned, match="disconnected"):
            await pool.run_chunks([1.0], lambda part: list(part), lambda: True)
        assert pool.abandoned == 2

    anyio.run(scenario)


def test_scoring_stopped_by_shutdown_or_deadline_is_503_and_logs_nothing(client, served_home):
    pool: ScoringPool = client.app.state.scoring_pool
    pool.stopping = True
    stopped = client.post("/v1/predict/batch", json=_batch(3), headers=auth())
    assert stopped.status_code == 503 and "shutting down" in stopped.json()["detail"]
    assert stopped.headers["retry-after"] == "5"
    pool.stopping = False
    pool.deadline_s = 1e-9
    late = client.post("/v1/predict/batch", json=_batch(3), headers=auth())
    assert late.status_code == 503 and "took longer" in late.json()["detail"]
    assert pool.abandoned == 2
    assert not list((served_home / "predictions").glob("*.jsonl")) or not any(
        p.read_text() for p in (served_home / "predictions").glob("*.jsonl")
    )


# ------------------------------------------------------------------ hostile input
@pytest.mark.parametrize(
    "endpoint", ["/v1/predict", "/v1/predict/batch", "/v1/predict/phenopacket", "/v1/labels"]
)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nested too deeply"),
        (b'{"sex": "f\xff\xfe"}', "not valid UTF-8"),
    ],
)
def test_undecodable_bodies_are_422_without_a_traceback(client, caplog, endpoint, body, message):
    response = client.post(
        endpoint, content=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert message in response.json()["problems"][0]["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("path", ["/static/x%00", "/static/app.js%0a", "/static/%01"])
def test_control_characters_in_paths_are_404_without_a_traceback(client, caplog, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "control character" in response.json()["detail"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_parameter_errors_do_not_echo_the_query_string(client):
    response = client.get("/v1/symptoms", params={"q": "x" * 300}, headers=auth())
    assert response.status_code == 400
    assert "x" * 50 not in response.text
    assert response.json()["problems"][0]["field"] == "q"


# ------------------------------------------------------------------ named tokens
def test_token_names_default_to_role_and_position_and_are_checked():
    keys = parse_api_keys("clinician:aaa,clinician/dr-garcia:bbb,admin:ccc")
    assert [(k.role, k.name) for k in keys] == [
        ("clinician", "clinician-1"),
        ("clinician", "dr-garcia"),
        ("admin", "admin-3"),
    ]
    with pytest.raises(SettingsError, match="entry 1: the name"):
        parse_api_keys("clinician/:aaa")
    with pytest.raises(SettingsError, match="repeats the name"):
        parse_api_keys("clinician/x:aaa,admin/x:bbb")
    with pytest.raises(SettingsError, match="unknown role"):
        parse_api_keys("nurse/x:aaa")


# ------------------------------------------------------------------ last known good
def test_a_broken_pointer_at_start_serves_the_newest_version_that_passes(home, built_model):
    write_deployment(home, built_model, "2026-01-10-a")
    write_deployment(home, built_model, "2026-01-11-b")
    write_deployment(home, built_model, "2026-01-12-c", sha256="ab" * 32)  # fails its hash check
    with TestClient(app=create_app(settings_for(home))) as client:
        ready = client.get("/ready").json()
        assert ready["status"] == "ready"
        assert (ready["model_version"], ready["last_known_good"], ready["pointer_version"]) == (
            "2026-01-11-b",
            True,
            "2026-01-12-c",
        )
        assert "ab" * 32 not in json.dumps(ready)  # the digest stays in the log
        metrics = client.get("/metrics", headers=auth("admin")).text
        assert "triage_model_last_known_good 1.0" in metrics
        # the pointer then names a good version: served normally, the fallback is over
        from .conftest import point_to

        point_to(home, "2026-01-10-a")
        client.app.state.model_store.reload_now()
        ready = client.get("/ready").json()
        assert (ready["model_version"], ready["last_known_good"]) == ("2026-01-10-a", False)


def test_with_no_version_passing_the_api_starts_without_a_model_and_shows_no_digest(
    home: Path, built_model
):
    write_deployment(home, built_model, "2026-01-12-c", sha256="cd" * 32)
    with TestClient(app=create_app(settings_for(home))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "cd" * 32 not in ready.text and "<digest>" in ready.text
        refused = client.post("/v1/predict", json=PATIENT, headers=auth())
        assert refused.status_code == 503 and "cd" * 32 not in refused.text
