"""Export: a trained model and the knowledge ranker as one ONNX graph, and the artifact around it.

The graph has two inputs (``features``: vitals, sex, symptom indicators; ``query_terms``: the
ranker's HPO indicator) and three outputs (diagnosis and severity probabilities, the ranker's
log-scores over every ORPHA/OMIM disease). :func:`build_artifact` adds the knowledge index and a
manifest, which is what :class:`diagnosis.runtime.Runtime` scores: the evaluation and the gate
score this artifact exactly as the API will.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import compose
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from diagnosis import sparse_graph
from diagnosis.artifacts import KNOWLEDGE_FILE, ONNX_FILE
from diagnosis.blend import softmax
from diagnosis.features import (
    ONNX_DIAGNOSIS_OUTPUT,
    ONNX_INPUT,
    ONNX_QUERY_INPUT,
    ONNX_RANKER_OUTPUT,
    ONNX_SEVERITY_OUTPUT,
)
from diagnosis.ranker import AGE_EDGES, SEXES, KnowledgeRanker
from diagnosis.runtime import BATCH_ROWS, Runtime, batches
from diagnosis.severity import PROFILE_MATRIX, class_profiles
from diagnosis.training.fitting import TrainedModel
from schemas.clinical import SEVERITIES
from schemas.contracts import (
    ClassEntry,
    FeaturesSpec,
    KnowledgeDisease,
    KnowledgeFile,
    Manifest,
    OnnxOutputs,
    SeveritySpec,
    encode,
)

OPSET = {"": 18, "ai.onnx.ml": 3}

update_registered_converter(
    XGBClassifier,
    "XGBoostXGBClassifier",
    calculate_linear_classifier_output_shapes,
    convert_xgboost,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)


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
    """The knowledge ranker's batched graph (:mod:`diagnosis.sparse_graph`: inputs
    ``query_rows``, ``query_terms``, ``query_context``, ``query_k``, ``query_probe``) with its
    outputs named ``ranker_<output>`` (the log-scores [n, D] as ``ranker_scores``); the blend of
    the top entries happens in :mod:`diagnosis.runtime`."""
    model = compose.add_prefix(onnx.load_from_string(ranker.to_onnx()), "rk__", rename_inputs=False)
    # the outputs renamed where they are made (an Identity node per output costs every call)
    public = {"rk__" + name: sparse_graph.public_name(name) for name in sparse_graph.OUTPUTS}
    for node in model.graph.node:
        node.input[:] = [public.get(name, name) for name in node.input]
        node.output[:] = [public.get(name, name) for name in node.output]
    for value in model.graph.output:
        value.name = public[value.name]
    return model


def combine_heads(*heads: onnx.ModelProto) -> bytes:
    """Join heads into one graph; heads share inputs of the same name (``features``)."""
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
    patients: list[dict],
    batch_rows: int = BATCH_ROWS,
) -> float:
    """Largest absolute difference, over batches as the API runs them (``batch_rows`` at a time),
    between onnxruntime and the fitted heads (probabilities) and the numpy ranker (softmax of its
    log-scores). ``patients`` are the rows as API bodies (symptoms, excluded findings, age,
    sex)."""
    session = _session(content)
    worst = 0.0
    for batch in batches(len(patients), batch_rows):
        expected_diagnosis, expected_severity = model.predict_proba(X[batch])
        rows = [
            ranker.query_rows(
                p.get("symptoms") or (), p.get("absent_symptoms") or (), p.get("age"), p.get("sex")
            )
            for p in patients[batch]
        ]
        diagnosis, severity, scores = session.run(
            [ONNX_DIAGNOSIS_OUTPUT, ONNX_SEVERITY_OUTPUT, ONNX_RANKER_OUTPUT],
            {ONNX_INPUT: X[batch].astype(np.float32), **ranker.onnx_feeds(rows)},
        )
        expected_scores = ranker.score_rows(rows)
        worst = max(
            worst,
            float(np.max(np.abs(diagnosis - expected_diagnosis), initial=0.0)),
            float(np.max(np.abs(severity - expected_severity), initial=0.0)),
            float(
                np.max(
                    np.abs(
                        softmax(scores.astype(np.float64))
                        - softmax(expected_scores.astype(np.float64))
                    ),
                    initial=0.0,
                )
            ),
        )
    return worst


def parity_sample(diagnoses: list[str], max_rows: int, seed: int) -> np.ndarray:
    """Indices (sorted) of at most about ``max_rows`` rows, stratified by diagnosis: every row
    when there are no more; else each diagnosis its share of ``max_rows`` (at least one row), drawn
    at random with ``seed``. ONNX parity is a property of the graph, not of the data's size."""
    n = len(diagnoses)
    if n <= max_rows:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    by_class: dict[str, list[int]] = {}
    for i in order:
        by_class.setdefault(diagnoses[i], []).append(int(i))
    picked = [
        i
        for members in by_class.values()
        for i in members[: max(1, round(max_rows * len(members) / n))]
    ]
    return np.sort(np.array(picked, dtype=np.int64))


