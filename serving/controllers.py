"""HTTP endpoints of API v1 (roles: see the matrix in :mod:`serving.auth`).

- ``PredictionController`` (clinician, admin): ``POST /v1/predict``, ``POST /v1/predict/batch``,
  ``POST /v1/predict/phenopacket``.
- ``LabelController`` (clinician, admin): ``POST /v1/labels``; (auditor, admin)
  ``GET /v1/labels/{prediction_id}``, every revision of a label (v1.4).
- ``SearchController`` (every role): ``GET /v1/symptoms``, ``GET /v1/diseases``.
- ``ModelController`` (auditor, admin): ``GET /v1/model``.
- ``HealthController`` (public): ``GET /health``, ``GET /ready``.

Request bodies are checked by a ``before_request`` hook *before* Litestar decodes them into the
Structs: the hook parses the JSON once (Litestar reuses the parsed value), runs the full-body
validators of :mod:`serving.structs` and raises :class:`RequestProblems` listing every problem
(msgspec would stop at the first). The handlers then take the typed body and query parameters they
declare, and their services by dependency injection (:mod:`serving.dependencies`): nothing is
looked up on ``app.state`` or ``request.state``.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException, SerializationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, JSONBody, Parameter
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from serving import metrics
from serving.auth import AUDIT_ROLES, CLINICAL_ROLES, SEARCH_ROLES, require_api_key
from serving.dependencies import PredictServices, SearchUnavailable
from serving.explain_params import parse_explain
from serving.labels import LabelStore, canonical_label, validate_label_body
from serving.model_store import ModelStore, Runtime
from serving.phenopacket import (
    PHENOPACKET_EXAMPLE,
    PHENOPACKET_SCHEMA,
    validate_phenopacket_body,
)
from serving.prediction_log import PredictionIndex
from serving.scoring import chunks, request_work
from serving.search import (
    QUERY_MAX_LENGTH,
    SEARCH_LIMIT_DEFAULT,
    SEARCH_LIMIT_MAX,
    Disease,
    Knowledge,
)
from serving.structs import (
    TOP_K_DEFAULT,
    TOP_K_MAX,
    TOP_K_MIN,
    BatchPredictions,
    ClassInfo,
    DiseaseMatch,
    DiseasePage,
    ErrorBody,
    Health,
    Label,
    LabelHistory,
    LabelRequest,
    LabelRevision,
    ModelCard,
    Patient,
    PredictBatch,
    Prediction,
    Problem,
    Readiness,
    SymptomMatch,
    SymptomPage,
    patient_input,
    validate_batch_body,
    validate_patient_body,
    validate_top_k,
)

__all__ = ["RequestProblems", "SearchUnavailable"]

TopK = Annotated[
    int,
    Parameter(
        ge=TOP_K_MIN,
        le=TOP_K_MAX,
        description=f"How many diagnoses to return ({TOP_K_MIN}–{TOP_K_MAX}; fewer if the model "
        "knows fewer classes).",
    ),
]

Explain = Annotated[
    bool,
    Parameter(
        description="Add an `explanation` to the first 3 differential entries: the inputs whose "
        "removal lowers (supports) or raises (against) the entry's probability, by how much "
        "(v1.2). Default true for one patient, false for a batch.",
    ),
]

# Every error answer is an ErrorBody (serving.app maps exceptions to it); the OpenAPI lists each
# status an operation can answer with that body (checked by tests/e2e/test_fuzz_api.py).
_AUTH_RESPONSES = {
    401: ResponseSpec(data_container=ErrorBody, description="Missing or unknown bearer token."),
    403: ResponseSpec(data_container=ErrorBody, description="The token's role may not call this."),
    503: ResponseSpec(
        data_container=ErrorBody,
        description="Service unavailable (no model is "
        "loaded, or the search indexes or the shared storage cannot be read); "
        "retry later.",
    ),
}
_QUERY_RESPONSES = {
    **_AUTH_RESPONSES,
    400: ResponseSpec(
        data_container=ErrorBody, description="A query parameter is malformed or out of range."
    ),
}
_ERROR_RESPONSES = {  # operations with a JSON body
    **_QUERY_RESPONSES,
    413: ResponseSpec(
        data_container=ErrorBody,
        description="The request body is too large, or the request needs more work than the "
        "per-request budget allows (`problems` names the limit; v1.4).",
    ),
    422: ResponseSpec(
        data_container=ErrorBody, description="Invalid input; `problems` lists every problem."
    ),
}


class RequestProblems(Exception):
    """Invalid request; mapped to 422 with every problem (see :mod:`serving.app`)."""

    def __init__(self, detail: str, problems: list[Problem]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = problems


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body or body.isspace():  # no copy of a large batch body
        raise RequestProblems(
            "request body is empty",
            [Problem(field="body", value=None, message="a JSON body is required")],
        )
    try:
        return await request.json()
    except SerializationException as exc:
        message = str(exc.detail or exc)[:200]
    except RecursionError:  # msgspec's limit on nesting (a patient body is 3 levels deep)
        message = "JSON nested too deeply"
    except UnicodeDecodeError as exc:
        message = f"a string is not valid UTF-8 (byte {exc.start} of the string)"
    raise RequestProblems(
        "request body is not valid JSON",
        [Problem(field="body", value=None, message=message)],
    )


def _raise_if(problems: list[Problem], what: str) -> None:
    if problems:
        raise RequestProblems(f"{len(problems)} problem(s) in the {what}", problems)


async def check_single_request(request: Request) -> None:
    """before_request hook of /v1/predict: every problem in query and body at once."""
    _, problems = validate_top_k(request.query_params.get("top_k"))
    _, explain_problems = parse_explain(request.query_params.get("explain"), True)
    _, body_problems = validate_patient_body(await _json_body(request))
    _raise_if(problems + explain_problems + body_problems, "request")


async def check_batch_request(request: Request) -> None:
    """before_request hook of /v1/predict/batch: paths look like ``patients[3].heart_rate``."""
    _, problems = validate_top_k(request.query_params.get("top_k"))
    _, explain_problems = parse_explain(request.query_params.get("explain"), False)
    _, body_problems = validate_batch_body(await _json_body(request))
    _raise_if(problems + explain_problems + body_problems, "request")


async def check_phenopacket_request(request: Request) -> None:
    """before_request hook of /v1/predict/phenopacket: every problem in query and phenopacket at
    once, with the phenopacket's paths (``phenotypicFeatures[2].type.id``)."""
    _, problems = validate_top_k(request.query_params.get("top_k"))
    _, explain_problems = parse_explain(request.query_params.get("explain"), True)
    _, body_problems = validate_phenopacket_body(await _json_body(request))
    _raise_if(problems + explain_problems + body_problems, "request")


