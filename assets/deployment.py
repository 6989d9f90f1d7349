"""Deployment stage: an immutable, versioned artifact plus manifest, and the atomic pointer switch."""

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import onnx
import polars as pl
from dagster_mlflow.resources import MlFlow

from assets.model import TrainedModel
from assets.onnx_export import OnnxArtifact
from orchestration.resources import TriageStorage, code_version
from orchestration.settings import current_environment
from schemas.clinical import SEVERITIES
from schemas.features import (
    ONNX_DIAGNOSIS_OUTPUT,
    ONNX_INPUT,
    ONNX_QUERY_INPUT,
    ONNX_RANKER_OUTPUT,
    ONNX_SEVERITY_OUTPUT,
)
from schemas.ranker import KnowledgeRanker
from serving.files import atomic_write

MANIFEST_FORMAT = 1
CURRENT_POINTER = "current.json"
CHAMPION_ALIAS = "champion"
KNOWLEDGE_FILE = "knowledge.json"


def write_deployment(
    deployments: Path, manifest: dict, content: bytes, extra_files: dict[str, bytes] | None = None
) -> Path:
    """Write ``<version>/model.onnx``, any extra files and ``manifest.json`` into a fresh
    directory, then switch ``current.json`` to it with one atomic rename. A version directory is
    never rewritten."""
    version = manifest["version"]
    target = deployments / version
    if target.exists():
        raise FileExistsError(f"deployment {version} already exists; versions are immutable")
    deployments.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=deployments, prefix=f".{version}."))
    (staging / manifest["onnx_file"]).write_bytes(content)
    for name, data in (extra_files or {}).items():
        (staging / name).write_bytes(data)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    os.rename(staging, target)
    pointer = {"version": version, "manifest": f"{version}/manifest.json"}
    atomic_write(deployments / CURRENT_POINTER, json.dumps(pointer, indent=2).encode())
    return target


def read_current(deployments: Path) -> dict | None:
    pointer = deployments / CURRENT_POINTER
    if not pointer.exists():
        return None
    return json.loads(pointer.read_text())


def knowledge_index(ranker: KnowledgeRanker) -> bytes:
    """The small index the API needs around the ranker's ONNX head: its HPO term vocabulary in
    input order, the diseases in output order (code, name), the alt_id/obsolete map of the
    release, and the best log-score of an empty query (the blend's reference)."""
    ontology = ranker.ontology
    return json.dumps(
        {
            "hpo_release": ranker.hpo_release,
            "terms": list(ranker.terms),
            "diseases": [
                {"code": code, "name": name}
                for code, name in zip(ranker.diseases, ranker.disease_names)
            ],
            "term_aliases": {**ontology.alt_ids, **ontology.replaced_by},
            "empty_best": float(ranker.log_prior.max()),
        },
        separators=(",", ":"),
    ).encode()


def _data_versions(context: dg.AssetExecutionContext, weeks: list[str]) -> dict:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_patient_records"), asset_partitions=weeks
        ),
        limit=max(len(weeks) * 4, 10),
    ).records
    files: dict[str, dict] = {}
    for record in records:
        event = record.asset_materialization
        if event is None or event.partition in files:
            continue
        files[event.partition] = {
            "file": event.metadata["source_file"].value,
            "sha256": event.metadata["file_sha256"].value,
        }
    return {"weekly_exports": dict(sorted(files.items()))}


