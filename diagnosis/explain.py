"""Why the model ranks a diagnosis high: occlusion on the served model (API v1.2).

For one patient the explanation scores the patient as entered plus one copy per input with that
input removed:

* each symptom (HPO id as sent) taken out of ``symptoms``, and each excluded finding taken out of
  ``absent_symptoms`` (the finding is then simply not stated);
* each vital sign the model reads (``age``, ``heart_rate``, ``body_temperature``, ``systolic_bp``,
  ``diastolic_bp``) set to missing, exactly as the API encodes an absent vital (NaN, which the
  ONNX graph imputes with the training median);
* ``sex`` set to not given (encoded as ``unknown``) when it was ``female``, ``male`` or ``other``.

All copies are scored by the deployed model in the same onnxruntime call as the patient
(``diagnosis.runtime.Runtime.rank``), and an input's
*effect* on a diagnosis is ``P(diagnosis | all inputs) - P(diagnosis | all inputs but this one)``:
positive means the input supports the diagnosis (removing it lowers the probability), negative
that it speaks against it. The numbers are the model's own, not a separate explainer: re-sending
the patient without the input gives the other probability.

Occlusion measures one input at a time. Two inputs that carry the same evidence (fever and a
temperature of 39.5 °C, say) can each show a small effect while removing both would matter a lot;
the explanation says what each input adds given all the others.

This module only builds the copies and turns the scored probabilities into the answer's
``explanation`` objects; :mod:`diagnosis.runtime` runs the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EXPLAINED_DIAGNOSES = 3  # the first entries of the differential that get an explanation
MAX_ITEMS = 3  # inputs listed per side (supports, against) and diagnosis
MIN_EFFECT = 0.001  # |effect| below 0.1 percentage points is not reported

# English label, Spanish label, unit: as the web form labels the fields
FIELD_LABELS: dict[str, tuple[str, str, str | None]] = {
    "age": ("Age", "Edad", None),
    "heart_rate": ("Heart rate", "Frecuencia cardíaca", "/min"),
    "body_temperature": ("Temperature", "Temperatura", "°C"),
    "systolic_bp": ("Systolic BP", "Presión sistólica", "mmHg"),
    "diastolic_bp": ("Diastolic BP", "Presión diastólica", "mmHg"),
    "sex": ("Sex", "Sexo", None),
}

# an HPO id -> its name, or (English name, Spanish name), or None when unknown
SymptomNamer = Callable[[str], "str | tuple[str, str] | None"]


@dataclass(frozen=True, slots=True)
class RemovedInput:
    """One input of the patient that an occlusion row leaves out."""

    field: str  # the request field: "symptoms", "absent_symptoms", "sex" or a vital's name
    value: str | float  # the HPO id as sent, the sex, or the vital's value


def occlusion_rows(
    patient: Mapping[str, Any], vitals: Sequence[str], sexes: Sequence[str]
) -> tuple[list[RemovedInput], list[dict[str, Any]]]:
    """The inputs that can be removed and the rows to score.

    ``rows[0]`` is the patient as entered; ``rows[i + 1]`` is the patient without ``inputs[i]``.
    ``vitals`` and ``sexes`` are the model's feature spec: a field the model does not read is not
    an input of the model, so it gets no row.
    """
    base = dict(patient)
    inputs: list[RemovedInput] = []
    rows: list[dict[str, Any]] = [base]
    symptoms = list(base.get("symptoms") or ())
    for term in dict.fromkeys(symptoms):  # a repeated id is one input
        inputs.append(RemovedInput("symptoms", term))
        rows.append({**base, "symptoms": [t for t in symptoms if t != term]})
    absent = list(base.get("absent_symptoms") or ())
    for term in dict.fromkeys(absent):  # an excluded finding taken back: no longer stated
        inputs.append(RemovedInput("absent_symptoms", term))
        rows.append({**base, "absent_symptoms": [t for t in absent if t != term]})
    for name in vitals:
        value = base.get(name)
        if value is not None:
            inputs.append(RemovedInput(name, float(value)))
            rows.append({**base, name: None})
    sex = base.get("sex")
    if sexes and sex is not None and sex != "unknown":
        inputs.append(RemovedInput("sex", str(sex)))
        rows.append({**base, "sex": None})
    return inputs, rows


def _item(
    removed: RemovedInput, effect: float, symptom_name: SymptomNamer | None
) -> dict[str, Any]:
    if removed.field in ("symptoms", "absent_symptoms"):
        term = str(removed.value)
        named = (symptom_name(term) if symptom_name is not None else None) or term
        label, label_es = (named, named) if isinstance(named, str) else named
        unit = None
        if removed.field == "absent_symptoms":
            label, label_es = f"{label} (absent)", f"{label_es} (descartado)"
    else:
        default = (removed.field, removed.field, None)
        label, label_es, unit = FIELD_LABELS.get(removed.field, default)
    return {
        "field": removed.field,
        "value": removed.value,
        "label": label,
        "label_es": label_es,
        "unit": unit,
        "effect": effect,
    }


def explanations(
    base: np.ndarray,
    without: np.ndarray,
    inputs: Sequence[RemovedInput],
    symptom_name: SymptomNamer | None = None,
) -> list[dict[str, list[dict[str, Any]]]]:
    """One ``{"supports": [...], "against": [...]}`` per explained diagnosis.

    ``base`` [m]: the probabilities of the m diagnoses for the patient as entered; ``without``
    [len(inputs), m]: the same diagnoses with each input removed. Supports are sorted by falling
    effect, evidence against by rising effect (the strongest first), at most :data:`MAX_ITEMS`
    each, and only effects of at least :data:`MIN_EFFECT` in absolute value.
    """
    base = np.asarray(base, dtype=np.float64)
    effects = base[None, :] - np.asarray(without, dtype=np.float64).reshape(len(inputs), base.size)
    answer = []
    for column in range(base.size):
        effect = effects[:, column].tolist()
        # stable sorts: ties keep the input order (symptoms, vitals, sex)
        supports = [
            i
            for i in sorted(range(len(inputs)), key=lambda i: -effect[i])
            if effect[i] >= MIN_EFFECT
        ][:MAX_ITEMS]
        against = [
            i
            for i in sorted(range(len(inputs)), key=lambda i: effect[i])
            if effect[i] <= -MIN_EFFECT
        ][:MAX_ITEMS]
        answer.append(
            {
                "supports": [_item(inputs[i], effect[i], symptom_name) for i in supports],
                "against": [_item(inputs[i], effect[i], symptom_name) for i in against],
            }
        )
    return answer
