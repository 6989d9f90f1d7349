"""Clinical rules shared by the pipeline and the API: the single source of truth.

Everything here is plain Python (no polars, no pandera) so the API can import it cheaply.
The Pandera schemas in :mod:`schemas.validation` are built *from* :data:`CLINICAL_RANGES`, and
the API validates request bodies against the same table, so a range is changed in one place.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "RAW_COLUMNS",
    "SEXES",
    "SEVERITIES",
    "VITALS",
    "SEX_ALIASES",
    "SEVERITY_ALIASES",
    "ClinicalRange",
    "CLINICAL_RANGES",
    "FAHRENHEIT_RANGE",
    "HPO_ID_PATTERN",
    "HPO_ID_RE",
    "DIAGNOSIS_PATTERN",
    "DIAGNOSIS_RE",
    "normalise_sex",
    "normalise_severity",
    "fahrenheit_to_celsius",
    "fahrenheit_to_celsius_if_needed",
    "range_violation",
]

# Columns of a raw weekly export, in file order.
RAW_COLUMNS: list[str] = [
    "patient_id",
    "recorded_at",
    "age",
    "sex",
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
    "symptoms",
    "diagnosis",
    "severity",
]

SEXES: tuple[str, ...] = ("female", "male", "other", "unknown")
SEVERITIES: tuple[str, ...] = ("not_ill", "mild", "acute", "chronic", "terminal")
# Numeric model inputs, in feature-vector order.
VITALS: tuple[str, ...] = ("age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")


def _fold(text: str) -> str:
    """Lower-case, strip, and remove accents ("Crónica " -> "cronica")."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Keys are folded (lower-case, stripped, accent-free); look values up with ``_fold(value)``.
SEX_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "female": "female",
        "f": "female",
        "femenino": "female",
        "mujer": "female",
        "male": "male",
        "m": "male",
        "masculino": "male",
        "hombre": "male",
        "other": "other",
        "otro": "other",
        "otra": "other",
        "unknown": "unknown",
        "u": "unknown",
        "desconocido": "unknown",
        "desconocida": "unknown",
    }
)

SEVERITY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "not_ill": "not_ill",
        "not ill": "not_ill",
        "not-ill": "not_ill",
        "no enfermo": "not_ill",
        "no enferma": "not_ill",
        "no_enfermo": "not_ill",
        "mild": "mild",
        "leve": "mild",
        "acute": "acute",
        "aguda": "acute",
        "agudo": "acute",
        "chronic": "chronic",
        "cronica": "chronic",
        "cronico": "chronic",
        "terminal": "terminal",
    }
)


@dataclass(frozen=True, slots=True)
class ClinicalRange:
    """Plausible (not normal) range of one numeric field; values outside are data errors."""

    field: str
    unit: str
    low: float
    high: float
    description: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def bounds_text(self) -> str:
        """``"20–250 /min"`` — used in quarantine reasons and API error messages."""
        return f"{_num(self.low)}–{_num(self.high)} {self.unit}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


CLINICAL_RANGES: Mapping[str, ClinicalRange] = MappingProxyType(
    {
        r.field: r
        for r in (
            ClinicalRange("age", "years", 0, 120, "Age at the encounter, in years."),
            ClinicalRange("heart_rate", "/min", 20, 250, "Heart rate, beats per minute."),
            ClinicalRange(
                "body_temperature",
                "°C",
                25,
                45,
                "Body temperature in degrees Celsius (77–113 are read as °F and converted).",
            ),
            ClinicalRange("systolic_bp", "mmHg", 50, 260, "Systolic blood pressure."),
            ClinicalRange(
                "diastolic_bp",
                "mmHg",
                20,
                160,
                "Diastolic blood pressure; must also be below the systolic pressure.",
            ),
        )
    }
)

# Raw body temperatures in this closed interval are taken as °F and converted to °C.
FAHRENHEIT_RANGE: tuple[float, float] = (77.0, 113.0)

HPO_ID_PATTERN = r"^HP:\d{7}$"
HPO_ID_RE = re.compile(HPO_ID_PATTERN)

# NONE (healthy) | ICD-10 like J10, J18.9, N39.0, K35.8, S72.00XA | ORPHA:n | OMIM:n
DIAGNOSIS_PATTERN = r"^(?:NONE|[A-Z]\d{2}(?:\.[0-9A-Z]{1,4})?|ORPHA:\d+|OMIM:\d+)$"
DIAGNOSIS_RE = re.compile(DIAGNOSIS_PATTERN)


def normalise_sex(value: str | None) -> str | None:
    """Canonical sex label, ``"unknown"`` for an empty value, ``None`` if unrecognised."""
    if value is None or not value.strip():
        return "unknown"
    return SEX_ALIASES.get(_fold(value))


def normalise_severity(value: str | None) -> str | None:
    """Canonical English severity label, or ``None`` when missing or unrecognised."""
    if value is None:
        return None
    return SEVERITY_ALIASES.get(_fold(value))


def fahrenheit_to_celsius(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


def fahrenheit_to_celsius_if_needed(value: float | None) -> float | None:
    """Convert a temperature read in °F (77–113) to °C; other values are returned unchanged."""
    if value is None:
        return None
    low, high = FAHRENHEIT_RANGE
    if low <= value <= high:
        return fahrenheit_to_celsius(value)
    return value


def range_violation(field: str, value: float | None) -> str | None:
    """Message like ``"heart_rate: 400 outside 20–250 /min"``, or ``None`` if fine/missing."""
    if value is None:
        return None
    rng = CLINICAL_RANGES[field]
    if rng.contains(value):
        return None
    return f"{field}: {_num(value)} outside {rng.bounds_text}"
