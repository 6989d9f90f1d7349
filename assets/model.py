"""Model stage: the diagnosis and severity classifiers, and their evaluation on held-out rows."""


from dataclasses import dataclass, field
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl
from dagster_mlflow.resources import MlFlow
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from assets.candidates import (
    BALANCINGS,
    FAMILIES,
    RANDOM_OVER_SAMPLING,
    XGB_PARAMS,
    XGBOOST,
    candidate_params,
    fit_candidate,
)
from assets.training import SPLIT_EVALUATION, TrainingSet, encode_table
from orchestration.resources import ModelPolicy, TriageStorage
from orchestration.simulation import simulate_cohort
from schemas.blend import BlendParams, blend, gate_features
from schemas.categories import CATEGORY_ORPHAN, category_of
from schemas.clinical import SEVERITIES
from schemas.features import FeatureSpec
from schemas.ranker import KnowledgeRanker
from schemas.validation import validate_records
from serving.model_store import ModelLoadError, load_deployment

QUALITY_GATE_CHECK = "quality_gate"

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


def _pipeline(seed: int, params: dict | None = None) -> Pipeline:
    # Trees need no scaling; the imputer fills missing vitals with the training median and is
    # exported inside the ONNX graph, so serving sends NaN for a missing value.
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("model", XGBClassifier(random_state=seed, **(params or XGB_PARAMS))),
        ]
    )


def train_models(
    data: TrainingSet,
    seed: int,
    params: dict | None = None,
    family: str = XGBOOST,
    balancing: str = RANDOM_OVER_SAMPLING,
) -> TrainedModel:
    """The diagnosis head of ``family`` with ``balancing`` applied to the (unbalanced) training
    rows (the sampler is fitted first and is not part of the returned, exported pipeline), and
    the XGBoost severity head on the training rows. ``params`` are XGBoost's."""
    if family not in FAMILIES or balancing not in BALANCINGS:
        raise ValueError(f"unknown candidate {family!r} + {balancing!r}")
    params = params or XGB_PARAMS
    diagnosis = fit_candidate(
        family, balancing, data.X, data.y_diagnosis, seed,
        params if family == XGBOOST else None,
    )
    severity = _pipeline(seed, params).fit(data.X, data.y_severity)
    medians = diagnosis.named_steps["impute"].statistics_[: len(data.spec.vitals)]
    return TrainedModel(
        spec=data.spec,
        classes=data.classes,
        diagnosis=diagnosis,
        severity=severity,
        params={
            **candidate_params(family, balancing, params if family == XGBOOST else None),
            **{f"severity_xgb_{k}": v for k, v in params.items()},
        },
        imputation={name: float(v) for name, v in zip(data.spec.vitals, medians)},
    )