PhenopacketBody = Annotated[
    dict[str, Any],
    Body(
        title="Phenopacket",
        description=PHENOPACKET_SCHEMA["description"],
        examples=[Example(summary="A GA4GH Phenopacket v2", value=PHENOPACKET_EXAMPLE)],
        schema_extra={
            "properties": PHENOPACKET_SCHEMA["properties"],
            "additionalProperties": True,
        },
    ),
]


class DisconnectWatch:
    """Notices a client that hung up while its request is being scored.

    Once the body has been read, the next ASGI ``receive`` only returns when the connection
    closes (``http.disconnect``); a task waiting on it sets :attr:`gone`, which the scoring pool
    checks between chunks."""

    def __init__(self, request: Request) -> None:
        self._receive = request.receive
        self.gone = False

    async def run(self) -> None:
        while not self.gone:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True


async def _score(
    request: Request,
    services: PredictServices,
    patients: list[Patient],
    top_k: int,
    explain: bool,
) -> list[Prediction]:
    """Price the request (413 over the budget), then score it in chunks in the scoring pool
    (:mod:`serving.scoring`); log and count the answers."""
    pool, prediction_log = services.scoring_pool, services.prediction_log
    symptom_names = services.symptom_names
    model = services.model_store.require()  # one model for the whole request, even on a reload
    inputs = [patient_input(p) for p in patients]
    costs = request_work(inputs, explain, model.spec.vitals)
    pool.check_budget(costs, explain)

    def score(part: range) -> list[Prediction]:
        return model.predict(
            [inputs[i] for i in part], top_k, explain=explain, symptom_name=symptom_names
        )

    if len(chunks(costs)) == 1:
        # one chunk: the pool checks for a departed client only before it, when a watch task
        # started now would not have run yet; so no watch (its task group and cancellation cost
        # about 100 µs of CPU, a fifth of a prediction)
        answers = await pool.run_chunks(costs, score)
    else:
        watch = DisconnectWatch(request)
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(watch.run)
            try:
                answers = await pool.run_chunks(costs, score, lambda: watch.gone)
            except Exception as exc:  # raised below, not wrapped in the group's ExceptionGroup
                failure = exc
            finally:
                group.cancel_scope.cancel()
        if failure is not None:
            raise failure
    if prediction_log is not None:
        prediction_log.record(inputs, answers)  # one write syscall
    metrics.count_predictions(answers)
    return answers


