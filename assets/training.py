"""Training assets: the training table, its encoded training split, model selection by
cross-validation, the selected balancing applied to the training split, and the diagnosis model.

training_table -> training_features -> model_selection -> balanced_training_set -> diagnosis_model
(logic: :mod:`diagnosis.training`)."""

import hashlib
import inspect
import json
from dataclasses import dataclass
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl
from dagster_mlflow.resources import MlFlow

from assets.validation import EVERY_VALID_WEEK, weeks_by_key
from diagnosis.categories import category_of
from diagnosis.ranker import KnowledgeRanker
from diagnosis.runtime import release_freed_memory
from diagnosis.training import candidates as candidates_module
from diagnosis.training.balancing import BalancedTrainingSet, balance
from diagnosis.training.candidates import (
    BALANCINGS,
    FAMILIES,
    MAX_RESAMPLED_ROWS,
    RESAMPLING,
    SELECTION_MAX_ROWS,
    XGB_PARAMS,
    CandidateResult,
    LearningCurve,
    comparison_table,
    cross_validate_candidate,
    evaluate_ranker,
    learning_curve,
    markdown_table,
    resampling_plan,
    select_candidate,
    stratified_sample,
)
from diagnosis.training.dataset import (
    SPLIT_EVALUATION,
    SPLIT_TRAIN,
    TrainingSet,
    assemble_training_table,
    encode_training_split,
)
from diagnosis.training.fitting import TrainedModel, train_models
from orchestration.resources import ModelPolicy


@dg.asset(
    group_name="training",
    kinds={"polars"},
    ins={
        "validated_patient_records": EVERY_VALID_WEEK,
        "disease_catalogue": dg.AssetIn(),
        "labelled_feedback": dg.AssetIn(),
    },
    description=(
        "Every valid record of every week, plus the clinician-confirmed labelled feedback "
        "(source = clinician_label), with diagnosis names and categories and a fixed, "
        "stratified train/evaluation split. Diagnoses with too few records are left out and named "
        "in the metadata."
    ),
)
def training_table(
    context: dg.AssetExecutionContext,
    policy: ModelPolicy,
    validated_patient_records: dict[str, pl.DataFrame] | pl.DataFrame,
    disease_catalogue: pl.DataFrame,
    labelled_feedback: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    validated_patient_records = weeks_by_key(context, validated_patient_records)
    table, too_few = assemble_training_table(
        validated_patient_records,
        disease_catalogue,
        min_class_rows=policy.min_class_rows,
        evaluation_share=policy.evaluation_share,
        seed=policy.random_seed,
        feedback=labelled_feedback,
    )
    by_source = table.group_by("source").len().sort("source")
    by_category = table.group_by("diagnosis_category").len().sort("diagnosis_category")
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "weeks": dg.MetadataValue.json(sorted(validated_patient_records)),
            "classes": table["diagnosis"].n_unique(),
            "rows_by_category": dg.MetadataValue.json(
                dict(zip(by_category["diagnosis_category"], by_category["len"]))
            ),
            "classes_below_minimum": dg.MetadataValue.json(too_few),
            "evaluation_rows": int((table["split"] == SPLIT_EVALUATION).sum()),
            "rows_by_source": dg.MetadataValue.json(
                dict(zip(by_source["source"], by_source["len"]))
            ),
        },
    )


@dg.asset_check(
    asset=training_table,
    name="class_minimum",
    description="Warns when diagnoses had fewer records than the configured minimum and so "
    "cannot be learned from data; names them.",
)
def class_minimum(context: dg.AssetCheckExecutionContext, policy: ModelPolicy):
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_table"))
    too_few = event.asset_materialization.metadata["classes_below_minimum"].value
    orphans = sorted(code for code in too_few if category_of(code) == "orphan")
    others = sorted(code for code in too_few if category_of(code) != "orphan")
    return dg.AssetCheckResult(
        passed=not too_few,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(too_few)} diagnoses below {policy.min_class_rows} records"
            if too_few
            else "every diagnosis reaches the minimum"
        ),
        metadata={
            "orphan_below_minimum": dg.MetadataValue.json({c: too_few[c] for c in orphans}),
            "other_below_minimum": dg.MetadataValue.json({c: too_few[c] for c in others}),
            "min_class_rows": policy.min_class_rows,
        },
    )


