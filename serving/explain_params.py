"""The ``explain`` query parameter and the symptom names explanations are labelled with (API side
of :mod:`diagnosis.explain`)."""

from __future__ import annotations

from typing import Any

from diagnosis.explain import SymptomNamer
from serving.structs import Problem

_TRUE = {"true", "1"}  # what Litestar's bool query parameters accept too
_FALSE = {"false", "0"}


def symptom_namer(knowledge: Any) -> SymptomNamer | None:
    """HPO term names, English and Spanish, from the API's symptom search index
    (:class:`serving.search.Knowledge`), or ``None`` when the index is unavailable (the
    explanation then labels symptoms by their id). An old ``alt_id`` gets its current term's
    names; a term without an official Spanish label keeps its English name in Spanish."""
    if knowledge is None:
        return None
    index = knowledge.symptoms

    def names(term: str) -> tuple[str, str] | None:
        found = index.term(term)
        return None if found is None else (found.name, found.name_es or found.name)

    return names


def parse_explain(raw: str | None, default: bool) -> tuple[bool, list[Problem]]:
    """The ``explain`` query parameter: ``true``/``false`` (any case) or ``1``/``0``; absent ->
    ``default``. Anything else is a problem of the request (422 with the others)."""
    if raw is None:
        return default, []
    text = raw.lower()
    if text in _TRUE:
        return True, []
    if text in _FALSE:
        return False, []
    shown = raw if len(raw) <= 80 else raw[:80] + "…"
    return default, [
        Problem(
            field="explain",
            value=shown,
            message="must be true or false",
            allowed="true | false | 1 | 0",
        )
    ]