class PredictionController(Controller):
    path = "/v1"
    tags = ["prediction"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @post(
        "/predict",
        operation_id="predictDifferential",
        status_code=HTTP_200_OK,
        before_request=check_single_request,
        responses=_ERROR_RESPONSES,
        opt={"roles": CLINICAL_ROLES},
    )
    async def predict(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[Patient],
        predict_services: PredictServices,
        top_k: TopK = TOP_K_DEFAULT,
        explain: Explain = True,
    ) -> Prediction:
        """Ranked differential diagnosis, orphan probability and severity for one patient.

        Every body field is optional; ``body_temperature`` is in °C. Invalid input answers 422 with
        every problem listed (field, value, allowed range).
        """
        answers = await _score(request, predict_services, [data], top_k, explain)
        return answers[0]

    @post(
        "/predict/batch",
        operation_id="predictDifferentialBatch",
        status_code=HTTP_200_OK,
        before_request=check_batch_request,
        responses=_ERROR_RESPONSES,
        request_max_body_size=8 * 1024 * 1024,
        opt={"roles": CLINICAL_ROLES},
    )
    async def predict_batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PredictBatch],
        predict_services: PredictServices,
        top_k: TopK = TOP_K_DEFAULT,
        explain: Explain = False,
    ) -> BatchPredictions:
        """Predictions for 1–1000 patients, in the order they were sent.

        Problems are reported with paths like ``patients[3].heart_rate``; one bad patient rejects
        the whole batch (nothing is scored).
        """
        answers = await _score(request, predict_services, data.patients, top_k, explain)
        return BatchPredictions(predictions=answers)

    @post(
        "/predict/phenopacket",
        operation_id="predictDifferentialFromPhenopacket",
        status_code=HTTP_200_OK,
        before_request=check_phenopacket_request,
        responses=_ERROR_RESPONSES,
        opt={"roles": CLINICAL_ROLES},
    )
    async def predict_phenopacket(
        self,
        request: Request[Any, Any, Any],
        data: PhenopacketBody,
        predict_services: PredictServices,
        top_k: TopK = TOP_K_DEFAULT,
        explain: Explain = True,
    ) -> Prediction:
        """The `/v1/predict` answer for the patient a GA4GH Phenopacket v2 describes (v1.3).

        Observed ``phenotypicFeatures`` are the symptoms, ``excluded: true`` ones the absent
        symptoms; ``subject.sex``, the age at the last encounter (ISO 8601 duration) and vital-sign
        measurements (LOINC, UCUM units) fill the other fields. The patient is validated like a
        ``/v1/predict`` body (422 with every problem, at the phenopacket's paths) and answered,
        logged and counted exactly as ``/v1/predict`` answers it. Every other phenopacket field is
        ignored and never logged.
        """
        patient, _ = validate_phenopacket_body(data)  # the hook let only a valid one through
        typed = msgspec.convert(patient, Patient)
        answers = await _score(request, predict_services, [typed], top_k, explain)
        return answers[0]


def model_card(model: Runtime) -> ModelCard:
    """The card of a deployment, from its manifest."""
    m = model.manifest
    return ModelCard(
        version=model.version,
        trained_at=m.trained_at,
        onnx_sha256=model.onnx_sha256,
        metrics=dict(m.metrics),
        mlflow_run_id=m.mlflow_run_id,
        mlflow_model_version=m.mlflow_model_version,
        dagster_run_id=m.dagster_run_id,
        code_version=m.code_version,
        data_versions=dict(m.data_versions),
        hpo_release=m.hpo_release,
        n_classes=len(model.classes),
        classes=[ClassInfo(code=c.code, name=c.name, category=c.category) for c in model.classes],
        severity_labels=list(model.severity_labels),
        n_symptoms=len(model.spec.symptoms),
        loaded_at=model.loaded_at,
    )


