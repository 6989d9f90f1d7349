"""Serving configuration, read from the environment once at start-up.

``Settings.from_env()`` is called by :func:`serving.app.create_app` (or by :func:`serving.app.serve`
before uvicorn starts, so a bad value fails fast with a readable message) and the frozen result is
held by the app's services and injected where needed (:mod:`serving.dependencies`). Nothing else in ``serving/`` reads ``os.environ``.

Environment:
- ``TRIAGE_HOME``: root of the deployed artefacts (default ``./.triage``), resolved to an absolute
  path. The model is read from ``<home>/deployments``, predictions are logged under
  ``<home>/predictions`` and clinicians' confirmed diagnoses are written to ``<home>/labels``.
- ``TRIAGE_API_KEYS``: ``"role:token,role/name:token"`` with roles ``clinician``, ``auditor``,
  ``admin``; the optional name (API v1.4) is recorded as ``confirmed_by`` in the labels the token
  confirms (default ``<role>-<position in the list>``). Empty or unset means no key is accepted
  (every protected endpoint answers 401).
- ``TRIAGE_RELOAD_INTERVAL``: seconds between checks of ``deployments/current.json`` (default 1).
- ``TRIAGE_PREDICTION_LOG``: ``"0"``/``"false"`` turns the prediction log off (default on).
- ``TRIAGE_S3_BUCKET`` (with ``TRIAGE_S3_PREFIX``, ``AWS_ENDPOINT_URL`` and the usual AWS
  credentials): the deployed model is read from S3, labels are written there before the 202 and the
  prediction log is shipped there every ``TRIAGE_S3_LOG_INTERVAL`` seconds (default 10); the local
  folders above stay as this host's working copy (see :mod:`diagnosis.remote`).
- ``TRIAGE_MAX_REQUEST_WORK``: the work budget of one prediction request in work units (default
  5000; :mod:`serving.scoring`); above it the request answers 413 naming the limit.
- ``TRIAGE_REQUEST_DEADLINE``: seconds after which a request's remaining chunks are not scored
  (default 60; 503). ``TRIAGE_SCORING_THREADS``: scoring threads per worker process (default 1).
- ``TRIAGE_SHUTDOWN_GRACE``: seconds a stopping worker waits for requests in flight (default 5).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from diagnosis.remote import S3Location
from schemas.layout import TriagePaths, home_from

ROLES: tuple[str, ...] = ("clinician", "auditor", "admin")


class SettingsError(ValueError):
    """A configuration value is unusable; the message says which variable and why (never a token)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    role: str
    token: str = field(repr=False)  # never shown in reprs or logs
    name: str = ""  # who holds it: recorded with the labels it confirms (never the token)


TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def parse_api_keys(raw: str | None) -> tuple[ApiKey, ...]:
    """Parse ``"role:token,role/name:token"``; raise :class:`SettingsError` naming the bad entry's
    position. A token without a name is named ``<role>-<position>`` (its place in the list)."""
    if raw is None or not raw.strip():
        return ()
    keys: list[ApiKey] = []
    seen_tokens: set[str] = set()
    seen_names: set[str] = set()
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            raise SettingsError(f"TRIAGE_API_KEYS entry {position} is empty (expected role:token)")
        holder, sep, token = entry.partition(":")
        token = token.strip()
        role, slash, name = holder.strip().partition("/")
        role, name = role.strip(), name.strip()
        if not sep or not token:
            raise SettingsError(
                f"TRIAGE_API_KEYS entry {position} is malformed (expected role:token)"
            )
        if role not in ROLES:
            raise SettingsError(
                f"TRIAGE_API_KEYS entry {position} has unknown role {role!r} "
                f"(allowed: {', '.join(ROLES)})"
            )
        if slash and not TOKEN_NAME_RE.match(name):
            raise SettingsError(
                f"TRIAGE_API_KEYS entry {position}: the name after {role}/ must be 1–64 letters, "
                "digits or . _ @ -"
            )
        name = name or f"{role}-{position}"
        if name in seen_names:
            raise SettingsError(f"TRIAGE_API_KEYS entry {position} repeats the name {name!r}")
        if any(ch.isspace() for ch in token):
            raise SettingsError(f"TRIAGE_API_KEYS entry {position}: the token contains whitespace")
        if token in seen_tokens:
            raise SettingsError(
                f"TRIAGE_API_KEYS entry {position} repeats a token already configured; "
                "each token must map to exactly one role"
            )
        seen_tokens.add(token)
        seen_names.add(name)
        keys.append(ApiKey(role=role, token=token, name=name))
    return tuple(keys)