def knowledge_cases(n: int, seed: int) -> pl.DataFrame:
    """Rare-disease patients simulated from the annotations (symptoms by annotated frequency,
    ordinary vitals), validated like any export: the cases no hospital has recorded yet."""
    weeks = simulate_cohort(
        n, 1, seed, defect_rate=0.0, n_orphan_diseases=max(n // 3, 1),
        healthy_share=0.0, orphan_share=1.0,
    )
    raw = pl.concat([frame for _, frame in weeks]).with_columns(
        pl.lit("knowledge_cases").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    return validate_records(raw, b"knowledge-cases").valid


@dataclass
class SystemInputs:
    """What the served model computes for each patient, before blending."""

    codes: list[str]
    severity: list[str]
    classifier: np.ndarray  # [n, C]
    severity_probs: np.ndarray  # [n, 5]
    ranker_scores: np.ndarray  # [n, D]
    unseen_share: np.ndarray  # [n]


def system_inputs(model: TrainedModel, ranker: KnowledgeRanker, rows: pl.DataFrame) -> SystemInputs:
    X = encode_table(rows, model.spec)
    classifier, severity = model.predict_proba(X)
    symptom_lists = [terms or [] for terms in rows["symptoms"].to_list()]
    scores = np.stack([ranker.score(ranker.encode(terms)) for terms in symptom_lists])
    unseen = np.array(
        [
            sum(not model.spec.knows_symptom(t) for t in terms) / len(terms) if terms else 0.0
            for terms in symptom_lists
        ]
    )
    return SystemInputs(
        rows["diagnosis"].to_list(), rows["severity"].to_list(), classifier, severity, scores, unseen
    )


def class_layout(classes: list[str], ranker: KnowledgeRanker) -> tuple[np.ndarray, np.ndarray]:
    """Which classifier classes are orphan diseases, and where each sits in the ranker."""
    orphan = np.array([category_of(c) == CATEGORY_ORPHAN for c in classes])
    index = {code: i for i, code in enumerate(ranker.diseases)}
    to_disease = np.array([index.get(c, -1) if o else -1 for c, o in zip(classes, orphan)])
    return orphan, to_disease


def blended(model, ranker, inputs: SystemInputs, params: BlendParams):
    orphan, to_disease = class_layout(model.classes, ranker)
    class_probs, disease_probs, p_orphan = blend(
        inputs.classifier, orphan, to_disease, inputs.ranker_scores,
        float(ranker.log_prior.max()), inputs.unseen_share, params,
    )
    codes = np.array(list(model.classes) + list(ranker.diseases))
    return np.concatenate([class_probs, disease_probs], axis=1), codes, p_orphan


def fit_blend(model, ranker, inputs: SystemInputs) -> BlendParams:
    """Fit the rare-or-not gate by logistic regression, then choose alpha by orphan top-1."""
    orphan, _ = class_layout(model.classes, ranker)
    features = gate_features(
        inputs.classifier, orphan, inputs.ranker_scores, float(ranker.log_prior.max()),
        inputs.unseen_share,
    )
    truth = np.array([category_of(c) == CATEGORY_ORPHAN for c in inputs.codes])
    gate = LogisticRegression(C=1.0, max_iter=1000).fit(features, truth)
    best = None
    for alpha in (0.0, 0.25, 0.5):
        params = BlendParams(tuple(gate.coef_[0].tolist()), float(gate.intercept_[0]), alpha)
        probs, codes, _ = blended(model, ranker, inputs, params)
        top1 = codes[probs.argmax(axis=1)]
        hits = np.mean([p == t for p, t, o in zip(top1, inputs.codes, truth) if o])
        if best is None or hits > best[0]:
            best = (hits, params)
    return best[1]


def _subset(inputs: SystemInputs, mask: np.ndarray) -> SystemInputs:
    pick = np.flatnonzero(mask)
    return SystemInputs(
        [inputs.codes[i] for i in pick], [inputs.severity[i] for i in pick],
        inputs.classifier[pick], inputs.severity_probs[pick], inputs.ranker_scores[pick],
        inputs.unseen_share[pick],
    )


def _concat(a: SystemInputs, b: SystemInputs) -> SystemInputs:
    return SystemInputs(
        a.codes + b.codes, a.severity + b.severity,
        np.concatenate([a.classifier, b.classifier]),
        np.concatenate([a.severity_probs, b.severity_probs]),
        np.concatenate([a.ranker_scores, b.ranker_scores]),
        np.concatenate([a.unseen_share, b.unseen_share]),
    )


def patient_dicts(rows: pl.DataFrame) -> list[dict]:
    """Table rows as API request bodies."""
    return rows.select("age", "sex", "heart_rate", "body_temperature", "systolic_bp",
                       "diastolic_bp", "symptoms").to_dicts()


def evaluate(
    model: TrainedModel, ranker: KnowledgeRanker, table: pl.DataFrame, cases: pl.DataFrame,
    seed: int, champion=None,
) -> dict:
    """Fit the blend on one half of the held-out records and simulated rare cases, and score the
    whole served system (classifier + ranker + blend) on the other half. ``champion`` (the
    deployed model as the API loads it) is scored on the very same rows, for the gate."""
    rows = table.filter(pl.col("split") == SPLIT_EVALUATION)
    records, rare = system_inputs(model, ranker, rows), system_inputs(model, ranker, cases)
    rng = np.random.default_rng(seed)
    record_half = rng.random(len(records.codes)) < 0.5
    rare_half = rng.random(len(rare.codes)) < 0.5
    params = fit_blend(
        model, ranker, _concat(_subset(records, record_half), _subset(rare, rare_half))
    )
    test_records = _subset(records, ~record_half)
    test_rare = _subset(rare, ~rare_half)

    probs, codes, p_orphan = blended(model, ranker, test_records, params)
    order = np.argsort(-probs, axis=1)[:, :10]
    top = codes[order]
    truth = np.array(test_records.codes)
    predicted = top[:, 0]
    orphan_rows = np.array([category_of(c) == CATEGORY_ORPHAN for c in truth])
    rare_probs, _, rare_p_orphan = blended(model, ranker, test_rare, params)
    rare_top = codes[np.argsort(-rare_probs, axis=1)[:, :10]]
    rare_truth = np.array(test_rare.codes)
    unseen = np.array([c not in set(model.classes) for c in rare_truth])
    severity_index = {label: i for i, label in enumerate(SEVERITIES)}
    y_sev = np.array([severity_index[s] for s in test_records.severity])
    clf_predicted = np.array(model.classes)[test_records.classifier.argmax(axis=1)]

    def share(hits: np.ndarray) -> float:
        return float(hits.mean()) if hits.size else 0.0

    metrics = {
        "evaluation_rows": int(len(truth)),
        "calibration_rows": int(record_half.sum() + rare_half.sum()),
        "accuracy": share(predicted == truth),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "top3_accuracy": share(np.array([t in row[:3] for t, row in zip(truth, top)])),
        "orphan_rows": int(orphan_rows.sum()),
        "orphan_recall": share(predicted[orphan_rows] == truth[orphan_rows]),
        "orphan_top10": share(
            np.array([t in row for t, row in zip(truth[orphan_rows], top[orphan_rows])])
        ),
        "classifier_only_macro_f1": float(
            f1_score(truth, clf_predicted, average="macro", zero_division=0)
        ),
        "rare_cases": int(len(rare_truth)),
        "rare_unseen_cases": int(unseen.sum()),
        "rare_unseen_top1": share(rare_top[unseen, 0] == rare_truth[unseen]),
        "rare_top10": share(np.array([t in row for t, row in zip(rare_truth, rare_top)])),
        "rare_mean_orphan_probability": float(rare_p_orphan.mean()) if rare_p_orphan.size else 0.0,
        "common_mean_orphan_probability": float(p_orphan[~orphan_rows].mean())
        if (~orphan_rows).any()
        else 0.0,
        "severity_accuracy": share(test_records.severity_probs.argmax(axis=1) == y_sev),
        "severity_macro_f1": float(
            f1_score(y_sev, test_records.severity_probs.argmax(axis=1), average="macro",
                     zero_division=0)
        ),
    }
    if champion is not None:
        test_rows = rows.filter(pl.Series(~record_half))
        answers = champion.predict(patient_dicts(test_rows), top_k=1)
        champion_top1 = np.array([a["differential"][0]["code"] for a in answers])
        metrics["champion_macro_f1"] = float(
            f1_score(truth, champion_top1, average="macro", zero_division=0)
        )
        metrics["champion_accuracy"] = share(champion_top1 == truth)
    labels = sorted(set(truth) | set(predicted))
    matrix = confusion_matrix(truth, predicted, labels=labels)
    return {
        "metrics": metrics,
        "champion_version": getattr(champion, "version", None),
        "blend": params.to_dict(),
        "confusion_matrix": matrix.tolist(),
        "classes": labels,
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
    kinds={"scikitlearn", "mlflow"},
    description="The served system (classifier + knowledge ranker + blend) scored on held-out "
    "records and on rare cases simulated from the annotations: accuracy, macro-F1, orphan recall "
    "and top-10, rare-disease top-1/top-10 for diseases with no training record, severity. The "
    "blend is fitted on the other half. Metrics and the confusion matrix go to MLflow.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    storage: TriageStorage,
    policy: ModelPolicy,
    diagnosis_model: TrainedModel,
    knowledge_ranker: KnowledgeRanker,
    training_table: pl.DataFrame,
) -> dg.Output[dict]:
    cases = knowledge_cases(policy.knowledge_cases, policy.random_seed + 1)
    champion = None
    storage.pull_deployment()
    if (storage.paths.deployments / "current.json").exists():
        try:
            champion = load_deployment(storage.paths.deployments)
        except ModelLoadError as exc:
            context.log.warning(f"the current champion cannot be loaded for comparison: {exc}")
    result = evaluate(
        diagnosis_model, knowledge_ranker, training_table, cases, policy.random_seed, champion
    )
    mlflow.log_params({f"blend_{k}": v for k, v in result["blend"].items()})
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
    description="Blocks deployment unless macro-F1, orphan recall and rare-disease top-10 reach "
    "the configured floors, and macro-F1 is not worse than the serving champion's on the same "
    "held-out rows beyond the configured tolerance.",
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
    if metrics.get("rare_cases") and metrics["rare_top10"] < policy.min_rare_top10:
        failures.append(f"rare_top10 {metrics['rare_top10']:.3f} < {policy.min_rare_top10}")
    champion_f1 = metrics.get("champion_macro_f1")
    if champion_f1 is not None and metrics["macro_f1"] < champion_f1 - policy.champion_tolerance:
        failures.append(
            f"macro_f1 {metrics['macro_f1']:.3f} is below the champion "
            f"{model_evaluation.get('champion_version')} ({champion_f1:.3f}) by more than "
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
            "champion_version": model_evaluation.get("champion_version") or "none",
            "champion_macro_f1": champion_f1 if champion_f1 is not None else -1.0,
            "min_macro_f1": policy.min_macro_f1,
            "min_orphan_recall": policy.min_orphan_recall,
        },
    )
