"""Deployment on disk (diagnosis.artifacts): immutable versions and the atomic pointer, written by
the real writer from a real (small) exported artifact."""

import msgspec
import numpy as np
import polars as pl
import pytest

from diagnosis.artifacts import read_current, read_deployed_manifest, write_deployment
from diagnosis.features import FeatureSpec
from diagnosis.hpo import Ontology, load_annotations
from diagnosis.ranker import KnowledgeRanker
from diagnosis.training.balancing import balance
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.export import build_artifact
from diagnosis.training.fitting import train_models
from schemas.contracts import DeploymentPointer

CLASSES = ["J10", "NONE", "ORPHA:558"]


@pytest.fixture(scope="module")
def artifact():
    annotations = load_annotations()
    few = annotations.filter(pl.col("disease_id").is_in(["ORPHA:558", "ORPHA:166024"]))
    ranker = KnowledgeRanker.build(Ontology.load(), few, universe=("ORPHA",))
    spec = FeatureSpec(symptoms=("HP:0001166", "HP:0001519"))
    rng = np.random.default_rng(0)
    y = np.arange(90) % len(CLASSES)
    X = (rng.normal(size=(90, spec.n_features)) + y[:, None]).astype(np.float32)
    data = balance(TrainingSet(spec, CLASSES, X, y, rng.integers(0, 5, 90)), "none", 0)
    model = train_models(data, seed=0, params={"n_estimators": 3, "max_depth": 2})
    categories = {"J10": "common", "NONE": "healthy", "ORPHA:558": "orphan"}
    return build_artifact(model, ranker, {}, categories)


def _deploy(tmp_path, artifact, version):
    manifest = msgspec.structs.replace(artifact.manifest, version=version)
    return write_deployment(tmp_path, manifest, artifact.files())


def test_deployment_is_versioned_and_pointer_follows_the_newest(tmp_path, artifact):
    _deploy(tmp_path, artifact, "v1")
    _deploy(tmp_path, artifact, "v2")
    assert read_current(tmp_path) == DeploymentPointer(version="v2", manifest="v2/manifest.json")
    assert (tmp_path / "v1" / "model.onnx").read_bytes() == artifact.onnx
    assert read_deployed_manifest(tmp_path, "v2").version == "v2"
    # no staging directories or temp files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json", "v1", "v2"]


def test_an_existing_version_is_never_rewritten(tmp_path, artifact):
    _deploy(tmp_path, artifact, "v1")
    other = msgspec.structs.replace(artifact.manifest, version="v1", onnx_sha256="other")
    with pytest.raises(FileExistsError):
        write_deployment(tmp_path, other, {**artifact.files(), "model.onnx": b"other"})
    assert (tmp_path / "v1" / "model.onnx").read_bytes() == artifact.onnx
    assert read_current(tmp_path).version == "v1"


def test_no_pointer_before_the_first_deployment(tmp_path):
    assert read_current(tmp_path) is None