def _parse_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _parse_float(name: str, raw: str | None, default: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < 86400:
        raise SettingsError(f"{name} must be between 0 and 86400 seconds, got {raw!r}")
    return value


def _parse_positive(
    name: str, raw: str | None, default: float, unit: str, most: float = 1e9
) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of {unit}, got {raw!r}") from None
    if not 1 <= value <= most:
        raise SettingsError(f"{name} must be between 1 and {most:g} {unit}, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    triage_home: Path
    api_keys: tuple[ApiKey, ...] = ()
    reload_interval_s: float = 1.0
    log_predictions: bool = True
    s3: S3Location | None = None
    s3_log_interval_s: float = 10.0
    max_request_work: float = 5000.0
    request_deadline_s: float = 60.0
    scoring_threads: int = 1
    shutdown_grace_s: float = 5.0

    @property
    def paths(self) -> TriagePaths:
        """The one TRIAGE_HOME layout (:mod:`schemas.layout`)."""
        return TriagePaths(self.triage_home)

    @property
    def deployments_dir(self) -> Path:
        return self.paths.deployments

    @property
    def current_pointer(self) -> Path:
        return self.paths.current_pointer

    @property
    def prediction_log_dir(self) -> Path:
        """One JSON-lines file per UTC day: ``predictions-YYYY-MM-DD.jsonl``."""
        return self.paths.predictions

    @property
    def prediction_mirror_dir(self) -> Path:
        """Every host's prediction log, reassembled from S3 (label look-ups of other hosts' ids)."""
        return self.paths.prediction_cache

    @property
    def labels_dir(self) -> Path:
        """One JSON file per confirmed diagnosis: ``labels/<prediction_id>.json``."""
        return self.paths.labels

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            triage_home=home_from(env),
            api_keys=parse_api_keys(env.get("TRIAGE_API_KEYS")),
            reload_interval_s=_parse_float(
                "TRIAGE_RELOAD_INTERVAL", env.get("TRIAGE_RELOAD_INTERVAL"), 1.0
            ),
            log_predictions=_parse_bool(
                "TRIAGE_PREDICTION_LOG", env.get("TRIAGE_PREDICTION_LOG"), True
            ),
            s3=S3Location.from_env(env),
            s3_log_interval_s=_parse_float(
                "TRIAGE_S3_LOG_INTERVAL", env.get("TRIAGE_S3_LOG_INTERVAL"), 10.0
            ),
            max_request_work=_parse_positive(
                "TRIAGE_MAX_REQUEST_WORK", env.get("TRIAGE_MAX_REQUEST_WORK"), 5000.0, "work units"
            ),
            request_deadline_s=_parse_float(
                "TRIAGE_REQUEST_DEADLINE", env.get("TRIAGE_REQUEST_DEADLINE"), 60.0
            ),
            scoring_threads=int(
                _parse_positive(
                    "TRIAGE_SCORING_THREADS", env.get("TRIAGE_SCORING_THREADS"), 1, "threads", 64
                )
            ),
            shutdown_grace_s=_parse_float(
                "TRIAGE_SHUTDOWN_GRACE", env.get("TRIAGE_SHUTDOWN_GRACE"), 5.0
            ),
        )
