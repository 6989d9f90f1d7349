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

Each uvicorn worker keeps its own counters (scrape each worker, or run one worker per container).
Needs ``prometheus-client``; without it the app runs and ``/metrics`` is simply not mounted.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from litestar import Controller, Response, get

from diagnosis.categories import category_of
from schemas.contracts import Prediction
from serving.auth import ADMIN_ROLES, require_api_key
from serving.model_store import ModelStore
from serving.prediction_log import PredictionLog

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:  # optional dependency
    prometheus_client = None

AVAILABLE = prometheus_client is not None
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


def request_metrics_middleware() -> Any:
    """The per-route request metrics middleware (``None`` without prometheus-client)."""
    return RequestMetrics if AVAILABLE else None


class _AppCollector:
    """Reads the app's model store and prediction log at scrape time."""

    def __init__(self, store: ModelStore, prediction_log: PredictionLog | None) -> None:
        self._store = store
        self._prediction_log = prediction_log

    def collect(self) -> Iterator[Any]:
        store = self._store
        model = store.model
        info = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The model being served (value 1).",
            labels=["version", "onnx_sha256", "hpo_release"],
        )
        if model is not None:
            info.add_metric(
                [model.version, model.onnx_sha256, str(model.manifest.hpo_release or "")], 1.0
            )
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_model_loaded",
            "1 when a model is loaded, else 0.",
            value=0.0 if model is None else 1.0,
        )
        yield GaugeMetricFamily(  # API v1.4 (serving.model_store: last known good)
            f"{PREFIX}_model_last_known_good",
            "1 when serving the newest version that passes its checks instead of the one "
            "current.json names (which failed them), else 0.",
            value=0.0 if store.fallback is None else 1.0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_model_reload_failures",
            "Deployments that could not be loaded (the previous model stays).",
            value=float(store.load_failures),
        )
        prediction_log = self._prediction_log
        yield CounterMetricFamily(
            f"{PREFIX}_prediction_log_write_errors",
            "Prediction log writes that failed.",
            value=float(prediction_log.write_errors if prediction_log else 0),
        )


# one registry per app (keyed by its model store, whose lifetime is the app's)
_APP_REGISTRIES: weakref.WeakKeyDictionary[ModelStore, Any] = weakref.WeakKeyDictionary()


class MetricsController(Controller):
    path = "/metrics"
    tags = ["monitoring"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @get("/", operation_id="getMetrics", opt={"roles": ADMIN_ROLES}, include_in_schema=False)
    async def metrics(
        self, model_store: ModelStore, prediction_log: PredictionLog | None
    ) -> Response[bytes]:
        """Prometheus text format: the process-wide metrics plus this app's model state."""
        registry = _APP_REGISTRIES.get(model_store)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_AppCollector(model_store, prediction_log))
            _APP_REGISTRIES[model_store] = registry
        body = prometheus_client.generate_latest() + prometheus_client.generate_latest(registry)
        return Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)
