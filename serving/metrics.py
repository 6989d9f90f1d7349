"""Prometheus metrics, served at ``GET /metrics`` (admin token) in the text exposition format.

* Per route (Litestar's Prometheus middleware, grouped by route template so ids never become
  labels): ``triage_requests_total``, ``triage_request_duration_seconds`` (histogram),
  ``triage_requests_in_progress`` and ``triage_requests_error_total`` (5xx), labelled with
  method, path and status code.
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

import collections
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from litestar import Controller, Request, Response, get

from schemas.categories import category_of
from serving.auth import ADMIN_ROLES, require_api_key

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:  # optional dependency
    prometheus_client = None

AVAILABLE = prometheus_client is not None
PREFIX = "triage"
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]

if AVAILABLE:
    _PREDICTIONS = Counter(f"{PREFIX}_predictions", "Served predictions by the category of the "
                           "most probable diagnosis.", ["top_category"])
    _LABELS = Counter(f"{PREFIX}_labels", "Confirmed diagnoses received, by category.",
                      ["category"])


def count_predictions(answers: Sequence[Mapping[str, Any]]) -> None:
    if not AVAILABLE:
        return
    tally = collections.Counter(a["differential"][0]["category"] for a in answers if a["differential"])
    for category, n in tally.items():
        _PREDICTIONS.labels(category).inc(n)


def count_label(diagnosis: str) -> None:
    if AVAILABLE:
        _LABELS.labels(category_of(diagnosis)).inc()


def prometheus_config() -> Any:
    """Litestar's Prometheus middleware configuration (``None`` without prometheus-client)."""
    if not AVAILABLE:
        return None
    from litestar.plugins.prometheus import PrometheusConfig

    return PrometheusConfig(
        app_name="triage",
        prefix=PREFIX,
        group_path=True,  # /v1/labels, not one series per URL
        buckets=LATENCY_BUCKETS,
        exclude=["^/metrics", "^/static/"],
    )


class _AppCollector:
    """Reads the app's model store and prediction log at scrape time."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        store = self._state.model_store
        model = store.model
        info = GaugeMetricFamily(f"{PREFIX}_model_info", "The model being served (value 1).",
                                 labels=["version", "onnx_sha256", "hpo_release"])
        if model is not None:
            info.add_metric([model.version, model.onnx_sha256,
                             str(model.manifest.get("hpo_release") or "")], 1.0)
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_model_loaded", "1 when a model is loaded, else 0.",
                                value=0.0 if model is None else 1.0)
        yield CounterMetricFamily(f"{PREFIX}_model_reload_failures",
                                  "Deployments that could not be loaded (the previous model stays).",
                                  value=float(store.load_failures))
        prediction_log = self._state.prediction_log
        yield CounterMetricFamily(f"{PREFIX}_prediction_log_write_errors",
                                  "Prediction log writes that failed.",
                                  value=float(prediction_log.write_errors if prediction_log else 0))


class MetricsController(Controller):
    path = "/metrics"
    tags = ["monitoring"]
    guards = [require_api_key]
    security = [{"BearerToken": []}]

    @get("/", operation_id="getMetrics", opt={"roles": ADMIN_ROLES}, include_in_schema=False)
    async def metrics(self, request: Request) -> Response[bytes]:
        """Prometheus text format: the process-wide metrics plus this app's model state."""
        state = request.app.state
        registry = getattr(state, "metrics_registry", None)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_AppCollector(state))
            state.metrics_registry = registry
        body = prometheus_client.generate_latest() + prometheus_client.generate_latest(registry)
        return Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)