def knowledge_index(ranker: KnowledgeRanker) -> bytes:
    """``knowledge.json`` (:class:`schemas.contracts.KnowledgeFile`): the ranker's HPO vocabulary in
    row order, the diseases in output order, the alt_id/obsolete map of the release, the row layout
    of excluded findings, age bins and sexes, the calibration of its top probability, the
    diseases' severity profiles, and the best log-score of a patient with nothing stated (the
    blend's reference)."""
    ontology = ranker.ontology
    profiles = getattr(ranker, "disease_profiles", None)
    calibration = ranker.calibration
    return encode(
        KnowledgeFile(
            hpo_release=ranker.hpo_release,
            terms=list(ranker.terms),
            diseases=[
                KnowledgeDisease(code=code, name=name)
                for code, name in zip(ranker.diseases, ranker.disease_names)
            ],
            term_aliases={**ontology.alt_ids, **ontology.replaced_by},
            empty_best=float(ranker.log_prior.max()),
            severity_profiles=PROFILE_MATRIX.tolist() if profiles is not None else [],
            disease_profiles=[int(i) for i in profiles] if profiles is not None else [],
            absent_offset=ranker.absent_offset,
            age_offset=ranker.age_offset,
            age_edges=list(AGE_EDGES),
            sex_offset=ranker.sex_offset,
            sexes=list(SEXES),
            calibration_x=[float(v) for v in calibration[0]] if calibration else [],
            calibration_y=[float(v) for v in calibration[1]] if calibration else [],
        )
    )


@dataclass
class Artifact:
    """An exported model before deployment: what the runtime needs to score it, plus parity."""

    onnx: bytes
    knowledge: bytes
    manifest: Manifest  # version "candidate"; no blend, metrics or provenance yet
    max_abs_diff: float = 0.0
    parity_rows: int = 0

    @property
    def sha256(self) -> str:
        return self.manifest.onnx_sha256

    @property
    def content(self) -> bytes:
        return self.onnx

    def files(self) -> dict[str, bytes]:
        return {ONNX_FILE: self.onnx, KNOWLEDGE_FILE: self.knowledge}

    def runtime(self, blend_params=None) -> Runtime:
        """The artifact as the API would load it (``blend_params`` until the manifest has one)."""
        return Runtime.from_artifact(
            self.manifest, self.onnx, self.knowledge, blend_params=blend_params
        )


def severity_spec(
    classes: list[str], diagnoses: list[str], severities: list[str], beta: float = 1.0
) -> SeveritySpec:
    """How severity follows the differential (:mod:`diagnosis.severity`), from the training rows:
    each class's severity mix and the severity head's prior."""
    profiles = class_profiles(classes, diagnoses, severities)
    index = {label: i for i, label in enumerate(SEVERITIES)}
    counts = np.bincount([index[s] for s in severities], minlength=len(SEVERITIES)) + 1.0
    return SeveritySpec(
        class_profiles=profiles.tolist(),
        head_prior=(counts / counts.sum()).tolist(),
        beta=beta,
    )


def build_artifact(
    model: TrainedModel,
    ranker: KnowledgeRanker,
    class_names: dict[str, str],
    class_categories: dict[str, str],
    severity: SeveritySpec | None = None,
) -> Artifact:
    """Export ``model`` and ``ranker`` into one graph, with its knowledge index and a manifest
    describing how to run it (the deployment adds version, blend, metrics and provenance)."""
    content = to_onnx(model, ranker)
    knowledge = knowledge_index(ranker)
    spec = model.spec
    manifest = Manifest(
        version="candidate",
        onnx_file=ONNX_FILE,
        onnx_sha256=hashlib.sha256(content).hexdigest(),
        onnx_input=ONNX_INPUT,
        onnx_outputs=OnnxOutputs(
            diagnosis=ONNX_DIAGNOSIS_OUTPUT,
            severity=ONNX_SEVERITY_OUTPUT,
            ranker=ONNX_RANKER_OUTPUT,
        ),
        onnx_query_input=ONNX_QUERY_INPUT,
        knowledge_file=KNOWLEDGE_FILE,
        knowledge_sha256=hashlib.sha256(knowledge).hexdigest(),
        severity=severity,
        features=FeaturesSpec(
            vitals=list(spec.vitals),
            sexes=list(spec.sexes),
            symptoms=list(spec.symptoms),
            missing_indicators=list(spec.missing_indicators),
        ),
        classes=[
            ClassEntry(code=code, name=class_names.get(code, code), category=class_categories[code])
            for code in model.classes
        ],
        severity_labels=list(SEVERITIES),
        imputation=dict(model.imputation),
        mlflow_run_id=model.mlflow_run_id,
        hpo_release=ranker.hpo_release,
    )
    return Artifact(onnx=content, knowledge=knowledge, manifest=manifest)
