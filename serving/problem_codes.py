"""Stable, language-neutral codes of request problems (API v1.4): the web form translates a
problem by its ``code`` (the English ``message`` stays for API clients and logs).

The validators word their messages in one place each (:mod:`serving.structs`,
:mod:`serving.labels`, :mod:`serving.explain_params`, :mod:`serving.phenopacket`); the code is read
from those wordings here, so adding a code never touches a validator.
``tests/serving/test_problem_codes.py`` sends bad requests of every kind and checks that each
problem gets its specific code (never the fallback ``invalid``).
"""

from __future__ import annotations

import re

INVALID = "invalid"  # a problem none of the patterns below names

_CODES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), code)
    for pattern, code in (
        (r"is outside the allowed range .*looks like °F", "out_of_range_fahrenheit"),
        (r"is outside the allowed range", "out_of_range"),
        (r"^batch size \d+ is outside", "batch_size"),
        (r"is outside -?\d", "out_of_range"),
        (r"must be below systolic_bp", "diastolic_not_below_systolic"),
        (r"is also in symptoms", "present_and_absent"),
        (r"^expected a JSON object", "not_an_object"),
        (r"^must be true or false$", "not_boolean"),
        (r"^must be an integer$", "not_an_integer"),
        (r"^must be .*, got ", "wrong_type"),
        (r"^at most \d+ ", "too_many"),
        (r"^unknown field$", "unknown_field"),
        (r"^unknown sex$", "unknown_sex"),
        (r"^unknown severity$", "unknown_severity"),
        (r"^not an HPO id$", "not_hpo_id"),
        (r"^not a prediction id$", "not_prediction_id"),
        (r"^not a diagnosis code$", "not_diagnosis_code"),
        (r"(^| )required$", "required"),
    )
)


def problem_code(message: str) -> str:
    """The code of a problem with this message (``invalid`` when none applies)."""
    for pattern, code in _CODES:
        if pattern.search(message):
            return code
    return INVALID
