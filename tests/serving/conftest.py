"""Fixtures for the API tests: real deployed ONNX models in a temporary TRIAGE_HOME.

Both deployments are made the way the pipeline makes them: the heads are exported with
:mod:`diagnosis.training.export` (``sklearn_head``/``combine_heads``, or ``build_artifact`` with
the knowledge ranker) and written with :func:`diagnosis.artifacts.write_deployment` and a
:class:`schemas.contracts.Manifest`; nothing here hand-writes a manifest.

* ``built_model``: a tiny classifier-only model (SimpleImputer + LogisticRegression) trained once
  per session on synthetic patients for diagnosis (NONE, J10, J18.9, ORPHA:558) and severity
  (5 labels), both heads in ONE graph sharing the ``features`` input;
* ``ranker_model``: the same classifier heads plus a tiny knowledge ranker (the real
  :class:`diagnosis.ranker.KnowledgeRanker` over the packaged HPO ontology, restricted to a few
  ORPHA/OMIM diseases so it builds in about a second), its ``knowledge.json`` and a blend: the
  shape of what the pipeline deploys, without running the pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from diagnosis import artifacts
from diagnosis.features import (
    ONNX_DIAGNOSIS_OUTPUT,
    ONNX_INPUT,
    ONNX_SEVERITY_OUTPUT,
    FeatureSpec,
)
from schemas.clinical import SEVERITIES, SEXES, VITALS
from schemas.contracts import (
    BlendSpec,
    ClassEntry,
    FeaturesSpec,
    Manifest,
    OnnxOutputs,
)
from serving.app import create_app
from serving.settings import Settings

TOKENS = {
    "clinician": "clin-token-0123456789",
    "auditor": "audit-token-0123456789",
    "admin": "admin-token-0123456789",
}
API_KEYS = ",".join(f"{role}:{token}" for role, token in TOKENS.items())

FEVER, COUGH, HEADACHE, DYSPNEA = "HP:0001945", "HP:0012735", "HP:0002315", "HP:0002094"
ARACHNODACTYLY, ECTOPIA_LENTIS, TALL = "HP:0001166", "HP:0001083", "HP:0000098"
SYMPTOMS = (FEVER, COUGH, HEADACHE, DYSPNEA, ARACHNODACTYLY, ECTOPIA_LENTIS, TALL)
CLASSES = [
    {"code": "NONE", "name": "No disease", "category": "healthy"},
    {"code": "J10", "name": "Influenza", "category": "common"},
    {"code": "J18.9", "name": "Pneumonia, unspecified organism", "category": "common"},
    {"code": "ORPHA:558", "name": "Marfan syndrome", "category": "orphan"},
]
# the tiny ranker's diseases: Marfan (ORPHA and OMIM) and two unrelated ones
RANKER_DISEASES = ("ORPHA:558", "OMIM:154700", "ORPHA:1662", "ORPHA:79430")
# a fixed blend (the pipeline fits one on held-out data; any valid one serves here)
RANKER_BLEND = BlendSpec(
    coef=[1.0, 0.4, 2.0],
    intercept=-1.5,
    alpha=0.5,
    features=["orphan_share_logit", "ranker_evidence", "unseen_symptom_share"],
)
PROVENANCE: dict[str, Any] = {
    "trained_at": "2026-01-12T03:00:00+00:00",
    "metrics": {"top1_accuracy": 0.91, "top3_accuracy": 0.99, "mrr": 0.95},
    "mlflow_run_id": "0123456789abcdef",
    "mlflow_model_version": "3",
    "dagster_run_id": "run-abc",
    "code_version": "deadbeef",
    "data_versions": {"2026-01-05": "sha256:aaaa"},
}


def synthetic_patients(
    n: int, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Patients whose findings depend on the diagnosis; severity follows the diagnosis."""
    patients, diagnosis, severity = [], [], []
    for _ in range(n):
        d = int(rng.integers(0, 4))
        febrile = d in (1, 2)
        p: dict[str, Any] = {
            "age": float(rng.uniform(20, 40) if d == 3 else rng.uniform(5, 90)),
            "sex": str(rng.choice(SEXES)),
            "heart_rate": float(rng.normal(112 if febrile else 72, 8)),
            "body_temperature": float(rng.normal(39.2 if febrile else 36.8, 0.3)),
            "systolic_bp": float(rng.normal(120, 8)),
            "diastolic_bp": float(rng.normal(75, 5)),
        }
        for name in VITALS:  # some missing values, imputed by the graph
            if rng.random() < 0.1:
                p[name] = None
        terms = {
            0: [],
            1: [FEVER, HEADACHE, COUGH],
            2: [FEVER, COUGH, DYSPNEA],
            3: [ARACHNODACTYLY, ECTOPIA_LENTIS, TALL],
        }[d]
        p["symptoms"] = [t for t in terms if rng.random() < 0.85]
        patients.append(p)
        diagnosis.append(d)
        severity.append({0: 0, 1: 1, 2: 2, 3: 3}[d] if rng.random() < 0.9 else 4)
    return patients, np.array(diagnosis), np.array(severity)


def _pipeline(X: np.ndarray, y: np.ndarray):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("classify", LogisticRegression(max_iter=2000, C=2.0)),
        ]
    ).fit(X, y)


@dataclass(frozen=True)
class BuiltModel:
    """An exported artifact before deployment: the files and the manifest the pipeline's export
    describes it with (version ``candidate``; :func:`write_deployment` sets the rest)."""

    onnx_bytes: bytes
    spec: FeatureSpec
    manifest: Manifest
    files: dict[str, bytes] = field(repr=False)


