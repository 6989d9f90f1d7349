"""The demo cohort simulator (diagnosis.simulation)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from diagnosis.common_conditions import COMMON_CONDITIONS, HEALTHY_CODE
from diagnosis.hpo import disease_phenotypes, load_annotations
from diagnosis.simulation import (
    DEFECT_TYPES,
    select_orphan_diseases,
    simulate_cohort,
    write_weekly_exports,
)
from schemas.clinical import (
    CLINICAL_RANGES,
    DIAGNOSIS_RE,
    FAHRENHEIT_RANGE,
    HPO_ID_RE,
    RAW_COLUMNS,
    normalise_severity,
    normalise_sex,
)

COMMON_CODES = {c.code for c in COMMON_CONDITIONS}
NUMERIC = ("age", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
VITAL_COLUMNS = ("heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")


@pytest.fixture(scope="module")
def clean_weeks() -> list[tuple[str, pl.DataFrame]]:
    return simulate_cohort(2000, 4, seed=11, defect_rate=0.0)


@pytest.fixture(scope="module")
def clean(clean_weeks) -> pl.DataFrame:
    return pl.concat([frame for _, frame in clean_weeks])


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _problems(row: dict) -> set[str]:
    """Classify what is wrong with one raw row, independently of how the simulator works."""
    found: set[str] = set()
    for col in NUMERIC:
        text = row[col]
        if text is not None and _float(text) is None:
            found.add("letters_in_number")
    for col in NUMERIC:
        value = _float(row[col])
        if value is None:
            continue
        if col == "body_temperature" and FAHRENHEIT_RANGE[0] <= value <= FAHRENHEIT_RANGE[1]:
            found.add("fahrenheit")
        elif not CLINICAL_RANGES[col].contains(value):
            found.add("impossible_vital")
    sbp, dbp = _float(row["systolic_bp"]), _float(row["diastolic_bp"])
    if sbp is not None and dbp is not None and dbp >= sbp:
        found.add("diastolic_ge_systolic")
    if row["symptoms"] and not all(HPO_ID_RE.match(t) for t in row["symptoms"].split(";")):
        found.add("malformed_hpo")
    if row["diagnosis"] is None:
        found.add("missing_diagnosis")
    if any(row[col] is None for col in VITAL_COLUMNS):
        found.add("missing_vitals")
    return found


def _duplicate_count(frame: pl.DataFrame) -> int:
    return frame.height - frame.unique().height


# ------------------------------------------------------------------------------ basics
def test_same_seed_same_cohort_other_seed_other_cohort():
    first = simulate_cohort(600, 3, seed=5, defect_rate=0.05)
    again = simulate_cohort(600, 3, seed=5, defect_rate=0.05)
    other = simulate_cohort(600, 3, seed=6, defect_rate=0.05)
    assert [m for m, _ in first] == [m for m, _ in again]
    assert all(a.equals(b) for (_, a), (_, b) in zip(first, again))
    assert not all(a.equals(b) for (_, a), (_, b) in zip(first, other))


def test_start_must_be_a_monday():
    with pytest.raises(ValueError, match="Monday"):
        simulate_cohort(10, 1, seed=1, start="2026-01-06")
    with pytest.raises(ValueError):
        simulate_cohort(10, 1, seed=1, start="not-a-date")


def test_weeks_partition_keys_columns_and_row_counts(clean_weeks):
    assert [m for m, _ in clean_weeks] == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    assert sum(frame.height for _, frame in clean_weeks) == 2000
    for monday, frame in clean_weeks:
        assert frame.columns == RAW_COLUMNS
        assert all(dtype == pl.Utf8 for dtype in frame.dtypes)
        assert frame.height == 500
        start = dt.datetime.fromisoformat(monday)
        stamps = [dt.datetime.fromisoformat(t) for t in frame["recorded_at"]]
        assert all(start <= s < start + dt.timedelta(days=7) for s in stamps)
        assert stamps == sorted(stamps)


def test_write_weekly_exports_writes_monday_named_comma_files(tmp_path: Path):
    paths = write_weekly_exports(
        tmp_path / "landing", patients=300, weeks=3, seed=3, defect_rate=0.05, start="2026-02-02"
    )
    assert [p.name for p in paths] == [
        "records_2026-02-02.txt",
        "records_2026-02-09.txt",
        "records_2026-02-16.txt",
    ]
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == [p.name for p in paths]
    for path in paths:
        monday = dt.date.fromisoformat(path.stem.removeprefix("records_"))
        assert monday.weekday() == 0
        header = path.read_text(encoding="utf-8").splitlines()[0]
        assert header == ",".join(RAW_COLUMNS)
    expected = simulate_cohort(300, 3, seed=3, defect_rate=0.05, start="2026-02-02")
    for path, (_, frame) in zip(paths, expected):
        back = pl.read_csv(path, separator=",", infer_schema=False)
        assert back.equals(frame)


# ------------------------------------------------------------------------------ cohort mix
def test_mix_of_healthy_common_and_orphan(clean: pl.DataFrame):
    diagnosis = clean["diagnosis"]
    healthy = (diagnosis == HEALTHY_CODE).mean()
    common = diagnosis.is_in(list(COMMON_CODES)).mean()
    orphan = diagnosis.str.starts_with("ORPHA:").mean()
    assert healthy + common + orphan == pytest.approx(1.0)
    assert 0.14 < healthy < 0.26
    assert 0.64 < common < 0.80
    assert 0.04 < orphan < 0.12
    assert all(DIAGNOSIS_RE.match(code) for code in diagnosis)
    # Healthy people are "not ill"; nearly all have no symptom, a few one minor complaint.
    well = clean.filter(pl.col("diagnosis") == HEALTHY_CODE)
    assert {normalise_severity(s) for s in well["severity"]} == {"not_ill"}
    n_terms = well["symptoms"].str.split(";").list.len().fill_null(0)
    assert n_terms.max() == 1 and 0 < (n_terms == 1).mean() < 0.25


def test_orphan_cases_come_from_annotations_with_uneven_counts(clean: pl.DataFrame):
    phenotypes = disease_phenotypes(load_annotations().filter(pl.col("database") == "ORPHA"))
    allowed = {
        disease: set(terms)
        for disease, terms in phenotypes.filter(~pl.col("excluded"))
        .group_by("disease_id")
        .agg(pl.col("hpo_id"))
        .iter_rows()
    }
    orphan = clean.filter(pl.col("diagnosis").str.starts_with("ORPHA:"))
    chosen = {d.disease_id for d in select_orphan_diseases(30, seed=11)}
    assert set(orphan["diagnosis"]) <= chosen
    for code, symptoms in orphan.select("diagnosis", "symptoms").iter_rows():
        terms = symptoms.split(";")
        assert terms, "an orphan case has at least one symptom"
        assert set(terms) <= allowed[code] | {t for c in COMMON_CONDITIONS for t in c.symptoms}
    counts = orphan["diagnosis"].value_counts()["count"]
    assert counts.min() <= 2 and counts.max() >= 10
    # Orphan patients are mostly chronic.
    chronic = orphan["severity"].map_elements(normalise_severity, return_dtype=pl.Utf8)
    assert (chronic == "chronic").mean() > 0.5


def test_orphan_selection_is_seeded_and_eligible():
    def ids(seed: int) -> list[str]:
        return [d.disease_id for d in select_orphan_diseases(12, seed=seed)]

    first = select_orphan_diseases(12, seed=4)
    assert [d.disease_id for d in first] == ids(4)
    assert ids(4) != ids(5)
    assert len({d.disease_id for d in first}) == 12
    for disease in first:
        assert disease.disease_id.startswith("ORPHA:")
        assert len(disease.terms) >= 5
        assert all(0 < f <= 1 for f in disease.frequencies)


def test_common_condition_symptoms_and_vitals_are_plausible(clean: pl.DataFrame):
    flu = clean.filter(pl.col("diagnosis") == "J10")
    with_fever = flu["symptoms"].str.contains("HP:0001945").mean()
    assert 0.7 < with_fever < 0.97
    temps = flu["body_temperature"].cast(pl.Float64)
    well = clean.filter(pl.col("diagnosis") == HEALTHY_CODE)["body_temperature"].cast(pl.Float64)
    assert temps.mean() > well.mean() + 0.8
    hypertensive = clean.filter(pl.col("diagnosis") == "I10")["systolic_bp"].cast(pl.Float64)
    assert hypertensive.mean() > 140
    # Monitor-like rounding: integers for HR/BP, one decimal for temperature.
    assert clean["heart_rate"].str.contains(r"^\d+$").all()
    assert clean["systolic_bp"].str.contains(r"^\d+$").all()
    assert clean["body_temperature"].str.contains(r"^\d{2}\.\d$").all()


def test_spanish_and_short_labels_are_present_and_valid(clean: pl.DataFrame):
    sexes = set(clean["sex"])
    severities = set(clean["severity"])
    assert sexes & {"F", "M", "femenino", "masculino", "mujer", "hombre"}
    assert severities & {"No enfermo", "leve", "aguda", "crónica", "terminal"}
    assert all(normalise_sex(s) is not None for s in sexes)
    assert all(normalise_severity(s) is not None for s in severities)
    canonical_sex = clean["sex"].map_elements(normalise_sex, return_dtype=pl.Utf8)
    assert set(canonical_sex) == {"female", "male", "other", "unknown"}
    assert (canonical_sex.is_in(["female", "male"])).mean() > 0.9


def test_some_patients_recur(clean: pl.DataFrame):
    assert clean["patient_id"].str.contains(r"^H\d{7}$").all()
    visits = clean["patient_id"].value_counts()["count"]
    assert (visits > 1).sum() > 50
    # A recurring patient keeps age and sex.
    repeat = clean.group_by("patient_id").agg(
        pl.col("age").n_unique().alias("ages"),
        pl.col("sex").map_elements(normalise_sex, return_dtype=pl.Utf8).n_unique().alias("sexes"),
    )
    assert repeat["ages"].max() == 1 and repeat["sexes"].max() == 1


# ------------------------------------------------------------------------------ defects
def test_no_defects_at_rate_zero(clean_weeks):
    for _, frame in clean_weeks:
        assert _duplicate_count(frame) == 0
        problems = [p for row in frame.iter_rows(named=True) if (p := _problems(row))]
        assert problems == []


def test_every_defect_type_appears_at_a_high_rate():
    weeks = simulate_cohort(1600, 2, seed=9, defect_rate=0.3)
    for _, frame in weeks:
        seen: set[str] = set()
        for row in frame.iter_rows(named=True):
            seen |= _problems(row)
        if _duplicate_count(frame):
            seen.add("duplicate")
        assert seen == set(DEFECT_TYPES)
        bad_rows = sum(1 for row in frame.iter_rows(named=True) if _problems(row))
        assert 0.15 * frame.height < bad_rows + _duplicate_count(frame) < 0.4 * frame.height


def test_defects_are_visible_in_each_week_at_the_default_rate():
    weeks = simulate_cohort(1000, 4, seed=2)  # default defect_rate 0.03, 250 rows a week
    for _, frame in weeks:
        kinds: set[str] = set()
        for row in frame.iter_rows(named=True):
            kinds |= _problems(row)
        if _duplicate_count(frame):
            kinds.add("duplicate")
        assert len(kinds) >= 4  # round(0.03 * 250) = 8 defective rows, cycling through types
