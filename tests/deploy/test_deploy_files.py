"""The container and compose files in orchestration/deploy/, checked without a Docker engine.

No Docker daemon runs where these tests run, so the files are linted against what the code reads
and what the images install: every variable a service receives is read by code that runs in that
service, every build uses the repository root and an existing Dockerfile, images are pinned, the
API image installs exactly the base dependencies from uv.lock (checked by installing them the way
the Dockerfile does and serving /health from that environment), and the PostgreSQL init script
creates the databases the URLs name (against a real server when one is reachable).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "orchestration" / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
EXAMPLE_ENV = DEPLOY / "example.env"
API_DOCKERFILE = DEPLOY / "Dockerfile.api"
DAGSTER_DOCKERFILE = DEPLOY / "Dockerfile.dagster"
UV = ROOT / ".uv" / "bin" / "uv"

# Variables the infrastructure images themselves read (their documented configuration).
IMAGE_VARIABLES = {
    "postgres": {"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_INITDB_ARGS"},
    "minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
}
# Flags of `uv sync` that choose how to install, not what: anything else selects packages.
UV_INSTALL_MODE_FLAGS = {
    "--frozen",
    "--locked",
    "--no-install-project",
    "--no-editable",
    "--compile-bytecode",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])[^}]*)?\}")


# ----------------------------------------------------------------------------- parsing helpers
def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def _args(instructions, keyword: str) -> list[str]:
    return [arguments for key, arguments in instructions if key == keyword]


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return value


def _env(instructions) -> dict[str, str]:
    values: dict[str, str] = {}
    for arguments in _args(instructions, "ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            values[key] = value
    return values


def _copies(instructions) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from a stage)."""
    copies = []
    for arguments in _args(instructions, "COPY"):
        tokens = shlex.split(arguments)
        if any(t.startswith("--from") for t in tokens):
            continue
        tokens = [t for t in tokens if not t.startswith("--")]
        copies.append((tokens[:-1], tokens[-1]))
    return copies


def _copied_to(instructions, source: str) -> list[str]:
    """Where a context file ends up in the image."""
    places = []
    for sources, destination in _copies(instructions):
        if source in sources:
            places.append(
                destination + Path(source).name if destination.endswith("/") else destination
            )
    return places


def _uv_syncs(instructions) -> list[list[str]]:
    """The arguments of every `uv sync` the Dockerfile runs."""
    commands = []
    for arguments in _args(instructions, "RUN"):
        for part in re.split(r"&&|;", arguments):
            tokens = shlex.split(part)
            for i in range(len(tokens) - 1):
                if tokens[i] == "uv" and tokens[i + 1] == "sync":
                    commands.append(tokens[i + 2 :])
    return commands


