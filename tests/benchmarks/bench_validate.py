"""Benchmark: read + validate + route a realistic raw export (target: 1 M rows in <= 10 s).

    python tests/benchmarks/bench_validate.py [--rows 1000000] [--defect-rate 0.03] [--no-write]

Writes a comma-delimited export with a few % defects (letters in numbers, impossible vitals,
°F temperatures, Spanish labels, malformed HPO ids, missing diagnoses, duplicates, ragged rows)
to a temp dir, then times each stage. Parquet writing is reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from schemas.clinical import RAW_COLUMNS
from schemas.validation import read_raw_export, validate_records

HPO = [f"HP:{n:07d}" for n in (1945, 2315, 12345, 2094, 1250, 2013, 12735, 1824, 3326, 2014)]
DIAGNOSES = [
    "J10",
    "J18.9",
    "N39.0",
    "A09",
    "E11",
    "I10",
    "K35.8",
    "NONE",
    "ORPHA:558",
    "OMIM:154700",
]


def make_export(path: Path, rows: int, defect_rate: float, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    n_patients = max(1, rows // 3)
    ids = np.char.add("P", rng.integers(0, n_patients, rows).astype(str))
    minutes = rng.integers(0, 7 * 24 * 60, rows)
    recorded = (
        (
            pl.Series(minutes).cast(pl.Int64) * 60_000_000
            + int(np.datetime64("2026-01-05T00:00:00", "us").astype(np.int64))
        )
        .cast(pl.Datetime("us"))
        .dt.strftime("%Y-%m-%dT%H:%M:%S")
    )
    n_sym = rng.integers(0, 4, rows)
    sym_idx = rng.integers(0, len(HPO), (rows, 3))
    hpo = np.array(HPO)
    symptoms = pl.DataFrame(
        {f"s{i}": np.where(n_sym > i, hpo[sym_idx[:, i]], "") for i in range(3)}
    ).select(
        pl.concat_str(["s0", "s1", "s2"], separator=";")
        .str.strip_chars(";")
        .str.replace_all(";;", ";")
    )
    df = pl.DataFrame(
        {
            "patient_id": ids,
            "recorded_at": recorded,
            "age": rng.integers(0, 100, rows).astype(str),
            "sex": np.array(["female", "male", "F", "M", "other", "unknown"])[
                rng.integers(0, 6, rows)
            ],
            "heart_rate": rng.integers(50, 130, rows).astype(str),
            "body_temperature": np.round(rng.normal(37.2, 0.8, rows), 1).astype(str),
            "systolic_bp": rng.integers(100, 160, rows).astype(str),
            "diastolic_bp": rng.integers(55, 95, rows).astype(str),
            "symptoms": symptoms.to_series(),
            "diagnosis": np.array(DIAGNOSES)[rng.integers(0, len(DIAGNOSES), rows)],
            "severity": np.array(["not_ill", "mild", "acute", "chronic", "terminal"])[
                rng.integers(0, 5, rows)
            ],
        }
    )
    # Defects: each kind on a random share of rows.
    kinds = [
        ("heart_rate", "8O"),
        ("heart_rate", "400"),
        ("body_temperature", "101.3"),  # °F, valid after conversion
        ("severity", "Crónica"),  # Spanish label, valid
        ("sex", "mujer"),  # Spanish label, valid
        ("diastolic_bp", "170"),
        ("symptoms", "HP:12;HP:0001945"),
        ("diagnosis", ""),
        ("age", "abc"),
    ]
    per_kind = defect_rate / len(kinds)
    for column, value in kinds:
        mask = rng.random(rows) < per_kind
        df = df.with_columns(
            pl.when(pl.Series(mask)).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    dup_rows = df.sample(fraction=defect_rate / 3, seed=seed)
    df = pl.concat([df, dup_rows]).select(RAW_COLUMNS)
    df.write_csv(path)
    # A handful of ragged lines appended at the end.
    with path.open("a", encoding="utf-8") as fh:
        for _ in range(max(1, rows // 100_000)):
            fh.write("P1,2026-01-05T09:00:00,30,female,80,37,120,80,,J10,mild,EXTRA\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--defect-rate", type=float, default=0.03)
    parser.add_argument("--no-write", action="store_true", help="skip the parquet write timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records_2026-01-05.txt"
        t0 = time.perf_counter()
        make_export(path, args.rows, args.defect_rate)
        t_gen = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6

        t0 = time.perf_counter()
        raw = read_raw_export(path)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        outcome = validate_records(raw, b"benchmark-pseudonym-key")
        t_validate = time.perf_counter() - t0
        total = t_read + t_validate
        summary = outcome.summary()
        assert summary["rows"] == raw.height

        print(f"file: {raw.height:,} rows, {size_mb:.1f} MB (generated in {t_gen:.1f} s)")
        print(f"read_raw_export:            {t_read:6.2f} s")
        print(f"validate_records (+route):  {t_validate:6.2f} s")
        print(f"read + validate + route:    {total:6.2f} s  ({raw.height / total:,.0f} rows/s)")
        print(
            f"valid {summary['valid']:,}, quarantined {summary['quarantined']:,} "
            f"({summary['quarantine_rate']:.2%}); reasons {summary['reasons']}"
        )
        if not args.no_write:
            t0 = time.perf_counter()
            outcome.valid.write_parquet(Path(tmp) / "valid.parquet")
            outcome.quarantined.write_parquet(Path(tmp) / "quarantine.parquet")
            print(f"parquet write (separate):   {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
