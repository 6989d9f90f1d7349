"""Shared by the deployment-file tests: where the code and the libraries read each variable."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Variables read by a library rather than by the project: (import name, file inside the package
# that reads it). The file is checked, so a library that stops reading a name fails the tests.
LIBRARY_READERS: dict[str, tuple[str, str]] = {
    "AWS_ACCESS_KEY_ID": ("botocore", "credentials.py"),
    "AWS_SECRET_ACCESS_KEY": ("botocore", "credentials.py"),
    "AWS_DEFAULT_REGION": ("botocore", "configprovider.py"),
    "AWS_ENDPOINT_URL": ("botocore", "configprovider.py"),
    "MLFLOW_S3_ENDPOINT_URL": ("mlflow", "environment_variables.py"),
    "MLFLOW_BACKEND_STORE_URI": ("mlflow", "cli/__init__.py"),
    "MLFLOW_DEFAULT_ARTIFACT_ROOT": ("mlflow", "cli/__init__.py"),
    "DAGSTER_HOME": ("dagster", "_core/instance/config.py"),
}

# What runs in each of the project's images: the packages of this repository, the configuration
# files the processes load, and the libraries above that are installed there.
PIPELINE_PACKAGES = ("orchestration", "assets", "diagnosis", "schemas", "serving")
API_PACKAGES = ("serving", "diagnosis", "schemas")
PIPELINE_CONFIGS = ("orchestration/deploy/dagster.yaml", "orchestration/deploy/celery.yaml")
PIPELINE_LIBRARIES = frozenset({"botocore", "mlflow", "dagster"})
API_LIBRARIES = frozenset({"botocore"})


class Readers:
    """Answers "which file reads this environment variable?" for a set of packages, configuration
    files and libraries; None when nothing does."""

    API_LIBRARIES = API_LIBRARIES
    PIPELINE_LIBRARIES = PIPELINE_LIBRARIES

    def __init__(self, root: Path) -> None:
        self.root = root
        self._texts: dict[Path, str] = {}

    def _text(self, path: Path) -> str:
        if path not in self._texts:
            self._texts[path] = path.read_text(encoding="utf-8", errors="replace")
        return self._texts[path]

    def in_project(self, name: str, packages=(), configs=()) -> str | None:
        quoted = re.compile(rf"""(["']){re.escape(name)}\1""")
        for package in packages:
            for path in sorted((self.root / package).rglob("*.py")):
                if quoted.search(self._text(path)):
                    return str(path.relative_to(self.root))
        yaml_env = re.compile(rf"\benv:\s*{re.escape(name)}\b")
        for config in configs:
            path = self.root / config
            if path.exists() and yaml_env.search(self._text(path)):
                return config
        return None

    def in_library(self, name: str, libraries=frozenset()) -> str | None:
        if name not in LIBRARY_READERS:
            return None
        module, relative = LIBRARY_READERS[name]
        if module not in libraries:
            return None
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.submodule_search_locations, f"{module} is not installed"
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        assert path.exists(), f"{module} has no {relative} any more: update LIBRARY_READERS"
        return (
            f"{module}/{relative}" if re.search(rf"""["']{name}["']""", self._text(path)) else None
        )

    def pipeline(self, name: str) -> str | None:
        return self.in_project(name, PIPELINE_PACKAGES, PIPELINE_CONFIGS) or self.in_library(
            name, PIPELINE_LIBRARIES
        )

    def api(self, name: str) -> str | None:
        return self.in_project(name, API_PACKAGES) or self.in_library(name, API_LIBRARIES)


@pytest.fixture(scope="session")
def readers() -> Readers:
    return Readers(ROOT)


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}:{number}: {line!r}"
        assert key not in values, f"{path.name}:{number}: {key} is set twice"
        values[key] = value
    return values


@pytest.fixture(scope="session")
def env_file_parser():
    return parse_env_file


@pytest.fixture(scope="session")
def example_env() -> dict[str, str]:
    return parse_env_file(ROOT / "orchestration" / "deploy" / "example.env")