@dg.asset(
    group_name="training",
    kinds={"numpy"},
    description=(
        "The training split of `training_table` encoded as model features (vitals, sex, symptom "
        "indicators for the terms seen at least twice), with diagnosis and severity class "
        "indices; the rows as recorded, not balanced. The evaluation split is never encoded here."
    ),
)
def training_features(training_table: pl.DataFrame) -> dg.Output[TrainingSet]:
    data = encode_training_split(training_table.filter(pl.col("split") == SPLIT_TRAIN))
    return dg.Output(
        data,
        metadata={
            "rows": int(data.X.shape[0]),
            "features": data.spec.n_features,
            "symptom_vocabulary": len(data.spec.symptoms),
            "classes": len(data.classes),
        },
    )


class SelectionConfig(dg.Config):
    """How much of the comparison to run, and when to run it again (set in the launchpad)."""

    folds: int = 3
    resample_top: int = 1  # families (best first) that also get random over-sampling and SMOTE
    # the comparison runs on a stratified sample sized by a learning curve, at most this many rows
    max_sample_rows: int = SELECTION_MAX_ROWS
    max_resampled_rows: int = MAX_RESAMPLED_ROWS  # synthetic rows per resampling, at most
    # re-run only when the training split changed enough (else reuse the last selection)
    reselect_row_change: float = 0.5  # relative change of the training rows since the last run
    reselect_class_shift: float = 0.1  # total-variation distance of the class shares
    force: bool = False  # run the comparison whatever changed


SELECTION_STATE = "selection_state"


