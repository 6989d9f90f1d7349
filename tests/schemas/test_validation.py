"""Data-quality layer: reading messy exports, clinical checks, quarantine reasons, pseudonyms."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from pathlib import Path

import polars as pl
import pytest

from schemas.clinical import (
    CLINICAL_RANGES,
    DIAGNOSIS_RE,
    HPO_ID_RE,
    RAW_COLUMNS,
    fahrenheit_to_celsius_if_needed,
    normalise_severity,
    normalise_sex,
    range_violation,
)
from schemas.pseudonym import pseudonymise, pseudonymise_series
from schemas.validation import (
    QUARANTINE_COLUMNS,
    VALID_COLUMNS,
    VALID_RECORDS_SCHEMA,
    RawFileError,
    read_raw_export,
    validate_file_to_dir,
    validate_records,
)

KEY = b"test-pseudonym-key"
HEADER = ",".join(RAW_COLUMNS)


def _write(tmp_path: Path, name: str, lines: list[str], *, encoding="utf-8", newline="\n") -> Path:
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode(encoding))
    return path


# ---------------------------------------------------------------- clinical helpers


def test_sex_and_severity_aliases_cover_spanish_any_case_and_accents():
    assert [
        normalise_sex(v) for v in (" Mujer ", "HOMBRE", "f", "M", "otro", "Desconocido", "")
    ] == [
        "female",
        "male",
        "female",
        "male",
        "other",
        "unknown",
        "unknown",
    ]
    assert normalise_sex("x") is None
    assert [
        normalise_severity(v)
        for v in (
            "No enfermo",
            "LEVE",
            "aguda",
            "Crónica",
            "cronica",
            "Terminal",
            "acute",
            "not_ill",
        )
    ] == ["not_ill", "mild", "acute", "chronic", "chronic", "terminal", "acute", "not_ill"]
    assert normalise_severity("grave") is None and normalise_severity(None) is None


def test_ranges_table_patterns_and_fahrenheit():
    assert {k: (r.low, r.high) for k, r in CLINICAL_RANGES.items()} == {
        "age": (0, 120),
        "heart_rate": (20, 250),
        "body_temperature": (25, 45),
        "systolic_bp": (50, 260),
        "diastolic_bp": (20, 160),
    }
    assert range_violation("heart_rate", 400.0) == "heart_rate: 400 outside 20–250 /min"
    assert range_violation("heart_rate", 80.0) is None
    assert fahrenheit_to_celsius_if_needed(98.6) == pytest.approx(37.0)
    assert fahrenheit_to_celsius_if_needed(37.5) == 37.5
    assert fahrenheit_to_celsius_if_needed(None) is None
    for code in (
        "NONE",
        "J10",
        "J18.9",
        "N39.0",
        "A09",
        "E11",
        "I10",
        "K35.8",
        "ORPHA:558",
        "OMIM:154700",
    ):
        assert DIAGNOSIS_RE.match(code), code
    for code in ("J1", "10", "ORPHA:", "flu", "J18.", ""):
        assert not DIAGNOSIS_RE.match(code), code
    assert HPO_ID_RE.match("HP:0001945") and not HPO_ID_RE.match("HP:12")


# ---------------------------------------------------------------- pseudonyms


def test_pseudonym_is_hmac_sha256_and_vectorised_variant_agrees():
    expected = hmac.digest(KEY, b"P001", "sha256").hex()
    assert pseudonymise(" P001 ", KEY) == expected and len(expected) == 64
    series = pl.Series(["P001", "P002", "P001", None, "  "])
    keys = pseudonymise_series(series, KEY).to_list()
    assert keys[0] == keys[2] == expected
    assert keys[1] == hmac.digest(KEY, b"P002", "sha256").hex()
    assert keys[3] is None and keys[4] is None
    # Mostly distinct ids take the per-row path; long keys are hashed first (RFC 2104).
    long_key = b"k" * 100
    ids = pl.Series([f"id{i}" for i in range(50)])
    assert pseudonymise_series(ids, long_key).to_list() == [
        hmac.digest(long_key, f"id{i}".encode(), "sha256").hex() for i in range(50)
    ]
    assert pseudonymise("P001", b"other") != expected
    with pytest.raises(ValueError):
        pseudonymise("P001", b"")


# ---------------------------------------------------------------- the messy week

MESSY_ROWS = [
    # 1 valid: F, °F temperature, lower-case / duplicate HPO ids, lower-case ICD, Spanish severity
    "P001,2026-01-05T09:13:00,34,F,80,98.6,120,80,hp:0001945; HP:0002315;HP:0001945,j18.9,leve",
    # 2 letters in a number
    "P002,2026-01-05T10:00:00,8O,mujer,72,37.1,118,76,HP:0001945,J10,aguda",
    # 3 impossible vitals
    "P003,2026-01-06,45,male,400,20,120,80,HP:0002315,I10,Crónica",
    # 4 diastolic not below systolic
    "P004,2026-01-06T11:30,50,hombre,90,36.8,110,115,,I10,chronic",
    # 5 malformed HPO ids and missing diagnosis
    "P005,2026-01-06T12:00:00,61,female,75,36.9,130,85,HP:12;HP:0001945;HPO:0000001,,mild",
    # 6 same record as row 1 written differently -> duplicate
    "P001,2026-01-05 09:13:00,34,female,80,37,120,80,HP:0002315;HP:0001945,J18.9,Mild",
    # 7 ragged row (one field too many)
    "P007,2026-01-07T08:00:00,40,male,70,36.6,120,80,HP:0001945,J10,mild,EXTRA",
    # 8 bad date, missing age, unknown sex and severity
    "P008,05/01/2026,,x,70,36.6,120,80,,NONE,grave",
    # 9 valid: missing vitals and sex, no symptoms, Spanish 'not ill'
    "P009,2026-01-07T08:00:00,60,,,,,,,NONE,No enfermo",
    # 10 missing patient id, unknown diagnosis code
    ",2026-01-08T08:00:00,30,female,70,36.6,120,80,HP:0001945,flu,mild",
    # 11 nonsense number with decimal point, temperature in the gap between °C and °F
    "P011,2026-01-08T09:00:00,30,female,1.2.3,60,120,80,HP:0001945,E11,mild",
]

EXPECTED_REASONS = {
    2: ["age: not a number '8O'"],
    3: ["heart_rate: 400 outside 20–250 /min", "body_temperature: 20 outside 25–45 °C"],
    4: ["diastolic_bp: not below systolic_bp"],
    5: [
        "symptoms: malformed HPO id 'HP:12'",
        "symptoms: malformed HPO id 'HPO:0000001'",
        "diagnosis: missing",
    ],
    6: ["duplicate"],
    7: ["row: wrong number of fields (12 instead of 11)"],
    8: [
        "recorded_at: not an ISO date/time '05/01/2026'",
        "age: missing",
        "sex: unknown value 'x'",
        "severity: unknown value 'grave'",
    ],
    10: ["patient_id: missing", "diagnosis: unrecognised code 'flu'"],
    11: ["heart_rate: not a number '1.2.3'", "body_temperature: 60 outside 25–45 °C"],
}


@pytest.fixture
def messy_file(tmp_path: Path) -> Path:
    # UTF-8 with BOM, CRLF, a header with odd case and padding, a blank line at the end.
    header = " Patient_ID ,RECORDED_AT,age,Sex,heart_rate,body_temperature,systolic_bp,diastolic_bp,symptoms,diagnosis,severity"
    path = tmp_path / "records_2026-01-05.txt"
    path.write_bytes(("\r\n".join([header, *MESSY_ROWS, "", ""])).encode("utf-8-sig"))
    return path


def test_messy_week_routes_every_row_with_exact_reasons(messy_file: Path):
    outcome = validate_records(read_raw_export(messy_file), KEY)
    reasons = {r["source_row"]: r["reasons"] for r in outcome.quarantined.iter_rows(named=True)}
    assert reasons == EXPECTED_REASONS
    assert outcome.valid.get_column("source_row").to_list() == [1, 9]
    assert outcome.quarantined.get_column("source_file").unique().to_list() == [
        "records_2026-01-05.txt"
    ]

    first, healthy = outcome.valid.iter_rows(named=True)
    assert first["patient_key"] == pseudonymise("P001", KEY)
    assert first["recorded_at"] == dt.datetime(2026, 1, 5, 9, 13)
    assert (
        first["sex"] == "female" and first["severity"] == "mild" and first["diagnosis"] == "J18.9"
    )
    assert first["body_temperature"] == pytest.approx(37.0)
    assert first["symptoms"] == ["HP:0001945", "HP:0002315"]
    assert healthy["sex"] == "unknown" and healthy["severity"] == "not_ill"
    assert healthy["symptoms"] == [] and healthy["diagnosis"] == "NONE"
    assert [
        healthy[c] for c in ("heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
    ] == [None] * 4


def test_quarantine_keeps_original_text_but_never_the_patient_id(messy_file: Path):
    outcome = validate_records(read_raw_export(messy_file), KEY)
    row2 = outcome.quarantined.filter(pl.col("source_row") == 2).row(0, named=True)
    assert row2["age"] == "8O" and row2["sex"] == "mujer" and row2["severity"] == "aguda"
    assert row2["patient_key"] == pseudonymise("P002", KEY)
    assert outcome.quarantined.filter(pl.col("source_row") == 10)["patient_key"].to_list() == [None]
    for frame in (outcome.valid, outcome.quarantined):
        assert "patient_id" not in frame.columns
        assert "P00" not in str(frame.to_dicts())  # P001, P002, ...


def test_output_columns_and_types_follow_the_contract(messy_file: Path):
    outcome = validate_records(read_raw_export(messy_file), KEY)
    assert tuple(outcome.valid.columns) == VALID_COLUMNS
    assert outcome.valid.schema["recorded_at"] == pl.Datetime("us")
    assert outcome.valid.schema["symptoms"] == pl.List(pl.Utf8)
    assert outcome.valid.schema["source_row"] == pl.Int64
    assert all(outcome.valid.schema[c] == pl.Float64 for c in ("age", "heart_rate", "diastolic_bp"))
    VALID_RECORDS_SCHEMA.validate(outcome.valid)  # the published schema accepts the output
    assert tuple(outcome.quarantined.columns) == QUARANTINE_COLUMNS
    assert outcome.quarantined.schema["reasons"] == pl.List(pl.Utf8)
    assert all(outcome.quarantined.schema[c] == pl.Utf8 for c in RAW_COLUMNS if c != "patient_id")


def test_summary_counts_rows_checks_and_columns(messy_file: Path):
    summary = validate_records(read_raw_export(messy_file), KEY).summary()
    assert summary["rows"] == 11 and summary["valid"] == 2 and summary["quarantined"] == 9
    assert summary["quarantine_rate"] == pytest.approx(9 / 11, abs=1e-6)
    assert summary["reasons"]["not_a_number"] == 2
    assert summary["reasons"]["out_of_range"] == 3
    assert summary["reasons"]["duplicate"] == 1
    assert summary["reasons"]["wrong_field_count"] == 1
    assert summary["reasons"]["malformed_hpo_id"] == 2
    assert summary["columns"]["heart_rate"] == 2 and summary["columns"]["diagnosis"] == 2
    json.dumps(summary)


def test_only_later_copies_of_duplicates_are_quarantined(tmp_path: Path):
    row = "P1,2026-01-05T09:00:00,30,female,70,36.6,120,80,HP:0001945,J10,mild"
    other = "P1,2026-01-05T10:00:00,30,female,70,36.6,120,80,HP:0001945,J10,mild"
    path = _write(tmp_path, "d.csv", [HEADER, row, row, other, row])
    outcome = validate_records(read_raw_export(path), KEY)
    assert outcome.valid.get_column("source_row").to_list() == [1, 3]
    assert outcome.quarantined.get_column("source_row").to_list() == [2, 4]
    assert outcome.quarantined.get_column("reasons").to_list() == [["duplicate"], ["duplicate"]]


# ---------------------------------------------------------------- formats


def test_tab_delimited_latin1_file_with_spanish_labels(tmp_path: Path):
    lines = [
        "\t".join(RAW_COLUMNS),
        "P1\t2026-01-05T09:00:00\t30\tHOMBRE\t70\t101.3\t120\t80\tHP:0001945;HP:0002315\tN39.0\tCrónica",
        "P2\t2026-01-05T09:30:00\t 42 \t Femenino \t 66 \t 36.4 \t 125 \t 82 \t\tK35.8\t  Terminal ",
    ]
    path = _write(tmp_path, "week.tsv", lines, encoding="latin-1")
    raw = read_raw_export(path)
    assert raw.get_column("severity").to_list() == ["Crónica", "Terminal"]  # decoded, stripped
    outcome = validate_records(raw, KEY)
    assert outcome.quarantined.height == 0
    valid = outcome.valid
    assert valid["sex"].to_list() == ["male", "female"]
    assert valid["severity"].to_list() == ["chronic", "terminal"]
    assert valid["body_temperature"][0] == pytest.approx(38.5)
    assert valid["age"].to_list() == [30.0, 42.0]


@pytest.mark.parametrize("delimiter", [";", "|"])
def test_semicolon_and_pipe_files_with_quoted_symptoms_and_decimal_comma(tmp_path: Path, delimiter):
    lines = [
        delimiter.join(RAW_COLUMNS),
        delimiter.join(
            [
                "P1",
                "2026-01-05T09:00:00",
                "30",
                "m",
                "70",
                "37,5",
                "120",
                "80",
                '"HP:0001945;HP:0002315"',
                "J10",
                "acute",
            ]
        ),
    ]
    path = _write(tmp_path, "w.csv", lines, newline="\r\n")
    outcome = validate_records(read_raw_export(path), KEY)
    assert outcome.quarantined.height == 0
    assert outcome.valid["symptoms"].to_list() == [["HP:0001945", "HP:0002315"]]
    assert outcome.valid["body_temperature"].to_list() == [37.5]


def test_semicolons_inside_symptoms_do_not_fool_the_delimiter_sniffer(tmp_path: Path):
    # Many semicolons in the data, but the header says comma.
    row = "P1,2026-01-05,30,f,70,36.6,120,80,HP:0001945;HP:0002315;HP:0012345;HP:0002094,J10,mild"
    path = _write(tmp_path, "c.txt", [HEADER, row])
    outcome = validate_records(read_raw_export(path), KEY)
    assert outcome.valid.height == 1 and len(outcome.valid["symptoms"][0]) == 4


def test_utf16_with_bom_and_extra_columns_in_any_order(tmp_path: Path):
    cols = list(reversed(RAW_COLUMNS)) + ["ward"]
    values = dict(
        zip(
            RAW_COLUMNS,
            ["P1", "2026-01-05", "30", "f", "70", "36.6", "120", "80", "", "NONE", "not_ill"],
        )
    )
    line = ",".join([values[c] for c in reversed(RAW_COLUMNS)] + ["ICU"])
    path = tmp_path / "u16.txt"
    path.write_bytes(("\n".join([",".join(cols), line]) + "\n").encode("utf-16"))
    outcome = validate_records(read_raw_export(path), KEY)
    assert outcome.valid.height == 1
    assert outcome.valid.row(0, named=True)["severity"] == "not_ill"


def test_ragged_rows_too_few_fields_and_unbalanced_quotes_are_quarantined(tmp_path: Path):
    good = "P1,2026-01-05,30,f,70,36.6,120,80,,NONE,not_ill"
    path = _write(
        tmp_path,
        "r.txt",
        [HEADER, "P2,2026-01-05,30,f", good, 'P3,"2026-01-05,30,f,70,36.6,120,80,,NONE,not_ill'],
    )
    outcome = validate_records(read_raw_export(path), KEY)
    assert outcome.valid["source_row"].to_list() == [2]
    assert outcome.quarantined["reasons"].to_list() == [
        ["row: wrong number of fields (4 instead of 11)"],
        ["row: unbalanced quotes"],
    ]
    assert outcome.quarantined.row(0, named=True)["age"] == "30"


def test_header_only_file_gives_empty_outputs(tmp_path: Path):
    outcome = validate_records(read_raw_export(_write(tmp_path, "h.txt", [HEADER])), KEY)
    assert outcome.valid.height == 0 and outcome.quarantined.height == 0
    assert outcome.summary()["quarantine_rate"] == 0.0
    assert tuple(outcome.valid.columns) == VALID_COLUMNS


# ---------------------------------------------------------------- whole-file errors


def test_raw_file_errors_explain_the_problem(tmp_path: Path):
    with pytest.raises(RawFileError, match="file not found"):
        read_raw_export(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(RawFileError, match="empty file"):
        read_raw_export(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_bytes(b" \r\n\n")
    with pytest.raises(RawFileError, match="empty file"):
        read_raw_export(tmp_path / "blank.txt")
    (tmp_path / "bin.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(RawFileError, match="not a text file"):
        read_raw_export(tmp_path / "bin.txt")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\n\xff\xfe\n")
    with pytest.raises(RawFileError, match="undecodable"):
        read_raw_export(tmp_path / "bom.txt")
    no_age = ",".join(c for c in RAW_COLUMNS if c not in ("age", "severity"))
    with pytest.raises(RawFileError, match="missing required columns: age, severity"):
        read_raw_export(_write(tmp_path, "cols.txt", [no_age, "x"]))
    with pytest.raises(RawFileError, match="no header row"):
        read_raw_export(
            _write(tmp_path, "data.txt", ["P1,2026-01-05,30,f,70,36.6,120,80,,NONE,mild"])
        )
    with pytest.raises(RawFileError, match="duplicate header columns: age"):
        read_raw_export(_write(tmp_path, "dupe.txt", [HEADER + ",AGE"]))


# ---------------------------------------------------------------- file to directory


def test_validate_file_to_dir_writes_both_parquet_files_and_a_json_summary(
    messy_file: Path, tmp_path: Path
):
    out = tmp_path / "out"
    summary = validate_file_to_dir(messy_file, out, KEY)
    assert summary["file"] == "records_2026-01-05.txt"
    assert (summary["rows"], summary["valid"], summary["quarantined"]) == (11, 2, 9)
    valid = pl.read_parquet(out / "valid.parquet")
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    assert valid.height == 2 and quarantine.height == 9
    assert quarantine.filter(pl.col("source_row") == 6)["reasons"].to_list() == [["duplicate"]]
    json.loads(json.dumps(summary))
    with pytest.raises(RawFileError):
        validate_file_to_dir(tmp_path / "missing.txt", out, KEY)