def _image_kind(service: dict) -> str:
    build = service.get("build")
    if build:
        dockerfile = build["dockerfile"] if isinstance(build, dict) else "Dockerfile"
        if dockerfile.endswith("Dockerfile.api"):
            return "api"
        if dockerfile.endswith("Dockerfile.dagster"):
            program = (service.get("command") or [""])[0]
            if program == "mlflow":
                return "mlflow-server"  # MLflow's own server, none of the project's code
            if program in {"dagster-webserver", "dagster-daemon"}:
                return "dagster-instance"  # reach the code over gRPC, never import it
            return "pipeline"
    image = service.get("image", "")
    return {"postgres": "postgres", "minio/minio": "minio", "minio/mc": "mc", "redis": "redis"}.get(
        image.split(":")[0], image
    )


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    assert "env_file" not in service, "each service lists its variables (least privilege)"
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of the published ports."""
    published = []
    for entry in service.get("ports") or []:
        parts = str(entry).split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        published.append((address, int(parts[-2]), int(parts[-1].split("/")[0])))
    return published


def _run_uv(*args: str) -> str:
    if not UV.exists():
        pytest.skip(f"{UV} is missing: `make install` bootstraps it")
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    }
    done = subprocess.run(
        [str(UV), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _exported(*selection: str) -> set[str]:
    """Normalised package names `uv export` lists for this selection (this platform's markers)."""
    from packaging.requirements import Requirement

    names = set()
    for line in _run_uv(
        "export", "--frozen", "--no-hashes", "--no-emit-project", *selection
    ).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            names.add(re.sub(r"[-_.]+", "-", requirement.name).lower())
    return names


# ------------------------------------------------------------------------------ the compose file
def test_compose_runs_the_whole_stack_from_the_two_images():
    services = _services()
    kinds = {name: _image_kind(service) for name, service in services.items()}
    assert {"postgres", "minio", "mc", "redis", "mlflow-server", "api"} <= set(kinds.values())
    commands = {name: " ".join(services[name].get("command") or []) for name in services}
    pipeline = [name for name, kind in kinds.items() if kind in {"pipeline", "dagster-instance"}]
    started = {command.split(" -")[0] for name, command in commands.items() if name in pipeline}
    assert started == {
        "dagster code-server start",
        "dagster-webserver",
        "dagster-daemon run",
        "dagster-celery worker start",
    }
    code = next(c for c in commands.values() if c.startswith("dagster code-server start"))
    assert "-m orchestration.definitions" in code
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_every_interpolated_variable_comes_from_example_env_and_every_example_variable_is_used(
    example_env,
):
    text = COMPOSE.read_text(encoding="utf-8")
    used: dict[str, str] = {}
    for match in INTERPOLATION.finditer(text):
        used[match.group(1)] = match.group(2) or ""
    assert set(used) - set(example_env) == set(), (
        "set in the compose file, missing from example.env"
    )
    assert set(example_env) - set(used) == set(), "in example.env but no service uses it"
    for name, operator in used.items():
        if operator != ":-":  # required (no default): the example must give a value
            assert example_env[name], f"{name} is required but empty in example.env"


def test_every_variable_a_service_receives_is_read_by_what_runs_in_that_service(readers):
    problems = []
    for name, service in _services().items():
        kind = _image_kind(service)
        script = (
            " ".join(service.get("entrypoint") or []) + " " + " ".join(service.get("command") or [])
        )
        mounted = ""
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("./") and (COMPOSE.parent / source).is_file():
                mounted += (COMPOSE.parent / source).read_text(encoding="utf-8")
        mounted = "\n".join(
            line for line in mounted.splitlines() if not line.lstrip().startswith("#")
        )
        for variable in _environment(service):
            reader = {
                "pipeline": readers.pipeline,
                "api": readers.api,
                "mlflow-server": lambda v: readers.in_library(v, {"mlflow", "botocore"}),
                "dagster-instance": lambda v: (
                    readers.in_project(v, configs=["orchestration/deploy/dagster.yaml"])
                    or readers.in_library(v, {"dagster"})
                ),
            }.get(kind, lambda v: None)(variable)
            if reader is None and variable in IMAGE_VARIABLES.get(kind, set()):
                reader = f"the {kind} image"
            if reader is None and re.search(rf"\$\$\{{?{variable}\b", script):
                reader = "its command"
            if reader is None and re.search(rf"\b{variable}\b", mounted):
                reader = "its mounted script"
            if reader is None:
                problems.append(f"{name} ({kind}) receives {variable}, which nothing there reads")
    assert problems == []


def test_the_api_service_gets_no_pipeline_secret():
    api = next(s for s in _services().values() if _image_kind(s) == "api")
    forbidden = {
        "DAGSTER_PG_URL",
        "TRIAGE_MLFLOW_TRACKING_URI",
        "TRIAGE_PSEUDONYM_KEY",
        "DAGSTER_CELERY_BROKER_URL",
        "POSTGRES_PASSWORD",
    }
    assert forbidden & set(_environment(api)) == set()


def test_example_env_holds_placeholders_not_secrets(example_env):
    for name, value in example_env.items():
        if SECRET_NAME.search(name):
            pieces = (
                [p.partition(":")[2] for p in value.split(",")]
                if name == "TRIAGE_API_KEYS"
                else [value]
            )
            assert all("change-me" in piece for piece in pieces), f"{name} looks like a real secret"
        url = urllib.parse.urlsplit(value)
        if url.password is not None:
            assert "change-me" in url.password, f"the password in {name} looks real"


def test_example_env_urls_point_at_the_compose_services_that_serve_them(example_env):
    services = _services()

    def listens_on(service_name: str, port: int) -> bool:
        service = services[service_name]
        command = " ".join(service.get("command") or [])
        defaults = {"postgres": 5432, "redis": 6379}
        return defaults.get(_image_kind(service)) == port or f":{port}" in command

    for name in ("DAGSTER_PG_URL", "TRIAGE_MLFLOW_TRACKING_URI"):
        url = urllib.parse.urlsplit(example_env[name])
        # SQLAlchemy URLs: a bare postgresql:// would pick psycopg 3, not the installed psycopg2
        assert url.scheme == "postgresql+psycopg2", name
        assert _image_kind(services[url.hostname]) == "postgres" and listens_on(
            url.hostname, url.port
        )
    dagster_db = urllib.parse.urlsplit(example_env["DAGSTER_PG_URL"])
    mlflow_db = urllib.parse.urlsplit(example_env["TRIAGE_MLFLOW_TRACKING_URI"])
    assert dagster_db.path != mlflow_db.path and dagster_db.username != mlflow_db.username
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        url = urllib.parse.urlsplit(example_env[name])
        assert _image_kind(services[url.hostname]) == "minio" and listens_on(url.hostname, url.port)
    broker = urllib.parse.urlsplit(example_env["DAGSTER_CELERY_BROKER_URL"])
    assert _image_kind(services[broker.hostname]) == "redis" and listens_on(
        broker.hostname, broker.port
    )
    # the one-shot job creates one bucket: MLflow's artifacts must live in it too
    artifacts = urllib.parse.urlsplit(example_env["TRIAGE_MLFLOW_ARTIFACTS"])
    assert artifacts.scheme == "s3" and artifacts.hostname == example_env["TRIAGE_S3_BUCKET"]


def test_example_env_values_are_accepted_by_the_code(example_env, monkeypatch):
    from orchestration.resources import build_executor
    from orchestration.settings import current_environment
    from serving.settings import Settings, parse_api_keys

    assert {key.role for key in parse_api_keys(example_env["TRIAGE_API_KEYS"])} == {
        "clinician",
        "auditor",
        "admin",
    }
    environment = current_environment(example_env)
    assert environment.shared  # a compose stack is a shared deployment: files in S3
    location = environment.s3_location(example_env)
    assert location.bucket == example_env["TRIAGE_S3_BUCKET"]
    assert location.endpoint_url == example_env["AWS_ENDPOINT_URL"]
    assert Settings.from_env(example_env).s3 is not None  # the API reads the same bucket
    for name, value in example_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_CELERY_BACKEND_URL", raising=False)
    executor = build_executor(example_env)
    assert executor is not None and executor.name == "celery"
    config = executor.apply_config_mapping({})
    assert config.success, config.errors


def test_builds_use_the_repository_root_and_an_existing_dockerfile():
    built = 0
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: context {context} is not the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
    assert built >= 2


def test_every_image_is_pinned():
    for name, service in _services().items():
        image = service.get("image", "")
        if service.get("build"):
            assert not image.endswith(":latest"), name
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), (
            f"{name}: {image!r} is not pinned to a version"
        )
    for dockerfile in (API_DOCKERFILE, DAGSTER_DOCKERFILE):
        for base in _args(_dockerfile(dockerfile), "FROM"):
            image = base.split()[0]
            assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), (
                f"{dockerfile.name}: {image}"
            )


