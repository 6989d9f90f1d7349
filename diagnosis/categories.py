"""Diagnosis codes and their categories, as the API reports them."""

from __future__ import annotations

HEALTHY_CODE = "NONE"
CATEGORY_HEALTHY = "healthy"
CATEGORY_COMMON = "common"
CATEGORY_ORPHAN = "orphan"
CATEGORIES = (CATEGORY_COMMON, CATEGORY_ORPHAN, CATEGORY_HEALTHY)
RARE_PREFIXES = ("ORPHA:", "OMIM:", "DECIPHER:")


def category_of(code: str) -> str:
    """NONE is healthy, ORPHA/OMIM/DECIPHER codes are orphan diseases, ICD-10 codes are common."""
    if code == HEALTHY_CODE:
        return CATEGORY_HEALTHY
    if code.startswith(RARE_PREFIXES):
        return CATEGORY_ORPHAN
    return CATEGORY_COMMON
