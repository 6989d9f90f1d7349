import numpy as np
import onnxruntime as ort
import pytest

from assets.model import quality_gate
from assets.onnx_export import onnx_parity
from diagnosis.blend import BlendParams
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.evaluation import Evaluation
from diagnosis.training.export import Artifact, parity, to_onnx
from diagnosis.training.fitting import train_models
from orchestration.resources import ModelPolicy
from diagnosis.features import ONNX_DIAGNOSIS_OUTPUT, ONNX_INPUT, ONNX_SEVERITY_OUTPUT, FeatureSpec


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    spec = FeatureSpec(symptoms=tuple(f"HP:{i:07d}" for i in range(12)))
    n = 300
    X = rng.random((n, spec.n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing vitals must be imputed inside the graph
    y = rng.integers(0, 4, n)
    y_sev = rng.integers(0, 5, n)
    data = TrainingSet(spec, ["A", "B", "C", "D"], X, y, X, y, y_sev)
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


def test_parity_check_blocks_a_divergent_artifact():
    policy = ModelPolicy()
    def artifact(max_abs_diff, rows):
        return Artifact(b"", b"", None, max_abs_diff=max_abs_diff, parity_rows=rows)

    ok = onnx_parity(policy=policy, onnx_model=artifact(3e-7, 50))
    bad = onnx_parity(policy=policy, onnx_model=artifact(0.2, 50))
    empty = onnx_parity(policy=policy, onnx_model=artifact(0.0, 0))
    assert ok.passed and not bad.passed and not empty.passed


def _evaluation(metrics: dict) -> Evaluation:
    return Evaluation(metrics=metrics, blend=BlendParams((0.0, 0.0, 0.0), 0.0, 0.0), champion_version=None,
                      confusion_matrix=[], classes=[])


def test_quality_gate_names_each_floor_that_fails():
    policy = ModelPolicy(min_macro_f1=0.6, min_orphan_recall=0.5)
    good = {"macro_f1": 0.8, "orphan_recall": 0.7, "orphan_rows": 10}
    bad = {"macro_f1": 0.4, "orphan_recall": 0.1, "orphan_rows": 10}
    assert quality_gate(policy=policy, model_evaluation=_evaluation(good)).passed
    refused = quality_gate(policy=policy, model_evaluation=_evaluation(bad))
    assert not refused.passed
    assert "macro_f1" in refused.description and "orphan_recall" in refused.description
