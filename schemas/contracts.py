"""Typed contracts of what crosses the pipeline/API boundary.

Every file the pipeline writes and the API (or a later asset) reads has one msgspec Struct here,
used by the writer and the reader alike, so a field renamed on one side fails the other's tests
instead of drifting silently:

* :class:`DeploymentPointer` — ``deployments/current.json``;
* :class:`Manifest` — ``deployments/<version>/manifest.json`` (what the model is, how to run it,
  where it came from);
* :class:`KnowledgeFile` — ``deployments/<version>/knowledge.json`` (the knowledge ranker's
  vocabulary, diseases and the release's old-id map);
* :class:`Prediction` (and its parts) — the answer of the runtime, returned by the API and written
  into every prediction-log line;
* :class:`PredictionLogLine` and :class:`LabelRecord` — the service's prediction log and the
  clinicians' confirmed labels, read back by the monitoring assets.

The ``TRIAGE_HOME`` layout these files live in is :mod:`schemas.layout`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MANIFEST_FORMAT = 1
CATEGORIES = ("common", "orphan", "healthy")
Category = Literal["common", "orphan", "healthy"]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class ContractError(ValueError):
    """A file does not follow its contract; the message names the file and the field."""


def decode(content: bytes, kind: type, what: str) -> Any:
    """``content`` as a ``kind`` Struct, or :class:`ContractError` naming ``what`` and the field."""
    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{what} does not follow its contract: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"{what} is not readable JSON: {exc}") from None


def encode(value: msgspec.Struct, *, indent: bool = False) -> bytes:
    content = msgspec.json.encode(value)
    return msgspec.json.format(content, indent=2) if indent else content


# ------------------------------------------------------------------------------ deployment files
class DeploymentPointer(msgspec.Struct, kw_only=True):
    """``deployments/current.json``: the version the API serves, replaced atomically."""

    version: str
    manifest: str  # relative to deployments/, e.g. "<version>/manifest.json"

    @classmethod
    def to(cls, version: str) -> DeploymentPointer:
        return cls(version=version, manifest=f"{version}/manifest.json")


class ClassEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One class of the learned classifier, in its output order."""

    code: str
    name: str
    category: Category


class OnnxOutputs(msgspec.Struct, kw_only=True):
    diagnosis: str = "diagnosis_probabilities"
    severity: str = "severity_probabilities"
    ranker: str | None = "ranker_scores"


class BlendSpec(msgspec.Struct, kw_only=True):
    """The fitted blend of classifier and knowledge ranker (:mod:`diagnosis.blend`)."""

    coef: list[float]
    intercept: float
    alpha: float
    features: list[str] = msgspec.field(default_factory=list)


class SeveritySpec(msgspec.Struct, kw_only=True):
    """How severity follows the differential (:mod:`diagnosis.severity`): the severity mix of each
    learned class in its training records, the severity head's training prior, and the weight
    ``beta`` of the head's likelihood ratio."""

    class_profiles: list[list[float]]  # [classes][severity labels]
    head_prior: list[float]
    beta: float


class FeaturesSpec(msgspec.Struct, kw_only=True):
    """The classifier's input columns (:class:`diagnosis.features.FeatureSpec`)."""

    vitals: list[str]
    sexes: list[str]
    symptoms: list[str]
    missing_indicators: list[str] = msgspec.field(default_factory=list)


class Manifest(msgspec.Struct, kw_only=True):
    """``deployments/<version>/manifest.json``: one immutable deployment."""

    format: int = MANIFEST_FORMAT
    version: str
    trained_at: str | None = None
    onnx_file: str = "model.onnx"
    onnx_sha256: str
    onnx_input: str = "features"
    onnx_outputs: OnnxOutputs = msgspec.field(default_factory=OnnxOutputs)
    onnx_query_input: str | None = "query_terms"
    knowledge_file: str | None = None
    knowledge_sha256: str | None = None
    blend: BlendSpec | None = None
    severity: SeveritySpec | None = None  # None: the severity head alone (older models)
    features: FeaturesSpec
    classes: list[ClassEntry]
    severity_labels: list[str]
    metrics: dict[str, float | int | None] = msgspec.field(default_factory=dict)
    imputation: dict[str, float] = msgspec.field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_model_name: str | None = None
    mlflow_model_version: str | None = None
    dagster_run_id: str | None = None
    code_version: str | None = None
    data_versions: dict[str, Any] = msgspec.field(default_factory=dict)
    hpo_release: str | None = None


