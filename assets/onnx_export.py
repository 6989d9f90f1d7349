"""ONNX stage: the trained heads and the knowledge ranker as one graph, checked for parity."""

import dagster as dg
import polars as pl

from diagnosis.ranker import KnowledgeRanker
from diagnosis.training.dataset import SPLIT_EVALUATION, encode_table
from diagnosis.training.export import Artifact, build_artifact, system_parity
from diagnosis.training.fitting import TrainedModel
from orchestration.resources import ModelPolicy

ONNX_PARITY_CHECK = "onnx_parity"


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
) -> dg.Output[Artifact]:
    names = dict(training_table.select("diagnosis", "diagnosis_name").unique().iter_rows())
    categories = dict(training_table.select("diagnosis", "diagnosis_category").unique().iter_rows())
    artifact = build_artifact(diagnosis_model, knowledge_ranker, names, categories)
    rows = training_table.filter(pl.col("split") == SPLIT_EVALUATION)
    X = encode_table(rows, diagnosis_model.spec)
    artifact.max_abs_diff = system_parity(
        diagnosis_model, knowledge_ranker, artifact.onnx, X, rows["symptoms"].to_list()
    )
    artifact.parity_rows = int(X.shape[0])
    return dg.Output(
        artifact,
        metadata={
            "onnx_sha256": artifact.sha256,
            "size_bytes": len(artifact.onnx),
            "knowledge_sha256": artifact.manifest.knowledge_sha256,
            "max_abs_diff": artifact.max_abs_diff,
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
def onnx_parity(policy: ModelPolicy, onnx_model: Artifact) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=onnx_model.parity_rows > 0 and onnx_model.max_abs_diff <= policy.max_onnx_abs_diff,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "max_abs_diff": onnx_model.max_abs_diff,
            "tolerance": policy.max_onnx_abs_diff,
            "rows": onnx_model.parity_rows,
        },
    )
