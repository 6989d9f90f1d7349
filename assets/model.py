"""Model stage: the diagnosis model, and the evaluation of the served system that gates it."""

from typing import Optional

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow

from diagnosis.ranker import KnowledgeRanker
from diagnosis.runtime import ModelLoadError, load_deployment
from diagnosis.training.candidates import XGB_PARAMS
from diagnosis.training.dataset import TrainingSet
from diagnosis.training.evaluation import Evaluation, evaluate
from diagnosis.training.export import Artifact
from diagnosis.training.fitting import TrainedModel, knowledge_cases, train_models
from orchestration.resources import ModelPolicy, TriageStorage

QUALITY_GATE_CHECK = "quality_gate"


class ClassifierConfig(dg.Config):
    """Hyperparameters of a training run (set in the launchpad, logged to MLflow).

    The diagnosis head's family and balancing come from ``model_selection`` unless ``family`` /
    ``balancing`` override them; the XGBoost settings apply to the severity head always and to
    the diagnosis head when its family is XGBoost."""

    n_estimators: int = XGB_PARAMS["n_estimators"]
    max_depth: int = XGB_PARAMS["max_depth"]
    learning_rate: float = XGB_PARAMS["learning_rate"]
    family: Optional[str] = None  # one of assets.candidates.FAMILIES
    balancing: Optional[str] = None  # one of assets.candidates.BALANCINGS

    def xgb_params(self) -> dict:
        return {
            **XGB_PARAMS,
            **self.model_dump(include={"n_estimators", "max_depth", "learning_rate"}),
        }


@dg.asset(
    group_name="training",
    kinds={"xgboost", "scikitlearn", "mlflow"},
    description=(
        "The diagnosis classifier of the family and class balancing chosen by `model_selection` "
        "(balancing applied to the training rows before fitting, never exported), and the XGBoost "
        "severity classifier (five categories), with median imputation of missing vitals. Each "
        "training is an MLflow run."
    ),
)
def diagnosis_model(
    config: ClassifierConfig,
    policy: ModelPolicy,
    mlflow: dg.ResourceParam[MlFlow],
    balanced_training_set: TrainingSet,
    model_selection: dict,
) -> dg.Output[TrainedModel]:
    params = config.xgb_params()
    family = config.family or model_selection["model"]
    balancing = config.balancing or model_selection["balancing"]
    model = train_models(balanced_training_set, policy.random_seed, params, family, balancing)
    mlflow.log_params(
        {
            **model.params,
            "selected_by": "config" if (config.family or config.balancing) else "model_selection",
            "classes": len(model.classes),
            "features": model.spec.n_features,
            "symptom_vocabulary": len(model.spec.symptoms),
            "training_rows": int(balanced_training_set.X.shape[0]),
            **{f"impute_median_{k}": round(v, 3) for k, v in model.imputation.items()},
        }
    )
    model.mlflow_run_id = mlflow.active_run().info.run_id
    return dg.Output(
        model,
        metadata={
            "mlflow_run_id": model.mlflow_run_id,
            "classes": len(model.classes),
            "diagnosis_family": family,
            "balancing": balancing,
            "imputation_medians": dg.MetadataValue.json(model.imputation),
        },
    )


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
    result = evaluate(
        onnx_model.runtime(), training_table, cases, policy.random_seed, champion
    )
    mlflow.log_params({f"blend_{k}": v for k, v in result.blend.to_dict().items()})
    mlflow.log_metrics(result.metrics)
    mlflow.log_dict(
        {"classes": result.classes, "matrix": result.confusion_matrix},
        "evaluation/confusion_matrix.json",
    )
    return dg.Output(
        result,
        metadata={k: dg.MetadataValue.float(v) if isinstance(v, float) else v
                  for k, v in result.metrics.items()},
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
