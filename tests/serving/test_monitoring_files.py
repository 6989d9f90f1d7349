"""The shipped Prometheus scrape config, alert rules and Grafana dashboard refer to metrics the API
really exports, and the scrape authenticates with a bearer token kept out of the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from serving import metrics

from .conftest import FEVER, auth

DEPLOY = Path(__file__).resolve().parents[2] / "orchestration" / "deploy"
METRIC = re.compile(r"\btriage_[a-z_]+\b")

pytestmark = pytest.mark.skipif(not metrics.AVAILABLE, reason="prometheus-client missing")


def _exported(client) -> set[str]:
    client.post("/v1/predict", json={"symptoms": [FEVER]}, headers=auth())
    client.post("/v1/predict", json={"age": 500}, headers=auth())  # a 422 too
    text = client.get("/metrics", headers=auth("admin")).text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    for line in text.splitlines():  # declared families with no sample yet (no error so far)
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names |= {name, f"{name}_total"} if kind == "counter" else {name}
    return names


def test_the_scrape_config_uses_a_bearer_token_file_and_loads_the_rules():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert "credentials_file" in job["authorization"] and "credentials" not in job["authorization"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    mounts = " ".join(compose["prometheus"]["volumes"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml" in mounts
    assert "./alerts.yml:/etc/prometheus/alerts.yml" in mounts
    assert job["authorization"]["credentials_file"] in compose["prometheus"]["command"][0]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in " ".join(
        compose["grafana"]["volumes"]
    )


def test_alerts_and_dashboard_use_only_metrics_the_api_exports(client):
    exported = _exported(client)
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "triage-api.json").read_text())
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert used and used - exported == set(), sorted(used - exported)
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("latency", "errors", "predictions by category", "model version", "reload"):
        assert topic in titles
