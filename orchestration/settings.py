"""Where the product keeps its state, the few secrets it needs, and which environment this is.

Everything lives under ``TRIAGE_HOME`` (default ``./.triage``); with ``TRIAGE_S3_BUCKET`` the shared
areas live in S3 and ``TRIAGE_HOME`` is this process's working copy (:mod:`diagnosis.remote`). These
helpers are read at run time (by the CLI and by resources), never at import time.

The environment split (local / branch / prod) is decided here and nowhere else:

======================= ========================= =============================== =================
                        local (default)           branch (Dagster+ branch deploy)  prod
======================= ========================= =============================== =================
shared files            TRIAGE_HOME, or S3 if     S3 required, under               S3 required
                        TRIAGE_S3_BUCKET is set   ``<prefix>/branches/<branch>``
MLflow experiment/model ``triage-diagnosis``      ``triage-diagnosis-<branch>``    ``triage-diagnosis``
pseudonym key           generated once if unset   TRIAGE_PSEUDONYM_KEY required    required
======================= ========================= =============================== =================

``TRIAGE_ENV`` names the environment explicitly; otherwise Dagster+ tells: a branch deployment sets
``DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT=1`` (branch name in ``DAGSTER_CLOUD_GIT_BRANCH``), any other
Dagster+ deployment sets ``DAGSTER_CLOUD_DEPLOYMENT_NAME``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from diagnosis.files import private_dir
from diagnosis.remote import S3Location
from schemas.layout import home_from

PSEUDONYM_KEY_ENV = "TRIAGE_PSEUDONYM_KEY"
ENVIRONMENTS = ("local", "branch", "prod")
BASE_NAME = "triage-diagnosis"


class ConfigurationError(ValueError):
    """The environment is misconfigured; the message names the variable."""


@dataclass(frozen=True)
class Environment:
    name: str
    branch: str | None = None

    @property
    def shared(self) -> bool:
        """Branch and prod deployments share state through object storage, never a local disk."""
        return self.name != "local"

    @property
    def model_name(self) -> str:
        """MLflow experiment and registered model: a branch never moves prod's champion."""
        return f"{BASE_NAME}-{self.branch}" if self.name == "branch" else BASE_NAME

    def s3_location(self, env: Mapping[str, str] | None = None) -> S3Location | None:
        location = S3Location.from_env(env)
        if location is None:
            if self.shared:
                raise ConfigurationError(
                    f"the {self.name} environment keeps its files in S3: set TRIAGE_S3_BUCKET"
                )
            return None
        if self.name == "branch":
            location = S3Location(
                location.bucket, f"{location.prefix}/branches/{self.branch}", location.endpoint_url
            )
        return location


def current_environment(env: Mapping[str, str] | None = None) -> Environment:
    env = os.environ if env is None else env
    name = (env.get("TRIAGE_ENV") or "").strip().lower()
    is_branch = env.get("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT", "").strip() in {"1", "true"}
    if not name:
        name = (
            "branch"
            if is_branch
            else "prod"
            if env.get("DAGSTER_CLOUD_DEPLOYMENT_NAME")
            else "local"
        )
    if name not in ENVIRONMENTS:
        raise ConfigurationError(
            f"TRIAGE_ENV must be one of {', '.join(ENVIRONMENTS)}, got {name!r}"
        )
    branch = None
    if name == "branch":
        raw = (
            env.get("DAGSTER_CLOUD_GIT_BRANCH")
            or env.get("DAGSTER_CLOUD_DEPLOYMENT_NAME")
            or "branch"
        )
        branch = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40] or "branch"
    return Environment(name, branch)


def triage_home() -> Path:
    return home_from(os.environ)


def pseudonym_key(home: Path | None = None) -> bytes:
    """The HMAC key for patient identifiers.

    ``TRIAGE_PSEUDONYM_KEY`` wins. Without it (the single-machine demo) a random key is generated
    once under TRIAGE_HOME/secrets with owner-only permissions, so identifiers stay stable across
    runs on this machine and are never stored in clear.
    """
    value = os.environ.get(PSEUDONYM_KEY_ENV)
    if value:
        return value.encode()
    environment = current_environment()
    if environment.shared:
        raise ConfigurationError(
            f"the {environment.name} environment needs {PSEUDONYM_KEY_ENV} (a secret shared by "
            "every process that pseudonymises identifiers)"
        )
    key_file = (home or triage_home()) / "secrets" / "pseudonym.key"
    if not key_file.exists():
        private_dir(key_file.parent)
        tmp = key_file.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        os.replace(tmp, key_file)
    return key_file.read_text().strip().encode()
