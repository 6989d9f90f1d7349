"""The web form in headless Chromium against a real `triage serve` process on a deployed TRIAGE_HOME.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (CI installs them, see .ci/run) and
the ``selenium`` Python package; without them the test is skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLINICIAN, ADMIN = "web-e2e-clinician-token", "web-e2e-admin-token"
SCREENSHOT = Path("/tmp/triage_web_form.png")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("chromium and chromium-driver are not installed "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SEVERITY_ES = {"not_ill": "No enfermo", "mild": "Leve", "acute": "Aguda", "chronic": "Crónica",
               "terminal": "Terminal"}
SEVERITY_EN = {"not_ill": "Not ill", "mild": "Mild", "acute": "Acute", "chronic": "Chronic",
               "terminal": "Terminal"}


PATIENT = {"age": 41, "sex": "female", "heart_rate": 116, "body_temperature": 39.4,
           "systolic_bp": 112, "diastolic_bp": 70, "symptoms": ["HP:0001945", "HP:0012735"]}


def _points(effect: float) -> str:
    """An effect as the page writes it: signed percentage points, 1 decimal below 10."""
    points = effect * 100
    return f"{points:+.{0 if abs(points) >= 10 else 1}f}"


def _same_value(shown: str, value: str | float) -> bool:
    return shown == value if isinstance(value, str) else float(shown) == value


def _post(url: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


@pytest.fixture
def server(deployed_home, start_api):
    return start_api(deployed_home, f"clinician:{CLINICIAN},admin:{ADMIN}")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1500", "--lang=en-US",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _type(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def _pick_suggestion(driver, wait, list_id: str, contains: str) -> None:
    option = wait.until(EC.element_to_be_clickable(
        (By.XPATH, f'//ul[@id="{list_id}"]/li[@role="option"][contains(., "{contains}")]')))
    option.click()


def test_triage_language_switch_and_validation_in_a_real_browser(server, browser, deployed_home):
    status, card = _get(f"{server}/v1/model", ADMIN)
    assert status == 200
    wait = WebDriverWait(browser, 15)
    browser.get(f"{server}/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"

    # the token goes to sessionStorage, never into the page
    _type(browser, "token", CLINICIAN)
    browser.find_element(By.ID, "token-save").click()
    assert browser.execute_script("return sessionStorage.getItem('triage.token')") == CLINICIAN
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""

    # triage: vitals, symptom autocomplete, submit
    for field in ("age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp"):
        _type(browser, field, str(PATIENT[field]))
    Select(browser.find_element(By.ID, "sex")).select_by_value(PATIENT["sex"])
    _type(browser, "symptom-input", "fever")
    _pick_suggestion(browser, wait, "symptom-suggestions", "HP:0001945")
    chips = browser.find_elements(By.CSS_SELECTOR, "#symptom-chips li.chip")
    assert [c.get_attribute("data-hpo") for c in chips] == ["HP:0001945"]
    _type(browser, "symptom-input", "cough")
    _pick_suggestion(browser, wait, "symptom-suggestions", "HP:0012735")
    browser.find_element(By.ID, "triage-submit").click()

    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr.dx-row")
    # the model is deterministic: the page must show what the API answers for the same patient
    expected = _post(f"{server}/v1/predict?top_k=10", PATIENT, CLINICIAN)
    assert [r.get_attribute("data-code") for r in rows] == [
        d["code"] for d in expected["differential"]]
    assert len(rows) == len(expected["differential"]) > 1
    percents = [float(r.find_element(By.CSS_SELECTOR, ".pct").text.rstrip("%")) for r in rows]
    assert percents == sorted(percents, reverse=True)
    tags = {r.find_element(By.CSS_SELECTOR, ".tag").text for r in rows}
    assert tags <= {"Common", "Orphan", "Healthy"} and tags
    severity = browser.find_element(By.ID, "severity-label")
    severity_code = severity.get_attribute("data-severity")
    assert severity_code == expected["severity"]["label"]
    assert severity.text == SEVERITY_EN[severity_code]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#severity-bars li")) == 5
    prediction_id = browser.find_element(By.ID, "result-prediction-id").text
    assert len(prediction_id) == 32

    # explanations (API v1.2): under each of the first three diagnoses, the inputs the API reports
    explained = [d for d in expected["differential"] if "explanation" in d]
    assert len(explained) == 3 and explained[0]["explanation"]["supports"]
    blocks = browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr.dx-explain")
    assert [b.get_attribute("data-code") for b in blocks] == [d["code"] for d in explained]
    for block, entry in zip(blocks, explained):
        for side in ("supports", "against"):
            items = entry["explanation"][side]
            shown = block.find_elements(By.CSS_SELECTOR, f".why-{side} .why-item")
            assert len(shown) == len(items)
            for span, item in zip(shown, items):
                assert span.get_attribute("data-field") == item["field"]
                assert _same_value(span.get_attribute("data-value"), item["value"])
                assert span.text.startswith(item["label"])
                assert span.text.endswith(f"({_points(item['effect'])} pts)")
    top_support = explained[0]["explanation"]["supports"][0]
    line = blocks[0].find_element(By.CSS_SELECTOR, ".why-supports").text
    assert line.startswith("Supports: ") and top_support["label"] in line
    assert browser.find_element(By.ID, "why-hint").is_displayed()

    # Spanish: the same result, translated in place
    browser.find_element(By.ID, "lang-es").click()
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    assert browser.find_element(By.ID, "severity-label").text == SEVERITY_ES[severity_code]
    assert browser.find_element(By.ID, "triage-submit").text == "Obtener diferencial"
    tags_es = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#differential .tag")}
    assert tags_es <= {"Común", "Huérfana", "Sano"} and tags_es
    line_es = browser.find_element(By.CSS_SELECTOR, "tr.dx-explain .why-supports")
    assert line_es.text.startswith("A favor: ")
    first_es = line_es.find_element(By.CSS_SELECTOR, ".why-item").text
    assert first_es.startswith(top_support["label_es"])
    assert first_es.endswith(f"({_points(top_support['effect']).replace('.', ',')} ptos)")
    for against in browser.find_elements(By.CSS_SELECTOR, "tr.dx-explain .why-against"):
        assert against.text.startswith("En contra: ")

    # validation of the prediction shown, with a Spanish disease name and severity
    _type(browser, "label-prediction-id", prediction_id)
    _type(browser, "label-diagnosis", "neumonia")
    _pick_suggestion(browser, wait, "diagnosis-suggestions", "J18.9")
    assert browser.find_element(By.ID, "label-diagnosis").get_attribute("value") == "J18.9"
    severity_select = Select(browser.find_element(By.ID, "label-severity"))
    severity_select.select_by_visible_text("Aguda")
    browser.find_element(By.ID, "label-submit").click()
    confirmation = wait.until(EC.visibility_of_element_located((By.ID, "label-status")))
    assert prediction_id in confirmation.text and "guardado" in confirmation.text
    assert "Aguda" in confirmation.text

    label = json.loads((deployed_home / "labels" / f"{prediction_id}.json").read_text())
    assert (label["diagnosis"], label["severity"], label["labelled_by"]) == ("J18.9", "acute",
                                                                             "clinician")
    assert label["model_version"] == card["version"]

    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_spanish_browser_gets_the_spanish_page_and_a_wrong_role_sees_a_clear_error(
        server, browser):
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                            {"headers": {"Accept-Language": "es-ES,es;q=0.9"}})
    browser.get(f"{server}/ui")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    assert browser.find_element(By.ID, "triage-title").text == "Nuevo triaje"
    browser.find_element(By.ID, "triage-submit").click()  # no token yet
    error = WebDriverWait(browser, 10).until(
        EC.visibility_of_element_located((By.ID, "triage-error")))
    assert "token" in error.text.lower()