@dataclass(frozen=True)
class Trained:
    spec: FeatureSpec
    diagnosis: Any
    severity: Any


@pytest.fixture(scope="session")
def trained_heads() -> Trained:
    rng = np.random.default_rng(7)
    spec = FeatureSpec(symptoms=SYMPTOMS)
    patients, y_dx, y_sev = synthetic_patients(600, rng)
    X = spec.encode(patients)
    return Trained(spec, _pipeline(X, y_dx), _pipeline(X, y_sev))


@pytest.fixture(scope="session")
def built_model(trained_heads: Trained) -> BuiltModel:
    """The classifier-only deployment (no knowledge ranker)."""
    from diagnosis.training.export import combine_heads, sklearn_head

    spec = trained_heads.spec
    content = combine_heads(
        sklearn_head(trained_heads.diagnosis, spec.n_features, ONNX_DIAGNOSIS_OUTPUT, "dx__"),
        sklearn_head(trained_heads.severity, spec.n_features, ONNX_SEVERITY_OUTPUT, "sev__"),
    )
    manifest = Manifest(
        version="candidate",
        onnx_file=artifacts.ONNX_FILE,
        onnx_sha256=hashlib.sha256(content).hexdigest(),
        onnx_input=ONNX_INPUT,
        onnx_outputs=OnnxOutputs(
            diagnosis=ONNX_DIAGNOSIS_OUTPUT, severity=ONNX_SEVERITY_OUTPUT, ranker=None
        ),
        onnx_query_input=None,
        features=FeaturesSpec(
            vitals=list(spec.vitals), sexes=list(spec.sexes), symptoms=list(spec.symptoms)
        ),
        classes=[ClassEntry(**c) for c in CLASSES],
        severity_labels=list(SEVERITIES),
        hpo_release="2025-01-16",
    )
    return BuiltModel(content, spec, manifest, {artifacts.ONNX_FILE: content})


@pytest.fixture(scope="session")
def tiny_ranker():
    """The real knowledge ranker over the packaged ontology, for a handful of diseases."""
    import polars as pl

    from diagnosis.hpo import Ontology, load_annotations
    from diagnosis.ranker import KnowledgeRanker

    annotations = load_annotations().filter(pl.col("disease_id").is_in(list(RANKER_DISEASES)))
    return KnowledgeRanker.build(Ontology.load(), annotations)


@pytest.fixture(scope="session")
def ranker_model(trained_heads: Trained, tiny_ranker) -> BuiltModel:
    """Classifier heads + knowledge ranker in one graph, with knowledge.json and a blend, made by
    the pipeline's export (:func:`diagnosis.training.export.build_artifact`)."""
    from diagnosis.training.export import build_artifact
    from diagnosis.training.fitting import TrainedModel

    spec = trained_heads.spec
    medians = trained_heads.diagnosis.named_steps["impute"].statistics_[: len(spec.vitals)]
    model = TrainedModel(
        spec=spec,
        classes=[c["code"] for c in CLASSES],
        diagnosis=trained_heads.diagnosis,
        severity=trained_heads.severity,
        params={},
        imputation={name: float(v) for name, v in zip(spec.vitals, medians)},
    )
    artifact = build_artifact(
        model,
        tiny_ranker,
        {c["code"]: c["name"] for c in CLASSES},
        {c["code"]: c["category"] for c in CLASSES},
    )
    manifest = msgspec.structs.replace(artifact.manifest, blend=RANKER_BLEND)
    return BuiltModel(artifact.onnx, spec, manifest, artifact.files())


def write_deployment(
    home: Path,
    model: BuiltModel,
    version: str,
    *,
    onnx_bytes: bytes | None = None,
    sha256: str | None = None,
    point: bool = True,
) -> Path:
    """Deploy ``model`` as ``version`` with the pipeline's writer
    (:func:`diagnosis.artifacts.write_deployment`); flip current.json if ``point``.

    ``onnx_bytes`` replaces the graph (its hash is recomputed, so the manifest is consistent);
    ``sha256`` overrides the manifest's hash (a tampered deployment)."""
    files = dict(model.files)
    content = model.onnx_bytes if onnx_bytes is None else onnx_bytes
    files[model.manifest.onnx_file] = content
    manifest = msgspec.structs.replace(
        model.manifest,
        version=version,
        onnx_sha256=sha256 or hashlib.sha256(content).hexdigest(),
        **PROVENANCE,
    )
    return artifacts.write_deployment(home / "deployments", manifest, files, point=point)


def point_to(home: Path, version: str) -> None:
    """Replace current.json atomically, as the pipeline does."""
    artifacts.point_to(home / "deployments", version)


def settings_for(home: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "TRIAGE_HOME": str(home),
            "TRIAGE_API_KEYS": API_KEYS,
            "TRIAGE_RELOAD_INTERVAL": "0",
            **env,
        }
    )


def auth(role: str = "clinician") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "deployments").mkdir()
    return tmp_path


@pytest.fixture
def served_home(home: Path, built_model: BuiltModel) -> Path:
    write_deployment(home, built_model, "2026-01-12-a")
    return home


@pytest.fixture
def client(served_home: Path) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings_for(served_home))) as c:
        yield c


@pytest.fixture
def ranker_home(home: Path, ranker_model: BuiltModel) -> Path:
    write_deployment(home, ranker_model, "2026-01-12-k")
    return home


@pytest.fixture
def ranker_client(ranker_home: Path) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings_for(ranker_home))) as c:
        yield c


@pytest.fixture
def empty_client(home: Path) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings_for(home))) as c:
        yield c
