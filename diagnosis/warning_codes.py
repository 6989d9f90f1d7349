"""The warnings an answer can carry, each with a stable, language-neutral code (API v1.5).

One place words every warning the runtime emits: :class:`~schemas.contracts.WarningDetail` carries
its ``code``, the English ``message`` (the string the answer's ``warnings`` list has kept since v1)
and the ``params`` the message names. The web form words a warning by its code and params in the
clinician's language (``serving/static/app.js``, keys ``warn_<code>``); a code it does not know
shows the English message. ``tests/serving/test_warning_codes.py`` makes the API emit every code
and checks that each has an English and a Spanish wording in the form.

Codes never change meaning once published; a new kind of warning gets a new code.
"""

from __future__ import annotations

from schemas.contracts import WarningDetail

# a symptom a classifier-only model has no feature for (params: term)
SYMPTOM_NOT_USED = "symptom_not_used"
# an HPO id the deployed release does not have, ignored (params: what, term, release)
SYMPTOM_NOT_IN_RELEASE = "symptom_not_in_release"
# an obsolete id or alt_id of the release, read as its current term (params: what, term, current)
SYMPTOM_OLD_ID = "symptom_old_id"
# neither vital signs nor symptoms: the answer is the base rates (no params)
BASE_RATES_ONLY = "base_rates_only"
# fewer than two findings and no vital sign measured: a broad differential (no params)
FEW_FINDINGS = "few_findings"

CODES = (SYMPTOM_NOT_USED, SYMPTOM_NOT_IN_RELEASE, SYMPTOM_OLD_ID, BASE_RATES_ONLY, FEW_FINDINGS)

# ``what`` of the symptom warnings: which request list the id came from
SYMPTOM, ABSENT_SYMPTOM = "symptom", "absent_symptom"
_WHAT = {SYMPTOM: "symptom", ABSENT_SYMPTOM: "absent symptom"}


def symptom_not_used(term: str) -> WarningDetail:
    return WarningDetail(
        code=SYMPTOM_NOT_USED,
        message=f"symptom {term} is not used by this model",
        params={"term": term},
    )


def symptom_not_in_release(what: str, term: str, release: str) -> WarningDetail:
    return WarningDetail(
        code=SYMPTOM_NOT_IN_RELEASE,
        message=f"{_WHAT[what]} {term} is not in HPO release {release}; it was ignored",
        params={"what": what, "term": term, "release": release},
    )


def symptom_old_id(what: str, term: str, current: str) -> WarningDetail:
    return WarningDetail(
        code=SYMPTOM_OLD_ID,
        message=f"{_WHAT[what]} {term} is an old id of {current}; read as {current}",
        params={"what": what, "term": term, "current": current},
    )


def base_rates_only() -> WarningDetail:
    return WarningDetail(
        code=BASE_RATES_ONLY,
        message="no vital signs or symptoms given: the answer reflects base rates only",
    )


def few_findings() -> WarningDetail:
    return WarningDetail(
        code=FEW_FINDINGS,
        message="few findings and no vital signs measured: the differential is broad and its "
        "probabilities uncertain; add vital signs or further findings",
    )
