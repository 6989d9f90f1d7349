"""Evaluation assets: the served system scored through the runtime on the exported artifact, and
the quality gate that blocks deployment (logic: :mod:`diagnosis.training.evaluation`)."""

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow

from diagnosis import audit
from diagnosis.hpo import Ontology
from diagnosis.reference import (
    REFERENCE_SOURCE,
    ReferenceCase,
    canonicalise,
    evaluate_runtime,
    load_reference_cases,
    reliability_figure,
    reliability_markdown,
)
from diagnosis.runtime import ModelLoadError, Runtime, load_deployment, release_freed_memory
from diagnosis.training.evaluation import (
    MAX_CALIBRATION_ROWS,
    Evaluation,
    confusion_figure,
    evaluate,
    recall_figure,
    table_markdown,
)
from diagnosis.training.export import Artifact
from diagnosis.training.fitting import knowledge_cases
from orchestration.resources import ModelPolicy, TriageStorage

QUALITY_GATE_CHECK = "quality_gate"


@dg.asset(
    group_name="evaluation",
    kinds={"json", "hpo"},
    description="Real published rare-disease cases (GA4GH phenopacket-store, BSD 3-Clause; "
    "diagnosis/data/README.md): 3,675 case reports of 276 OMIM diseases, the development set the "
    "knowledge ranker's generic weights were fitted on (grouped by disease), read against the "
    "HPO release in use (old ids mapped, unknown ids dropped). The gate scores every challenger "
    "and the champion on them; cited and uncited cases are reported apart.",
)
def reference_cases(hpo_ontology: Ontology) -> dg.Output[list[ReferenceCase]]:
    read = canonicalise(load_reference_cases(), hpo_ontology.canonical)
    cases = read.cases
    cited = sum(case.cited for case in cases)
    return dg.Output(
        cases,
        metadata={
            "dagster/row_count": len(cases),
            "source": REFERENCE_SOURCE,
            "diseases": len({case.truth for case in cases}),
            "cited_share": round(cited / max(len(cases), 1), 3),
            "uncited_share": round(1 - cited / max(len(cases), 1), 3),
            "cases_with_excluded_findings": sum(bool(case.absent) for case in cases),
            "terms_mapped_to_current_id": read.terms_mapped,
            "terms_unknown_dropped": read.terms_dropped,
            "cases_dropped": read.cases_dropped,
            "hpo_release": hpo_ontology.release,
        },
    )


@dg.asset(
    group_name="training",
    kinds={"onnx", "mlflow"},
    description="The served system (classifier + knowledge ranker + blend), scored through the "
    "runtime the API uses, on the exported ONNX artifact: held-out records and rare cases "
    "simulated from the annotations; accuracy, macro-F1, orphan recall and top-10, rare-disease "
    "top-1/top-10 for diseases with no training record, severity. The blend is fitted on the "
    "other half (at most ModelPolicy.blend_max_records records of it); rows are scored in "
    "batches. The serving champion is scored by the same code on the same rows. Metrics and "
    "the confusion matrix go to MLflow. The same runtime scores the real published cases of "
    "reference_cases (top-1/3/10, MRR, calibration; a reliability diagram in MLflow).",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    mlflow: dg.ResourceParam[MlFlow],
    storage: TriageStorage,
    policy: ModelPolicy,
    onnx_model: Artifact,
    training_table: pl.DataFrame,
    reference_cases: list[ReferenceCase],
) -> dg.Output[Evaluation]:
    # the calibration records' log-scores are allocated next: hand back first what earlier
    # steps of an in-process run freed (diagnosis.runtime.release_freed_memory)
    release_freed_memory(collect_cycles=True)
    cases = knowledge_cases(policy.knowledge_cases, policy.random_seed + 1)
    champion = None
    storage.pull_deployment()
    if (storage.paths.deployments / "current.json").exists():
        try:
            champion = load_deployment(storage.paths.deployments)
        except ModelLoadError as exc:
            context.log.warning(f"the current champion cannot be loaded for comparison: {exc}")
    result = score_challenger(
        onnx_model.runtime(),
        training_table,
        cases,
        reference_cases,
        policy.random_seed,
        champion,
        max_calibration_rows=policy.blend_max_records,
    )
    real = result.real
    mlflow.log_params({f"blend_{k}": v for k, v in result.blend.to_dict().items()})
    mlflow.log_metrics(result.metrics)
    mlflow.log_figure(
        reliability_figure(real, "Real cases: top candidate"), "evaluation/reliability_real.png"
    )
    mlflow.log_dict({"bins": real.reliability}, "evaluation/reliability_real.json")
    mlflow.log_dict(
        {"classes": result.classes, "matrix": result.confusion_matrix},
        "evaluation/confusion_matrix.json",
    )
    links = publish_breakdown(mlflow, result)
    return dg.Output(
        result,
        metadata={
            **{
                k: dg.MetadataValue.float(v) if isinstance(v, float) else v
                for k, v in result.metrics.items()
            },
            "real_cases": dg.MetadataValue.md(real_cases_markdown(result.metrics)),
            "reliability_real": dg.MetadataValue.md(reliability_markdown(real)),
            **breakdown_metadata(result),
            **links,
        },
    )