def _hpo_files(context: dg.AssetExecutionContext) -> dict:
    """Which HPO release files the shipped knowledge ranker was built from (SHA-256, source)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("knowledge_ranker"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    keys = ("hpo_files_sha256", "hp_obo_sha256", "phenotype_hpoa_sha256", "hpo_source")
    return {key: metadata[key].value for key in keys if key in metadata}


@dg.asset(
    group_name="deployment",
    kinds={"onnx", "mlflow"},
    deps=[dg.AssetKey("disease_catalogue")],
    description=(
        "The model clinicians are served: an immutable directory deployments/<version>/ with "
        "model.onnx and manifest.json (provenance: MLflow run, Dagster run, code and data "
        "versions), registered in MLflow with the `champion` alias. Reached only after the quality "
        "gate and ONNX parity checks pass; current.json then switches atomically."
    ),
)
def deployed_model(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    mlflow: dg.ResourceParam[MlFlow],
    diagnosis_model: TrainedModel,
    model_evaluation: dict,
    onnx_model: OnnxArtifact,
    knowledge_ranker: KnowledgeRanker,
    training_table: pl.DataFrame,
) -> dg.MaterializeResult:
    trained_at = datetime.now(timezone.utc)
    version = f"{trained_at:%Y%m%dT%H%M%SZ}-{onnx_model.sha256[:8]}"
    names = dict(
        training_table.select("diagnosis", "diagnosis_name").unique().iter_rows()
    )
    categories = dict(
        training_table.select("diagnosis", "diagnosis_category").unique().iter_rows()
    )
    weeks = sorted(training_table["week"].unique().to_list())
    catalogue_event = context.instance.get_latest_materialization_event(
        dg.AssetKey("disease_catalogue")
    )
    hpo_release = (
        catalogue_event.asset_materialization.metadata["hpo_release"].value
        if catalogue_event and catalogue_event.asset_materialization
        else None
    )

    model_name = current_environment().model_name
    info = mlflow.onnx.log_model(
        onnx.load_from_string(onnx_model.content),
        name="model",
        registered_model_name=model_name,
        pip_requirements=["onnxruntime"],
    )
    registered_version = str(info.registered_model_version)
    mlflow.tracking.MlflowClient().set_registered_model_alias(
        model_name, CHAMPION_ALIAS, registered_version
    )
    index = knowledge_index(knowledge_ranker)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "trained_at": trained_at.isoformat(),
        "onnx_file": "model.onnx",
        "onnx_sha256": onnx_model.sha256,
        "onnx_input": ONNX_INPUT,
        "onnx_outputs": {
            "diagnosis": ONNX_DIAGNOSIS_OUTPUT,
            "severity": ONNX_SEVERITY_OUTPUT,
            "ranker": ONNX_RANKER_OUTPUT,
        },
        "onnx_query_input": ONNX_QUERY_INPUT,
        "knowledge_file": KNOWLEDGE_FILE,
        "knowledge_sha256": hashlib.sha256(index).hexdigest(),
        "blend": model_evaluation["blend"],
        "features": diagnosis_model.spec.to_manifest(),
        "classes": [
            {"code": code, "name": names.get(code, code), "category": categories[code]}
            for code in diagnosis_model.classes
        ],
        "severity_labels": list(SEVERITIES),
        "metrics": {**model_evaluation["metrics"], "onnx_max_abs_diff": onnx_model.max_abs_diff},
        "imputation": diagnosis_model.imputation,
        "mlflow_run_id": diagnosis_model.mlflow_run_id,
        "mlflow_model_name": model_name,
        "mlflow_model_version": registered_version,
        "dagster_run_id": context.run_id,
        "code_version": code_version(),
        "data_versions": {
            **_data_versions(context, weeks),
            "hpo_release": hpo_release,
            **_hpo_files(context),
        },
        "hpo_release": hpo_release,
    }
    target = write_deployment(
        storage.paths.deployments, manifest, onnx_model.content, {KNOWLEDGE_FILE: index}
    )
    remote = storage.remote
    if remote is not None:  # the version folder first, then the pointer the API follows
        remote.publish_deployment(storage.paths.deployments, version)
    mlflow.set_tags({"deployed_version": version})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "version": version,
            "path": str(target),
            "published_to": storage.describe("deployments"),
            "onnx_sha256": onnx_model.sha256,
            "mlflow_run_id": diagnosis_model.mlflow_run_id,
            "mlflow_model_version": registered_version,
            "code_version": manifest["code_version"],
            "classes": len(manifest["classes"]),
        },
    )
