"""Prometheus metrics, served at ``GET /metrics`` (admin token) in the text exposition format.

* Per route (:class:`RequestMetrics`, grouped by route template so ids never become labels):
  ``triage_requests_total``, ``triage_request_duration_seconds`` (histogram) and
  ``triage_requests_error_total`` (5xx), labelled with method, path, status code and app name;
  ``triage_requests_in_progress`` (method, path, app name).
* ``triage_predictions_total{top_category}``: served predictions by the category
  (common/orphan/healthy) of the most probable diagnosis.
* ``triage_labels_total{category}``: confirmed diagnoses received, by category.
* ``triage_model_info{version, onnx_sha256, hpo_release}`` (always 1) and ``triage_model_loaded``;
  ``triage_model_reload_failures_total``: deployments that could not be loaded;
  ``triage_prediction_log_write_errors_total``.

Several workers (``triage serve --workers N``): :func:`prepare_multiprocess` (called by ``serve()``
before uvicorn starts the workers) points ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder, so each
worker writes its samples there and every scrape, whichever worker answers it, reads all of them
through ``multiprocess.MultiProcessCollector``: counters and histograms are summed over the
workers, ``triage_requests_in_progress`` too; ``triage_model_info`` and
``triage_model_loaded`` are the workers' maximum / minimum (``livemax`` / ``livemin``: during a
hot reload both versions can show 1; loaded is 1 only when every live worker has a model). The
model state each worker publishes (info, loaded, reload failures, prediction log write errors) is
refreshed on each of its requests. One process (tests, ``uvicorn --factory`` without
``PROMETHEUS_MULTIPROC_DIR``) uses the default registry, with the same metric names.
Needs ``prometheus-client``; without it the app runs and ``/metrics`` is simply not mounted.
"""

from __future__ import annotations

import os
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Controller, Response, get

from diagnosis.categories import category_of
from schemas.contracts import Prediction
from serving.auth import ADMIN_ROLES, require_api_key
from serving.model_store import ModelStore
from serving.prediction_log import PredictionLog

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
except ImportError:  # optional dependency
    prometheus_client = None

AVAILABLE = prometheus_client is not None
# prometheus-client chose its value store when it was imported: files under the folder (several
# workers) or memory (one process)
MULTIPROCESS = AVAILABLE and bool(os.environ.get(MULTIPROC_ENV))
if MULTIPROCESS:  # metrics without labels write their sample file when they are created
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
PREFIX = "triage"
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

if AVAILABLE:
    _PREDICTIONS = Counter(
        f"{PREFIX}_predictions",
        "Served predictions by the category of the most probable diagnosis.",
        ["top_category"],
    )
    _LABELS = Counter(
        f"{PREFIX}_labels", "Confirmed diagnoses received, by category.", ["category"]
    )
    _REQUEST_LABELS = ["method", "path", "status_code", "app_name"]
    _REQUESTS = Counter(f"{PREFIX}_requests_total", "Total requests", _REQUEST_LABELS)
    _DURATION = Histogram(
        f"{PREFIX}_request_duration_seconds",
        "Request duration, in seconds",
        _REQUEST_LABELS,
        buckets=LATENCY_BUCKETS,
    )
    _ERRORS = Counter(
        f"{PREFIX}_requests_error_total", "Total errors in requests (5xx)", _REQUEST_LABELS
    )
    _IN_PROGRESS = Gauge(
        f"{PREFIX}_requests_in_progress",
        "Total requests currently in progress",
        ["method", "path", "app_name"],
        multiprocess_mode="livesum",
    )
    _MODEL_INFO = Gauge(
        f"{PREFIX}_model_info",
        "The model being served (value 1).",
        ["version", "onnx_sha256", "hpo_release"],
        multiprocess_mode="livemax",
    )
    _MODEL_LOADED = Gauge(
        f"{PREFIX}_model_loaded",
        "1 when a model is loaded (in every worker), else 0.",
        multiprocess_mode="livemin",
    )
    _MODEL_LAST_KNOWN_GOOD = Gauge(  # API v1.4 (serving.model_store: last known good)
        f"{PREFIX}_model_last_known_good",
        "1 when a worker serves the newest version that passes its checks instead of the one "
        "current.json names (which failed them), else 0.",
        multiprocess_mode="livemax",
    )
    _RELOAD_FAILURES = Counter(
        f"{PREFIX}_model_reload_failures",
        "Deployments that could not be loaded (the previous model stays), summed over workers.",
    )
    _LOG_WRITE_ERRORS = Counter(
        f"{PREFIX}_prediction_log_write_errors", "Prediction log writes that failed."
    )

APP_NAME = "triage"
EXCLUDED_PREFIXES = ("/metrics", "/static/")
_prediction_children: dict[str, Any] = {}


def count_predictions(answers: Sequence[Prediction]) -> None:
    if not AVAILABLE:
        return
    for answer in answers:
        if answer.differential:
            category = answer.differential[0].category
            child = _prediction_children.get(category)
            if child is None:  # labels() takes a lock and builds a key: once per category
                child = _prediction_children[category] = _PREDICTIONS.labels(category)
            child.inc()


def count_label(diagnosis: str) -> None:
    if AVAILABLE:
        _LABELS.labels(category_of(diagnosis)).inc()


