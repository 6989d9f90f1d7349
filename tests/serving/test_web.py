"""The web page (HTML/JS/CSS served by the API) and GET /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.clinical import SEVERITIES
from serving import metrics
from serving.ui import language_from

from .conftest import FEVER, auth, point_to, write_deployment

SERVING = Path(__file__).resolve().parents[2] / "serving"


# ------------------------------------------------------------------ page
@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("es-ES,es;q=0.9,en;q=0.8", "es"),
        ("en-US,en;q=0.9,es;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,es;q=0.5", "es"),
        ("en;q=0.4, es;q=0.6", "es"),
        ("de-DE", "en"),
        (None, "en"),
        ("es;q=abc, en;q=0.1", "en"),
    ],
)
def test_language_follows_accept_language(header, lang):
    assert language_from(header) == lang


def test_page_is_served_in_the_preferred_language_with_a_strict_policy(client):
    spanish = client.get("/", headers={"Accept-Language": "es-MX,es;q=0.9"})
    assert spanish.status_code == 200
    assert spanish.headers["content-type"].startswith("text/html")
    assert '<html lang="es">' in spanish.text
    assert spanish.headers["content-language"] == "es"
    policy = spanish.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert spanish.headers["x-content-type-options"] == "nosniff"
    english = client.get("/ui?lang=en", headers={"Accept-Language": "es"})
    assert '<html lang="en">' in english.text


def test_page_has_no_inline_code_and_loads_its_assets(client):
    html = client.get("/").text
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert re.search(r"\son[a-z]+=", html) is None and " style=" not in html
    for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        assert f'"{asset}"' in html
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for element in (
        "triage-form",
        "symptom-input",
        "differential",
        "severity-label",
        "label-form",
        "label-prediction-id",
        "label-severity",
        "token",
    ):
        assert f'id="{element}"' in html


def _dictionary(js: str, lang: str) -> set[str]:
    block = re.search(lang + r": \{(.*?)\n    \}", js, re.S)
    assert block, lang
    return set(re.findall(r"(\w+): \"", block.group(1)))


def test_every_ui_string_exists_in_english_and_spanish():
    js = (SERVING / "static" / "app.js").read_text(encoding="utf-8")
    html = (SERVING / "templates" / "index.html").read_text(encoding="utf-8")
    english, spanish = _dictionary(js, "en"), _dictionary(js, "es")
    assert english == spanish
    used = set(re.findall(r'data-i18n(?:-placeholder)?="(\w+)"', html))
    used |= set(re.findall(r'\bt\("(\w+)"', js)) - {"cat_", "f_", "sev_", "w_"}  # prefixes
    used |= {f"sev_{s}" for s in SEVERITIES} | {f"cat_{c}" for c in ("common", "orphan", "healthy")}
    assert used <= english, sorted(used - english)
    for label in ("No enfermo", "Leve", "Aguda", "Crónica", "Terminal"):
        assert f'"{label}"' in js
    assert "sessionStorage" in js and "localStorage.setItem(TOKEN_KEY" not in js


# ------------------------------------------------------------------ metrics
pytestmark_metrics = pytest.mark.skipif(not metrics.AVAILABLE, reason="prometheus-client missing")


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytestmark_metrics
def test_metrics_report_latency_per_route_predictions_by_category_and_the_model(client):
    before = client.get("/metrics", headers=auth("admin")).text
    served = client.post(
        "/v1/predict",
        json={"symptoms": [FEVER], "body_temperature": 39.4, "heart_rate": 115},
        headers=auth(),
    ).json()
    assert client.post("/v1/predict", json={"x": 1}, headers=auth()).status_code == 422
    top = served["differential"][0]["category"]
    after = client.get("/metrics", headers=auth("admin"))
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert (
        _sample(text, "triage_predictions_total", top_category=top)
        - _sample(before, "triage_predictions_total", top_category=top)
    ) == 1
    assert (
        _sample(
            text, "triage_request_duration_seconds_count", path="/v1/predict", status_code="200"
        )
        >= 1
    )
    assert (
        _sample(
            text,
            "triage_request_duration_seconds_bucket",
            path="/v1/predict",
            status_code="422",
            le="+Inf",
        )
        >= 1
    )
    assert "/v1/predict?" not in text and served["prediction_id"] not in text
    assert _sample(text, "triage_model_info", version="2026-01-12-a") == 1
    assert _sample(text, "triage_model_loaded") == 1


@pytestmark_metrics
def test_metrics_count_reload_failures_and_labels(client, served_home, built_model):
    # the counters are the process's (one app per worker in production): count this test's
    before = client.get("/metrics", headers=auth("admin")).text
    write_deployment(served_home, built_model, "broken", sha256="0" * 64, point=False)
    point_to(served_home, "broken")
    assert client.get("/ready").json()["model_version"] == "2026-01-12-a"  # old model kept
    served = client.post("/v1/predict", json={}, headers=auth()).json()
    client.post(
        "/v1/labels",
        headers=auth(),
        json={
            "prediction_id": served["prediction_id"],
            "diagnosis": "ORPHA:558",
            "severity": "chronic",
        },
    )
    text = client.get("/metrics", headers=auth("admin")).text
    assert (
        _sample(text, "triage_model_reload_failures_total")
        - _sample(before, "triage_model_reload_failures_total")
        == 1
    )
    assert _sample(text, "triage_labels_total", category="orphan") >= 1


def test_page_says_what_the_common_catalogue_covers_in_both_languages(client):
    from diagnosis.common_conditions import COMMON_CONDITIONS

    page = client.get("/?lang=es").text
    assert 'data-count="20"' in page and len(COMMON_CONDITIONS) == 20
    for condition in COMMON_CONDITIONS:
        assert f"<code>{condition.code}</code>" in page
        assert f'data-name-es="{condition.name_es}"' in page
    assert "{{" not in page  # every placeholder filled


def test_api_docs_load_their_assets_from_the_app_itself(client):
    for path in ("/schema", "/schema/redoc", "/schema/swagger"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert assets and all(a.startswith("/static/vendor/") for a in assets), (path, assets)
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    assert "fonts.googleapis" not in client.get("/schema").text
    assert client.get("/schema/openapi.json").json()["info"]["title"] == "triage"