def test_published_ports_are_distinct_and_served_inside_the_container():
    seen: dict[int, str] = {}
    api_cmd = _exec_form(_args(_dockerfile(API_DOCKERFILE), "CMD")[-1])
    for name, service in _services().items():
        command = service.get("command") or (api_cmd if _image_kind(service) == "api" else [])
        for address, host_port, container_port in _ports(service):
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish {host_port}"
            seen[host_port] = name
            assert any(
                str(container_port) == token
                or token.endswith((f":{container_port}", f"={container_port}"))
                for token in command
            ), f"{name} publishes {container_port} it does not serve"
            if _image_kind(service) not in {"api"}:
                assert address == "127.0.0.1", f"{name}: {host_port} is open beyond this host"
    assert seen  # something is published


def test_the_postgres_init_script_is_mounted_executable():
    postgres = next(s for s in _services().values() if _image_kind(s) == "postgres")
    mounts = [str(v).split(":") for v in postgres.get("volumes") or []]
    scripts = [
        (COMPOSE.parent / source)
        for source, target, *_ in mounts
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert scripts and all(s.suffix == ".sh" for s in scripts)
    # a non-executable .sh is sourced by the image's entrypoint, and `set -euo pipefail` would leak
    assert all(os.access(s, os.X_OK) for s in scripts)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on this machine")
def test_docker_compose_accepts_the_file_with_the_example_env():
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("the docker CLI has no compose plugin here (`docker compose` is unavailable)")
    done = subprocess.run(
        ["docker", "compose", "--env-file", str(EXAMPLE_ENV), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------- the Dockerfiles
def test_uv_in_the_images_is_the_makefiles_version():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    wanted = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.M).group(1)
    for dockerfile in (API_DOCKERFILE, DAGSTER_DOCKERFILE):
        instructions = _dockerfile(dockerfile)
        versions = [
            a.split("=", 1)[1] for a in _args(instructions, "ARG") if a.startswith("UV_VERSION=")
        ]
        assert versions == [wanted], dockerfile.name
        installs = [a for a in _args(instructions, "RUN") if "pip install" in a and "uv==" in a]
        assert installs and all('"uv==${UV_VERSION}"' in a for a in installs), dockerfile.name
    if UV.exists():
        assert (
            wanted in subprocess.run([str(UV), "--version"], capture_output=True, text=True).stdout
        )


def test_the_api_image_installs_the_locked_base_dependencies_and_no_extra():
    syncs = _uv_syncs(_dockerfile(API_DOCKERFILE))
    assert syncs, "Dockerfile.api installs nothing with uv sync"
    for flags in syncs:
        assert "--frozen" in flags and "--no-dev" in flags, flags
        selection = [f for f in flags if f not in UV_INSTALL_MODE_FLAGS]
        assert selection == ["--no-dev"], f"the API install selects more than the base: {flags}"


def test_the_locked_base_set_has_no_dagster_and_the_pipeline_set_has_it(readers):
    base = _exported("--no-dev")
    assert not {n for n in base if n.startswith("dagster") or n in {"mlflow", "celery", "xgboost"}}
    assert {"litestar", "uvicorn", "onnxruntime", "boto3", "botocore"} <= base
    assert readers.API_LIBRARIES <= base
    pipeline = _exported("--no-dev", "--extra", "pipeline")
    assert {"dagster", "dagster-postgres", "dagster-celery", "mlflow"} <= pipeline
    assert readers.PIPELINE_LIBRARIES <= pipeline
    # the API image's own selection gives exactly the base set
    final_sync = _uv_syncs(_dockerfile(API_DOCKERFILE))[-1]
    assert _exported(*[f for f in final_sync if f not in UV_INSTALL_MODE_FLAGS]) == base


def test_the_api_image_runs_triage_serve_unprivileged_with_a_health_check():
    instructions = _dockerfile(API_DOCKERFILE)
    users = _args(instructions, "USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    assert _args(final_stage, "USER"), "the runtime stage must switch to its own user"
    command = _exec_form(_args(instructions, "CMD")[-1])
    assert command == ["triage", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000" in _args(instructions, "EXPOSE")
    health = _args(instructions, "HEALTHCHECK")[-1]
    assert "http://127.0.0.1:8000/health" in health


def test_triage_serve_does_not_import_dagster():
    probe = (
        "import sys\n"
        "from orchestration.cli import build_parser\n"
        "import serving.app\n"
        "build_parser().parse_args(['serve', '--port', '1'])\n"
        "heavy = {'dagster', 'mlflow', 'assets'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dagster_image_installs_the_pipeline_and_carries_the_deploy_instance_config():
    instructions = _dockerfile(DAGSTER_DOCKERFILE)
    syncs = _uv_syncs(instructions)
    assert syncs and all({"--frozen", "--no-dev"} <= set(f) for f in syncs)
    assert all(
        "pipeline" in f[f.index("--extra") + 1 : f.index("--extra") + 2]
        for f in syncs
        if "--extra" in f
    )
    assert all("--extra" in f for f in syncs)
    dagster_home = _env(instructions)["DAGSTER_HOME"]
    assert _copied_to(instructions, "orchestration/deploy/dagster.yaml") == [
        f"{dagster_home}/dagster.yaml"
    ]
    users = _args(instructions, "USER")
    assert users and users[-1] not in {"root", "0"}
    workspace = _copied_to(instructions, "orchestration/deploy/workspace.yaml")
    celery = _copied_to(instructions, "orchestration/deploy/celery.yaml")
    for name, service in _services().items():
        if _image_kind(service) not in {"pipeline", "dagster-instance", "mlflow-server"}:
            continue
        assert _environment(service).get("DAGSTER_HOME", dagster_home) == dagster_home, name
        command = service.get("command") or []
        if "-w" in command:
            assert command[command.index("-w") + 1] in workspace, name
        if "-y" in command:
            assert command[command.index("-y") + 1] in celery, name
    code_server = _exec_form(_args(instructions, "CMD")[-1])
    assert code_server[:3] == ["dagster", "code-server", "start"]
    assert [
        s.get("command")
        for s in _services().values()
        if (s.get("command") or [])[:3] == code_server[:3]
    ] == [code_server]


def test_the_workspace_points_at_the_code_location_server():
    import tomllib

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text(encoding="utf-8"))
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    server = _services()[grpc["host"]]
    command = server["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert int(command[command.index("-p") + 1]) == grpc["port"]
    location = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"][
        "code_location_name"
    ]
    assert grpc["location_name"] == location == command[command.index("--location-name") + 1]


def test_celery_workers_and_the_jobs_executor_agree_on_broker_and_backend(example_env, monkeypatch):
    from dagster_celery.cli import get_validated_config

    from orchestration.resources import build_executor

    broker = example_env["DAGSTER_CELERY_BROKER_URL"]
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", broker)
    monkeypatch.delenv("DAGSTER_CELERY_BACKEND_URL", raising=False)
    worker = get_validated_config(str(DEPLOY / "celery.yaml"))
    executor = build_executor({"TRIAGE_EXECUTOR": "celery", "DAGSTER_CELERY_BROKER_URL": broker})
    runs = executor.apply_config_mapping({}).value["config"]
    assert (worker["broker"], worker["backend"]) == (runs["broker"], runs["backend"])
    assert worker["broker"] == broker


# ------------------------------------------------------------------------------ the build context
def _ignore_patterns(dockerfile: Path) -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def _sent(path: str, patterns) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return not excluded


def _context_files(dockerfile: Path) -> list[str]:
    patterns = _ignore_patterns(dockerfile)
    files = []
    for top in sorted(ROOT.iterdir()):
        if top.name in {".git", ".venv", ".uv", ".triage"}:
            continue
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        files += [rel for p in paths if _sent(rel := p.relative_to(ROOT).as_posix(), patterns)]
    return files


@pytest.mark.parametrize("dockerfile", [API_DOCKERFILE, DAGSTER_DOCKERFILE], ids=lambda p: p.name)
def test_the_build_context_leaves_local_state_out_and_keeps_what_the_image_copies(dockerfile):
    patterns = _ignore_patterns(dockerfile)
    for local in (
        ".venv/bin/python",
        ".uv/bin/uv",
        ".triage/secrets/api-keys",
        ".git/config",
        "orchestration/deploy/.env",
        "serving/__pycache__/app.cpython-311.pyc",
    ):
        assert not _sent(local, patterns), f"{local} would be sent to the builder"
    for sources, _ in _copies(_dockerfile(dockerfile)):
        for source in sources:
            assert _sent(source, patterns), f"{dockerfile.name} copies {source}, which is ignored"
            for path in (ROOT / source).rglob("*.py") if (ROOT / source).is_dir() else []:
                if "__pycache__" not in path.parts:
                    assert _sent(path.relative_to(ROOT).as_posix(), patterns), path


@pytest.mark.slow
def test_the_api_image_environment_serves_health_without_dagster(tmp_path):
    """Installs the build context the way Dockerfile.api does (its uv sync commands, its
    .dockerignore), then runs the image's command and HEALTHCHECK from that environment."""
    if not UV.exists():
        pytest.skip(f"{UV} is missing: `make install` bootstraps it")
    context, venv = tmp_path / "context", tmp_path / "venv"
    for relative in _context_files(API_DOCKERFILE):
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    assert not (context / "assets").exists() and not (context / "tests").exists()
    assert venv.parent == tmp_path  # never the project's .venv
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV"}}
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON=sys.executable,
        UV_PYTHON_DOWNLOADS="never",
        UV_LINK_MODE="copy",
    )
    for flags in _uv_syncs(_dockerfile(API_DOCKERFILE)):
        done = subprocess.run(
            [str(UV), "sync", *flags],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    python = venv / "bin" / "python"
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {re.sub(r"[-_.]+", "-", n).lower() for n in json.loads(listing.stdout)} - {"triage"}
    assert installed == _exported("--no-dev")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    instructions = _dockerfile(API_DOCKERFILE)
    health = json.loads(_args(instructions, "HEALTHCHECK")[-1].split("CMD", 1)[1].strip())
    health = [part.replace(":8000/", f":{port}/") for part in health]
    serve = _exec_form(_args(instructions, "CMD")[-1])
    serve = [part if part != "0.0.0.0" else "127.0.0.1" for part in serve]
    serve[serve.index("--port") + 1] = str(port)
    runtime = {
        k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "AWS_", "VIRTUAL_ENV"))
    }
    runtime.update(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", TRIAGE_HOME=str(tmp_path / "home"))

    def healthy() -> bool:
        return subprocess.run(health, env=runtime, capture_output=True, timeout=30).returncode == 0

    assert not healthy()  # nothing listens yet: the check can fail
    server = subprocess.Popen(
        serve,
        env=runtime,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not healthy():
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the API did not answer /health within 90 s"
            time.sleep(0.5)
        probe = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.util, sys; "
                "sys.exit(0 if importlib.util.find_spec('dagster') is None else 1)",
            ],
            capture_output=True,
        )
        assert probe.returncode == 0, "dagster is installed in the API environment"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# ----------------------------------------------------------------------- the PostgreSQL init script
INIT_SCRIPT = DEPLOY / "postgres-init.sh"


def _fake_psql(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "psql.log"
    bin_dir.mkdir()
    psql = bin_dir / "psql"
    psql.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "{log}"\ncat > /dev/null\n')
    psql.chmod(0o755)
    return bin_dir, log


def test_the_init_script_passes_each_urls_owner_password_and_database_to_psql(tmp_path):
    bin_dir, log = _fake_psql(tmp_path)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DAGSTER_PG_URL": "postgresql://dagster:p%40ss%3Aw%2Frd@postgres:5432/dagster",
        "TRIAGE_MLFLOW_TRACKING_URI": "postgresql+psycopg2://mlflow:plain@postgres/mlflow",
    }
    done = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    for expected in (
        "role=dagster",
        "password=p@ss:w/rd",
        "db=dagster",
        "role=mlflow",
        "password=plain",
        "db=mlflow",
    ):
        assert expected in calls


@pytest.mark.parametrize(
    "bad", ["", "mysql://u:p@postgres/db", "postgresql://nopassword@postgres/db"]
)
def test_the_init_script_refuses_a_url_it_cannot_read(tmp_path, bad):
    bin_dir, log = _fake_psql(tmp_path)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DAGSTER_PG_URL": bad,
        "TRIAGE_MLFLOW_TRACKING_URI": "postgresql://mlflow:pw@postgres/mlflow",
    }
    done = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "DAGSTER_PG_URL" in done.stderr
    assert not log.exists()  # nothing was created from half a configuration


def _scram_matches(verifier: str, password: str) -> bool:
    import base64
    import hashlib
    import hmac

    method, iterations_salt, keys = verifier.split("$", 2)
    assert method == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def test_the_init_script_creates_the_databases_on_a_real_server(tmp_path):
    """Against the machine's PostgreSQL (127.0.0.1:5432, superuser TRIAGE_TEST_PGUSER or postgres),
    with throwaway names; skipped without a server."""
    psycopg2 = pytest.importorskip("psycopg2")
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    superuser = os.environ.get("TRIAGE_TEST_PGUSER", "postgres")
    try:
        admin = psycopg2.connect(
            host="127.0.0.1", port=5432, user=superuser, dbname="postgres", connect_timeout=3
        )
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 as {superuser}: {exc}")
    admin.autocommit = True
    suffix = os.urandom(4).hex()
    wanted = {
        "DAGSTER_PG_URL": (f"it_dagster_{suffix}", "d@g:st/er%1", f"it_dagsterdb_{suffix}"),
        "TRIAGE_MLFLOW_TRACKING_URI": (f"it_mlflow_{suffix}", "ml flow", f"it_mlflowdb_{suffix}"),
    }
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "POSTGRES_USER": superuser,
    }
    for variable, (user, password, database) in wanted.items():
        scheme = "postgresql+psycopg2" if "MLFLOW" in variable else "postgresql"
        env[variable] = (
            f"{scheme}://{user}:{urllib.parse.quote(password, safe='')}@postgres:5432/{database}"
        )
    try:
        for _ in range(2):  # a second run (a restarted init) changes nothing and does not fail
            done = subprocess.run(
                ["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
        with admin.cursor() as cursor:
            for user, password, database in wanted.values():
                cursor.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                    (database,),
                )
                assert cursor.fetchone() == (user,)
                cursor.execute(
                    "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (user,)
                )
                can_login, verifier = cursor.fetchone()
                assert can_login and _scram_matches(verifier, password)
    finally:
        with admin.cursor() as cursor:
            for user, _, database in wanted.values():
                cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                cursor.execute(f'DROP ROLE IF EXISTS "{user}"')
        admin.close()
