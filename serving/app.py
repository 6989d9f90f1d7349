"""Litestar application: ``create_app()`` factory and ``serve()`` (used by ``triage serve``).

Start it with ``triage serve --host 127.0.0.1 --port 8000`` or
``uvicorn --factory serving.app:create_app``. Configuration comes from the environment
(:mod:`serving.settings`); the deployed model from ``$TRIAGE_HOME/deployments``.

This package never imports dagster, orchestration or assets: it only reads the deployed artefact.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_503_SERVICE_UNAVAILABLE

from serving import metrics
from serving.auth import TokenTable
from serving.controllers import (
    HealthController,
    LabelController,
    ModelController,
    PredictionController,
    RequestProblems,
    SearchController,
    SearchUnavailable,
)
from serving.labels import LabelStore
from serving.model_store import ModelStore, NoModelError
from serving.prediction_log import PredictionIndex, PredictionLog
from serving.search import Knowledge, load_knowledge
from serving.settings import Settings
from serving.structs import ErrorBody, Problem
from serving.ui import WebController, static_router

log = logging.getLogger("triage.serving")

API_VERSION = "1.0.0"


# ------------------------------------------------------------------ exception -> HTTP mapping
def _error(status: int, detail: str, problems: list[Problem] | None = None,
           headers: dict[str, str] | None = None) -> Response[ErrorBody]:
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
    return _error(HTTP_503_SERVICE_UNAVAILABLE, "the symptom and disease search is unavailable "
                  "(the HPO files could not be read at start-up)")


def _on_http_exception(_: Request, exc: HTTPException) -> Response[ErrorBody]:
    problems: list[Problem] = []
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
    return _error(exc.status_code, str(exc.detail), problems, headers=exc.headers)


def _on_unexpected(_: Request, exc: Exception) -> Response[ErrorBody]:
    reference = uuid.uuid4().hex[:12]
    # type and traceback only: the request body is never logged
    log.error("unhandled %s (reference %s)", type(exc).__name__, reference, exc_info=exc)
    return _error(500, f"internal error (reference {reference})")


# ------------------------------------------------------------------ lifespan
def _load_knowledge() -> Knowledge | None:
    """The search indexes, or ``None`` (search answers 503) if the HPO files cannot be read."""
    try:
        return load_knowledge()
    except Exception as exc:  # the API still predicts without search
        log.error("search indexes unavailable: %s: %s", type(exc).__name__, exc)
        return None


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = ModelStore(settings.deployments_dir, interval_s=settings.reload_interval_s)
    # the model (onnxruntime, mostly outside the GIL) and the search indexes load side by side
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.to_thread.run_sync, store.load)
        group.start_soon(_install_knowledge, app)
    if store.model is None:
        log.warning("starting without a model: %s", store.last_error)
    app.state.model_store = store
    index = PredictionIndex(settings.prediction_log_dir)
    app.state.prediction_index = index
    app.state.prediction_log = (
        PredictionLog(settings.prediction_log_dir, index) if settings.log_predictions else None
    )
    app.state.label_store = LabelStore(settings.labels_dir)
    try:
        yield
    finally:
        if app.state.prediction_log is not None:
            app.state.prediction_log.close()


async def _install_knowledge(app: Litestar) -> None:
    app.state.knowledge = await anyio.to_thread.run_sync(_load_knowledge)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; ``settings`` default to :meth:`Settings.from_env` (read once, here)."""
    settings = settings or Settings.from_env()
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
        SearchUnavailable: _on_search_unavailable,
        HTTPException: _on_http_exception,
        Exception: _on_unexpected,
    }
    route_handlers: list[Any] = [
        PredictionController, LabelController, SearchController, ModelController,
        HealthController, WebController, static_router(),
    ]
    middleware: list[Any] = []
    prometheus = metrics.prometheus_config()
    if prometheus is not None:
        route_handlers.append(metrics.MetricsController)
        middleware.append(prometheus.middleware)
    else:
        log.warning("prometheus-client is not installed: /metrics is not served")
    return Litestar(
        route_handlers=route_handlers,
        middleware=middleware,
        lifespan=[_lifespan],
        exception_handlers=exception_handlers,
        openapi_config=openapi,
        state=_initial_state(settings),
        debug=False,
    )


def _initial_state(settings: Settings) -> State:
    return State({"settings": settings, "tokens": TokenTable(settings.api_keys)})


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", access_log: bool = True) -> None:
    """Run uvicorn; each worker process builds its own app (and model session) from the env."""
    import uvicorn

    Settings.from_env()  # fail fast with a readable message before uvicorn forks workers
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
    )
