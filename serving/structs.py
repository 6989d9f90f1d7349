"""Request and response bodies of API v1 (msgspec Structs) and the full-body validator.

The Structs document the contract in OpenAPI, with the ranges taken from
:data:`schemas.clinical.CLINICAL_RANGES`. msgspec stops at the first bad field, so request bodies
are first checked by :func:`validate_patient_body` / :func:`validate_batch_body`, which list every
problem at once (field path, offending value, what is allowed). Only a body that passes reaches
msgspec, which then cannot fail on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas.clinical import (
    CLINICAL_RANGES,
    DIAGNOSIS_PATTERN,
    HPO_ID_PATTERN,
    HPO_ID_RE,
    SEVERITIES,
    SEVERITY_ALIASES,
    SEXES,
)
from schemas.contracts import (  # the runtime's answer is the API's response body
    Prediction,
)
from serving.problem_codes import problem_code

MAX_BATCH = 1000
MAX_SYMPTOMS = 256
TOP_K_MIN, TOP_K_MAX, TOP_K_DEFAULT = 1, 100, 10
MAX_REPORTED_PROBLEMS = 1000
_MAX_ECHO = 80

VITAL_FIELDS: tuple[str, ...] = (
    "age",
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
)
PATIENT_FIELDS: tuple[str, ...] = (*VITAL_FIELDS, "sex", "symptoms", "absent_symptoms")


# The pipeline converts °F exports; the API takes °C only (a value in °F range is an error).
_API_DESCRIPTIONS = {
    "body_temperature": "Body temperature in degrees Celsius (°F is not accepted)."
}


def _vital(name: str) -> Any:
    r = CLINICAL_RANGES[name]
    description = _API_DESCRIPTIONS.get(name, r.description)
    return Annotated[
        float,
        Meta(ge=r.low, le=r.high, description=f"{description} Allowed {r.bounds_text}."),
    ]


Age = _vital("age")
HeartRate = _vital("heart_rate")
BodyTemperature = _vital("body_temperature")
SystolicBp = _vital("systolic_bp")
DiastolicBp = _vital("diastolic_bp")
Sex = Literal[SEXES]  # type: ignore[valid-type]
HpoId = Annotated[str, Meta(pattern=HPO_ID_PATTERN, examples=["HP:0001945"])]


class Patient(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One patient's findings; every field is optional. No identifiers: the API never needs them."""

    age: Age | None = None
    sex: Sex | None = None
    heart_rate: HeartRate | None = None
    body_temperature: BodyTemperature | None = None
    systolic_bp: SystolicBp | None = None
    diastolic_bp: DiastolicBp | None = None
    symptoms: (
        Annotated[
            list[HpoId],
            Meta(max_length=MAX_SYMPTOMS, description="Findings the patient has (HPO ids)."),
        ]
        | None
    ) = None
    absent_symptoms: (
        Annotated[
            list[HpoId],
            Meta(
                max_length=MAX_SYMPTOMS,
                description="Excluded findings: HPO ids looked for and found absent (API v1.3). An "
                "id may not be in both lists.",
            ),
        ]
        | None
    ) = None


class PredictBatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    patients: Annotated[list[Patient], Meta(min_length=1, max_length=MAX_BATCH)]


class BatchPredictions(msgspec.Struct, kw_only=True):
    predictions: list[Prediction]


class ClassInfo(msgspec.Struct, kw_only=True):
    code: str
    name: str
    category: str


class ModelCard(msgspec.Struct, kw_only=True):
    version: str
    trained_at: str | None
    onnx_sha256: str
    metrics: dict[str, Any]
    mlflow_run_id: str | None
    mlflow_model_version: str | None
    dagster_run_id: str | None
    code_version: str | None
    data_versions: dict[str, Any]
    hpo_release: str | None
    n_classes: int
    classes: list[ClassInfo]
    severity_labels: list[str]
    n_symptoms: int
    loaded_at: str


class Health(msgspec.Struct, kw_only=True):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready", "not_ready"]
    model_version: str | None = None
    detail: str | None = None
    last_reload_error: str | None = None
    # v1.4: serving the newest version that passes its checks, not the one current.json names
    last_known_good: bool = False
    pointer_version: str | None = None


_ACUTE = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú"}


