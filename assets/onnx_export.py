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
from schemas.blend import softmax
from schemas.features import (
    ONNX_DIAGNOSIS_OUTPUT,
    ONNX_INPUT,
    ONNX_QUERY_INPUT,
    ONNX_RANKER_OUTPUT,
    ONNX_SEVERITY_OUTPUT,
)
from schemas.ranker import ONNX_SCORES_OUTPUT as RANKER_SCORES
from schemas.ranker import KnowledgeRanker
from schemas.ranker import to_onnx as ranker_to_onnx

ONNX_PARITY_CHECK = "onnx_parity"
OPSET = {"": 18, "ai.onnx.ml": 3}

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


def ranker_head(ranker: KnowledgeRanker) -> onnx.ModelProto:
    """The knowledge ranker's graph (input ``query_terms``) with its log-scores as
    ``ranker_scores``; softmax and blending happen in schemas/blend.py."""
    model = compose.add_prefix(
        onnx.load_from_string(ranker_to_onnx(ranker)), "rk__", rename_inputs=False
    )
    model.graph.node.append(
        onnx.helper.make_node("Identity", ["rk__" + RANKER_SCORES], [ONNX_RANKER_OUTPUT])
    )
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(ONNX_RANKER_OUTPUT, onnx.TensorProto.FLOAT, [None])
    )
    return model


def combine_heads(*heads: onnx.ModelProto) -> bytes:
    """Join heads into one graph; heads share inputs of the same name (``features``)."""
    first = heads[0]
    inputs: dict[str, onnx.ValueInfoProto] = {}
    for head in heads:
        for value in head.graph.input:
            inputs.setdefault(value.name, value)
    opsets: dict[str, int] = {}
    for head in heads:
        for opset in head.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    graph = onnx.helper.make_graph(
        [node for head in heads for node in head.graph.node],
        "triage",
        inputs=list(inputs.values()),
        outputs=[output for head in heads for output in head.graph.output],
        initializer=[init for head in heads for init in head.graph.initializer],
    )
    combined = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
    )
    combined.ir_version = max(head.ir_version for head in heads)
    onnx.checker.check_model(combined)
    return combined.SerializeToString()


def to_onnx(model: TrainedModel, ranker: KnowledgeRanker | None = None) -> bytes:
    """The trained heads (and the knowledge ranker, when given) in one ONNX graph."""
    n = model.spec.n_features
    heads = [
        sklearn_head(model.diagnosis, n, ONNX_DIAGNOSIS_OUTPUT, "dx__"),
        sklearn_head(model.severity, n, ONNX_SEVERITY_OUTPUT, "sev__"),
    ]
    if ranker is not None:
        heads.append(ranker_head(ranker))
    return combine_heads(*heads)


def _session(content: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])


def parity(model: TrainedModel, content: bytes, X: np.ndarray) -> float:
    """Largest absolute probability difference between onnxruntime and the training framework
    (classifier heads only; see :func:`system_parity` for a graph with the ranker)."""
    diagnosis, severity = _session(content).run(
        [ONNX_DIAGNOSIS_OUTPUT, ONNX_SEVERITY_OUTPUT], {ONNX_INPUT: X.astype(np.float32)}
    )
    expected_diagnosis, expected_severity = model.predict_proba(X)
    return float(
        max(
            np.max(np.abs(diagnosis - expected_diagnosis)),
            np.max(np.abs(severity - expected_severity)),
        )
    )


def system_parity(
    model: TrainedModel,
    ranker: KnowledgeRanker,
    content: bytes,
    X: np.ndarray,
    symptom_lists: list[list[str]],
) -> float:
    """Largest absolute probability difference, patient by patient as the API runs it, between
    onnxruntime and XGBoost (both heads) and the numpy ranker (its posterior)."""
    session = _session(content)
    expected_diagnosis, expected_severity = model.predict_proba(X)
    worst = 0.0
    for i, terms in enumerate(symptom_lists):
        query = ranker.encode(terms or [])
        diagnosis, severity, scores = session.run(
            [ONNX_DIAGNOSIS_OUTPUT, ONNX_SEVERITY_OUTPUT, ONNX_RANKER_OUTPUT],
            {ONNX_INPUT: X[i : i + 1].astype(np.float32), ONNX_QUERY_INPUT: query},
        )
        worst = max(
            worst,
            float(np.max(np.abs(diagnosis[0] - expected_diagnosis[i]))),
            float(np.max(np.abs(severity[0] - expected_severity[i]))),
            float(np.max(np.abs(softmax(scores.astype(np.float64)) - ranker.posterior(query)))),
        )
    return worst


@dg.asset(
    group_name="deployment",
    kinds={"onnx"},
    description=(
        "The served model as one ONNX graph: inputs `features` (vitals, sex, symptom indicators) "
        "and `query_terms` (the ranker's HPO indicator); outputs the diagnosis and severity "
        "probabilities and the knowledge ranker's log-scores over every ORPHA/OMIM disease. With "
        "its SHA-256 and the measured parity against XGBoost and the numpy ranker on held-out rows."
    ),
)
def onnx_model(
    diagnosis_model: TrainedModel,
    knowledge_ranker: KnowledgeRanker,
    training_table: pl.DataFrame,
) -> dg.Output[OnnxArtifact]:
    content = to_onnx(diagnosis_model, knowledge_ranker)
    rows = training_table.filter(pl.col("split") == SPLIT_EVALUATION)
    X = encode_table(rows, diagnosis_model.spec)
    diff = system_parity(
        diagnosis_model, knowledge_ranker, content, X, rows["symptoms"].to_list()
    )
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