def score_challenger(
    runtime: Runtime,
    table: pl.DataFrame,
    cases: pl.DataFrame,
    reference: list[ReferenceCase],
    seed: int,
    champion: Runtime | None = None,
    max_calibration_rows: int = MAX_CALIBRATION_ROWS,
) -> Evaluation:
    """What ``model_evaluation`` computes: :func:`evaluate` (blend fitted, held-out records,
    simulated rare cases, the same rare cases as a triage desk sees them) and the real published
    cases through the served runtime, challenger and champion alike."""
    result = evaluate(runtime, table, cases, seed, champion, max_calibration_rows)
    real = evaluate_runtime(result.served, reference)
    result.metrics.update(real.metrics("real"))
    result.real = real
    if champion is not None:
        result.metrics.update(evaluate_runtime(champion, reference).metrics("champion_real"))
    return result


RECALL_COLUMNS = ["code", "category", "rows", "recall_top1", "recall_top3", "predicted_first"]
GROUP_COLUMNS = ["group", "value", "rows", "recall_top1", "recall_top3"]


def publish_breakdown(mlflow, result: Evaluation) -> dict:
    """The held-out breakdown in MLflow: the reliability diagram, per-class recall and the
    confusion matrix as figures, and the per-class, per-group and reliability rows as tables.
    Returns the Dagster metadata links to the run and its evaluation artifacts."""
    import pandas as pd

    from diagnosis.reference import RealEvaluation, reliability_figure

    view = result.breakdown
    records = RealEvaluation(
        summary={"all": {"ece": view["ece"] or 0.0}}, reliability=view["reliability"]
    )
    mlflow.log_figure(
        reliability_figure(records, "Held-out records: first entry"),
        "evaluation/reliability_records.png",
    )
    mlflow.log_figure(recall_figure(view["per_class"]), "evaluation/per_class_recall.png")
    mlflow.log_figure(
        confusion_figure(result.classes, result.confusion_matrix), "evaluation/confusion_matrix.png"
    )
    mlflow.log_table(
        pd.DataFrame(view["per_class"], columns=RECALL_COLUMNS), "evaluation/per_class_recall.json"
    )
    mlflow.log_table(
        pd.DataFrame(view["groups"], columns=GROUP_COLUMNS), "evaluation/recall_by_group.json"
    )
    mlflow.log_table(pd.DataFrame(view["reliability"]), "evaluation/reliability_records.json")
    mlflow.log_table(
        pd.DataFrame(
            [
                {"true": t, "first_entry": p, "rows": n}
                for t, row in zip(result.classes, result.confusion_matrix)
                for p, n in zip(result.classes, row)
                if n
            ]
        ),
        "evaluation/confusion_matrix_table.json",
    )
    if view["ece"] is not None:
        mlflow.log_metric("records_ece", view["ece"])
    run = mlflow.active_run()
    mlflow_ui, _ = audit.ui_bases()
    experiment_id, run_id = run.info.experiment_id, run.info.run_id
    return {
        "mlflow_run": dg.MetadataValue.url(audit.mlflow_run_url(mlflow_ui, run_id, experiment_id)),
        "mlflow_evaluation_figures": dg.MetadataValue.url(
            audit.mlflow_artifact_url(mlflow_ui, experiment_id, run_id, "evaluation")
        ),
    }


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    kinds = {
        "rows": "int",
        "predicted_first": "int",
        "recall_top1": "float",
        "recall_top3": "float",
    }
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: row[c] for c in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, kinds.get(c, "string")) for c in columns]),
    )


