""".github/workflows/ci.yml runs the repository's test command with the services its tests use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))


def _job() -> dict:
    (job,) = _workflow()["jobs"].values()
    return job


def _runs(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_it_runs_on_every_push_and_pull_request():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)


def test_it_runs_the_same_test_command_as_ci_run_on_ubuntu_with_python_311():
    job = _job()
    assert job["runs-on"].startswith("ubuntu-")
    setups = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert [s["with"]["python-version"] for s in setups] == ["3.11"]
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci_run[-2:] == ["make test", "make test-reliability"]
    assert "make test" in _runs(job) and "make test-reliability" in _runs(job)


def test_it_provides_postgres_15_redis_and_rabbitmq_where_the_tests_look():
    job = _job()
    images = {name: service["image"] for name, service in job["services"].items()}
    assert re.fullmatch(r"postgres:15(\.\d+)*", images["postgres"])
    assert images["redis"].startswith("redis:") and images["rabbitmq"].startswith("rabbitmq:")
    for name, port in (("postgres", 5432), ("redis", 6379), ("rabbitmq", 5672)):
        assert f"{port}:{port}" in [str(p) for p in job["services"][name]["ports"]]
    # the production-path test connects to 127.0.0.1:5432 as TRIAGE_TEST_PGUSER without a password
    postgres_env = job["services"]["postgres"]["env"]
    assert job["env"]["TRIAGE_TEST_PGUSER"] == postgres_env["POSTGRES_USER"]
    assert postgres_env["POSTGRES_HOST_AUTH_METHOD"] == "trust"


def test_it_puts_chromium_and_chromedriver_where_the_web_form_test_looks():
    web_test = (ROOT / "tests" / "e2e" / "test_web_form.py").read_text(encoding="utf-8")
    wanted = re.findall(r'Path\("(/usr/bin/[^"]+)"\)', web_test)
    assert wanted, "tests/e2e/test_web_form.py no longer names its browser paths"
    runs = "\n".join(_runs(_job()))
    for path in wanted:
        assert re.search(rf"ln -sf .+ {re.escape(path)}$", runs, re.M), path


def test_it_caches_the_makefiles_uv_and_uv_download_cache():
    caches = [s for s in _job()["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert caches
    paths = {p.strip() for s in caches for p in s["with"]["path"].splitlines() if p.strip()}
    assert {".uv", "~/.cache/uv"} <= paths
    assert all("uv.lock" in s["with"]["key"] and "Makefile" in s["with"]["key"] for s in caches)