class ModelController(Controller):
    path = "/v1/model"
    tags = ["model"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @get(
        "/",
        operation_id="getModelCard",
        responses=_AUTH_RESPONSES,
        opt={"roles": AUDIT_ROLES},
    )
    async def model_card(self, model_store: ModelStore) -> ModelCard:
        """The deployed model's card: version, provenance (MLflow, Dagster, data versions), metrics."""
        return model_card(model_store.require())


async def check_label_request(request: Request) -> None:
    """before_request hook of /v1/labels: every problem in the body at once."""
    _, problems = validate_label_body(await _json_body(request))
    _raise_if(problems, "label")


LabelledId = Annotated[
    str,
    Parameter(
        pattern=r"^[0-9a-fA-F]{32}$",
        description="The prediction_id the label confirms (32 hex characters).",
    ),
]


class LabelController(Controller):
    path = "/v1/labels"
    tags = ["labels"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @post(
        "/",
        operation_id="confirmDiagnosis",
        status_code=HTTP_202_ACCEPTED,
        before_request=check_label_request,
        responses={
            **_ERROR_RESPONSES,
            404: ResponseSpec(
                data_container=ErrorBody, description="No prediction with this id was logged."
            ),
        },
        opt={"roles": CLINICAL_ROLES},
    )
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LabelRequest],
        prediction_index: PredictionIndex,
        label_store: LabelStore,
        model_store: ModelStore,
    ) -> Label:
        """Record the confirmed diagnosis and severity of an earlier prediction.

        Answers 202 once the label is durably on disk (under ``$TRIAGE_HOME/labels``, written
        atomically). The diagnosis must be a code of the catalogue the deployed model serves
        (its classes and ranker diseases, or NONE), else 422 naming the field (v1.4). A second
        label for the same prediction is a correction: it becomes the next ``revision``, the
        earlier ones are kept (``GET /v1/labels/{prediction_id}``) and the answer says
        ``replaced: true``. ``confirmed_by`` is the name of the token used (v1.4). Unknown
        prediction ids answer 404; bad codes 422 with every problem. Severity may be given in
        English or Spanish.
        """
        fields = canonical_label(data)
        prediction = await anyio.to_thread.run_sync(prediction_index.find, fields["prediction_id"])
        if prediction is None:
            raise NotFoundException(detail="no prediction with this id was logged")
        _raise_if(
            label_store.catalogue.problems(fields["diagnosis"], model_store.require()), "label"
        )
        user = request.user
        record, replaced = await anyio.to_thread.run_sync(
            label_store.write, fields, user.role, prediction, user.name or None
        )
        metrics.count_label(fields["diagnosis"])
        stored = msgspec.structs.asdict(record)
        stored.pop("format")
        return Label(**stored, replaced=replaced)

    @get(
        "/{prediction_id:str}",
        operation_id="getLabelHistory",
        responses={
            **_QUERY_RESPONSES,
            404: ResponseSpec(
                data_container=ErrorBody, description="No label was recorded for this id."
            ),
        },
        opt={"roles": AUDIT_ROLES},
    )
    async def history(self, prediction_id: LabelledId, label_store: LabelStore) -> LabelHistory:
        """Every revision of a prediction's label, oldest first: who confirmed what, and when
        (v1.4, auditors and admins). The last revision is the one training uses."""
        key = prediction_id.lower()  # the pattern let only 32 hex characters through
        records = await anyio.to_thread.run_sync(label_store.history, key)
        if not records:
            raise NotFoundException(detail="no label was recorded for this prediction")
        return LabelHistory(
            prediction_id=key,
            revisions=[
                LabelRevision(
                    revision=r.revision,
                    diagnosis=r.diagnosis,
                    severity=r.severity,
                    labelled_at=r.labelled_at,
                    labelled_by=r.labelled_by,
                    confirmed_by=r.confirmed_by,
                    model_version=r.model_version,
                    predicted_at=r.predicted_at,
                )
                for r in records
            ],
        )


SearchQuery = Annotated[
    str,
    Parameter(
        query="q",
        min_length=1,
        max_length=QUERY_MAX_LENGTH,
        description="Text typed so far: case- and accent-insensitive; prefix matches first, "
        "then words starting with it, then (3+ characters) matches inside words.",
    ),
]
SearchLimit = Annotated[int, Parameter(ge=1, le=SEARCH_LIMIT_MAX, description="Page size.")]
SearchOffset = Annotated[int, Parameter(ge=0, le=100_000, description="Items to skip.")]


