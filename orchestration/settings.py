"""Where the product keeps its state, and the few secrets it needs.

Everything lives under ``TRIAGE_HOME`` (default ``./.triage``). These helpers are read at run time
(by the CLI and by resources), never at import time.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

PSEUDONYM_KEY_ENV = "TRIAGE_PSEUDONYM_KEY"


def triage_home() -> Path:
    return Path(os.environ.get("TRIAGE_HOME", ".triage")).expanduser().resolve()


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

    @classmethod
    def from_env(cls) -> "TriagePaths":
        return cls(triage_home())


def pseudonym_key(home: Path | None = None) -> bytes:
    """The HMAC key for patient identifiers.

    ``TRIAGE_PSEUDONYM_KEY`` wins. Without it (the single-machine demo) a random key is generated
    once under TRIAGE_HOME/secrets with owner-only permissions, so identifiers stay stable across
    runs on this machine and are never stored in clear.
    """
    value = os.environ.get(PSEUDONYM_KEY_ENV)
    if value:
        return value.encode()
    key_file = (home or triage_home()) / "secrets" / "pseudonym.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_file.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        os.replace(tmp, key_file)
    return key_file.read_text().strip().encode()
