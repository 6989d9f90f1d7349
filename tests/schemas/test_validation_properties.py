"""Property tests: whatever the file looks like, every row lands exactly once and ids stay hidden."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
from hypothesis import HealthCheck, given, settings

from schemas.clinical import RAW_COLUMNS
from schemas.validation import VALID_RECORDS_SCHEMA, read_raw_export, validate_records

KEY = b"property-key"

VALUES = {
    "recorded_at": [
        "2026-01-05T09:13:00",
        "2026-01-06",
        "2026-01-07 10:00",
        "05/01/2026",
        "",
        "yesterday",
    ],
    "age": ["34", "0", "120", "121", "-1", "8O", "", "45.5", "nan"],
    "sex": ["female", "M", "mujer", "Hombre", "x", "", "unknown"],
    "heart_rate": ["80", "400", "19", "abc", "", "72.5"],
    "body_temperature": ["36.6", "98.6", "20", "60", "", "3 7", "113"],
    "systolic_bp": ["120", "300", "", "x1"],
    "diastolic_bp": ["80", "130", "10", "", "y"],
    "symptoms": ["", "HP:0001945", "HP:0001945;HP:0002315", "HP:12", "hp:0002315; HP:12;;"],
    "diagnosis": ["J10", "j18.9", "NONE", "ORPHA:558", "", "flu", "OMIM:154700"],
    "severity": ["mild", "Crónica", "No enfermo", "LEVE", "", "grave", "terminal"],
}

row_strategy = st.fixed_dictionaries(
    {"patient": st.integers(0, 30), **{c: st.sampled_from(v) for c, v in VALUES.items()}},
    optional={"ragged": st.sampled_from(["extra", "short"])},
)


def _render(rows: list[dict], delimiter: str, newline: str) -> tuple[str, list[str]]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(RAW_COLUMNS)
    ids = []
    for row in rows:
        patient_id = f"SECRET{row['patient']:04d}"
        ids.append(patient_id)
        fields = [patient_id, *[row[c] for c in RAW_COLUMNS[1:]]]
        if row.get("ragged") == "extra":
            fields.append("extra")
        elif row.get("ragged") == "short":
            fields = fields[:5]
        writer.writerow(fields)
    return buffer.getvalue(), ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=25),
    delimiter=st.sampled_from([",", "\t", ";", "|"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
    newline=st.sampled_from(["\n", "\r\n"]),
    duplicate_last=st.booleans(),
)
def test_every_row_lands_exactly_once_and_ids_never_leak(
    rows, delimiter, encoding, newline, duplicate_last
):
    if duplicate_last:
        rows = [*rows, dict(rows[0])]
    text, ids = _render(rows, delimiter, newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.txt"
        path.write_bytes(text.encode(encoding))
        raw = read_raw_export(path)
    outcome = validate_records(raw, KEY)
    n = len(rows)

    assert raw.height == n
    assert outcome.valid.height + outcome.quarantined.height == n
    rows_seen = outcome.valid["source_row"].to_list() + outcome.quarantined["source_row"].to_list()
    assert sorted(rows_seen) == list(range(1, n + 1))  # exactly 1..n, none twice

    # Every quarantined row says why; every valid row passes the published schema.
    assert all(len(r) > 0 for r in outcome.quarantined["reasons"].to_list())
    VALID_RECORDS_SCHEMA.validate(outcome.valid)

    # Ragged rows are quarantined for that reason alone; the duplicate copy is never valid.
    for i, row in enumerate(rows, start=1):
        if "ragged" in row:
            reasons = outcome.quarantined.filter(pl.col("source_row") == i)["reasons"].to_list()
            assert len(reasons) == 1 and reasons[0][0].startswith("row: wrong number of fields")
    if duplicate_last:
        assert n not in outcome.valid["source_row"].to_list()

    # The clear patient id appears nowhere in either output.
    dumped = str(outcome.valid.to_dicts()) + str(outcome.quarantined.to_dicts())
    assert "SECRET" not in dumped
    assert set(outcome.valid["patient_key"].str.len_chars().to_list()) <= {64}

    summary = outcome.summary()
    assert summary["rows"] == n and summary["valid"] + summary["quarantined"] == n