class RequestMetrics:
    """ASGI middleware: count and time every routed request by route template and status.

    Same metric names and labels as Litestar's ``PrometheusMiddleware``, which it replaces
    because that one cost about 15 µs per request (a ``Request`` object, label dicts and four
    ``labels()`` look-ups under a lock each time); here each (method, route, status) resolves its
    metric children once and a request costs a dict look-up and the increments. Litestar applies
    app middleware after routing, so ``path_template`` is known (unmatched URLs answer 404 before
    reaching it and are not counted, as before). ``/metrics`` and ``/static/`` are not counted.
    """

    __slots__ = ("app", "_children", "_in_progress")

    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._in_progress: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXCLUDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope.get("path_template") or scope["path"]
        gauge = self._in_progress.get((method, path))
        if gauge is None:
            gauge = self._in_progress[(method, path)] = _IN_PROGRESS.labels(method, path, APP_NAME)
        status = 500  # if the app raises before starting a response
        start = time.perf_counter()

        async def send_and_note_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gauge.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - start
            gauge.dec()
            key = (method, path, status)
            children = self._children.get(key)
            if children is None:
                labels = (method, path, str(status), APP_NAME)
                children = self._children[key] = (
                    _REQUESTS.labels(*labels),
                    _DURATION.labels(*labels),
                )
            children[0].inc()
            children[1].observe(elapsed)
            if status >= 500:
                _ERRORS.labels(method, path, str(status), APP_NAME).inc()
            state = getattr(scope.get("app"), "state", None)
            store = state.get("model_store") if state is not None else None
            if store is not None:  # this worker's model state, for the next scrape
                _publisher_of(store).publish(store, state.get("prediction_log"))


def request_metrics_middleware() -> Any:
    """The per-route request metrics middleware (``None`` without prometheus-client)."""
    return RequestMetrics if AVAILABLE else None


class _StatePublisher:
    """Publishes one app's model store and prediction log state into the process's metrics; a
    call costs a few attribute reads unless something changed."""

    __slots__ = ("_model", "_failures", "_write_errors", "_info")

    def __init__(self) -> None:
        self._model: object = False  # never a model: the first call publishes
        self._failures = 0
        self._write_errors = 0
        self._info: tuple[str, str, str] | None = None

    def publish(self, store: ModelStore | None, prediction_log: PredictionLog | None) -> None:
        if store is not None:
            model = store.model
            if model is not self._model:
                self._model = model
                info = (
                    None
                    if model is None
                    else (model.version, model.onnx_sha256, str(model.manifest.hpo_release or ""))
                )
                if info != self._info:
                    if self._info is not None:
                        if MULTIPROCESS:  # files keep every series: the old one reads 0
                            _MODEL_INFO.labels(*self._info).set(0)
                        else:
                            _MODEL_INFO.remove(*self._info)
                    if info is not None:
                        _MODEL_INFO.labels(*info).set(1)
                    self._info = info
                _MODEL_LOADED.set(0 if model is None else 1)
                _MODEL_LAST_KNOWN_GOOD.set(0 if store.fallback is None else 1)
            failures = store.load_failures
            if failures != self._failures:
                _RELOAD_FAILURES.inc(max(failures - self._failures, 0))
                self._failures = failures
        errors = prediction_log.write_errors if prediction_log is not None else 0
        if errors != self._write_errors:
            _LOG_WRITE_ERRORS.inc(max(errors - self._write_errors, 0))
            self._write_errors = errors


# one publisher per app (keyed by its model store, whose lifetime is the app's)
_PUBLISHERS: weakref.WeakKeyDictionary[ModelStore, _StatePublisher] = weakref.WeakKeyDictionary()


def _publisher_of(store: ModelStore) -> _StatePublisher:
    publisher = _PUBLISHERS.get(store)
    if publisher is None:
        publisher = _PUBLISHERS[store] = _StatePublisher()
    return publisher


def prepare_multiprocess(directory: str | Path | None = None) -> Path | None:
    """Before the workers start (in the parent): point ``PROMETHEUS_MULTIPROC_DIR`` at an empty
    folder (``directory``, the variable's own value, or a new temporary folder), removing the
    sample files a previous run left there. Returns the folder (``None`` without
    prometheus-client)."""
    if not AVAILABLE:
        return None
    chosen = directory or os.environ.get(MULTIPROC_ENV)
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="triage-prometheus-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


@asynccontextmanager
async def publish_at_startup(app: Any) -> AsyncIterator[None]:
    """App lifespan step (after the model loaded): this worker's model state is published before
    its first request, so a scrape answered by another worker already counts it."""
    state = app.state
    store = state.get("model_store")
    if AVAILABLE and store is not None:
        _publisher_of(store).publish(store, state.get("prediction_log"))
    yield


def _forget_dead_workers(folder: Path) -> None:
    """Drop the ``live*`` gauges of workers that are gone (uvicorn replaces a worker that stops
    answering its pings, possibly before it loaded a model: its "not loaded" would stay)."""
    pids = {path.stem.rsplit("_", 1)[-1] for path in folder.glob("gauge_live*_*.db")}
    for pid in pids:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), str(folder))
        except (ValueError, PermissionError):  # not a pid, or another user's live process
            continue


def scrape() -> bytes:
    """The exposition text: every worker's samples in multiprocess mode, else this process's."""
    if MULTIPROCESS:
        _forget_dead_workers(Path(os.environ[MULTIPROC_ENV]))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return prometheus_client.generate_latest(registry)
    return prometheus_client.generate_latest()


class MetricsController(Controller):
    path = "/metrics"
    tags = ["monitoring"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @get("/", operation_id="getMetrics", opt={"roles": ADMIN_ROLES}, include_in_schema=False)
    async def metrics(
        self, model_store: ModelStore, prediction_log: PredictionLog | None
    ) -> Response[bytes]:
        """Prometheus text format: the whole service (every worker) with its model state."""
        _publisher_of(model_store).publish(model_store, prediction_log)
        return Response(scrape(), media_type=prometheus_client.CONTENT_TYPE_LATEST)
