"""Model stage: the diagnosis and severity classifiers, and their evaluation on held-out rows."""


from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import polars as pl
from dagster_mlflow.resources import MlFlow
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from schemas.categories import CATEGORY_ORPHAN, category_of
from assets.training import SPLIT_EVALUATION, TrainingSet, encode_table
from orchestration.resources import ModelPolicy
from schemas.clinical import SEVERITIES
from schemas.features import FeatureSpec

QUALITY_GATE_CHECK = "quality_gate"

XGB_PARAMS = {
    "n_estimators": 60,
    "max_depth": 4,
    "learning_rate": 0.25,
    "subsample": 0.9,
    "tree_method": "hist",
    "n_jobs": 1,
}


@dataclass
class TrainedModel:
    """What the ONNX export and the deployment need from a training run."""

    spec: FeatureSpec
    classes: list[str]
    diagnosis: Pipeline
    severity: Pipeline
    params: dict
    mlflow_run_id: str | None = None
    imputation: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.diagnosis.predict_proba(X), self.severity.predict_proba(X)


def _pipeline(seed: int) -> Pipeline:
    # Trees need no scaling; the imputer fills missing vitals with the training median and is
    # exported inside the ONNX graph, so serving sends NaN for a missing value.
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("model", XGBClassifier(random_state=seed, **XGB_PARAMS)),
        ]
    )


def train_models(data: TrainingSet, seed: int) -> TrainedModel:
    diagnosis = _pipeline(seed).fit(data.X_balanced, data.y_balanced)
    severity = _pipeline(seed).fit(data.X, data.y_severity)
    medians = diagnosis.named_steps["impute"].statistics_[: len(data.spec.vitals)]
    return TrainedModel(
        spec=data.spec,
        classes=data.classes,
        diagnosis=diagnosis,
        severity=severity,
        params={**XGB_PARAMS, "imputer": "median", "balancing": "random_over_sampling"},
        imputation={name: float(v) for name, v in zip(data.spec.vitals, medians)},
    )


def evaluate(model: TrainedModel, table: pl.DataFrame) -> dict:
    """Metrics on the evaluation split (never seen in training, never resampled)."""
    rows = table.filter(pl.col("split") == SPLIT_EVALUATION)
    X = encode_table(rows, model.spec)
    diagnosis_p, severity_p = model.predict_proba(X)
    index = {code: i for i, code in enumerate(model.classes)}
    y = np.array([index[c] for c in rows["diagnosis"].to_list()])
    predicted = diagnosis_p.argmax(axis=1)
    top3 = np.argsort(-diagnosis_p, axis=1)[:, :3]
    orphan_rows = np.array([category_of(c) == CATEGORY_ORPHAN for c in rows["diagnosis"]])
    severity_index = {label: i for i, label in enumerate(SEVERITIES)}
    y_sev = np.array([severity_index[s] for s in rows["severity"].to_list()])
    metrics = {
        "evaluation_rows": int(len(y)),
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "top3_accuracy": float(np.mean([y[i] in top3[i] for i in range(len(y))])),
        "orphan_rows": int(orphan_rows.sum()),
        "orphan_recall": float(np.mean(predicted[orphan_rows] == y[orphan_rows]))
        if orphan_rows.any()
        else 0.0,
        "severity_accuracy": float(accuracy_score(y_sev, severity_p.argmax(axis=1))),
        "severity_macro_f1": float(
            f1_score(y_sev, severity_p.argmax(axis=1), average="macro", zero_division=0)
        ),
    }
    matrix = confusion_matrix(y, predicted, labels=list(range(len(model.classes))))
    return {"metrics": metrics, "confusion_matrix": matrix.tolist(), "classes": model.classes}


@dg.asset(
    group_name="training",
    kinds={"xgboost", "scikitlearn", "mlflow"},
    description=(
        "XGBoost classifiers for the diagnosis (on the balanced set) and the severity (five "
        "categories), with median imputation of missing vitals. Each training is an MLflow run."
    ),
)
def diagnosis_model(
    policy: ModelPolicy, mlflow: dg.ResourceParam[MlFlow], balanced_training_set: TrainingSet
) -> dg.Output[TrainedModel]:
    model = train_models(balanced_training_set, policy.random_seed)
    mlflow.log_params(
        {
            **{f"xgb_{k}": v for k, v in XGB_PARAMS.items()},
            "classes": len(model.classes),
            "features": model.spec.n_features,
            "symptom_vocabulary": len(model.spec.symptoms),
            "training_rows": int(balanced_training_set.X.shape[0]),
            "balanced_rows": int(balanced_training_set.X_balanced.shape[0]),
            "balancing": "random_over_sampling",
            **{f"impute_median_{k}": round(v, 3) for k, v in model.imputation.items()},
        }
    )
    model.mlflow_run_id = mlflow.active_run().info.run_id
    return dg.Output(
        model,
        metadata={
            "mlflow_run_id": model.mlflow_run_id,
            "classes": len(model.classes),
            "imputation_medians": dg.MetadataValue.json(model.imputation),
        },
    )


@dg.asset(
    group_name="training",
    kinds={"scikitlearn", "mlflow"},
    description="Accuracy, macro-F1, top-3 accuracy, orphan recall and severity scores on the "
    "held-out evaluation split, with the confusion matrix logged to MLflow.",
)
def model_evaluation(
    mlflow: dg.ResourceParam[MlFlow], diagnosis_model: TrainedModel, training_table: pl.DataFrame
) -> dg.Output[dict]:
    result = evaluate(diagnosis_model, training_table)
    mlflow.log_metrics(result["metrics"])
    mlflow.log_dict(
        {"classes": result["classes"], "matrix": result["confusion_matrix"]},
        "evaluation/confusion_matrix.json",
    )
    return dg.Output(
        result,
        metadata={k: dg.MetadataValue.float(v) if isinstance(v, float) else v
                  for k, v in result["metrics"].items()},
    )


@dg.asset_check(
    asset=model_evaluation,
    name=QUALITY_GATE_CHECK,
    blocking=True,
    description="Blocks deployment unless macro-F1 and orphan recall reach the configured floors.",
)
def quality_gate(policy: ModelPolicy, model_evaluation: dict) -> dg.AssetCheckResult:
    metrics = model_evaluation["metrics"]
    failures = []
    if metrics["macro_f1"] < policy.min_macro_f1:
        failures.append(f"macro_f1 {metrics['macro_f1']:.3f} < {policy.min_macro_f1}")
    if metrics["orphan_rows"] and metrics["orphan_recall"] < policy.min_orphan_recall:
        failures.append(
            f"orphan_recall {metrics['orphan_recall']:.3f} < {policy.min_orphan_recall}"
        )
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures) or "all floors met",
        metadata={
            "macro_f1": metrics["macro_f1"],
            "orphan_recall": metrics["orphan_recall"],
            "min_macro_f1": policy.min_macro_f1,
            "min_orphan_recall": policy.min_orphan_recall,
        },
    )
