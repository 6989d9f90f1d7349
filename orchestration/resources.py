"""Resources, built once per environment from the environment.

Asset code receives these typed resources and never reads the environment itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import dagster as dg
import mlflow
from dagster_aws.s3 import S3Resource
from dagster_aws.s3.io_manager import PickledObjectS3IOManager
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from diagnosis.remote import RemoteStore
from orchestration.settings import BASE_NAME, current_environment, pseudonym_key
from schemas.layout import TriagePaths

EXPERIMENT_NAME = BASE_NAME  # per environment: current_environment().model_name
ALERT_WEBHOOK_ENV = "TRIAGE_ALERT_WEBHOOK"


class TriageStorage(dg.ConfigurableResource):
    """The state directory and its layout, and the S3 store shared areas live in when configured.

    Without ``home``, TRIAGE_HOME is read when a run starts (default ./.triage), never when the
    code location is loaded; likewise TRIAGE_S3_BUCKET / TRIAGE_S3_PREFIX / AWS_ENDPOINT_URL (see
    :func:`orchestration.settings.current_environment` for the per-environment rules). Assets read
    shared files after ``pull(area)`` and publish them with ``push(area)``; both do nothing on the
    local default, where TRIAGE_HOME is the store.
    """

    home: Optional[str] = None

    @property
    def paths(self) -> TriagePaths:
        return TriagePaths(Path(self.home).resolve()) if self.home else TriagePaths.from_env()

    def pseudonym_key(self) -> bytes:
        return pseudonym_key(self.paths.home)

    @property
    def remote(self) -> Optional[RemoteStore]:
        location = current_environment().s3_location()
        if location is None:
            return None
        # the client comes from dagster-aws's S3 resource (credentials, region, endpoint)
        return RemoteStore(location, S3Resource(endpoint_url=location.endpoint_url).get_client())

    def pull(self, area: str, under: str = "", remote: Optional[RemoteStore] = None) -> list[str]:
        remote = remote or self.remote
        return remote.pull(area, getattr(self.paths, area), under) if remote else []

    def pull_deployment(self) -> bool:
        """Mirror the deployed model (pointer + its version folder) from S3, if configured."""
        remote = self.remote
        return remote.pull_deployment(self.paths.deployments) if remote else False

    def push(self, area: str, names=None, remote: Optional[RemoteStore] = None) -> list[str]:
        remote = remote or self.remote
        return remote.push(area, getattr(self.paths, area), names) if remote else []

    def describe(self, area: str) -> str:
        """Where an area lives, for metadata and messages."""
        location = current_environment().s3_location()
        return location.uri(area) if location else str(getattr(self.paths, area))


class TriageIOManager(dg.FilesystemIOManager):
    """Asset outputs: Dagster's filesystem IO manager under TRIAGE_HOME/storage, or dagster-aws's
    pickled-object S3 IO manager under ``<prefix>/storage`` when S3 is configured; decided when a
    run starts."""

    def create_io_manager(self, context: dg.InitResourceContext):
        location = current_environment().s3_location()
        if location is not None and not self.base_dir:
            client = S3Resource(endpoint_url=location.endpoint_url).get_client()
            return PickledObjectS3IOManager(
                location.bucket, client, s3_prefix=f"{location.prefix}/storage"
            )
        base_dir = self.base_dir or str(TriagePaths.from_env().storage)
        return dg.FilesystemIOManager(base_dir=base_dir).create_io_manager(context)


class QualityPolicy(dg.ConfigurableResource):
    """Data-quality thresholds a data team tunes without touching code."""

    max_quarantine_rate: float = 0.10


class ModelPolicy(dg.ConfigurableResource):
    """Training and gate settings a data team tunes without touching code."""

    min_class_rows: int = 5
    evaluation_share: float = 0.2
    random_seed: int = 7
    min_macro_f1: float = 0.5
    min_orphan_recall: float = 0.3
    min_rare_top10: float = 0.6
    knowledge_cases: int = 600
    max_onnx_abs_diff: float = 1e-4
    champion_tolerance: float = 0.02
    # real published cases: refuse a challenger worse than the champion beyond these
    real_top10_tolerance: float = 0.02
    real_ece_tolerance: float = 0.03


class MonitoringPolicy(dg.ConfigurableResource):
    """Monitoring and retraining settings a data team tunes without touching code."""

    # drift: the current window is the last ``drift_window_days`` days of the prediction log
    drift_window_days: int = 7
    drift_share_threshold: float = 0.5  # the drift check warns above this share of drifted features
    drift_max_rows: int = 5000  # reference and current are sampled down to this many rows
    drift_top_symptoms: int = 10  # symptom prevalence is compared for the most frequent terms
    # retraining triggered by confirmed labels
    min_new_labels: int = 20
    label_retrain_cooldown_seconds: int = 0
    # retraining triggered by a failed drift check
    drift_retrain_cooldown_seconds: int = 24 * 3600
    # live performance on labelled feedback, per model version
    min_labels_for_performance: int = 20
    min_live_accuracy: float = 0.5
    min_live_macro_f1: float = 0.4
    min_live_orphan_recall: float = 0.2


class AlertsResource(dg.ConfigurableResource):
    """Posts an alert as JSON to a webhook (chat, paging, incident tool).

    Without ``webhook_url`` the URL is read from TRIAGE_ALERT_WEBHOOK when an alert is sent (not
    when the code location loads); when neither is set the alert is only logged as a warning.
    Sending never raises: a failed delivery is logged as an error and reported as False, so a
    monitoring run is not lost because the chat service is down.
    """

    webhook_url: Optional[str] = None
    timeout_seconds: float = 5.0

    def resolved_url(self) -> Optional[str]:
        return self.webhook_url or os.environ.get(ALERT_WEBHOOK_ENV) or None

    def send(
        self,
        kind: str,
        summary: str,
        details: Optional[dict] = None,
        log: Optional[logging.Logger] = None,
    ) -> bool:
        """POST ``{"source", "kind", "summary", "details", "sent_at"}``; True when delivered."""
        log = log or logging.getLogger("triage.alerts")
        url = self.resolved_url()
        if not url:
            log.warning(f"alert {kind} not sent ({ALERT_WEBHOOK_ENV} is not set): {summary}")
            return False
        payload = {
            "source": "triage",
            "kind": kind,
            "summary": summary,
            "details": details or {},
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        request = urllib.request.Request(
            url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                delivered = 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.error(f"alert {kind} could not be delivered: {exc}")
            return False
        if not delivered:
            log.error(f"alert {kind}: webhook answered {response.status}")
        return delivered


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_location": dg.Field(
            dg.Noneable(dg.StringSource), default_value=None, is_required=False
        ),
    }
)
def triage_mlflow(context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's tracking resource, with the experiment's artifact store set explicitly.

    MLflow would otherwise put artifacts of a new experiment under ``./mlruns`` of whatever
    directory the process started in.
    """
    config = dict(context.resource_config)
    paths = TriagePaths.from_env()
    environment = current_environment()
    if config.get("experiment_name") == EXPERIMENT_NAME:
        config["experiment_name"] = environment.model_name
    # TRIAGE_MLFLOW_TRACKING_URI, not MLFLOW_TRACKING_URI: MLflow writes that one into the
    # process environment itself whenever a tracking URI is set, so it cannot carry configuration.
    config["mlflow_tracking_uri"] = config.get("mlflow_tracking_uri") or os.environ.get(
        "TRIAGE_MLFLOW_TRACKING_URI"
    )
    if not config["mlflow_tracking_uri"]:
        paths.mlflow.mkdir(parents=True, exist_ok=True)
        config["mlflow_tracking_uri"] = f"sqlite:///{paths.mlflow / 'mlflow.db'}"
    location = environment.s3_location()
    if location is not None and location.endpoint_url:
        # MLflow's S3 artifact store reads its endpoint from its own variable
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", location.endpoint_url)
    mlflow.set_tracking_uri(config["mlflow_tracking_uri"])
    # The model registry lives in the same store; set it too, or MLflow keeps the registry of
    # the first store this process used.
    mlflow.set_registry_uri(config["mlflow_tracking_uri"])
    if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
        mlflow.create_experiment(
            config["experiment_name"],
            artifact_location=config.get("artifact_location")
            or os.environ.get("TRIAGE_MLFLOW_ARTIFACTS")
            or (location.uri("mlflow") if location else (paths.mlflow / "artifacts").as_uri()),
        )
    return MlFlow(context.replace_config(config))


