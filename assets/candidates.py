"""Model selection asset: see :mod:`diagnosis.training.candidates` for the comparison itself."""

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow

from diagnosis.ranker import KnowledgeRanker
from diagnosis.training.candidates import markdown_table, run_comparison, select_candidate
from diagnosis.training.dataset import SPLIT_TRAIN, TrainingSet
from orchestration.resources import ModelPolicy


# ------------------------------------------------------------------------------ asset
class SelectionConfig(dg.Config):
    """How much of the comparison to run (set in the launchpad)."""

    folds: int = 3
    resample_top: int = 1  # families (best first) that also get random over-sampling and SMOTE


@dg.asset(
    group_name="training",
    kinds={"scikitlearn", "mlflow"},
    description=(
        "Logistic regression, random forest, XGBoost and an MLP, each with no balancing, class "
        "weights, random over-sampling or SMOTE (inside the training folds only), compared by "
        "stratified cross-validation on the unbalanced training rows, with the knowledge ranker's "
        "orphan top-1 in the same table. Selection: highest macro-F1 among candidates reaching "
        "the orphan-recall floor. One nested MLflow run per candidate."
    ),
)
def model_selection(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    policy: ModelPolicy,
    mlflow: dg.ResourceParam[MlFlow],
    balanced_training_set: TrainingSet,
    training_table: pl.DataFrame,
    knowledge_ranker: KnowledgeRanker,
) -> dg.Output[dict]:
    data = balanced_training_set
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    symptom_lists = None
    if train.height == data.X.shape[0] and train["diagnosis"].to_list() == [
        data.classes[i] for i in data.y_diagnosis
    ]:
        symptom_lists = [terms or [] for terms in train["symptoms"].to_list()]
    else:
        context.log.warning("training rows do not line up with the training set: ranker skipped")
    comparison = run_comparison(
        data.X, data.y_diagnosis, data.classes, policy.random_seed,
        folds=config.folds, resample_top=config.resample_top,
        ranker=knowledge_ranker, symptom_lists=symptom_lists,
    )
    selected = select_candidate(comparison.table, policy.min_orphan_recall)
    for result in comparison.results:
        with mlflow.start_run(nested=True, run_name=f"{result.model}+{result.balancing}"):
            mlflow.log_params(result.params)
            mlflow.log_metrics({
                k: v for k, v in result.row().items()
                if isinstance(v, (int, float)) and k not in ("model", "balancing")
            } | {f"macro_f1_fold{i}": v for i, v in enumerate(result.macro_f1)})
            mlflow.set_tag("selected", str(
                (result.model, result.balancing) == (selected["model"], selected["balancing"])))
            if result.confusion is not None:
                mlflow.log_dict(result.confusion, "cv/confusion_matrix.json")
    mlflow.log_table(comparison.table.to_pandas(), "selection/comparison.json")
    mlflow.log_params({"selected_model": selected["model"],
                       "selected_balancing": selected["balancing"]})
    context.log.info(f"candidate comparison took {comparison.seconds:.1f}s; cut: {comparison.cut}")
    return dg.Output(
        selected,
        metadata={
            "comparison": dg.MetadataValue.md(markdown_table(comparison.table, selected)),
            "selected": f"{selected['model']} + {selected['balancing']}",
            "selected_macro_f1": selected["macro_f1_mean"],
            "selected_orphan_recall": selected["orphan_recall"] if selected["orphan_recall"]
            is not None else -1.0,
            "orphan_floor_met": selected["orphan_floor_met"],
            "comparison_seconds": round(comparison.seconds, 1),
            "not_run": dg.MetadataValue.json(comparison.cut),
        },
    )
