"""Request ids and JSON logs (API v1.4): X-Request-ID echoed, the 500 reference is the request id,
log lines are JSON with that id and carry neither the token nor the request body."""

from __future__ import annotations

import io
import json
import logging
import re

from serving import controllers
from serving.logs import JsonFormatter

from .conftest import FEVER, TOKENS, auth


def test_every_answer_carries_a_request_id_and_a_valid_given_one_is_kept(client):
    fresh = client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert client.get("/health").headers["x-request-id"] != fresh.headers["x-request-id"]
    given = client.get("/health", headers={"X-Request-ID": "lb-7f3a.2_x"})
    assert given.headers["x-request-id"] == "lb-7f3a.2_x"
    for bad in ("has space", "x" * 65, "semi;colon"):
        replaced = client.get("/health", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    problem = client.post("/v1/predict", json={"age": 500}, headers=auth())
    assert problem.status_code == 422 and problem.headers["x-request-id"]


def test_a_500_names_the_request_id_and_the_json_log_line_has_it_without_secrets(
    client, monkeypatch
):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom in the scorer")

    monkeypatch.setattr(controllers, "_score", broken)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("triage")
    logger.addHandler(handler)
    try:
        secret_symptom = "HP:0000098"
        response = client.post(
            "/v1/predict",
            json={"symptoms": [FEVER, secret_symptom], "age": 41},
            headers={**auth(), "X-Request-ID": "req-500-test"},
        )
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500-test"
    assert response.json()["detail"] == "internal error (reference req-500-test)"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == "req-500-test"
    assert error["exception"] == "RuntimeError" and "unhandled RuntimeError" in error["message"]
    text = stream.getvalue()
    assert TOKENS["clinician"] not in text and secret_symptom not in text
    assert "age" not in error["message"] and "41" not in error["message"]
