"""The web form in headless Chromium against a real `triage serve` process on a deployed TRIAGE_HOME.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (CI installs them, see .ci/run) and
the ``selenium`` Python package; without them the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLINICIAN, ADMIN = "web-e2e-clinician-token", "web-e2e-admin-token"
SCREENSHOTS = Path(os.environ.get("TRIAGE_SCREENSHOTS", "/tmp"))
SCREENSHOT = SCREENSHOTS / "triage_web_form.png"
SCREENSHOT_ABSENT = SCREENSHOTS / "form-absent.png"  # a chip marked absent
SCREENSHOT_WARNINGS_ES = SCREENSHOTS / "form-warnings-es.png"  # a warning, in Spanish
FEW_FINDINGS_ES = (
    "pocos hallazgos y ninguna constante vital medida: el diferencial es amplio y sus "
    "probabilidades inciertas; añada constantes vitales u otros hallazgos"
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "chromium and chromium-driver are not installed "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SEVERITY_ES = {
    "not_ill": "No enfermo",
    "mild": "Leve",
    "acute": "Aguda",
    "chronic": "Crónica",
    "terminal": "Terminal",
}
SEVERITY_EN = {
    "not_ill": "Not ill",
    "mild": "Mild",
    "acute": "Acute",
    "chronic": "Chronic",
    "terminal": "Terminal",
}


FEVER, COUGH = "HP:0001945", "HP:0012735"
# fever entered, cough entered then marked absent (ruled out) on its chip (API v1.3)
PATIENT = {
    "age": 41,
    "sex": "female",
    "heart_rate": 116,
    "body_temperature": 39.4,
    "systolic_bp": 112,
    "diastolic_bp": 70,
    "symptoms": [FEVER],
    "absent_symptoms": [COUGH],
}

# records the JSON bodies the page sends (WebDriver scripts are not subject to the page's CSP)
RECORD_REQUESTS = """
window.__sent = [];
var fetch0 = window.fetch;
window.fetch = function (url, options) {
  window.__sent.push({url: String(url), method: (options && options.method) || "GET",
                      body: options && options.body ? JSON.parse(options.body) : null});
  return fetch0.apply(this, arguments);
};
"""


def _points(effect: float) -> str:
    """An effect as the page writes it: signed percentage points, 1 decimal below 10."""
    points = effect * 100
    return f"{points:+.{0 if abs(points) >= 10 else 1}f}"


def _percent(shown: str) -> float:
    """A percentage as the page writes it ("12.3%", "12,3 %", "< 0.1%", "> 99.9%"): its number,
    nudged inside the bound for the "<" and ">" forms."""
    text = shown.replace("\u00a0", " ").replace(" ", "").replace(",", ".").rstrip("%")
    if text.startswith("<"):
        return float(text[1:]) / 2
    if text.startswith(">"):
        return (float(text[1:]) + 100) / 2
    return float(text)


def _same_value(shown: str, value: str | float) -> bool:
    return shown == value if isinstance(value, str) else float(shown) == value


def _post(url: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


@pytest.fixture
def server(deployed_home, start_api):
    return start_api(deployed_home, f"clinician:{CLINICIAN},admin:{ADMIN}")


@pytest.fixture
def browser(chromium):
    return chromium("--window-size=1280,1500", "--lang=en-US")


def _type(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def _pick_suggestion(driver, wait, list_id: str, contains: str) -> None:
    option = wait.until(
        EC.element_to_be_clickable(
            (By.XPATH, f'//ul[@id="{list_id}"]/li[@role="option"][contains(., "{contains}")]')
        )
    )
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

    # a chip toggles between present and absent, and shows which it is
    cough = browser.find_element(By.CSS_SELECTOR, f'#symptom-chips li[data-hpo="{COUGH}"]')
    toggle = cough.find_element(By.CSS_SELECTOR, ".chip-toggle")
    assert (cough.get_attribute("data-state"), toggle.text.lower()) == ("present", "present")
    cough_toggle = f'#symptom-chips li[data-hpo="{COUGH}"] .chip-toggle'
    toggle.click()  # the chips are drawn again: find the toggle anew
    browser.find_element(By.CSS_SELECTOR, cough_toggle).click()  # back to present
    cough = browser.find_element(By.CSS_SELECTOR, f'#symptom-chips li[data-hpo="{COUGH}"]')
    assert cough.get_attribute("data-state") == "present"
    browser.find_element(By.CSS_SELECTOR, cough_toggle).click()
    chips = browser.find_elements(By.CSS_SELECTOR, "#symptom-chips li.chip")
    assert [(c.get_attribute("data-hpo"), c.get_attribute("data-state")) for c in chips] == [
        (FEVER, "present"),
        (COUGH, "absent"),
    ]
    cough = chips[1]
    assert "chip-absent" in cough.get_attribute("class").split()
    assert cough.find_element(By.CSS_SELECTOR, ".chip-toggle").text.lower() == "absent"
    assert (
        cough.find_element(By.CSS_SELECTOR, ".chip-toggle").get_attribute("aria-pressed") == "true"
    )
    assert "line-through" in cough.find_element(
        By.CSS_SELECTOR, ".chip-name"
    ).value_of_css_property("text-decoration-line")
    browser.execute_script(
        "document.getElementById('symptom-chips').scrollIntoView({block: 'center'})"
    )
    browser.save_screenshot(str(SCREENSHOT_ABSENT))

    browser.execute_script(RECORD_REQUESTS)
    browser.find_element(By.ID, "triage-submit").click()

    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    (sent,) = [
        r
        for r in browser.execute_script("return window.__sent")
        if r["url"].startswith("/v1/predict")
    ]
    assert sent["method"] == "POST"
    assert sent["body"] == PATIENT
    assert sent["body"]["symptoms"] == [FEVER] and sent["body"]["absent_symptoms"] == [COUGH]
    rows = browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr.dx-row")
    # the model is deterministic: the page must show what the API answers for the same patient
    expected = _post(f"{server}/v1/predict?top_k=10", PATIENT, CLINICIAN)
    assert [r.get_attribute("data-code") for r in rows] == [
        d["code"] for d in expected["differential"]
    ]
    assert len(rows) == len(expected["differential"]) > 1
    percents = [_percent(r.find_element(By.CSS_SELECTOR, ".pct").text) for r in rows]
    assert percents == sorted(percents, reverse=True)
    assert all(0 < p < 100 for p in percents)  # "< 0.1%" and "> 99.9%": never 0 or certainty
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

    absent_items = [
        item
        for d in explained
        for side in ("supports", "against")
        for item in d["explanation"][side]
        if item["field"] == "absent_symptoms"
    ]
    for item in absent_items:  # once the ranker reads excluded findings (issue 12)
        assert item["label"].endswith(" (absent)") and item["label_es"].endswith(" (descartado)")

    # Spanish: the same result, translated in place
    browser.find_element(By.ID, "lang-es").click()
    spanish_chip = browser.find_element(By.CSS_SELECTOR, f'#symptom-chips li[data-hpo="{COUGH}"]')
    assert spanish_chip.find_element(By.CSS_SELECTOR, ".chip-toggle").text.lower() == "descartado"
    for item in absent_items:
        shown = browser.find_element(
            By.CSS_SELECTOR,
            f'.why-item[data-field="absent_symptoms"][data-value="{item["value"]}"]',
        )
        assert shown.text.startswith(item["label_es"])
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
    assert (label["diagnosis"], label["severity"], label["labelled_by"]) == (
        "J18.9",
        "acute",
        "clinician",
    )
    assert label["model_version"] == card["version"]

    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_spanish_browser_gets_the_spanish_page_and_a_wrong_role_sees_a_clear_error(server, browser):
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Accept-Language": "es-ES,es;q=0.9"}}
    )
    browser.get(f"{server}/ui")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    assert browser.find_element(By.ID, "triage-title").text == "Nuevo triaje"
    browser.find_element(By.ID, "triage-submit").click()  # no token yet
    error = WebDriverWait(browser, 10).until(
        EC.visibility_of_element_located((By.ID, "triage-error"))
    )
    assert "token" in error.text.lower()


def test_absent_items_of_an_explanation_are_shown_with_their_labels(server, browser):
    """The page writes an excluded finding of an explanation with its label: "Cough (absent)",
    "Cough (descartado)", and words the release warning about an absent symptom by its code
    (API v1.5). The pipeline's model does not move on excluded findings yet, so the answer the
    page receives is the API's own with one such item added to the top entry's evidence against
    it, one such warning and one with a code the page does not know (shown as the API's English
    message); the rendering is what is tested here, the API side in
    tests/serving/test_absent_and_phenopacket.py and tests/serving/test_warning_codes.py."""
    wait = WebDriverWait(browser, 15)
    browser.get(f"{server}/?lang=en")
    browser.execute_script("sessionStorage.setItem('triage.token', arguments[0])", CLINICIAN)
    browser.execute_script("""
      var fetch0 = window.fetch;
      window.fetch = function (url, options) {
        return fetch0.apply(this, arguments).then(function (response) {
          if (String(url).indexOf("/v1/predict") !== 0) { return response; }
          return response.json().then(function (answer) {
            answer.differential[0].explanation.against.unshift({field: "absent_symptoms",
              value: "HP:0012735", label: "Cough (absent)", label_es: "Cough (descartado)",
              unit: null, effect: -0.123});
            [{code: "symptom_not_in_release", params: {what: "absent_symptom",
                term: "HP:9999999", release: "2025-01-16"},
              message: "absent symptom HP:9999999 is not in HPO release 2025-01-16; it was ignored"},
             {code: "some_future_code", params: {}, message: "a warning of a later API"}
            ].forEach(function (w) {
              answer.warnings.push(w.message);
              answer.warning_details.push(w);
            });
            return new Response(JSON.stringify(answer),
              {status: 200, headers: {"Content-Type": "application/json"}});
          });
        });
      };""")
    _type(browser, "symptom-input", "cough")
    _pick_suggestion(browser, wait, "symptom-suggestions", COUGH)
    browser.find_element(By.CSS_SELECTOR, "#symptom-chips .chip-toggle").click()
    browser.find_element(By.ID, "triage-submit").click()
    item = wait.until(
        EC.visibility_of_element_located(
            (By.CSS_SELECTOR, '.why-against .why-item[data-field="absent_symptoms"]')
        )
    )
    assert item.get_attribute("data-value") == COUGH
    assert item.text == "Cough (absent) (-12 pts)"
    browser.find_element(By.ID, "lang-es").click()
    item = browser.find_element(By.CSS_SELECTOR, '.why-item[data-field="absent_symptoms"]')
    assert item.text == "Cough (descartado) (-12 ptos)"
    warnings = {
        w.get_attribute("data-code"): w.text
        for w in browser.find_elements(By.CSS_SELECTOR, "#warnings li")
    }
    assert warnings["symptom_not_in_release"] == (
        "el síntoma descartado HP:9999999 no está en la versión 2025-01-16 de HPO; se ha ignorado"
    )
    assert warnings["some_future_code"] == "a warning of a later API"


def test_a_spanish_clinician_searches_in_spanish_reads_spanish_names_and_clears(server, browser):
    """Done-when of issue 15: "fiebre" and "tos" find Fever and Cough first, the differential
    shows the Spanish names the API gives (and marks English ones), a new result is announced,
    and Clear or an error leaves no earlier patient's result on screen. A warning and an error
    list are worded by their codes in Spanish, and again after each switch of language."""
    wait = WebDriverWait(browser, 15)
    browser.get(f"{server}/?lang=es")
    browser.execute_script("sessionStorage.setItem('triage.token', arguments[0])", CLINICIAN)
    browser.refresh()
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"

    for query, term, label_es in (("fiebre", FEVER, "Fiebre"), ("tos", COUGH, "Tos")):
        _type(browser, "symptom-input", query)
        first = wait.until(
            EC.visibility_of_element_located(
                (By.CSS_SELECTOR, '#symptom-suggestions li[role="option"]')
            )
        )
        assert first.find_element(By.CSS_SELECTOR, ".option-code").text == term, first.text
        assert first.find_element(By.CSS_SELECTOR, ".option-name").text == label_es
        first.click()
    chips = browser.find_elements(By.CSS_SELECTOR, "#symptom-chips li.chip")
    assert [c.find_element(By.CSS_SELECTOR, ".chip-name").text for c in chips] == ["Fiebre", "Tos"]
    for chip in chips:  # what reads the term is said on the chip
        assert chip.get_attribute("data-usage") in {"both", "classifier", "ranker", "none"}

    _type(browser, "age", "30")
    browser.find_element(By.ID, "triage-submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    expected = _post(
        f"{server}/v1/predict?top_k=10", {"age": 30, "symptoms": [FEVER, COUGH]}, CLINICIAN
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr.dx-row")
    assert [r.get_attribute("data-code") for r in rows] == [
        d["code"] for d in expected["differential"]
    ]
    spanish = [d for d in expected["differential"] if d["name_es"]]
    assert spanish, "no entry with a Spanish name in the differential"
    for row, entry in zip(rows, expected["differential"]):
        name = row.find_element(By.CSS_SELECTOR, ".name").text
        if entry["name_es"]:
            assert name == entry["name_es"]
        else:  # no Spanish source: the English name, marked, and the page says why
            assert name == f"{entry['name']} (en)"
            assert browser.find_element(By.ID, "no-spanish").is_displayed()
    announced = browser.find_element(By.ID, "result-announce").get_attribute("textContent")
    assert announced.startswith("Diferencial listo: ")
    assert browser.execute_script("return document.activeElement.id") == "result-title"
    assert "100,0" not in browser.find_element(By.ID, "result").text

    # Clear: the form and the result are gone
    browser.find_element(By.ID, "triage-reset").click()
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#symptom-chips li") == []

    # a new submission that fails shows the error and no earlier result
    _type(browser, "symptom-input", "fiebre")
    wait.until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, '#symptom-suggestions li[role="option"]'))
    ).click()
    browser.find_element(By.ID, "triage-submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))

    # one finding, no vital sign: the API's warning is worded by its code (API v1.5), in Spanish,
    # in English after a switch, and in Spanish again after switching back
    (expected,) = _post(f"{server}/v1/predict", {"symptoms": [FEVER]}, CLINICIAN)["warning_details"]
    assert expected["code"] == "few_findings"

    def warnings_shown() -> list[tuple[str, str]]:
        """The warning box's heading, then each warning's code and text: all it says."""
        box = browser.find_element(By.ID, "warnings-box")
        assert box.is_displayed()
        items = box.find_elements(By.CSS_SELECTOR, "#warnings li")
        heading = box.find_element(By.TAG_NAME, "h3").get_attribute("textContent")
        return [("", heading)] + [(item.get_attribute("data-code"), item.text) for item in items]

    spanish = [("", "Avisos"), ("few_findings", FEW_FINDINGS_ES)]
    assert warnings_shown() == spanish  # no English left
    browser.find_element(By.ID, "lang-en").click()
    assert warnings_shown() == [("", "Warnings"), ("few_findings", expected["message"])]
    browser.find_element(By.ID, "lang-es").click()
    assert warnings_shown() == spanish
    box = browser.find_element(By.ID, "warnings-box")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    browser.save_screenshot(str(SCREENSHOT_WARNINGS_ES))

    _type(browser, "age", "500")
    browser.find_element(By.ID, "triage-submit").click()
    error = wait.until(EC.visibility_of_element_located((By.ID, "triage-error")))
    assert "Edad: fuera del intervalo permitido" in error.text  # translated by its code
    assert "outside" not in error.text
    browser.find_element(By.ID, "lang-en").click()  # an error shown is worded again too
    assert "Age: outside the allowed range" in error.text and "fuera" not in error.text
    browser.find_element(By.ID, "lang-es").click()
    assert "Edad: fuera del intervalo permitido" in error.text and "outside" not in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#differential tbody tr") == []