def _any_case(word: str) -> str:
    """Regex for ``word`` in any case, each vowel with or without an acute accent."""
    return "".join(
        f"[{ch}{ch.upper()}{_ACUTE.get(ch, '')}{_ACUTE.get(ch, '').upper()}]"
        if ch.isalpha()
        else ch
        for ch in word
    )


# Documentation-only patterns of the label fields (msgspec merges ``extra_json_schema`` into the
# OpenAPI but does not enforce it; the label validator, a little more lenient — surrounding
# spaces, any accent — has the last word).
# ``[0-9]`` rather than ``\d``: the same meaning in every regex dialect.
_LABEL_ID_PATTERN = r"^[0-9a-fA-F]{32}$"
_LABEL_DIAGNOSIS_PATTERN = (
    r"^(?:[Nn][Oo][Nn][Ee]|[A-Za-z][0-9]{2}(?:\.[0-9A-Za-z]{1,4})?"
    r"|[Oo][Rr][Pp][Hh][Aa]:[0-9]+|[Oo][Mm][Ii][Mm]:[0-9]+)$"
)
_LABEL_SEVERITY_PATTERN = "^(?:" + "|".join(_any_case(a) for a in sorted(SEVERITY_ALIASES)) + ")$"


class LabelRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The clinician's confirmed diagnosis for an earlier prediction."""

    prediction_id: Annotated[
        str,
        Meta(
            description="prediction_id returned by /v1/predict.",
            examples=["3f2b0c4e9d8a4b7c8e1f2a3b4c5d6e7f"],
            extra_json_schema={"pattern": _LABEL_ID_PATTERN},
        ),
    ]
    diagnosis: Annotated[
        str,
        Meta(
            description="NONE, an ICD-10 code, ORPHA:<n> or OMIM:<n>; case-insensitive, stored upper "
            f"case, must then match {DIAGNOSIS_PATTERN}",
            examples=["J18.9", "ORPHA:558", "NONE"],
            extra_json_schema={"pattern": _LABEL_DIAGNOSIS_PATTERN},
        ),
    ]
    severity: Annotated[
        str,
        Meta(
            description="not_ill | mild | acute | chronic | terminal, or the Spanish label "
            "(No enfermo, leve, aguda, crónica, terminal; any case, accents optional).",
            examples=["acute", "crónica"],
            extra_json_schema={"pattern": _LABEL_SEVERITY_PATTERN},
        ),
    ]


class Label(msgspec.Struct, kw_only=True):
    """A stored label (canonical codes); ``replaced`` when it corrected an earlier label, which
    is kept as an earlier ``revision`` (v1.4)."""

    prediction_id: str
    diagnosis: str
    severity: Literal[SEVERITIES]  # type: ignore[valid-type]
    labelled_at: str
    labelled_by: str
    model_version: str | None
    predicted_at: str | None
    replaced: bool
    revision: int = 1
    confirmed_by: str | None = None  # the name of the token that confirmed it (v1.4)


class LabelRevision(msgspec.Struct, kw_only=True):
    """One revision of a prediction's label, as stored."""

    revision: int
    diagnosis: str
    severity: str
    labelled_at: str
    labelled_by: str
    confirmed_by: str | None
    model_version: str | None
    predicted_at: str | None


class LabelHistory(msgspec.Struct, kw_only=True):
    """Every revision of a prediction's label, oldest first; the last one is the one in force."""

    prediction_id: str
    revisions: list[LabelRevision]


class SymptomMatch(msgspec.Struct, kw_only=True):
    id: str
    name: str
    label_es: str | None = None  # the HPO's official Spanish label (None: not translated)
    synonym: str | None = None  # the English synonym that matched, when no label did
    in_model: bool  # the deployed model's classifier uses this term as a feature
    in_ranker: bool = False  # the deployed model's rare-disease ranker reads this term


class SymptomPage(msgspec.Struct, kw_only=True):
    query: str
    total: int
    offset: int
    limit: int
    items: list[SymptomMatch]
    hpo_release: str
    corrected: str | None = None  # the query searched instead when this one matched nothing


class DiseaseMatch(msgspec.Struct, kw_only=True):
    code: str
    name: str
    name_es: str | None = None
    category: Literal["common", "orphan", "healthy"]
    in_model: bool  # one of the deployed model's classes


