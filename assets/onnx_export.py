"""ONNX stage: one ONNX graph with both heads (diagnosis, severity), checked for parity."""


import hashlib
from dataclasses import dataclass

import dagster as dg
import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
from onnx import compose
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from assets.model import TrainedModel
from assets.training import SPLIT_EVALUATION, encode_table
from orchestration.resources import ModelPolicy
from schemas.features import ONNX_DIAGNOSIS_OUTPUT, ONNX_INPUT, ONNX_SEVERITY_OUTPUT

ONNX_PARITY_CHECK = "onnx_parity"
OPSET = {"": 17, "ai.onnx.ml": 3}

update_registered_converter(
    XGBClassifier,
    "XGBoostXGBClassifier",
    calculate_linear_classifier_output_shapes,
    convert_xgboost,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)


@dataclass
class OnnxArtifact:
    content: bytes
    sha256: str
    max_abs_diff: float
    parity_rows: int


def sklearn_head(pipeline: Pipeline, n_features: int, output: str, prefix: str) -> onnx.ModelProto:
    """A fitted classifier pipeline as an ONNX graph reading ``features`` and writing its class
    probabilities to ``output``; every other name gets ``prefix`` so heads can share a graph."""
    model = convert_sklearn(
        pipeline,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=OPSET,
    )
    probabilities = model.graph.output[1].name
    model = compose.add_prefix(model, prefix, rename_inputs=False)
    renamed = onnx.helper.make_node("Identity", [prefix + probabilities], [output])
    model.graph.node.append(renamed)
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, [None, None])
    )
    return model


def combine_heads(*heads: onnx.ModelProto) -> bytes:
    """Join heads built by :func:`sklearn_head` into one graph sharing the ``features`` input."""
    first = heads[0]
    graph = onnx.helper.make_graph(
        [node for head in heads for node in head.graph.node],
        "triage",
        inputs=list(first.graph.input),
        outputs=[output for head in heads for output in head.graph.output],
        initializer=[init for head in heads for init in head.graph.initializer],
    )
    combined = onnx.helper.make_model(graph, opset_imports=list(first.opset_import))
    combined.ir_version = first.ir_version
    onnx.checker.check_model(combined)
    return combined.SerializeToString()


def to_onnx(model: TrainedModel) -> bytes:
    """Both heads of a trained model in one ONNX graph."""
    n = model.spec.n_features
    return combine_heads(
        sklearn_head(model.diagnosis, n, ONNX_DIAGNOSIS_OUTPUT, "dx__"),
        sklearn_head(model.severity, n, ONNX_SEVERITY_OUTPUT, "sev__"),
    )


def parity(model: TrainedModel, content: bytes, X: np.ndarray) -> float:
    """Largest absolute probability difference between onnxruntime and the training framework."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    diagnosis, severity = session.run(
        [ONNX_DIAGNOSIS_OUTPUT, ONNX_SEVERITY_OUTPUT], {ONNX_INPUT: X.astype(np.float32)}
    )
    expected_diagnosis, expected_severity = model.predict_proba(X)
    return float(
        max(
            np.max(np.abs(diagnosis - expected_diagnosis)),
            np.max(np.abs(severity - expected_severity)),
        )
    )


@dg.asset(
    group_name="deployment",
    kinds={"onnx"},
    description=(
        "The trained model as one ONNX graph (input `features`; outputs diagnosis and severity "
        "probabilities), with its SHA-256 and the measured parity against XGBoost on the held-out "
        "rows."
    ),
)
def onnx_model(diagnosis_model: TrainedModel, training_table: pl.DataFrame) -> dg.Output[OnnxArtifact]:
    content = to_onnx(diagnosis_model)
    rows = training_table.filter(pl.col("split") == SPLIT_EVALUATION)
    X = encode_table(rows, diagnosis_model.spec)
    diff = parity(diagnosis_model, content, X)
    artifact = OnnxArtifact(
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        max_abs_diff=diff,
        parity_rows=int(X.shape[0]),
    )
    return dg.Output(
        artifact,
        metadata={
            "onnx_sha256": artifact.sha256,
            "size_bytes": len(content),
            "max_abs_diff": diff,
            "parity_rows": artifact.parity_rows,
        },
    )


@dg.asset_check(
    asset=onnx_model,
    name=ONNX_PARITY_CHECK,
    blocking=True,
    description="Blocks deployment unless ONNX probabilities match the training framework "
    "within the configured tolerance on held-out rows.",
)
def onnx_parity(policy: ModelPolicy, onnx_model: OnnxArtifact) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=onnx_model.parity_rows > 0 and onnx_model.max_abs_diff <= policy.max_onnx_abs_diff,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "max_abs_diff": onnx_model.max_abs_diff,
            "tolerance": policy.max_onnx_abs_diff,
            "rows": onnx_model.parity_rows,
        },
    )