def confusion_markdown(classes: list[str], matrix: list[list[int]]) -> str:
    header = "| true \\ first entry | " + " | ".join(classes) + " |"
    lines = [header, "|" + "---|" * (len(classes) + 1)]
    for code, row in zip(classes, matrix):
        lines.append(f"| **{code}** | " + " | ".join(str(n) if n else "·" for n in row) + " |")
    return "\n".join(lines)


def breakdown_metadata(result: Evaluation) -> dict:
    view = result.breakdown
    if not view.get("per_class"):
        return {}
    bins = [b for b in view["reliability"] if b["cases"]]
    reliability_rows = [
        {
            "probability": f"{b['low']:.1f}-{b['high']:.1f}",
            "cases": b["cases"],
            "mean probability": f"{b['confidence']:.3f}",
            "right": f"{b['accuracy']:.3f}",
        }
        for b in bins
    ]
    return {
        "per_class_recall": _table(view["per_class"], RECALL_COLUMNS),
        "recall_by_group": _table(view["groups"], GROUP_COLUMNS),
        "records_ece": dg.MetadataValue.float(float(view["ece"])),
        "reliability_records": dg.MetadataValue.md(
            table_markdown(reliability_rows, ["probability", "cases", "mean probability", "right"])
        ),
        "confusion_matrix": dg.MetadataValue.md(
            confusion_markdown(result.classes, result.confusion_matrix)
        ),
    }