class SearchController(Controller):
    path = "/v1"
    tags = ["search"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @get(
        "/symptoms",
        operation_id="searchSymptoms",
        responses=_QUERY_RESPONSES,
        opt={"roles": SEARCH_ROLES},
    )
    async def symptoms(
        self,
        search: Knowledge,
        model_store: ModelStore,
        q: SearchQuery,
        limit: SearchLimit = SEARCH_LIMIT_DEFAULT,
        offset: SearchOffset = 0,
    ) -> SymptomPage:
        """Autocomplete over HPO phenotypic abnormalities (current terms): names and synonyms.

        Matches the HPO's English names and synonyms and its official Spanish labels
        (``label_es``), ignoring case and accents; exact and word-start matches come first. A
        query that matches nothing is searched again with its typos corrected (``corrected``).
        An HPO id (``HP:0001945``, also an old ``alt_id``) finds its current term. ``in_model``
        tells whether the deployed model's classifier uses the term (the rare-disease ranker reads
        every term).
        """
        total, page, corrected = search.symptoms.lookup(q, offset, limit)
        model = model_store.model
        return SymptomPage(
            query=q,
            total=total,
            offset=offset,
            limit=limit,
            hpo_release=search.symptoms.release,
            corrected=corrected,
            items=[
                SymptomMatch(
                    id=term.id,
                    name=term.name,
                    label_es=term.name_es,
                    synonym=synonym,
                    in_model=model is not None and model.spec.knows_symptom(term.id),
                    in_ranker=model is not None
                    and model.knowledge is not None
                    and model.knowledge.canonical(term.id) is not None,
                )
                for term, synonym in page
            ],
        )

    @get(
        "/diseases",
        operation_id="searchDiseases",
        responses=_QUERY_RESPONSES,
        opt={"roles": SEARCH_ROLES},
    )
    async def diseases(
        self,
        search: Knowledge,
        model_store: ModelStore,
        q: SearchQuery,
        limit: SearchLimit = SEARCH_LIMIT_DEFAULT,
        offset: SearchOffset = 0,
    ) -> DiseasePage:
        """Search the disease catalogue by name (English, or Spanish for the common conditions)
        or code: the deployed model's classes, the curated common conditions and the ORPHA/OMIM
        diseases of the HPO release the deployed model was built from (the local release when
        the model has no knowledge ranker)."""
        model = model_store.model
        classes = tuple(Disease(c.code, c.name, c.category) for c in model.classes) if model else ()
        deployed = model.knowledge if model is not None else None  # its knowledge.json
        index = search.cached_diseases(classes, deployed)
        if index is None:  # first search since the model changed: about 0.1 s, off the loop
            index = await anyio.to_thread.run_sync(search.diseases, classes, deployed)
        total, page = index.search(q, offset, limit)
        return DiseasePage(
            query=q,
            total=total,
            offset=offset,
            limit=limit,
            items=[
                DiseaseMatch(
                    code=d.code,
                    name=d.name,
                    name_es=d.name_es,
                    category=d.category,
                    in_model=d.code in index.model_codes,
                )
                for d in page
            ],
        )


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health", operation_id="getHealth")
    async def health(self) -> Health:
        """Liveness: the process answers. No authentication."""
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="getReadiness",
        responses={503: ResponseSpec(data_container=Readiness, description="No model loaded.")},
    )
    async def ready(self, model_store: ModelStore) -> Response[Readiness]:
        """Readiness: 200 once a model is loaded, else 503 with the reason. No authentication."""
        store = model_store
        model = store.model
        if model is None:
            return Response(
                Readiness(
                    status="not_ready",
                    detail="no model is loaded",
                    last_reload_error=store.last_error,
                ),
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        fallback = store.fallback
        if fallback is not None and fallback.served == model.version:
            return Response(
                Readiness(
                    status="ready",
                    model_version=model.version,
                    detail=f"serving the last known good version {fallback.served}: "
                    f"current.json names {fallback.pointer_version}, which failed its checks",
                    last_reload_error=store.last_error,
                    last_known_good=True,
                    pointer_version=fallback.pointer_version,
                )
            )
        return Response(
            Readiness(
                status="ready", model_version=model.version, last_reload_error=store.last_error
            )
        )
