"""dagster_cloud.yaml: the Dagster+ code location is the module every other workspace loads.

The structure is checked against the documented schema of dagster_cloud.yaml (the keys Dagster+'s
CLI accepts for `locations` entries, `build` and `code_source`), since the dagster-cloud CLI is not
a dependency of this project.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

LOCATION_KEYS = {
    "location_name",
    "code_source",
    "build",
    "working_directory",
    "image",
    "executable_path",
    "attribute",
    "container_context",
    "agent_queue",
}
CODE_SOURCES = {"package_name", "module_name", "python_file", "autoload_defs_module_name"}
BUILD_KEYS = {"directory", "registry"}
AGENT_TYPES = {"k8s", "docker", "ecs"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$|TRACKING_URI")


def _cloud() -> dict:
    return yaml.safe_load((ROOT / "dagster_cloud.yaml").read_text(encoding="utf-8"))


def _location() -> dict:
    cloud = _cloud()
    assert set(cloud) <= {"locations", "defaults"}
    (location,) = cloud["locations"]
    return location


def test_the_location_is_the_one_every_workspace_loads():
    location = _location()
    assert set(location) <= LOCATION_KEYS and {"location_name", "code_source"} <= set(location)
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    containers = yaml.safe_load((ROOT / "orchestration/deploy/workspace.yaml").read_text())
    assert location["location_name"] == tool["code_location_name"] == local["location_name"]
    assert location["location_name"] == containers["load_from"][0]["grpc_server"]["location_name"]
    source = location["code_source"]
    assert set(source) <= CODE_SOURCES and len(source) == 1
    assert source["module_name"] == tool["module_name"] == local["module_name"]


def test_the_module_loads_its_definitions():
    import dagster as dg

    module = importlib.import_module(_location()["code_source"]["module_name"])
    assert isinstance(module.defs, dg.Definitions)
    repository = module.defs.get_repository_def()
    assert repository.get_all_jobs() and module.defs.resolve_all_asset_specs()


def test_the_build_section_builds_from_the_repository_root_into_an_untagged_registry():
    build = _location()["build"]
    assert set(build) <= BUILD_KEYS
    directory = (ROOT / build["directory"]).resolve()
    assert directory == ROOT and (directory / "pyproject.toml").is_file()
    # CI appends the tag of each build; a tag written here would be overwritten or, worse, reused
    registry = build["registry"]
    assert registry and ":" not in registry.rsplit("/", 1)[-1] and "@" not in registry


def test_container_context_names_variables_the_code_reads_and_holds_no_secret_value(readers):
    context = _location()["container_context"]
    assert context and set(context) <= AGENT_TYPES
    problems = []
    for agent, settings in context.items():
        for entry in settings.get("env_vars", []):
            name, has_value, value = entry.partition("=")
            if readers.pipeline(name) is None:
                problems.append(f"{agent}: {name} is read by nothing in the code location")
            if has_value and SECRET_NAME.search(name):
                problems.append(
                    f"{agent}: {name} has a value in the file; secrets come from the agent"
                )
            if name == "TRIAGE_ENV":
                problems.append(f"{agent}: TRIAGE_ENV is derived from the Dagster+ deployment")
    assert problems == []
    docker = context["docker"]["env_vars"]
    names = {entry.partition("=")[0] for entry in docker}
    # a Dagster+ deployment keeps its files in S3 and pseudonymises with a shared key
    assert {"TRIAGE_S3_BUCKET", "TRIAGE_PSEUDONYM_KEY", "TRIAGE_MLFLOW_TRACKING_URI"} <= names
