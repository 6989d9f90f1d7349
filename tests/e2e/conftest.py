"""Shared by the end-to-end suites: the real API process on a free loopback port, and headless
Chromium for the browser tests."""

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

TRIAGE = Path(sys.executable).parent / "triage"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# every browser test: headless, no first-run or background traffic, a throwaway profile
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def chromium(tmp_path):
    """``start(*flags, page_load_timeout=30, capabilities=None) -> driver``: headless Chromium
    through chromedriver with :data:`CHROMIUM_FLAGS` plus the test's own flags and a profile under
    ``tmp_path``; every driver started is quit after the test and its profile removed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path / "chromium-profile"
    drivers = []

    def start(*flags: str, page_load_timeout: float = 30, capabilities: dict | None = None):
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        for name, value in (capabilities or {}).items():
            options.set_capability(name, value)
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        drivers.append(driver)
        driver.set_page_load_timeout(page_load_timeout)
        return driver

    yield start
    for driver in drivers:
        driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def start_api():
    """``start(home, api_keys, **env) -> base URL``: runs ``triage serve`` over ``home``, waits
    until /ready answers 200, and stops each process by its own process group after the test."""
    started: list[subprocess.Popen] = []

    def start(home: Path, api_keys: str, **extra_env: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_API_KEYS": api_keys, **extra_env}
        process = subprocess.Popen(
            [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return base
            except OSError:  # not listening yet, or 503 while the model loads
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        pytest.fail("the API did not become ready within 60 s")

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