class DiseasePage(msgspec.Struct, kw_only=True):
    query: str
    total: int
    offset: int
    limit: int
    items: list[DiseaseMatch]


class Problem(msgspec.Struct, kw_only=True):
    field: str
    value: Any
    message: str
    allowed: str | None = None
    code: str | None = None  # v1.4: stable code of the message (serving.problem_codes)

    def __post_init__(self) -> None:
        if self.code is None:
            self.code = problem_code(self.message)


class ErrorBody(msgspec.Struct, kw_only=True):
    detail: str
    problems: list[Problem] = msgspec.field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Validation that reports every problem


def _echo(value: Any) -> Any:
    """The offending value, shortened so an error body stays small."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "…"
    if isinstance(value, list):
        return f"<array of {len(value)}>"
    if isinstance(value, dict):
        return f"<object with {len(value)} keys>"
    return f"<{type(value).__name__}>"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


echo = _echo
type_name = _type_name


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _terms(obj: Mapping[str, Any], name: str, prefix: str, problems: list[Problem]) -> list[str]:
    """The HPO ids of the list field ``name`` (``symptoms`` or ``absent_symptoms``) in order,
    repeats dropped; each problem appended to ``problems``."""
    terms = obj.get(name)
    clean: list[str] = []
    if terms is None:
        return clean
    if not isinstance(terms, list):
        problems.append(
            Problem(
                field=_path(prefix, name),
                value=_echo(terms),
                message=f"must be an array of HPO ids, got {_type_name(terms)}",
                allowed="HP:nnnnnnn",
            )
        )
    elif len(terms) > MAX_SYMPTOMS:
        what = "symptoms" if name == "symptoms" else "absent symptoms"
        problems.append(
            Problem(
                field=_path(prefix, name),
                value=_echo(terms),
                message=f"at most {MAX_SYMPTOMS} {what} per patient",
                allowed=f"0–{MAX_SYMPTOMS} HPO ids",
            )
        )
    else:
        seen: set[str] = set()
        for i, term in enumerate(terms):
            if not isinstance(term, str) or HPO_ID_RE.match(term) is None:
                problems.append(
                    Problem(
                        field=_path(prefix, f"{name}[{i}]"),
                        value=_echo(term),
                        message="not an HPO id",
                        allowed="HP: followed by 7 digits, e.g. HP:0001945",
                    )
                )
            elif term not in seen:
                seen.add(term)
                clean.append(term)
    return clean


def validate_patient_body(
    obj: Any, prefix: str = ""
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Check one decoded patient object; return (clean dict or None, every problem found)."""
    problems: list[Problem] = []
    if not isinstance(obj, Mapping):
        problems.append(
            Problem(
                field=prefix or "body",
                value=_echo(obj),
                message=f"expected a JSON object with patient fields, got {_type_name(obj)}",
                allowed=", ".join(PATIENT_FIELDS),
            )
        )
        return None, problems

    for key in obj:
        if key not in PATIENT_FIELDS:
            problems.append(
                Problem(
                    field=_path(prefix, str(key)),
                    value=_echo(obj[key]),
                    message="unknown field",
                    allowed=", ".join(PATIENT_FIELDS),
                )
            )

    clean: dict[str, Any] = {}
    for name in VITAL_FIELDS:
        value = obj.get(name)
        rng = CLINICAL_RANGES[name]
        clean[name] = None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(
                Problem(
                    field=_path(prefix, name),
                    value=_echo(value),
                    message=f"must be a number or null, got {_type_name(value)}",
                    allowed=rng.bounds_text,
                )
            )
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number) or not rng.contains(number):
            message = f"{_echo(value)} is outside the allowed range {rng.bounds_text}"
            if name == "body_temperature" and 77 <= number <= 113:
                message += " (looks like °F; the API takes °C)"
            problems.append(
                Problem(
                    field=_path(prefix, name),
                    value=_echo(value),
                    message=message,
                    allowed=rng.bounds_text,
                )
            )
            continue
        clean[name] = number

    systolic, diastolic = clean["systolic_bp"], clean["diastolic_bp"]
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        problems.append(
            Problem(
                field=_path(prefix, "diastolic_bp"),
                value=_echo(obj.get("diastolic_bp")),
                message=f"diastolic_bp must be below systolic_bp ({_echo(obj.get('systolic_bp'))})",
                allowed=f"< systolic_bp, {CLINICAL_RANGES['diastolic_bp'].bounds_text}",
            )
        )

    sex = obj.get("sex")
    clean["sex"] = None
    if sex is not None:
        if isinstance(sex, str) and sex in SEXES:
            clean["sex"] = sex
        else:
            problems.append(
                Problem(
                    field=_path(prefix, "sex"),
                    value=_echo(sex),
                    message="unknown sex"
                    if isinstance(sex, str)
                    else (f"must be a string or null, got {_type_name(sex)}"),
                    allowed=" | ".join(SEXES),
                )
            )

    clean["symptoms"] = _terms(obj, "symptoms", prefix, problems)
    clean["absent_symptoms"] = absent = _terms(obj, "absent_symptoms", prefix, problems)
    if absent:
        present = set(clean["symptoms"])
        for i, term in enumerate(obj["absent_symptoms"]):
            if isinstance(term, str) and term in present:
                problems.append(
                    Problem(
                        field=_path(prefix, f"absent_symptoms[{i}]"),
                        value=term,
                        message=f"{term} is also in symptoms: a finding is either present or "
                        "absent",
                        allowed="an HPO id not listed in symptoms",
                    )
                )

    return (None if problems else clean), problems


