"""What the handlers work with, built once per app and handed to them by Litestar's dependency
injection (``Provide``), never looked up on ``app.state`` by a handler.

:class:`Services` is built by :func:`serving.app.create_app` from the frozen
:class:`~serving.settings.Settings` (no I/O: nothing is read or started); the app's lifespan
fills in what needs I/O (the model's first load, the search indexes) and starts and stops the
background threads (S3 follower and log shipper). :func:`dependencies` is the app-level
``dependencies`` mapping: a handler names the parameter (``model_store``, ``prediction_log``,
``prediction_index``, ``label_store``, ``scoring_pool``, ``search``, ``symptom_names``, ``settings``) and gets the
one instance of this app. The prediction endpoints take one dependency, ``predict_services``
(:class:`PredictServices`: the model store, the scoring pool, the prediction log and the symptom
names): Litestar resolves several dependencies of one handler concurrently in an anyio task group
(about 60 µs of CPU per request, a tenth of a prediction's), one alone is simply awaited.

The same objects stay reachable on ``app.state`` (``model_store``, ``prediction_index``, …) for
the guards (the token table), the metrics collector and tests that inspect them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar.datastructures import State
from litestar.di import Provide

from diagnosis.explain import SymptomNamer
from diagnosis.remote import RemoteError, RemoteStore
from serving.auth import TokenTable
from serving.explain_params import symptom_namer
from serving.labels import LabelStore
from serving.model_store import ModelStore
from serving.prediction_log import PredictionIndex, PredictionLog
from serving.scoring import ScoringPool
from serving.search import Knowledge
from serving.settings import Settings

log = logging.getLogger("triage.serving")


class SearchUnavailable(Exception):
    """The HPO search indexes could not be built at start-up (mapped to 503)."""


@dataclass
class Services:
    """One app's long-lived objects (one per worker process)."""

    settings: Settings
    tokens: TokenTable
    model_store: ModelStore
    prediction_index: PredictionIndex
    prediction_log: PredictionLog | None
    label_store: LabelStore
    scoring_pool: ScoringPool
    remote: RemoteStore | None = None
    knowledge: Knowledge | None = field(default=None)  # set by the lifespan (None: search 503)

    @classmethod
    def build(cls, settings: Settings, remote: RemoteStore | None = None) -> Services:
        """Construct everything from the settings; nothing is loaded or started here.
        ``remote`` defaults to the S3 store of ``settings.s3`` (when configured)."""
        if remote is None and settings.s3 is not None:
            remote = RemoteStore(settings.s3)
        index = PredictionIndex(
            settings.prediction_log_dir,
            fallback=(
                _shared_log_lookup(remote, settings.prediction_mirror_dir)
                if remote is not None
                else None
            ),
        )
        return cls(
            settings=settings,
            tokens=TokenTable(settings.api_keys),
            model_store=ModelStore(settings.deployments_dir, interval_s=settings.reload_interval_s),
            prediction_index=index,
            prediction_log=(
                PredictionLog(settings.prediction_log_dir, index)
                if settings.log_predictions
                else None
            ),
            label_store=LabelStore(settings.labels_dir, remote),
            scoring_pool=ScoringPool(
                threads=settings.scoring_threads,
                max_work=settings.max_request_work,
                deadline_s=settings.request_deadline_s,
            ),
            remote=remote,
        )

    def state(self) -> State:
        """The app's ``state``: the guards' token table and, for inspection, the services."""
        return State(
            {
                "settings": self.settings,
                "tokens": self.tokens,
                "services": self,
                "model_store": self.model_store,
                "prediction_index": self.prediction_index,
                "prediction_log": self.prediction_log,
                "label_store": self.label_store,
                "scoring_pool": self.scoring_pool,
            }
        )


@dataclass(frozen=True, slots=True)
class PredictServices:
    """What a prediction endpoint works with, resolved as one dependency (``predict_services``)."""

    model_store: ModelStore
    scoring_pool: ScoringPool
    prediction_log: PredictionLog | None
    symptom_names: SymptomNamer | None


def _shared_log_lookup(remote: RemoteStore, mirror: Path):
    """Find a prediction id served by another host: mirror every host's log from S3, then scan."""
    shared = PredictionIndex(mirror, recent_max=0)

    def lookup(prediction_id: str) -> dict[str, Any] | None:
        try:
            remote.pull("predictions", mirror)
        except RemoteError as exc:
            log.error("cannot read the shared prediction log: %s", exc)
        return shared.find(prediction_id)

    return lookup


def dependencies(services: Services) -> dict[str, Provide]:
    """The app-level dependencies: each returns this app's instance."""

    async def provide_model_store() -> ModelStore:
        """The store, after picking up a newly deployed model: at most one ``stat`` per reload
        interval on the event loop; the load itself runs in a worker thread."""
        store = services.model_store
        if store.reload_due():
            await anyio.to_thread.run_sync(store.reload_now)
        return store

    async def provide_predict_services() -> PredictServices:
        return PredictServices(
            await provide_model_store(),
            services.scoring_pool,
            services.prediction_log,
            provide_symptom_names(),
        )

    def provide_search() -> Knowledge:
        if services.knowledge is None:
            raise SearchUnavailable
        return services.knowledge

    def provide_symptom_names() -> SymptomNamer | None:
        return symptom_namer(services.knowledge)

    return {
        "settings": Provide(lambda: services.settings, sync_to_thread=False),
        "model_store": Provide(provide_model_store),
        "prediction_log": Provide(lambda: services.prediction_log, sync_to_thread=False),
        "prediction_index": Provide(lambda: services.prediction_index, sync_to_thread=False),
        "label_store": Provide(lambda: services.label_store, sync_to_thread=False),
        "scoring_pool": Provide(lambda: services.scoring_pool, sync_to_thread=False),
        "search": Provide(provide_search, sync_to_thread=False),
        "symptom_names": Provide(provide_symptom_names, sync_to_thread=False),
        "predict_services": Provide(provide_predict_services),
    }
