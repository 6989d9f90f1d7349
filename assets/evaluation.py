"""Evaluation assets: the served system scored through the runtime on the exported artifact, and
the quality gate that blocks deployment (logic: :mod:`diagnosis.training.evaluation`)."""

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow

from diagnosis.runtime import ModelLoadError, load_deployment
from diagnosis.training.evaluation import Evaluation, evaluate
from diagnosis.training.export import Artifact
from diagnosis.training.fitting import knowledge_cases
from orchestration.resources import ModelPolicy, TriageStorage

QUALITY_GATE_CHECK = "quality_gate"


@dg.asset(
    group_name="training",
    kinds={"onnx", "mlflow"},
    description="The served system (classifier + knowledge ranker + blend), scored through the "
    "runtime the API uses, on the exported ONNX artifact: held-out records and rare cases "
    "simulated from the annotations; accuracy, macro-F1, orphan recall and top-10, rare-disease "
    "top-1/top-10 for diseases with no training record, severity. The blend is fitted on the "
    "other half. The serving champion is scored by the same code on the same rows. Metrics and "
    "the confusion matrix go to MLflow.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    storage: TriageStorage,
    policy: ModelPolicy,
    onnx_model: Artifact,
    training_table: pl.DataFrame,
) -> dg.Output[Evaluation]:
    cases = knowledge_cases(policy.knowledge_cases, policy.random_seed + 1)
    champion = None
    storage.pull_deployment()
    if (storage.paths.deployments / "current.json").exists():
        try:
            champion = load_deployment(storage.paths.deployments)
        except ModelLoadError as exc:
            context.log.warning(f"the current champion cannot be loaded for comparison: {exc}")
    result = evaluate(onnx_model.runtime(), training_table, cases, policy.random_seed, champion)
    mlflow.log_params({f"blend_{k}": v for k, v in result.blend.to_dict().items()})
    mlflow.log_metrics(result.metrics)
    mlflow.log_dict(
        {"classes": result.classes, "matrix": result.confusion_matrix},
        "evaluation/confusion_matrix.json",
    )
    return dg.Output(
        result,
        metadata={
            k: dg.MetadataValue.float(v) if isinstance(v, float) else v
            for k, v in result.metrics.items()
        },
    )


@dg.asset_check(
    asset=model_evaluation,
    name=QUALITY_GATE_CHECK,
    blocking=True,
    description="Blocks deployment unless macro-F1, orphan recall and rare-disease top-10 reach "
    "the configured floors, and macro-F1 is not worse than the serving champion's on the same "
    "held-out rows beyond the configured tolerance.",
)
def quality_gate(policy: ModelPolicy, model_evaluation: Evaluation) -> dg.AssetCheckResult:
    metrics = model_evaluation.metrics
    failures = []
    if metrics["macro_f1"] < policy.min_macro_f1:
        failures.append(f"macro_f1 {metrics['macro_f1']:.3f} < {policy.min_macro_f1}")
    if metrics["orphan_rows"] and metrics["orphan_recall"] < policy.min_orphan_recall:
        failures.append(
            f"orphan_recall {metrics['orphan_recall']:.3f} < {policy.min_orphan_recall}"
        )
    if metrics.get("rare_cases") and metrics["rare_top10"] < policy.min_rare_top10:
        failures.append(f"rare_top10 {metrics['rare_top10']:.3f} < {policy.min_rare_top10}")
    champion_f1 = metrics.get("champion_macro_f1")
    if champion_f1 is not None and metrics["macro_f1"] < champion_f1 - policy.champion_tolerance:
        failures.append(
            f"macro_f1 {metrics['macro_f1']:.3f} is below the champion "
            f"{model_evaluation.champion_version} ({champion_f1:.3f}) by more than "
            f"{policy.champion_tolerance}"
        )
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures) or "all floors met",
        metadata={
            "macro_f1": metrics["macro_f1"],
            "orphan_recall": metrics["orphan_recall"],
            "rare_top10": metrics.get("rare_top10"),
            "champion_version": model_evaluation.champion_version or "none",
            "champion_macro_f1": champion_f1 if champion_f1 is not None else -1.0,
            "min_macro_f1": policy.min_macro_f1,
            "min_orphan_recall": policy.min_orphan_recall,
        },
    )
