/* Triage web form: vanilla JS, no build step. Talks to the JSON API of the same origin.
   The access token lives in sessionStorage ("triage.token"): this tab only, cleared when it closes. */
(function () {
  "use strict";

  var TOKEN_KEY = "triage.token";
  var LANG_KEY = "triage.lang";
  var SEVERITIES = ["not_ill", "mild", "acute", "chronic", "terminal"];

  var I18N = {
    en: {
      title: "Triage", subtitle: "Differential diagnosis support",
      token: "Access token", tokenSave: "Save", tokenClear: "Forget",
      tokenSaved: "Token kept for this tab", tokenMissing: "No token yet",
      notice: "Decision support only: the ranking does not replace clinical judgement.",
      triageTitle: "New triage", age: "Age (years)", sex: "Sex", sexBlank: "—",
      female: "Female", male: "Male", other: "Other", unknown: "Unknown",
      heartRate: "Heart rate (/min)", temperature: "Temperature (°C)",
      systolic: "Systolic BP (mmHg)", diastolic: "Diastolic BP (mmHg)",
      symptoms: "Symptoms (HPO)", symptomPlaceholder: "Type a symptom, e.g. fever",
      symptomHint: "Search in English or Spanish (official HPO labels); accents, case and small typos do not matter. Click \u201cpresent\u201d on a symptom to mark it absent (ruled out).",
      corrected: "No match for \u201c{query}\u201d; showing \u201c{corrected}\u201d",
      present: "present", absent: "absent",
      markAbsent: "Mark {name} as absent (ruled out)", markPresent: "Mark {name} as present",
      usedBoth: "classifier and ranker", usedRanker: "rare-disease ranker only",
      usedNone: "not used by the model", remove: "Remove", noMatches: "No matches",
      submitTriage: "Get differential", reset: "Clear", working: "Working…",
      resultTitle: "Differential diagnosis", predictionId: "Prediction id",
      usePredictionId: "Use for validation", modelVersion: "Model",
      orphanProbability: "Orphan disease probability", code: "Code", diagnosis: "Diagnosis",
      category: "Type", probability: "Probability", severity: "Severity", warnings: "Warnings",
      cat_common: "Common", cat_orphan: "Orphan", cat_healthy: "Healthy",
      catalogueHint: "Common: the {n} conditions of the curated catalogue listed below; a common disease outside it is never suggested. Orphan: the rare diseases (ORPHA, OMIM) of the HPO annotations.",
      catalogueList: "Common conditions covered",
      noSpanish: "",
      resultReady: "Differential ready: {name}, {pct}.",
      sev_not_ill: "Not ill", sev_mild: "Mild", sev_acute: "Acute", sev_chronic: "Chronic",
      sev_terminal: "Terminal",
      labelTitle: "Confirm a diagnosis",
      labelHint: "Once the diagnosis is confirmed, record it against the prediction id shown with the differential.",
      confirmedDiagnosis: "Confirmed diagnosis (code)",
      diagnosisPlaceholder: "Name or code, e.g. pneumonia, J18.9", choose: "Choose…",
      submitLabel: "Save confirmed diagnosis",
      labelSaved: "Confirmed diagnosis {dx} ({sev}) saved for prediction {id}.",
      labelReplaced: "Confirmed diagnosis {dx} ({sev}) saved for prediction {id}; it replaces the earlier one.",
      err401: "The token is missing or was not accepted. Enter your access token above.",
      err403: "Your role is not allowed to do this.",
      err404: "No prediction with this id was found.",
      err422: "Please correct the following:", err503: "The service is not ready yet. Try again shortly.",
      errOther: "Unexpected error ({status}).", errNetwork: "The server could not be reached.",
      warn_symptom_not_used: "symptom {term} is not used by this model",
      warn_symptom_not_in_release: "{what} {term} is not in HPO release {release}; it was ignored",
      warn_symptom_old_id: "{what} {term} is an old id of {current}; read as {current}",
      w_symptom: "symptom", w_absent_symptom: "absent symptom",
      warn_base_rates_only: "no vital signs or symptoms given: the answer reflects base rates only",
      warn_few_findings: "few findings and no vital signs measured: the differential is broad and its probabilities uncertain; add vital signs or further findings",
      footer: "The token is kept in this browser tab only (sessionStorage) and is sent only to this server.",
      f_age: "Age", f_sex: "Sex", f_heart_rate: "Heart rate", f_body_temperature: "Temperature",
      f_systolic_bp: "Systolic BP", f_diastolic_bp: "Diastolic BP", f_symptoms: "Symptoms",
      f_absent_symptoms: "Absent symptoms",
      f_prediction_id: "Prediction id", f_diagnosis: "Diagnosis", f_severity: "Severity",
      p_out_of_range: "outside the allowed range ({allowed})",
      p_out_of_range_fahrenheit: "outside the allowed range ({allowed}); looks like °F, enter °C",
      p_wrong_type: "not a valid value",
      p_diastolic_not_below_systolic: "must be below the systolic pressure",
      p_present_and_absent: "cannot be both present and absent",
      p_unknown_sex: "unknown sex", p_unknown_severity: "unknown severity",
      p_not_hpo_id: "not an HPO id", p_unknown_field: "unknown field",
      p_not_prediction_id: "not a prediction id (32 hexadecimal characters)",
      p_not_diagnosis_code: "not a diagnosis code (NONE, ICD-10, ORPHA:<n> or OMIM:<n>)",
      p_required: "required", p_too_many: "too many items",
      whySupports: "Supports", whyAgainst: "Against", pts: "pts",
      whyNone: "No single input changes this probability by 0.1 points or more.",
      whyHint: "Supports / Against: how many percentage points the diagnosis's probability loses or gains when the model scores the patient again without that input."
    },
    es: {
      title: "Triaje", subtitle: "Apoyo al diagnóstico diferencial",
      token: "Token de acceso", tokenSave: "Guardar", tokenClear: "Olvidar",
      tokenSaved: "Token guardado en esta pestaña", tokenMissing: "Sin token",
      notice: "Solo apoyo a la decisión: la clasificación no sustituye el juicio clínico.",
      triageTitle: "Nuevo triaje", age: "Edad (años)", sex: "Sexo", sexBlank: "—",
      female: "Mujer", male: "Hombre", other: "Otro", unknown: "Desconocido",
      heartRate: "Frecuencia cardíaca (/min)", temperature: "Temperatura (°C)",
      systolic: "Presión sistólica (mmHg)", diastolic: "Presión diastólica (mmHg)",
      symptoms: "Síntomas (HPO)", symptomPlaceholder: "Escriba un síntoma, p. ej. fiebre",
      symptomHint: "Busque en español o en inglés (etiquetas oficiales de la HPO); no importan tildes, mayúsculas ni pequeñas erratas. Pulse \u00abpresente\u00bb en un síntoma para marcarlo como descartado.",
      corrected: "Sin resultados para \u00ab{query}\u00bb; se muestra \u00ab{corrected}\u00bb",
      present: "presente", absent: "descartado",
      markAbsent: "Marcar {name} como descartado", markPresent: "Marcar {name} como presente",
      usedBoth: "clasificador y buscador de raras", usedRanker: "solo buscador de enfermedades raras",
      usedNone: "no lo usa el modelo", remove: "Quitar", noMatches: "Sin resultados",
      submitTriage: "Obtener diferencial", reset: "Limpiar", working: "Procesando…",
      resultTitle: "Diagnóstico diferencial", predictionId: "Id de predicción",
      usePredictionId: "Usar para validar", modelVersion: "Modelo",
      orphanProbability: "Probabilidad de enfermedad huérfana", code: "Código",
      diagnosis: "Diagnóstico", category: "Tipo", probability: "Probabilidad",
      severity: "Gravedad", warnings: "Avisos",
      cat_common: "Común", cat_orphan: "Huérfana", cat_healthy: "Sano",
      catalogueHint: "Común: las {n} enfermedades del catálogo curado que se listan abajo; nunca se propone una enfermedad común fuera de él. Huérfana: las enfermedades raras (ORPHA, OMIM) de las anotaciones de la HPO.",
      catalogueList: "Enfermedades comunes incluidas",
      noSpanish: "Las enfermedades raras (ORPHA, OMIM) no tienen nombre oficial en español: se muestran en inglés, marcadas con (en).",
      resultReady: "Diferencial listo: {name}, {pct}.",
      sev_not_ill: "No enfermo", sev_mild: "Leve", sev_acute: "Aguda", sev_chronic: "Crónica",
      sev_terminal: "Terminal",
      labelTitle: "Confirmar un diagnóstico",
      labelHint: "Cuando el diagnóstico esté confirmado, regístrelo con el id de predicción que aparece junto al diferencial.",
      confirmedDiagnosis: "Diagnóstico confirmado (código)",
      diagnosisPlaceholder: "Nombre o código, p. ej. neumonía, J18.9", choose: "Elija…",
      submitLabel: "Guardar diagnóstico confirmado",
      labelSaved: "Diagnóstico confirmado {dx} ({sev}) guardado para la predicción {id}.",
      labelReplaced: "Diagnóstico confirmado {dx} ({sev}) guardado para la predicción {id}; sustituye al anterior.",
      err401: "Falta el token o no es válido. Introduzca su token de acceso arriba.",
      err403: "Su rol no permite esta acción.",
      err404: "No se encontró ninguna predicción con este id.",
      err422: "Corrija lo siguiente:", err503: "El servicio aún no está listo. Inténtelo en breve.",
      errOther: "Error inesperado ({status}).", errNetwork: "No se pudo contactar con el servidor.",
      warn_symptom_not_used: "el síntoma {term} no lo usa este modelo",
      warn_symptom_not_in_release: "{what} {term} no está en la versión {release} de HPO; se ha ignorado",
      warn_symptom_old_id: "{what} {term} es un id antiguo de {current}; se lee como {current}",
      w_symptom: "el síntoma", w_absent_symptom: "el síntoma descartado",
      warn_base_rates_only: "no se indicaron constantes vitales ni síntomas: la respuesta solo refleja las frecuencias de base",
      warn_few_findings: "pocos hallazgos y ninguna constante vital medida: el diferencial es amplio y sus probabilidades inciertas; añada constantes vitales u otros hallazgos",
      footer: "El token se guarda solo en esta pestaña del navegador (sessionStorage) y solo se envía a este servidor.",
      f_age: "Edad", f_sex: "Sexo", f_heart_rate: "Frecuencia cardíaca",
      f_body_temperature: "Temperatura", f_systolic_bp: "Presión sistólica",
      f_diastolic_bp: "Presión diastólica", f_symptoms: "Síntomas",
      f_absent_symptoms: "Síntomas descartados",
      f_prediction_id: "Id de predicción", f_diagnosis: "Diagnóstico", f_severity: "Gravedad",
      p_out_of_range: "fuera del intervalo permitido ({allowed})",
      p_out_of_range_fahrenheit: "fuera del intervalo permitido ({allowed}); parece °F, indíquela en °C",
      p_wrong_type: "tipo de valor no válido",
      p_diastolic_not_below_systolic: "debe ser menor que la presión sistólica",
      p_present_and_absent: "no puede estar a la vez presente y descartado",
      p_unknown_sex: "sexo desconocido", p_unknown_severity: "gravedad desconocida",
      p_not_hpo_id: "no es un id HPO", p_unknown_field: "campo desconocido",
      p_not_prediction_id: "no es un id de predicción (32 caracteres hexadecimales)",
      p_not_diagnosis_code: "no es un código de diagnóstico (NONE, CIE-10, ORPHA:<n> u OMIM:<n>)",
      p_required: "obligatorio", p_too_many: "demasiados elementos",
      whySupports: "A favor", whyAgainst: "En contra", pts: "ptos",
      whyNone: "Ningún dato por sí solo cambia esta probabilidad en 0,1 puntos o más.",
      whyHint: "A favor / En contra: cuántos puntos porcentuales pierde o gana la probabilidad del diagnóstico cuando el modelo vuelve a evaluar al paciente sin ese dato."
    }
  };

  var lang = "en";
  var selected = [];        // [{id, name, absent}]: absent = an excluded finding (ruled out)
  var lastResult = null;    // last prediction answer, re-rendered on a language switch
  var lastLabel = null;
  var shownErrors = {};     // error box id -> the failed answer (or NETWORK), re-rendered likewise
  var NETWORK = "network";

  function $(id) { return document.getElementById(id); }
  function t(key, params) {
    var text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(params[name]));
    });
    return text;
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  /* a probability as a percentage with one decimal; below 0.05 % it would read "0.0 %" and
     from 99.95 % "100.0 %": those show as "< 0.1 %" and "> 99.9 %" (never certainty) */
  function percent(p) {
    var format = new Intl.NumberFormat(locale(),
      { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
    if (p < 0.0005) { return "< " + format.format(0.001); }
    if (p >= 0.9995) { return "> " + format.format(0.999); }
    return format.format(p);
  }

  function locale() { return lang === "es" ? "es-ES" : "en-GB"; }
  function decimal(value, digits) {
    return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(value);
  }
  /* an effect (probability difference) as signed percentage points: +38 pts, -0.4 pts */
  function points(effect) {
    var pts = effect * 100;
    var digits = Math.abs(pts) >= 10 ? 0 : 1;
    return new Intl.NumberFormat(locale(), { minimumFractionDigits: digits,
      maximumFractionDigits: digits, signDisplay: "always" }).format(pts) + " " + t("pts");
  }

  /* ---------------------------------------------------------------- language */
  function applyLanguage(next) {
    lang = I18N[next] ? next : "en";
    document.documentElement.lang = lang;
    document.title = t("title");
    document.querySelectorAll("[data-i18n]").forEach(function (node) {
      node.textContent = t(node.getAttribute("data-i18n"));
    });
    document.querySelectorAll("[data-name-en]").forEach(function (node) {
      node.textContent = node.getAttribute(lang === "es" ? "data-name-es" : "data-name-en");
    });
    var catalogue = $("catalogue-hint");
    catalogue.textContent = t("catalogueHint", { n: catalogue.getAttribute("data-count") });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (node) {
      node.setAttribute("placeholder", t(node.getAttribute("data-i18n-placeholder")));
    });
    ["lang-en", "lang-es"].forEach(function (id) {
      var button = $(id);
      button.setAttribute("aria-pressed", String(button.getAttribute("data-lang") === lang));
    });
    showTokenState();
    renderChips();
    if (lastResult) {
      renderResult(lastResult);
      if ($("result-announce").textContent) { $("result-announce").textContent = announcement(lastResult); }
    }
    if (lastLabel) { renderLabel(lastLabel); }
    Object.keys(shownErrors).forEach(function (id) {
      if (shownErrors[id] === NETWORK) { networkError($(id)); } else { showError($(id), shownErrors[id]); }
    });
  }

  /* ---------------------------------------------------------------- token */
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function showTokenState() {
    $("token-state").textContent = token() ? t("tokenSaved") : t("tokenMissing");
  }

  /* ---------------------------------------------------------------- API */
  function api(method, path, body, signal) {
    var headers = { "Accept": "application/json" };
    if (token()) { headers.Authorization = "Bearer " + token(); }
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(path, {
      method: method, headers: headers, signal: signal, credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, ok: response.ok, data: data };
      });
    });
  }

  function showError(box, result) {
    shownErrors[box.id] = result;
    box.replaceChildren();
    var key = { 401: "err401", 403: "err403", 404: "err404", 422: "err422", 400: "err422", 503: "err503" }[result.status];
    box.appendChild(el("p", null, key ? t(key) : t("errOther", { status: result.status })));
    var problems = (result.data && result.data.problems) || [];
    if (problems.length) {
      var list = el("ul");
      problems.forEach(function (p) {
        var field = String(p.field || "").replace(/\[\d+\]$/, "");
        var name = I18N.en["f_" + field] ? t("f_" + field) : p.field;
        /* a problem is worded by its stable code; an unknown code shows the API's message */
        var key = "p_" + p.code;
        var text = I18N[lang][key]
          ? t(key, { allowed: p.allowed || "" })
          : p.message + (p.allowed ? " (" + p.allowed + ")" : "");
        var item = el("li", null, name + ": " + text);
        item.setAttribute("data-code", p.code || "");
        list.appendChild(item);
      });
      box.appendChild(list);
    }
    box.hidden = false;
  }
  function networkError(box) {
    shownErrors[box.id] = NETWORK;
    box.replaceChildren(el("p", null, t("errNetwork")));
    box.hidden = false;
  }
  function hideError(box) {
    delete shownErrors[box.id];
    box.hidden = true;
  }

  /* ---------------------------------------------------------------- autocomplete */
  function autocomplete(input, list, path, render, choose) {
    var timer = null, controller = null, items = [], active = -1;
    function close() {
      list.hidden = true; list.replaceChildren(); items = []; active = -1;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }
    function highlight(index) {
      active = index;
      Array.prototype.forEach.call(list.querySelectorAll("li.option"), function (li, i) {
        li.setAttribute("aria-selected", String(i === index));
        if (i === index) { input.setAttribute("aria-activedescendant", li.id); li.scrollIntoView({ block: "nearest" }); }
      });
    }
    function pick(index) {
      if (index < 0 || index >= items.length) { return; }
      choose(items[index]);
      close();
    }
    function search() {
      var q = input.value.trim();
      if (controller) { controller.abort(); }
      if (!q) { close(); return; }
      controller = new AbortController();
      api("GET", path + "?limit=8&q=" + encodeURIComponent(q), undefined, controller.signal)
        .then(function (result) {
          if (!result.ok) { close(); return; }
          items = result.data.items || [];
          list.replaceChildren();
          if (result.data.corrected && items.length) {
            list.appendChild(el("li", "empty corrected",
              t("corrected", { query: q, corrected: result.data.corrected })));
          }
          if (!items.length) {
            list.appendChild(el("li", "empty", t("noMatches")));
          }
          items.forEach(function (item, i) {
            var li = el("li", "option");
            li.id = list.id + "-" + i;
            li.setAttribute("role", "option");
            render(li, item);
            li.addEventListener("mousedown", function (event) { event.preventDefault(); pick(i); });
            list.appendChild(li);
          });
          list.hidden = false;
          input.setAttribute("aria-expanded", "true");
          active = -1;
        })
        .catch(function (error) { if (error.name !== "AbortError") { close(); } });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(search, 120);
    });
    input.addEventListener("keydown", function (event) {
      if (list.hidden) { return; }
      if (event.key === "ArrowDown") { event.preventDefault(); highlight(Math.min(active + 1, items.length - 1)); }
      else if (event.key === "ArrowUp") { event.preventDefault(); highlight(Math.max(active - 1, 0)); }
      else if (event.key === "Enter") { event.preventDefault(); pick(active >= 0 ? active : 0); }
      else if (event.key === "Escape") { close(); }
    });
    input.addEventListener("blur", function () { setTimeout(close, 150); });
  }

  /* a symptom's name in the current language (the HPO's Spanish label when it has one) */
  function symptomName(item) {
    return lang === "es" && item.label_es ? item.label_es : item.name;
  }
  /* which part of the model reads a term: the classifier (common conditions) and the
     rare-disease ranker, the ranker only, or neither */
  function usage(item) {
    if (item.in_model) { return item.in_ranker ? "both" : "classifier"; }
    return item.in_ranker ? "ranker" : "none";
  }
  function usageBadge(item) {
    var kind = usage(item);
    if (kind === "classifier") { return null; }
    var badge = el("span", "badge badge-" + kind,
      t({ both: "usedBoth", ranker: "usedRanker", none: "usedNone" }[kind]));
    badge.setAttribute("data-usage", kind);
    return badge;
  }
  function renderSymptomOption(li, item) {
    li.appendChild(el("span", "option-name", symptomName(item)));
    var other = lang === "es" ? item.name : item.label_es;
    if (item.synonym) { li.appendChild(el("span", "option-extra", "(" + item.synonym + ")")); }
    else if (other && other !== symptomName(item)) { li.appendChild(el("span", "option-extra", "(" + other + ")")); }
    li.appendChild(el("span", "option-code", item.id));
    var badge = usageBadge(item);
    if (badge) { li.appendChild(badge); }
  }
  function renderDiseaseOption(li, item) {
    li.appendChild(el("span", "option-code", item.code));
    li.appendChild(el("span", "option-name", lang === "es" && item.name_es ? item.name_es : item.name));
    li.appendChild(el("span", "tag tag-" + item.category, t("cat_" + item.category)));
  }

  function renderChips() {
    var chips = $("symptom-chips");
    chips.replaceChildren();
    selected.forEach(function (symptom) {
      var li = el("li", symptom.absent ? "chip chip-absent" : "chip");
      li.setAttribute("data-hpo", symptom.id);
      li.setAttribute("data-state", symptom.absent ? "absent" : "present");
      li.setAttribute("data-usage", usage(symptom));
      li.appendChild(el("span", "chip-name", symptomName(symptom)));
      li.appendChild(el("span", "option-code", symptom.id));
      var badge = usageBadge(symptom);
      if (badge) { li.appendChild(badge); }
      /* present <-> absent: the button shows the chip's state and switches it */
      var toggle = el("button", "chip-toggle", t(symptom.absent ? "absent" : "present"));
      toggle.type = "button";
      toggle.setAttribute("aria-pressed", String(symptom.absent));
      toggle.setAttribute("aria-label", t(symptom.absent ? "markPresent" : "markAbsent", { name: symptomName(symptom) }));
      toggle.title = toggle.getAttribute("aria-label");
      toggle.addEventListener("click", function () {
        symptom.absent = !symptom.absent;
        renderChips();
        var again = document.querySelector('#symptom-chips li[data-hpo="' + symptom.id + '"] .chip-toggle');
        if (again) { again.focus(); }
      });
      li.appendChild(toggle);
      var remove = el("button", "chip-remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", t("remove") + " " + symptomName(symptom));
      remove.addEventListener("click", function () {
        selected = selected.filter(function (s) { return s.id !== symptom.id; });
        renderChips();
      });
      li.appendChild(remove);
      chips.appendChild(li);
    });
  }

  /* ---------------------------------------------------------------- triage */
  function numberOrNull(id) {
    var raw = $(id).value.trim().replace(",", ".");
    return raw === "" ? null : Number(raw);
  }
  /* an answer's warnings with their codes (API v1.5 warning_details, one per entry of warnings,
     in order); an answer without them gives each English warning with no code */
  function warningDetails(answer) {
    var texts = answer.warnings || [];
    var details = answer.warning_details || [];
    if (details.length === texts.length) { return details; }
    return texts.map(function (text) { return { code: "", message: text, params: {} }; });
  }
  /* a warning worded by its stable code and params in the current language; a code this page
     does not know (or params its wording lacks) shows the API's English message */
  function warningText(detail) {
    var key = "warn_" + detail.code;
    if (!detail.code || !I18N.en[key]) { return detail.message; }
    var params = {};
    Object.keys(detail.params || {}).forEach(function (name) { params[name] = detail.params[name]; });
    if (params.what !== undefined) {
      if (!I18N.en["w_" + params.what]) { return detail.message; }
      params.what = t("w_" + params.what);
    }
    var text = t(key, params);
    return /\{\w+\}/.test(text) ? detail.message : text;
  }

  /* one input of an explanation: "Fever", "Cough (absent)" / "Cough (descartado)",
     "Temperature 39.4 °C", "Sex: Female" */
  function inputText(item) {
    var label = lang === "es" ? item.label_es : item.label;
    if (item.field === "symptoms" || item.field === "absent_symptoms") { return label; }
    if (item.field === "sex") { return label + ": " + t(String(item.value)); }
    return label + " " + decimal(item.value, 1) + (item.unit ? " " + item.unit : "");
  }
  /* the line(s) under a top diagnosis: which inputs support it and which speak against it */
  function explanationRow(d) {
    var row = el("tr", "dx-explain");
    row.setAttribute("data-code", d.code);
    row.appendChild(el("td"));
    var cell = el("td", "why");
    cell.colSpan = 4;
    var explanation = d.explanation;
    [["supports", "whySupports"], ["against", "whyAgainst"]].forEach(function (side) {
      var items = explanation[side[0]] || [];
      if (!items.length) { return; }
      var line = el("p", "why-line why-" + side[0]);
      line.appendChild(el("span", "why-label", t(side[1]) + ":"));
      items.forEach(function (item, i) {
        line.appendChild(document.createTextNode(i ? ", " : " "));
        var span = el("span", "why-item", inputText(item) + " (" + points(item.effect) + ")");
        span.setAttribute("data-field", item.field);
        span.setAttribute("data-value", String(item.value));
        line.appendChild(span);
      });
      cell.appendChild(line);
    });
    if (!cell.children.length) { cell.appendChild(el("p", "why-line why-none", t("whyNone"))); }
    row.appendChild(cell);
    return row;
  }

  function diseaseName(d) { return lang === "es" && d.name_es ? d.name_es : d.name; }

  /* the result section empty and hidden: nothing of an earlier patient stays on screen */
  function clearResult() {
    lastResult = null;
    $("result").hidden = true;
    $("result-prediction-id").textContent = "";
    $("result-model").textContent = "";
    $("orphan-probability").textContent = "";
    $("differential").querySelector("tbody").replaceChildren();
    $("severity-label").textContent = "";
    $("severity-bars").replaceChildren();
    $("warnings").replaceChildren();
    $("warnings-box").hidden = true;
    $("result-announce").textContent = "";
  }
  /* a new result is announced to screen readers (polite live region) and gets the focus */
  function announcement(answer) {
    var top = answer.differential[0];
    return top ? t("resultReady", { name: diseaseName(top), pct: percent(top.probability) }) : "";
  }
  function announceResult(answer) {
    $("result-announce").textContent = announcement(answer);
    var heading = $("result-title");
    heading.focus({ preventScroll: true });
  }

  function renderResult(answer) {
    $("result-prediction-id").textContent = answer.prediction_id;
    $("result-model").textContent = answer.model_version;
    $("orphan-probability").textContent = percent(answer.orphan_probability);
    var body = $("differential").querySelector("tbody");
    body.replaceChildren();
    var untranslated = false;
    answer.differential.forEach(function (d, i) {
      var row = el("tr", "dx-row");
      row.setAttribute("data-code", d.code);
      row.appendChild(el("td", "rank", String(i + 1)));
      row.appendChild(el("td", "code", d.code));
      var name = el("td", "name", diseaseName(d));
      if (lang === "es" && !d.name_es) {
        name.appendChild(el("span", "lang-note", " (en)"));
        name.setAttribute("lang", "en");
        untranslated = true;
      }
      row.appendChild(name);
      var tagCell = el("td");
      tagCell.appendChild(el("span", "tag tag-" + d.category, t("cat_" + d.category)));
      row.appendChild(tagCell);
      var probability = el("td", "num");
      var bar = el("span", "bar");
      var fill = el("span", "bar-fill");
      fill.style.width = Math.max(0, Math.min(100, d.probability * 100)).toFixed(1) + "%";
      bar.appendChild(fill);
      probability.appendChild(bar);
      probability.appendChild(el("span", "pct", percent(d.probability)));
      row.appendChild(probability);
      body.appendChild(row);
      if (d.explanation) {
        row.className += " has-why";
        body.appendChild(explanationRow(d));
      }
    });
    $("why-hint").hidden = !answer.differential.some(function (d) { return d.explanation; });
    $("no-spanish").hidden = !untranslated;
    var severity = answer.severity;
    var label = $("severity-label");
    label.textContent = t("sev_" + severity.label);
    label.className = "sev sev-" + severity.label;
    label.setAttribute("data-severity", severity.label);
    var bars = $("severity-bars");
    bars.replaceChildren();
    SEVERITIES.forEach(function (name) {
      if (!(name in severity.probabilities)) { return; }
      var p = severity.probabilities[name];
      var li = el("li", name === severity.label ? "current" : null);
      li.appendChild(el("span", "bar-label", t("sev_" + name)));
      var bar = el("span", "bar");
      var fill = el("span", "bar-fill sev-fill-" + name);
      fill.style.width = (p * 100).toFixed(1) + "%";
      bar.appendChild(fill);
      li.appendChild(bar);
      li.appendChild(el("span", "pct", percent(p)));
      bars.appendChild(li);
    });
    var warnings = $("warnings");
    warnings.replaceChildren();
    var details = warningDetails(answer);
    details.forEach(function (w) {
      var item = el("li", null, warningText(w));
      item.setAttribute("data-code", w.code || "");
      warnings.appendChild(item);
    });
    $("warnings-box").hidden = !details.length;
    $("result").hidden = false;
  }

  function submitTriage(event) {
    event.preventDefault();
    var errorBox = $("triage-error");
    hideError(errorBox);
    clearResult();
    var body = {
      age: numberOrNull("age"), sex: $("sex").value || null,
      heart_rate: numberOrNull("heart_rate"), body_temperature: numberOrNull("body_temperature"),
      systolic_bp: numberOrNull("systolic_bp"), diastolic_bp: numberOrNull("diastolic_bp"),
      symptoms: selected.filter(function (s) { return !s.absent; }).map(function (s) { return s.id; }),
      absent_symptoms: selected.filter(function (s) { return s.absent; }).map(function (s) { return s.id; })
    };
    var button = $("triage-submit");
    button.disabled = true;
    button.textContent = t("working");
    api("POST", "/v1/predict?top_k=10", body)
      .then(function (result) {
        if (!result.ok) { clearResult(); showError(errorBox, result); return; }
        lastResult = result.data;
        renderResult(lastResult);
        announceResult(lastResult);
        $("result").scrollIntoView({ behavior: "smooth", block: "start" });
      })
      .catch(function () { clearResult(); networkError(errorBox); })
      .then(function () { button.disabled = false; button.textContent = t("submitTriage"); });
  }

  /* ---------------------------------------------------------------- validation */
  function renderLabel(label) {
    var box = $("label-status");
    box.textContent = t(label.replaced ? "labelReplaced" : "labelSaved",
      { dx: label.diagnosis, sev: t("sev_" + label.severity), id: label.prediction_id });
    box.hidden = false;
  }

  function submitLabel(event) {
    event.preventDefault();
    var errorBox = $("label-error");
    hideError(errorBox);
    $("label-status").hidden = true;
    lastLabel = null;
    var body = {
      prediction_id: $("label-prediction-id").value.trim(),
      diagnosis: $("label-diagnosis").value.trim(),
      severity: $("label-severity").value
    };
    api("POST", "/v1/labels", body)
      .then(function (result) {
        if (!result.ok) { showError(errorBox, result); return; }
        lastLabel = result.data;
        renderLabel(lastLabel);
      })
      .catch(function () { networkError(errorBox); });
  }

  /* ---------------------------------------------------------------- start */
  document.addEventListener("DOMContentLoaded", function () {
    var stored = null;
    try { stored = localStorage.getItem(LANG_KEY); } catch (e) { stored = null; }
    applyLanguage(stored || document.documentElement.lang || "en");

    ["lang-en", "lang-es"].forEach(function (id) {
      $(id).addEventListener("click", function () {
        var next = $(id).getAttribute("data-lang");
        try { localStorage.setItem(LANG_KEY, next); } catch (e) { /* private mode */ }
        applyLanguage(next);
      });
    });
    $("token-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var value = $("token").value.trim();
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); }
      $("token").value = "";
      showTokenState();
    });
    $("token-clear").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
    });

    autocomplete($("symptom-input"), $("symptom-suggestions"), "/v1/symptoms", renderSymptomOption,
      function (item) {
        if (!selected.some(function (s) { return s.id === item.id; })) {
          selected.push({ id: item.id, name: item.name, label_es: item.label_es,
            in_model: item.in_model, in_ranker: item.in_ranker, absent: false });
          renderChips();
        }
        $("symptom-input").value = "";
      });
    autocomplete($("label-diagnosis"), $("diagnosis-suggestions"), "/v1/diseases", renderDiseaseOption,
      function (item) { $("label-diagnosis").value = item.code; });

    $("triage-form").addEventListener("submit", submitTriage);
    $("triage-reset").addEventListener("click", function () {
      $("triage-form").reset();
      selected = [];
      renderChips();
      hideError($("triage-error"));
      clearResult();
    });
    $("use-prediction-id").addEventListener("click", function () {
      if (lastResult) { $("label-prediction-id").value = lastResult.prediction_id; }
      $("label-diagnosis").focus();
    });
    $("label-form").addEventListener("submit", submitLabel);
  });
})();
