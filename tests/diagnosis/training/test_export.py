"""ONNX export (diagnosis.training.export): both heads in one graph, within parity."""

import numpy as np
import onnxruntime as ort
import pytest

from diagnosis.features import ONNX_DIAGNOSIS_OUTPUT, ONNX_INPUT, ONNX_SEVERITY_OUTPUT, FeatureSpec
from diagnosis.training.balancing import balance
from diagnosis.training.candidates import RANDOM_OVER_SAMPLING
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.export import parity, to_onnx
from diagnosis.training.fitting import train_models


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    spec = FeatureSpec(symptoms=tuple(f"HP:{i:07d}" for i in range(12)))
    n = 300
    X = rng.random((n, spec.n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing vitals must be imputed inside the graph
    y = rng.integers(0, 4, n)
    y_sev = rng.integers(0, 5, n)
    data = balance(TrainingSet(spec, ["A", "B", "C", "D"], X, y, y_sev), RANDOM_OVER_SAMPLING, 1)
    return train_models(data, seed=1), X


def test_one_onnx_graph_serves_both_heads_within_parity(trained):
    model, X = trained
    content = to_onnx(model)
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [ONNX_INPUT]
    assert {o.name for o in session.get_outputs()} == {ONNX_DIAGNOSIS_OUTPUT, ONNX_SEVERITY_OUTPUT}
    diagnosis, severity = session.run(None, {ONNX_INPUT: X[:20]})
    assert diagnosis.shape == (20, 4) and severity.shape == (20, 5)
    np.testing.assert_allclose(diagnosis.sum(axis=1), 1, atol=1e-5)
    assert parity(model, content, X) <= 1e-4
