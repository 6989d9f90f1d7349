"""Resources, built once per environment from the environment.

Asset code receives these typed resources and never reads the environment itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
import mlflow
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from orchestration.settings import TriagePaths, pseudonym_key

EXPERIMENT_NAME = "triage-diagnosis"
REGISTERED_MODEL_NAME = "triage-diagnosis"


class TriageStorage(dg.ConfigurableResource):
    """The state directory (TRIAGE_HOME) and its layout."""

    home: str

    @property
    def paths(self) -> TriagePaths:
        return TriagePaths(Path(self.home))

    def pseudonym_key(self) -> bytes:
        return pseudonym_key(Path(self.home))


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
    config = context.resource_config
    uri = config.get("mlflow_tracking_uri")
    if uri:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
        mlflow.create_experiment(
            config["experiment_name"], artifact_location=config.get("artifact_location")
        )
    return MlFlow(context)


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
    """Resources for the current environment (local single-machine default)."""
    home = os.environ.get("TRIAGE_HOME", ".triage")
    paths = TriagePaths(Path(home).expanduser().resolve())
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow / 'mlflow.db'}"
    artifact_location = os.environ.get("TRIAGE_MLFLOW_ARTIFACTS") or (
        paths.mlflow / "artifacts"
    ).as_uri()
    return {
        "storage": TriageStorage(home=str(paths.home)),
        "policy": ModelPolicy(),
        "mlflow": triage_mlflow.configured(
            {
                "experiment_name": EXPERIMENT_NAME,
                "mlflow_tracking_uri": tracking_uri,
                "artifact_location": artifact_location,
            }
        ),
        "io_manager": dg.FilesystemIOManager(base_dir=str(paths.storage)),
    }
