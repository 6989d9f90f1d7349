"""What an auditor sees, in headless Chromium, on a home the pipeline produced: the Dagster asset
page of ``deployed_model`` with its links to MLflow, an MLflow run's evaluation figures, and the
weekly screening table. Real ``dagster-webserver`` and ``mlflow server`` processes on free loopback
ports; screenshots go to ``TRIAGE_SCREENSHOTS`` (default /tmp).

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package;
without them the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("TRIAGE_SCREENSHOTS", "/tmp"))
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "chromium and chromium-driver are not installed "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, f"{process.args[0]} exited"
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


@pytest.fixture
def ui_home(deployed_home, deployed_weeks, tmp_path) -> tuple[Path, str]:
    """A copy of the pipeline's home with one week screened."""
    import dagster as dg

    from orchestration.definitions import defs

    home = tmp_path / "home"
    shutil.copytree(deployed_home, home, ignore=shutil.ignore_patterns("predictions", "labels"))
    week = deployed_weeks[1]
    mp = pytest.MonkeyPatch()
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    key = dg.AssetKey("orphan_screening")
    try:
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            result = defs.resolve_implicit_job_def_def_for_assets([key]).execute_in_process(
                instance=instance, asset_selection=[key], partition_key=week
            )
            assert result.success
    finally:
        mp.undo()
    return home, week


@pytest.fixture
def servers(ui_home):
    """dagster-webserver and mlflow server over the copied home; stopped by process group."""
    home, _ = ui_home
    env = {
        **os.environ,
        "TRIAGE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
    }
    dagster_port, mlflow_port = _free_port(), _free_port()
    started = [
        subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port)]
            + ["-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
            + ["--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"]
            + ["--workers", "1"],
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
    ]
    try:
        dagster_ui = f"http://127.0.0.1:{dagster_port}"
        mlflow_ui = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{dagster_ui}/server_info", started[0], 180)
        _wait_http(f"{mlflow_ui}/health", started[1], 120)
        yield dagster_ui, mlflow_ui
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def browser(chromium):
    return chromium("--window-size=1400,1600", "--lang=en-US", page_load_timeout=90)


def _wait_text(driver, text: str, seconds: float = 120) -> None:
    WebDriverWait(driver, seconds, poll_frequency=0.5).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text
    )


def test_an_auditor_sees_the_links_the_figures_and_the_screening_table(
    ui_home, servers, browser
) -> None:
    from diagnosis import artifacts

    home, week = ui_home
    dagster_ui, mlflow_ui = servers
    deployments = home / "deployments"
    manifest = artifacts.read_deployed_manifest(
        deployments, artifacts.read_current(deployments).version
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # Dagster: the deployed model's metadata links to its MLflow run and registered version
    browser.get(f"{dagster_ui}/assets/deployed_model")
    _wait_text(browser, "mlflow_registered_model")
    links = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
    assert any(f"/runs/{manifest.mlflow_run_id}" in href for href in links), links
    assert any(
        f"/models/{manifest.mlflow_model_name}/versions/{manifest.mlflow_model_version}" in href
        for href in links
    )
    assert "join the" not in browser.find_element(By.TAG_NAME, "body").text.lower()
    browser.save_screenshot(str(SCREENSHOTS / "audit-dagster-deployed-model-links.png"))

    # Dagster: the whole asset graph by group, then the training group's assets, as a data team
    # first sees them
    browser.get(f"{dagster_ui}/asset-groups")
    _wait_text(browser, "Global asset lineage")
    for group in ("ingestion", "validation", "knowledge", "training", "evaluation", "deployment"):
        _wait_text(browser, group, seconds=60)
    browser.save_screenshot(str(SCREENSHOTS / "dagster-asset-graph.png"))
    browser.get(f"{dagster_ui}/locations/triage/asset-groups/training")
    for asset in ("training_table", "model_selection", "diagnosis_model", "model_evaluation"):
        _wait_text(browser, asset, seconds=60)
    browser.save_screenshot(str(SCREENSHOTS / "dagster-training-group.png"))

    # Dagster: the week's screening table for clinician review
    browser.get(f"{dagster_ui}/assets/orphan_screening?partition={week}")
    _wait_text(browser, "patients_for_review")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "listed_without_orphan_diagnosis" in body
    browser.save_screenshot(str(SCREENSHOTS / "audit-dagster-screening-table.png"))

    # MLflow: the training run's evaluation figures
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_run(manifest.mlflow_run_id).info.experiment_id
    browser.get(
        f"{mlflow_ui}/#/experiments/{experiment}/runs/{manifest.mlflow_run_id}"
        "/artifactPath/evaluation/confusion_matrix.png"
    )
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: any(
            "confusion_matrix.png" in (img.get_attribute("src") or "")
            or (img.get_attribute("naturalWidth") or "0") not in {"0", ""}
            for img in d.find_elements(By.TAG_NAME, "img")
        )
    )
    _wait_text(browser, "reliability_records.png")
    browser.save_screenshot(str(SCREENSHOTS / "audit-mlflow-evaluation-figures.png"))