class KnowledgeDisease(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str


class KnowledgeFile(msgspec.Struct, kw_only=True):
    """``deployments/<version>/knowledge.json``: what the API needs around the ranker's ONNX head:
    its HPO vocabulary in input order, the diseases in output order, the release's alt_id/obsolete
    map, and the best log-score of an empty query (the blend's reference)."""

    hpo_release: str = ""
    terms: list[str]
    diseases: list[KnowledgeDisease]
    term_aliases: dict[str, str] = msgspec.field(default_factory=dict)
    empty_best: float
    # severity profiles from the release's clinical-course annotations (diagnosis.severity)
    severity_profiles: list[list[float]] = msgspec.field(default_factory=list)
    disease_profiles: list[int] = msgspec.field(default_factory=list)  # per disease
    # rows of the ranker's weight matrix a patient reads (diagnosis.ranker): present term i is
    # row i, excluded term i is absent_offset + i, the age bin and the sex add one row each
    absent_offset: int
    age_offset: int
    age_edges: list[float]
    sex_offset: int
    sexes: list[str]
    # isotonic map of the ranker's top probability, fitted on real cases (empty: none)
    calibration_x: list[float] = msgspec.field(default_factory=list)
    calibration_y: list[float] = msgspec.field(default_factory=list)


# ------------------------------------------------------------------------------ a prediction
class ExplanationItem(msgspec.Struct, kw_only=True):
    """One input of the patient and how much it moves a diagnosis's probability (API v1.2)."""

    field: Annotated[
        str,
        Meta(
            description="The request field of the input: `symptoms`, `sex` or a vital sign's name.",
            examples=["symptoms"],
        ),
    ]
    value: Annotated[
        str | float,
        Meta(
            description="The HPO id as sent, the sex, or the vital sign's value.",
            examples=["HP:0001945"],
        ),
    ]
    label: Annotated[
        str,
        Meta(description="English label: the HPO term's name, or the field's.", examples=["Fever"]),
    ]
    label_es: Annotated[
        str,
        Meta(
            description="Spanish label: the HPO's official Spanish label of a term (its English "
            "name when the term has none), or the field's.",
            examples=["Fiebre"],
        ),
    ]
    unit: Annotated[
        str | None, Meta(description="Unit of a vital sign's value.", examples=["°C"])
    ] = None
    effect: Annotated[
        float,
        Meta(
            ge=-1.0,
            le=1.0,
            description="Probability of the diagnosis with every input minus its probability with "
            "this input removed (the same model re-run): > 0 supports, < 0 speaks against.",
            examples=[0.38],
        ),
    ]


class Explanation(msgspec.Struct, kw_only=True):
    """Occlusion on the served model: each input removed in turn, the patient scored again."""

    supports: list[ExplanationItem]  # largest effect first, at most 3, effect >= 0.001
    against: list[ExplanationItem]  # most negative effect first, at most 3, effect <= -0.001


class DifferentialEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    name: str
    # v1.4: the Spanish name (the common conditions); null for diseases with no Spanish source
    name_es: str | None
    category: Category
    probability: Probability
    # v1.2: only on the first 3 entries, and only when explanations were asked for
    explanation: Explanation | None = None


class Severity(msgspec.Struct, kw_only=True):
    label: str
    probabilities: dict[str, Probability]


class WarningDetail(msgspec.Struct, kw_only=True):
    """One warning of an answer with a stable, language-neutral code (API v1.5): a client words it
    by its code and params; the codes and their English wording: :mod:`diagnosis.warning_codes`."""

    code: Annotated[
        str,
        Meta(
            description="Stable snake_case code of the warning; a client meeting a code it does "
            "not know shows `message`.",
            examples=["symptom_not_in_release"],
        ),
    ]
    message: Annotated[
        str,
        Meta(
            description="The English warning: the same string as the entry of `warnings` at the "
            "same position.",
            examples=["symptom HP:9999999 is not in HPO release 2025-01-16; it was ignored"],
        ),
    ]
    params: Annotated[
        dict[str, str],
        Meta(
            description="The values the message names, by name (e.g. `what`, `term`, `release`, "
            "`current`); empty when it names none.",
            examples=[{"what": "symptom", "term": "HP:9999999", "release": "2025-01-16"}],
        ),
    ] = msgspec.field(default_factory=dict)


class Prediction(msgspec.Struct, kw_only=True):
    prediction_id: str
    model_version: str
    differential: list[DifferentialEntry]
    orphan_probability: Probability
    severity: Severity
    warnings: list[str] = msgspec.field(default_factory=list)
    # v1.5: one per entry of ``warnings``, in the same order, with its code and params
    warning_details: list[WarningDetail] = msgspec.field(default_factory=list)


# ------------------------------------------------------------------------------ service records
class LoggedInputs(msgspec.Struct, kw_only=True):
    """The validated model inputs of a prediction (requests carry no identifiers or free text)."""

    age: float | None = None
    sex: str | None = None
    heart_rate: float | None = None
    body_temperature: float | None = None
    systolic_bp: float | None = None
    diastolic_bp: float | None = None
    symptoms: list[str] = msgspec.field(default_factory=list)
    absent_symptoms: list[str] = msgspec.field(default_factory=list)  # API v1.3


class LoggedEntry(msgspec.Struct, kw_only=True):
    code: str
    probability: float


class PredictionLogLine(msgspec.Struct, kw_only=True):
    """One line of ``predictions/predictions-<UTC date>.jsonl``; ``prediction_id`` comes first
    (the label endpoint finds a line by its opening bytes)."""

    prediction_id: str
    time: str
    model_version: str
    inputs: LoggedInputs
    differential: list[LoggedEntry]  # what was returned, most probable first
    orphan_probability: float
    severity: str  # the returned label


LABEL_FORMAT = 1


class LabelRecord(msgspec.Struct, kw_only=True):
    """``labels/<prediction_id>.json``: a clinician's confirmed diagnosis of an earlier
    prediction (its latest revision), written by the API, read by the ``clinician_labels`` asset.
    Every revision is also kept, never overwritten, as ``labels/revisions/<prediction_id>.<n>.json``
    (API v1.4). Records written before v1.4 lack the last two fields: revision 1, no name."""

    format: int = LABEL_FORMAT
    prediction_id: str
    diagnosis: str
    severity: str
    labelled_at: str
    labelled_by: str  # the role of the token
    model_version: str | None = None
    predicted_at: str | None = None
    revision: int = 1  # 1 for the first label of a prediction, n + 1 for a correction of n
    confirmed_by: str | None = None  # the name of the API token (TRIAGE_API_KEYS), never the token;
    # the pipeline caps labels per token per day (MonitoringPolicy.max_labels_per_token_per_day)
