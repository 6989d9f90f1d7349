"""The blocking asset checks on their own: ONNX parity and the quality gate's floors."""

from assets.deployment import onnx_parity
from assets.evaluation import quality_gate
from diagnosis.blend import BlendParams
from diagnosis.training.evaluation import Evaluation
from diagnosis.training.export import Artifact
from orchestration.resources import ModelPolicy


def _artifact(max_abs_diff: float, rows: int) -> Artifact:
    return Artifact(b"", b"", None, max_abs_diff=max_abs_diff, parity_rows=rows)


def test_parity_check_blocks_a_divergent_artifact():
    policy = ModelPolicy()
    ok = onnx_parity(policy=policy, onnx_model=_artifact(3e-7, 50))
    bad = onnx_parity(policy=policy, onnx_model=_artifact(0.2, 50))
    empty = onnx_parity(policy=policy, onnx_model=_artifact(0.0, 0))
    assert ok.passed and not bad.passed and not empty.passed


def _evaluation(metrics: dict) -> Evaluation:
    return Evaluation(
        metrics=metrics,
        blend=BlendParams((0.0, 0.0, 0.0), 0.0, 0.0),
        champion_version=None,
        confusion_matrix=[],
        classes=[],
    )


def test_quality_gate_names_each_floor_that_fails():
    policy = ModelPolicy(min_macro_f1=0.6, min_orphan_recall=0.5)
    good = {"macro_f1": 0.8, "orphan_recall": 0.7, "orphan_rows": 10}
    bad = {"macro_f1": 0.4, "orphan_recall": 0.1, "orphan_rows": 10}
    assert quality_gate(policy=policy, model_evaluation=_evaluation(good)).passed
    refused = quality_gate(policy=policy, model_evaluation=_evaluation(bad))
    assert not refused.passed
    assert "macro_f1" in refused.description and "orphan_recall" in refused.description
