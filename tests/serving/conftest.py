"""Fixtures for the API tests: a real deployed ONNX model in a temporary TRIAGE_HOME.

A tiny sklearn model (SimpleImputer + LogisticRegression) is trained once per session on synthetic
patients for diagnosis (NONE, J10, J18.9, ORPHA:558) and severity (5 labels), both heads are
converted with skl2onnx and joined into ONE graph with outputs ``diagnosis_probabilities`` and
``severity_probabilities`` sharing the ``features`` input, as the pipeline's export does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from litestar.testing import TestClient

from schemas.clinical import SEVERITIES, SEXES, VITALS
from diagnosis.features import FeatureSpec
from serving.app import create_app
from serving.settings import Settings

TOKENS = {"clinician": "clin-token-0123456789", "auditor": "audit-token-0123456789",
          "admin": "admin-token-0123456789"}
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


def synthetic_patients(n: int, rng: np.random.Generator) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
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


def _head(X: np.ndarray, y: np.ndarray, output: str, prefix: str) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline(
        [("impute", SimpleImputer(strategy="median")),
         ("classify", LogisticRegression(max_iter=2000, C=2.0))]
    ).fit(X, y)
    model = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, X.shape[1]]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    probabilities = model.graph.output[1].name
    model = onnx.compose.add_prefix(model, prefix, rename_inputs=False)
    model.graph.node.append(onnx.helper.make_node("Identity", [prefix + probabilities], [output]))
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, [None, None])
    )
    return model


def combine_heads(diagnosis: onnx.ModelProto, severity: onnx.ModelProto) -> bytes:
    """One graph, one ``features`` input, two probability outputs."""
    graph = onnx.helper.make_graph(
        list(diagnosis.graph.node) + list(severity.graph.node),
        "triage_test",
        inputs=list(diagnosis.graph.input),
        outputs=list(diagnosis.graph.output) + list(severity.graph.output),
        initializer=list(diagnosis.graph.initializer) + list(severity.graph.initializer),
    )
    combined = onnx.helper.make_model(graph, opset_imports=list(diagnosis.opset_import))
    combined.ir_version = diagnosis.ir_version
    onnx.checker.check_model(combined)
    return combined.SerializeToString()


@dataclass(frozen=True)
class BuiltModel:
    onnx_bytes: bytes
    spec: FeatureSpec


@pytest.fixture(scope="session")
def built_model() -> BuiltModel:
    rng = np.random.default_rng(7)
    spec = FeatureSpec(symptoms=SYMPTOMS)
    patients, y_dx, y_sev = synthetic_patients(600, rng)
    X = spec.encode(patients)
    content = combine_heads(
        _head(X, y_dx, "diagnosis_probabilities", "dx__"),
        _head(X, y_sev, "severity_probabilities", "sev__"),
    )
    return BuiltModel(onnx_bytes=content, spec=spec)


def write_deployment(
    home: Path,
    model: BuiltModel,
    version: str,
    *,
    onnx_bytes: bytes | None = None,
    sha256: str | None = None,
    point: bool = True,
) -> Path:
    """Write ``deployments/<version>/{model.onnx,manifest.json}``; flip current.json if ``point``."""
    content = model.onnx_bytes if onnx_bytes is None else onnx_bytes
    directory = home / "deployments" / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(content)
    manifest = {
        "format": 1,
        "version": version,
        "trained_at": "2026-01-12T03:00:00+00:00",
        "onnx_file": "model.onnx",
        "onnx_sha256": sha256 or hashlib.sha256(content).hexdigest(),
        "onnx_input": "features",
        "onnx_outputs": {"diagnosis": "diagnosis_probabilities",
                         "severity": "severity_probabilities"},
        "features": model.spec.to_manifest(),
        "classes": CLASSES,
        "severity_labels": list(SEVERITIES),
        "metrics": {"top1_accuracy": 0.91, "top3_accuracy": 0.99, "mrr": 0.95},
        "mlflow_run_id": "0123456789abcdef",
        "mlflow_model_version": "3",
        "dagster_run_id": "run-abc",
        "code_version": "deadbeef",
        "data_versions": {"2026-01-05": "sha256:aaaa"},
        "hpo_release": "2025-01-16",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    if point:
        point_to(home, version)
    return directory


def point_to(home: Path, version: str) -> None:
    """Replace current.json atomically, as the pipeline does."""
    deployments = home / "deployments"
    tmp = deployments / ".current.json.tmp"
    tmp.write_text(json.dumps({"version": version, "manifest": f"{version}/manifest.json"}))
    os.replace(tmp, deployments / "current.json")


def settings_for(home: Path, **env: str) -> Settings:
    return Settings.from_env(
        {"TRIAGE_HOME": str(home), "TRIAGE_API_KEYS": API_KEYS, "TRIAGE_RELOAD_INTERVAL": "0", **env}
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
def empty_client(home: Path) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings_for(home))) as c:
        yield c