def patient_input(patient: Patient) -> dict[str, Any]:
    """A decoded :class:`Patient` as the runtime scores it and the prediction log records it:
    exactly what :func:`validate_patient_body` returns for the same body (vitals as floats or
    ``None``, ``sex`` or ``None``, symptoms and absent symptoms in order with repeats dropped)."""
    fields: dict[str, Any] = {}
    for name in VITAL_FIELDS:
        value = getattr(patient, name)
        fields[name] = None if value is None else float(value)
    fields["sex"] = patient.sex
    fields["symptoms"] = list(dict.fromkeys(patient.symptoms or ()))
    fields["absent_symptoms"] = list(dict.fromkeys(patient.absent_symptoms or ()))
    return fields


def validate_batch_body(obj: Any) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """Check a decoded batch body ``{"patients": [...]}``; paths look like ``patients[3].heart_rate``."""
    if not isinstance(obj, Mapping):
        return None, [
            Problem(
                field="body",
                value=_echo(obj),
                message=f'expected a JSON object {{"patients": [...]}}, got {_type_name(obj)}',
            )
        ]
    problems: list[Problem] = [
        Problem(field=str(key), value=_echo(obj[key]), message="unknown field", allowed="patients")
        for key in obj
        if key != "patients"
    ]
    patients = obj.get("patients")
    if not isinstance(patients, list):
        problems.append(
            Problem(
                field="patients",
                value=_echo(patients),
                message=f"must be an array of patient objects, got {_type_name(patients)}",
                allowed=f"1–{MAX_BATCH} patients",
            )
        )
        return None, problems
    if not 1 <= len(patients) <= MAX_BATCH:
        problems.append(
            Problem(
                field="patients",
                value=_echo(patients),
                message=f"batch size {len(patients)} is outside 1–{MAX_BATCH}",
                allowed=f"1–{MAX_BATCH} patients",
            )
        )
        return None, problems
    clean: list[dict[str, Any]] = []
    for i, patient in enumerate(patients):
        row, row_problems = validate_patient_body(patient, prefix=f"patients[{i}]")
        problems.extend(row_problems)
        if row is not None:
            clean.append(row)
    return (None if problems else clean), problems


def validate_top_k(raw: str | None) -> tuple[int, list[Problem]]:
    if raw is None:
        return TOP_K_DEFAULT, []
    allowed = f"integer {TOP_K_MIN}–{TOP_K_MAX}"
    try:
        value = int(raw.strip())
    except ValueError:
        return TOP_K_DEFAULT, [
            Problem(field="top_k", value=_echo(raw), message="must be an integer", allowed=allowed)
        ]
    if not TOP_K_MIN <= value <= TOP_K_MAX:
        return TOP_K_DEFAULT, [
            Problem(
                field="top_k",
                value=value,
                message=f"{value} is outside {TOP_K_MIN}–{TOP_K_MAX}",
                allowed=allowed,
            )
        ]
    return value, []
