"""Deployment artifacts on disk: the immutable version directory and the atomic pointer switch.

Layout (:mod:`schemas.layout`; files typed in :mod:`schemas.contracts`)::

    deployments/<version>/model.onnx       immutable, never rewritten
    deployments/<version>/knowledge.json   the ranker's index (terms, diseases, alt ids)
    deployments/<version>/manifest.json    classes, features, blend, metrics, provenance
    deployments/current.json               {"version", "manifest"}: replaced atomically

The pipeline writes with :func:`write_deployment`; the API (and the gate, for the champion) read
with :func:`diagnosis.runtime.load_deployment`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from diagnosis.files import atomic_write
from schemas.contracts import DeploymentPointer, Manifest, decode, encode

CURRENT_POINTER = "current.json"
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
KNOWLEDGE_FILE = "knowledge.json"


def write_deployment(
    deployments: Path, manifest: Manifest, files: dict[str, bytes], *, point: bool = True
) -> Path:
    """Write ``<version>/`` with ``files`` (``manifest.onnx_file`` among them) and
    ``manifest.json`` into a fresh directory, then (with ``point``) switch ``current.json`` to it
    with one atomic rename. A version directory is never rewritten."""
    version = manifest.version
    if manifest.onnx_file not in files:
        raise ValueError(f"deployment {version}: {manifest.onnx_file} is not among the files")
    target = deployments / version
    if target.exists():
        raise FileExistsError(f"deployment {version} already exists; versions are immutable")
    deployments.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=deployments, prefix=f".{version}."))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST_FILE).write_bytes(encode(manifest, indent=True))
    os.rename(staging, target)
    if point:
        point_to(deployments, version)
    return target


def point_to(deployments: Path, version: str) -> None:
    """Make ``version`` the served deployment (one atomic rename of ``current.json``)."""
    atomic_write(deployments / CURRENT_POINTER, encode(DeploymentPointer.to(version), indent=True))


def read_current(deployments: Path) -> DeploymentPointer | None:
    """The pointer, or ``None`` when nothing was deployed yet."""
    pointer = deployments / CURRENT_POINTER
    if not pointer.exists():
        return None
    return decode(pointer.read_bytes(), DeploymentPointer, "deployment pointer current.json")


def read_deployed_manifest(deployments: Path, version: str) -> Manifest:
    path = deployments / version / MANIFEST_FILE
    return decode(path.read_bytes(), Manifest, f"manifest of {version}")