def code_version() -> str:
    """The git commit of the code that runs: TRIAGE_CODE_VERSION when set (container images,
    built without git), else the checkout's HEAD, else 'unknown'."""
    if os.environ.get("TRIAGE_CODE_VERSION"):
        return os.environ["TRIAGE_CODE_VERSION"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


EXECUTOR_ENV = "TRIAGE_EXECUTOR"


def build_executor(env=None) -> Optional[dg.ExecutorDefinition]:
    """The executor of every job, chosen by TRIAGE_EXECUTOR when the code location loads (a
    deployment decision: every run of this location uses it):

    - unset or ``multiprocess``: Dagster's default (one process per step; in_process on request);
    - ``in_process``: every step in the run's process;
    - ``celery``: steps become Celery tasks on workers started with ``dagster-celery worker start``
      against DAGSTER_CELERY_BROKER_URL (Redis or RabbitMQ; results in DAGSTER_CELERY_BACKEND_URL,
      default the broker, which suits Redis; with RabbitMQ set it to ``rpc://``). Needs a persistent instance and a shared IO manager: PostgreSQL + S3,
      or SQLite + TRIAGE_HOME when every worker is on this machine.
    """
    env = os.environ if env is None else env
    choice = (env.get(EXECUTOR_ENV) or "multiprocess").strip().lower()
    if choice == "multiprocess":
        return None
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "celery":
        from dagster_celery import celery_executor

        broker = {"env": "DAGSTER_CELERY_BROKER_URL"}
        backend = (
            {"env": "DAGSTER_CELERY_BACKEND_URL"}
            if env.get("DAGSTER_CELERY_BACKEND_URL")
            else broker
        )
        return celery_executor.configured({"broker": broker, "backend": backend})
    raise ValueError(f"{EXECUTOR_ENV} must be multiprocess, in_process or celery, got {choice!r}")


def build_resources() -> dict[str, object]:
    """Resources for the local single-machine default: everything under TRIAGE_HOME, resolved
    when a run starts. MLflow uses TRIAGE_MLFLOW_TRACKING_URI when set, else SQLite in TRIAGE_HOME."""
    return {
        "storage": TriageStorage(),
        "policy": ModelPolicy(),
        "quality": QualityPolicy(),
        "monitoring": MonitoringPolicy(),
        "alerts": AlertsResource(),
        "mlflow": triage_mlflow.configured(
            {
                "experiment_name": EXPERIMENT_NAME,
            }
        ),
        "io_manager": TriageIOManager(),
    }
