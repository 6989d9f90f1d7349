"""Resources, built once per environment from the environment.

Asset code receives these typed resources and never reads the environment itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

import dagster as dg
import mlflow
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from orchestration.settings import TriagePaths, pseudonym_key

EXPERIMENT_NAME = "triage-diagnosis"
REGISTERED_MODEL_NAME = "triage-diagnosis"


class TriageStorage(dg.ConfigurableResource):
    """The state directory and its layout. Without ``home``, TRIAGE_HOME is read when a run
    starts (default ./.triage), never when the code location is loaded."""

    home: Optional[str] = None

    @property
    def paths(self) -> TriagePaths:
        return TriagePaths(Path(self.home).resolve()) if self.home else TriagePaths.from_env()

    def pseudonym_key(self) -> bytes:
        return pseudonym_key(self.paths.home)


class TriageIOManager(dg.FilesystemIOManager):
    """Dagster's filesystem IO manager; without ``base_dir`` it roots at TRIAGE_HOME/storage,
    resolved when a run starts."""

    def create_io_manager(self, context: dg.InitResourceContext):
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
    max_onnx_abs_diff: float = 1e-4
    champion_tolerance: float = 0.02


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
    config["mlflow_tracking_uri"] = config.get("mlflow_tracking_uri") or os.environ.get(
        "MLFLOW_TRACKING_URI"
    )
    if not config["mlflow_tracking_uri"]:
        paths.mlflow.mkdir(parents=True, exist_ok=True)
        config["mlflow_tracking_uri"] = f"sqlite:///{paths.mlflow / 'mlflow.db'}"
    mlflow.set_tracking_uri(config["mlflow_tracking_uri"])
    if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
        mlflow.create_experiment(
            config["experiment_name"],
            artifact_location=config.get("artifact_location")
            or (paths.mlflow / "artifacts").as_uri(),
        )
    return MlFlow(context.replace_config(config))


def code_version() -> str:
    """The git commit of the code that runs, or 'unknown' outside a checkout."""
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


def build_resources() -> dict[str, object]:
    """Resources for the local single-machine default: everything under TRIAGE_HOME, resolved
    when a run starts. MLflow uses MLFLOW_TRACKING_URI when set, else SQLite in TRIAGE_HOME."""
    return {
        "storage": TriageStorage(),
        "policy": ModelPolicy(),
        "quality": QualityPolicy(),
        "mlflow": triage_mlflow.configured(
            {
                "experiment_name": EXPERIMENT_NAME,
            }
        ),
        "io_manager": TriageIOManager(),
    }
