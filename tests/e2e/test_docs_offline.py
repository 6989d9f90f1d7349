"""The API documentation pages work without internet: a real ``triage serve`` process, headless
Chromium with every other host unresolvable and every https request blocked, ``/schema`` (Redoc)
and ``/schema/swagger`` (Swagger UI with its Authorize button) render from the app's own assets.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package;
without them the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TRIAGE = Path(sys.executable).parent / "triage"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "chromium and chromium-driver are not installed "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    """``triage serve`` over an empty TRIAGE_HOME (the docs need no model), stopped by its PID."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TRIAGE_HOME": str(tmp_path / "home"),
        "TRIAGE_API_KEYS": "admin:docs-token",
    }
    process = subprocess.Popen(
        [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the API did not answer within 60 s"
                time.sleep(0.3)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@pytest.fixture
def offline_browser(chromium):
    """Chromium that can reach 127.0.0.1 only: every other host name fails to resolve, every
    https URL is blocked, and the performance log records every request the page makes."""
    driver = chromium(
        "--window-size=1280,1200",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        capabilities={"goog:loggingPrefs": {"performance": "ALL"}},
    )
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*"]})
    return driver


def _requested_urls(driver) -> set[str]:
    """Every http(s) URL the browser asked for since the last call."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http://", "https://")):
                urls.add(url)
    return urls


def test_the_api_docs_render_with_no_internet(server, offline_browser):
    driver, wait = offline_browser, WebDriverWait(offline_browser, 30)
    origin = urlsplit(server).netloc

    # the blocking works: a page of another host does not load
    with pytest.raises(WebDriverException):
        driver.get("http://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css")
    _requested_urls(driver)  # forget the probe

    driver.get(f"{server}/schema")  # Redoc
    title = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "h1")))
    assert title.text.startswith("triage")
    assert driver.find_element(By.CSS_SELECTOR, "script[src]").get_attribute("src") == (
        f"{server}/static/vendor/redoc-2.5.4/redoc.standalone.js"
    )
    operations = driver.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")
    assert len(operations) >= 5, "Redoc listed no operations"
    assert "predictDifferential" in driver.page_source

    driver.get(f"{server}/schema/swagger")  # Swagger UI and its Authorize button
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title")))
    authorize = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize")))
    authorize.click()
    dialog = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")))
    assert "BearerToken" in dialog.text
    assert driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-operation-id, .opblock")

    # every script, stylesheet and font came from the app; the one request to another host is
    # Redoc's "API docs by Redocly" logo, an <img> that hides itself when it cannot load
    others = {url for url in _requested_urls(driver) if urlsplit(url).netloc != origin}
    assert others <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, others
