"""The one layout of ``TRIAGE_HOME``: where every process (pipeline, API, CLI) keeps its state.

    TRIAGE_HOME/                     default ./.triage (TRIAGE_HOME)
      landing/                       weekly exports records_<monday>.txt (raw zone)
      labels/                        confirmed diagnoses, one <prediction_id>.json each
      knowledge/hpo/                 a newer HPO release dropped by a data team (optional)
      dagster/                       the Dagster instance (DAGSTER_HOME)
      storage/                       asset values (Dagster IO manager)
      mlflow/                        MLflow tracking store and artifacts (local default)
      deployments/                   <version>/{model.onnx,knowledge.json,manifest.json}, current.json
      predictions/                   the API's prediction log, predictions-<UTC date>.jsonl
      cache/predictions/             log segments mirrored from S3
      reports/                       drift reports and references
      secrets/                       generated API tokens and the pseudonym key (0600)

The files that cross the pipeline/API boundary are typed in :mod:`schemas.contracts`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".triage"

# the API's prediction log: one file per UTC day, predictions-<YYYY-MM-DD>.jsonl
PREDICTION_LOG_GLOB = "predictions-*.jsonl"
PREDICTION_LOG_RE = re.compile(r"^predictions-(\d{4}-\d{2}-\d{2})\.jsonl$")


def prediction_log_file(directory: Path, day: str) -> Path:
    """The prediction log file of one UTC day (``YYYY-MM-DD``) in ``directory``."""
    return directory / f"predictions-{day}.jsonl"


def prediction_log_day(path: Path) -> str | None:
    """The UTC day a prediction log file holds, or None when the name is not a daily log's."""
    match = PREDICTION_LOG_RE.match(path.name)
    return match.group(1) if match else None


def home_from(env: Mapping[str, str]) -> Path:
    """``TRIAGE_HOME`` (default ``./.triage``), absolute."""
    return Path(env.get("TRIAGE_HOME") or DEFAULT_HOME).expanduser().resolve()


@dataclass(frozen=True)
class TriagePaths:
    """The layout of one TRIAGE_HOME."""

    home: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def labels(self) -> Path:
        return self.home / "labels"

    @property
    def knowledge(self) -> Path:
        return self.home / "knowledge"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def deployments(self) -> Path:
        return self.home / "deployments"

    @property
    def predictions(self) -> Path:
        return self.home / "predictions"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    @property
    def current_pointer(self) -> Path:
        return self.deployments / "current.json"

    @property
    def prediction_cache(self) -> Path:
        """Prediction-log segments mirrored from S3 (API with a bucket)."""
        return self.home / "cache" / "predictions"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TriagePaths:
        return cls(home_from(os.environ if env is None else env))