def real_cases_markdown(metrics: dict) -> str:
    """Challenger (and champion) on real cases, all / cited / uncited, side by side."""
    lines = [
        "| model | cases | top-1 | top-3 | top-10 | MRR | ECE | mean orphan probability |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for who, prefix in (("challenger", "real"), ("champion", "champion_real")):
        for group in ("all", "cited", "uncited"):
            key = f"{prefix}_{group}"
            if f"{key}_top1" not in metrics:
                continue
            lines.append(
                f"| {who} {group} | {metrics[f'{key}_cases']} | {metrics[f'{key}_top1']:.3f} | "
                f"{metrics[f'{key}_top3']:.3f} | {metrics[f'{key}_top10']:.3f} | "
                f"{metrics[f'{key}_mrr']:.3f} | {metrics[f'{key}_ece']:.3f} | "
                f"{metrics.get(f'{key}_mean_orphan_probability', float('nan')):.3f} |"
            )
    return "\n".join(lines)


REAL_GROUPS = ("all", "cited", "uncited")
# the measured figures the gate's result shows beside its floors (-1 when not measured)
GATE_SHOWN = (
    "champion_macro_f1",
    "real_all_top10",
    "champion_real_all_top10",
    *(f"real_{group}_mean_orphan_probability" for group in REAL_GROUPS),
    "rare_desk_mean_orphan_probability",
    "real_all_ece",
    "champion_real_all_ece",
)


def gate_failures(
    policy: ModelPolicy, metrics: dict, champion_version: str | None = None
) -> list[str]:
    """Why the gate refuses a challenger with these ``model_evaluation`` metrics (empty: it
    passes). Absolute floors on simulated and real patients, then comparisons with the champion
    when there is one; without a champion the real-case calibration error has a ceiling."""
    failures = []
    if metrics["macro_f1"] < policy.min_macro_f1:
        failures.append(f"macro_f1 {metrics['macro_f1']:.3f} < {policy.min_macro_f1}")
    if metrics["orphan_rows"] and metrics["orphan_recall"] < policy.min_orphan_recall:
        failures.append(
            f"orphan_recall {metrics['orphan_recall']:.3f} < {policy.min_orphan_recall}"
        )
    if metrics.get("rare_cases") and metrics["rare_top10"] < policy.min_rare_top10:
        failures.append(f"rare_top10 {metrics['rare_top10']:.3f} < {policy.min_rare_top10}")
    # what a clinician reads for a rare patient: "is it rare?"
    for group in REAL_GROUPS:
        orphan = metrics.get(f"real_{group}_mean_orphan_probability")
        if orphan is not None and orphan < policy.min_real_orphan_probability:
            failures.append(
                f"real-case ({group}) mean orphan probability {orphan:.3f} < "
                f"{policy.min_real_orphan_probability}"
            )
    desk = metrics.get("rare_desk_mean_orphan_probability")
    if desk is not None and desk < policy.min_desk_orphan_probability:
        failures.append(
            f"rare patients with {metrics['rare_desk_findings']} findings and no vitals: mean "
            f"orphan probability {desk:.3f} < {policy.min_desk_orphan_probability}"
        )
    champion_f1 = metrics.get("champion_macro_f1")
    if champion_f1 is not None and metrics["macro_f1"] < champion_f1 - policy.champion_tolerance:
        failures.append(
            f"macro_f1 {metrics['macro_f1']:.3f} is below the champion "
            f"{champion_version} ({champion_f1:.3f}) by more than {policy.champion_tolerance}"
        )
    real_top10 = metrics.get("real_all_top10")
    champion_real_top10 = metrics.get("champion_real_all_top10")
    if (
        real_top10 is not None
        and champion_real_top10 is not None
        and real_top10 < champion_real_top10 - policy.real_top10_tolerance
    ):
        failures.append(
            f"real-case top-10 {real_top10:.3f} is below the champion's "
            f"({champion_real_top10:.3f}) by more than {policy.real_top10_tolerance}"
        )
    real_ece = metrics.get("real_all_ece")
    champion_real_ece = metrics.get("champion_real_all_ece")
    if real_ece is not None and champion_real_ece is not None:
        if real_ece > champion_real_ece + policy.real_ece_tolerance:
            failures.append(
                f"real-case calibration error {real_ece:.3f} is above the champion's "
                f"({champion_real_ece:.3f}) by more than {policy.real_ece_tolerance}"
            )
    elif real_ece is not None and real_ece > policy.max_real_ece:
        failures.append(
            f"real-case calibration error {real_ece:.3f} > {policy.max_real_ece} "
            "(no champion to compare with)"
        )
    return failures


@dg.asset_check(
    asset=model_evaluation,
    name=QUALITY_GATE_CHECK,
    blocking=True,
    description="Blocks deployment unless macro-F1, orphan recall and rare-disease top-10 reach "
    "the configured floors; the mean orphan probability served for the real published cases "
    "(all, cited, uncited) and for simulated rare patients seen at a triage desk (three findings, "
    "no vitals) reaches its floor; macro-F1, real-case top-10 and calibration error are not worse "
    "than the serving champion's beyond the configured tolerances, and without a champion the "
    "real-case calibration error stays under its ceiling.",
)
def quality_gate(policy: ModelPolicy, model_evaluation: Evaluation) -> dg.AssetCheckResult:
    metrics = model_evaluation.metrics
    failures = gate_failures(policy, metrics, model_evaluation.champion_version)

    def shown(name: str) -> float:  # -1: not measured (no champion, no real cases)
        value = metrics.get(name)
        return float(value) if value is not None else -1.0

    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures) or "all floors met",
        metadata={
            "macro_f1": metrics["macro_f1"],
            "orphan_recall": metrics["orphan_recall"],
            "rare_top10": metrics.get("rare_top10"),
            "champion_version": model_evaluation.champion_version or "none",
            **{name: shown(name) for name in GATE_SHOWN},
            "min_macro_f1": policy.min_macro_f1,
            "min_orphan_recall": policy.min_orphan_recall,
            "min_real_orphan_probability": policy.min_real_orphan_probability,
            "min_desk_orphan_probability": policy.min_desk_orphan_probability,
            "max_real_ece": policy.max_real_ece,
        },
    )