def selection_fingerprint(config: SelectionConfig, policy: ModelPolicy) -> str:
    """What the comparison's result depends on besides the data: the selection code (the source of
    diagnosis.training.candidates), the comparison settings and the selection rule."""
    settings = config.model_dump(exclude={"force", "reselect_row_change", "reselect_class_shift"})
    digest = hashlib.sha256(inspect.getsource(candidates_module).encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(f"{policy.random_seed}|{policy.min_orphan_recall}".encode())
    return digest.hexdigest()[:16]


def class_shares(y: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(y, minlength=len(classes))
    return {c: float(n) / max(len(y), 1) for c, n in zip(classes, counts)}


def reuse_decision(
    previous: dict | None, fingerprint: str, rows: int, shares: dict, config: SelectionConfig
) -> tuple[bool, str]:
    """(reuse the previous selection?, why): only when the code and settings are the same and the
    training split changed by less than the configured size and class-mix thresholds."""
    if config.force:
        return False, "forced by config"
    if not previous:
        return False, "no earlier selection"
    if previous.get("fingerprint") != fingerprint:
        return False, "selection code or settings changed"
    change = abs(rows - previous["rows"]) / max(previous["rows"], 1)
    if change >= config.reselect_row_change:
        return False, f"training rows changed by {change:.0%} (>= {config.reselect_row_change:.0%})"
    before = previous["class_shares"]
    shift = 0.5 * sum(
        abs(shares.get(c, 0.0) - before.get(c, 0.0)) for c in set(shares) | set(before)
    )
    if shift >= config.reselect_class_shift:
        return False, f"class mix shifted by {shift:.3f} (>= {config.reselect_class_shift})"
    return True, (
        f"training rows changed by {change:.0%} (< {config.reselect_row_change:.0%}), class mix "
        f"by {shift:.3f} (< {config.reselect_class_shift}), same code and settings"
    )


def previous_selection(context) -> dict | None:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("model_selection"))
    if event is None or event.asset_materialization is None:
        return None
    entry = event.asset_materialization.metadata.get(SELECTION_STATE)
    return entry.value if entry is not None else None


def selection_metadata(metadata: dict) -> dict:
    """The selection's evidence as Dagster metadata (tables as markdown, lists as JSON)."""
    return {
        k: dg.MetadataValue.md(v)
        if k in ("comparison", "learning_curve")
        else dg.MetadataValue.json(v)
        if isinstance(v, (list, dict))
        else v
        for k, v in metadata.items()
    }


@dataclass
class SelectionPlan:
    """What every step of the selection graph needs: the decision to reuse or run, and when
    running, the stratified sample the candidates are compared on (and its learning curve)."""

    reuse: bool
    why: str
    previous: dict | None
    fingerprint: str
    rows: int
    shares: dict[str, float]
    classes: list[str]
    seed: int
    folds: int
    resample_top: int
    max_resampled_rows: int
    min_orphan_recall: float
    X: object = None  # the sample's features (None when reusing)
    y: np.ndarray | None = None
    symptom_lists: list[list[str]] | None = None
    curve: LearningCurve | None = None


@dg.op(
    description="Decide whether the comparison must run again (code, settings, rows, class "
    "mix) and, if so, draw its stratified sample, sized by a learning curve."
)
def selection_plan(
    context: dg.OpExecutionContext,
    config: SelectionConfig,
    policy: ModelPolicy,
    mlflow: dg.ResourceParam[MlFlow],
    training_features: TrainingSet,
    training_table: pl.DataFrame,
) -> SelectionPlan:
    # `mlflow` is initialised here, in one step before the candidates fan out: its set-up creates
    # the tracking store when it does not exist yet (a local SQLite file) and the Dagster run's
    # parent MLflow run. Done by several candidate steps at once (Celery workers, multiprocess),
    # the store's migrations collide ("table _alembic_tmp_experiments already exists") and each
    # step may start a parent run of its own.
    del mlflow
    data = training_features
    rows = int(data.X.shape[0])
    plan = SelectionPlan(
        reuse=False,
        why="",
        previous=previous_selection(context),
        fingerprint=selection_fingerprint(config, policy),
        rows=rows,
        shares=class_shares(data.y_diagnosis, data.classes),
        classes=list(data.classes),
        seed=policy.random_seed,
        folds=config.folds,
        resample_top=config.resample_top,
        max_resampled_rows=config.max_resampled_rows,
        min_orphan_recall=policy.min_orphan_recall,
    )
    plan.reuse, plan.why = reuse_decision(
        plan.previous, plan.fingerprint, rows, plan.shares, config
    )
    context.log.info(f"model selection {'reused' if plan.reuse else 'runs'}: {plan.why}")
    if plan.reuse:
        return plan
    plan.curve = learning_curve(
        data.X, data.y_diagnosis, policy.random_seed, max_rows=config.max_sample_rows
    )
    sample = stratified_sample(data.y_diagnosis, plan.curve.rows_chosen, policy.random_seed)
    plan.X, plan.y = data.X[sample], data.y_diagnosis[sample]
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    if train.height == rows and train["diagnosis"].to_list() == [
        data.classes[i] for i in data.y_diagnosis
    ]:
        all_lists = train["symptoms"].to_list()
        plan.symptom_lists = [all_lists[i] or [] for i in sample]
    else:
        context.log.warning("training rows do not line up with the training set: ranker skipped")
    return plan


REUSED = "reused"  # the placeholder candidate of a reused selection (no step fits anything)


def _candidate_outputs(pairs):
    for family, balancing in pairs:
        yield dg.DynamicOutput(f"{family}+{balancing}", mapping_key=f"{family}__{balancing}")


@dg.op(
    out=dg.DynamicOut(str),
    description="Stage 1: every family with the "
    "balancings that do not resample, one step each (one empty placeholder when the selection is reused).",
)
def first_stage_candidates(plan: SelectionPlan):
    if plan.reuse:
        # one placeholder, not none: Dagster skips everything downstream of an empty fan-out
        yield dg.DynamicOutput(REUSED, mapping_key=REUSED)
        return
    yield from _candidate_outputs(
        (family, balancing)
        for family in FAMILIES
        for balancing in BALANCINGS
        if balancing not in RESAMPLING
    )


@dg.op(
    out=dg.DynamicOut(str),
    description="Stage 2: the resampling "
    "balancings for the best families of stage 1 (SelectionConfig.resample_top), one step each.",
)
def second_stage_candidates(plan: SelectionPlan, first: list[Optional[CandidateResult]]):
    if plan.reuse:
        yield dg.DynamicOutput(REUSED, mapping_key=REUSED)
        return
    first = [r for r in first if r is not None]
    resampled, _ = resampling_plan(first, FAMILIES, BALANCINGS, plan.resample_top)
    yield from _candidate_outputs(
        (family, balancing)
        for family in resampled
        for balancing in BALANCINGS
        if balancing in RESAMPLING
    )


@dg.op(
    description="One candidate (family + balancing) cross-validated on the selection sample, "
    "balancing inside the training folds only; one nested MLflow run."
)
def cross_validate_step(
    context: dg.OpExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    plan: SelectionPlan,
    candidate: str,
) -> Optional[CandidateResult]:
    if candidate == REUSED:
        return None
    family, balancing = candidate.split("+")
    result = cross_validate_candidate(
        family,
        balancing,
        plan.X,
        plan.y,
        plan.classes,
        plan.seed,
        plan.folds,
        max_resampled_rows=plan.max_resampled_rows,
    )
    with mlflow.start_run(nested=True, run_name=candidate) as run:
        mlflow.log_params(result.params | {"selection_sample_rows": len(plan.y)})
        mlflow.log_metrics(
            {
                k: v
                for k, v in result.row().items()
                if isinstance(v, (int, float)) and k not in ("model", "balancing")
            }
            | {f"macro_f1_fold{i}": v for i, v in enumerate(result.macro_f1)}
        )
        if result.confusion is not None:
            mlflow.log_dict(result.confusion, "cv/confusion_matrix.json")
        result.mlflow_run_id = run.info.run_id
    context.log.info(f"{candidate}: macro-F1 {result.row()['macro_f1_mean']:.4f}")
    return result


@dg.op(description="The knowledge ranker's orphan top-1 on the same folds of the sample.")
def ranker_step(
    mlflow: dg.ResourceParam[MlFlow], plan: SelectionPlan, knowledge_ranker: KnowledgeRanker
) -> Optional[CandidateResult]:
    if plan.reuse or plan.symptom_lists is None:
        return None
    result = evaluate_ranker(
        knowledge_ranker, plan.symptom_lists, plan.y, plan.classes, plan.seed, plan.folds
    )
    with mlflow.start_run(nested=True, run_name=f"{result.model}+{result.balancing}") as run:
        mlflow.log_params(result.params)
        mlflow.log_metrics(
            {
                k: v
                for k, v in result.row().items()
                if isinstance(v, (int, float)) and k not in ("model", "balancing")
            }
        )
        result.mlflow_run_id = run.info.run_id
    return result


@dg.op(
    description="Gather the candidates' results (and their MLflow runs), apply the selection "
    "rule, or return the reused selection with its evidence."
)
def choose_selection(
    context: dg.OpExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    plan: SelectionPlan,
    first: list[Optional[CandidateResult]],
    second: list[Optional[CandidateResult]],
    ranker: Optional[CandidateResult],
) -> dg.Output[dict]:
    first = [r for r in first if r is not None]
    second = [r for r in second if r is not None]
    if plan.reuse:
        previous = plan.previous
        selected = previous["selected"]
        mlflow.log_params(
            {
                "selected_model": selected["model"],
                "selected_balancing": selected["balancing"],
                "selection_reused_from_run": previous["dagster_run_id"],
            }
        )
        return dg.Output(
            selected,
            metadata={
                **selection_metadata(previous["metadata"]),
                "reused": True,
                "reuse_reason": plan.why,
                "reused_from_run": previous["dagster_run_id"],
                "training_rows_now": plan.rows,
                SELECTION_STATE: dg.MetadataValue.json(previous),
            },
        )
    order = {f"{f}+{b}": i for i, (f, b) in enumerate((f, b) for f in FAMILIES for b in BALANCINGS)}
    results = sorted(first + second, key=lambda r: order[f"{r.model}+{r.balancing}"])
    results += [ranker] if ranker is not None else []
    table = comparison_table(results)
    selected = select_candidate(table, plan.min_orphan_recall)
    _, cut = resampling_plan(first, FAMILIES, BALANCINGS, plan.resample_top)
    client = mlflow.tracking.MlflowClient()
    for result in results:
        if result.mlflow_run_id:
            chosen = (result.model, result.balancing) == (selected["model"], selected["balancing"])
            client.set_tag(result.mlflow_run_id, "selected", str(chosen))
    mlflow.log_table(table.to_pandas(), "selection/comparison.json")
    mlflow.log_dict(plan.curve.to_metadata(), "selection/learning_curve.json")
    mlflow.log_params(
        {
            "selected_model": selected["model"],
            "selected_balancing": selected["balancing"],
            "selection_sample_rows": len(plan.y),
        }
    )
    fit_seconds = sum(sum(r.fit_seconds) for r in results)
    metadata = {
        "comparison": markdown_table(table, selected),
        "selected": f"{selected['model']} + {selected['balancing']}",
        "selected_macro_f1": selected["macro_f1_mean"],
        "selected_orphan_recall": selected["orphan_recall"]
        if selected["orphan_recall"] is not None
        else -1.0,
        "orphan_floor_met": selected["orphan_floor_met"],
        "candidate_fit_seconds": round(fit_seconds, 1),
        "not_run": cut,
        "sample_rows": len(plan.y),
        "training_rows": plan.rows,
        "learning_curve": plan.curve.markdown(),
        "learning_curve_points": plan.curve.to_metadata(),
    }
    state = {
        "fingerprint": plan.fingerprint,
        "selected": selected,
        "rows": plan.rows,
        "class_shares": plan.shares,
        "dagster_run_id": context.run_id,
        "metadata": metadata,
    }
    return dg.Output(
        selected,
        metadata={
            **selection_metadata(metadata),
            "reused": False,
            "run_reason": plan.why,
            SELECTION_STATE: dg.MetadataValue.json(state),
        },
    )


@dg.graph_asset(
    group_name="training",
    kinds={"scikitlearn", "mlflow"},
    description=(
        "Logistic regression, random forest, XGBoost and an MLP, each with no balancing, class "
        "weights, random over-sampling or SMOTE (inside the training folds only), compared by "
        "stratified cross-validation on a stratified sample of `training_features` (the "
        "unbalanced training split) sized by a learning curve (in the metadata), with the "
        "knowledge ranker's orphan top-1 in the same table. Each candidate is its own step, so "
        "the multiprocess or Celery executor runs them in parallel; the last step gathers their "
        "results and MLflow runs. Selection: highest macro-F1 among candidates reaching the "
        "orphan-recall floor. When neither the selection code nor its settings changed and the "
        "training split changed by less than the configured thresholds, the last selection is "
        "reused with its evidence and no candidate runs."
    ),
)
def model_selection(training_features, training_table, knowledge_ranker):
    plan = selection_plan(training_features, training_table)
    first = first_stage_candidates(plan).map(lambda c: cross_validate_step(plan, c)).collect()
    second = (
        second_stage_candidates(plan, first).map(lambda c: cross_validate_step(plan, c)).collect()
    )
    return choose_selection(plan, first, second, ranker_step(plan, knowledge_ranker))


class BalancingConfig(dg.Config):
    """Set ``balancing`` to override model_selection's choice (one of
    diagnosis.training.candidates.BALANCINGS)."""

    balancing: Optional[str] = None
    max_resampled_rows: int = MAX_RESAMPLED_ROWS  # synthetic rows added by resampling, at most


@dg.asset(
    group_name="training",
    kinds={"numpy", "imblearn"},
    description=(
        "The balancing `model_selection` chose, applied once to the whole training split: what "
        "the diagnosis head is fitted on. `none`: the recorded rows. `class_weight`: the recorded "
        "rows with balanced per-row weights. `random_over_sampling` / `smote`: the rows imputed "
        "with the training medians, then resampled until every class is as large as the largest. "
        "Class counts before and after are in the metadata. The evaluation split is never "
        "balanced, and the sampler is not part of the exported model."
    ),
)
def balanced_training_set(
    config: BalancingConfig,
    policy: ModelPolicy,
    training_features: TrainingSet,
    model_selection: dict,
) -> dg.Output[BalancedTrainingSet]:
    balancing = config.balancing or model_selection["balancing"]
    data = balance(training_features, balancing, policy.random_seed, config.max_resampled_rows)
    weights = data.class_weights()
    return dg.Output(
        data,
        metadata={
            "balancing": balancing,
            "chosen_by": "config" if config.balancing else "model_selection",
            "sampler": data.sampler or "none",
            "rows_before": int(training_features.X.shape[0]),
            "rows_after": int(data.X.shape[0]),
            "class_counts_before": dg.MetadataValue.json(data.counts_before()),
            "class_counts_after": dg.MetadataValue.json(data.counts_after()),
            "class_weights": dg.MetadataValue.json(weights) if weights else "none",
            "classes": len(data.classes),
        },
    )


class ClassifierConfig(dg.Config):
    """Hyperparameters of a training run (set in the launchpad, logged to MLflow).

    The diagnosis head's family comes from ``model_selection`` unless ``family`` overrides it;
    ``balancing``, when set and different from ``balanced_training_set``'s, re-balances the
    recorded training rows for this run only (an experiment: prefer the balanced_training_set
    config). The XGBoost settings apply to the severity head always and to the diagnosis head
    when its family is XGBoost."""

    n_estimators: int = XGB_PARAMS["n_estimators"]
    max_depth: int = XGB_PARAMS["max_depth"]
    learning_rate: float = XGB_PARAMS["learning_rate"]
    family: Optional[str] = None  # one of diagnosis.training.candidates.FAMILIES
    balancing: Optional[str] = None  # one of diagnosis.training.candidates.BALANCINGS

    def xgb_params(self) -> dict:
        return {
            **XGB_PARAMS,
            **self.model_dump(include={"n_estimators", "max_depth", "learning_rate"}),
        }


@dg.asset(
    group_name="training",
    kinds={"xgboost", "scikitlearn", "mlflow"},
    description=(
        "The diagnosis classifier of the family chosen by `model_selection`, fitted on "
        "`balanced_training_set` (its rows and weights; no sampler in the exported pipeline), and "
        "the XGBoost severity classifier (five categories) fitted on the recorded training rows, "
        "both with median imputation of missing vitals. Each training is an MLflow run."
    ),
)
def diagnosis_model(
    context: dg.AssetExecutionContext,
    config: ClassifierConfig,
    policy: ModelPolicy,
    mlflow: dg.ResourceParam[MlFlow],
    balanced_training_set: BalancedTrainingSet,
    model_selection: dict,
) -> dg.Output[TrainedModel]:
    params = config.xgb_params()
    family = config.family or model_selection["model"]
    data = balanced_training_set
    if config.balancing and config.balancing != data.balancing:
        context.log.warning(
            f"balancing overridden by config: {config.balancing} instead of {data.balancing}"
        )
        data = balance(data.recorded, config.balancing, policy.random_seed)
    # the two heads' matrices are allocated next: hand back first what earlier steps of an
    # in-process run freed (diagnosis.runtime.release_freed_memory)
    release_freed_memory(collect_cycles=True)
    model = train_models(data, policy.random_seed, params, family)
    mlflow.log_params(
        {
            **model.params,
            "selected_by": "config" if (config.family or config.balancing) else "model_selection",
            "classes": len(model.classes),
            "features": model.spec.n_features,
            "symptom_vocabulary": len(model.spec.symptoms),
            "training_rows": int(data.recorded.X.shape[0]),
            "balanced_rows": int(data.X.shape[0]),
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
            "balancing": data.balancing,
            "imputation_medians": dg.MetadataValue.json(model.imputation),
        },
    )
