"""Data-quality layer for raw weekly exports: read, parse, validate with Pandera, quarantine.

Pure functions, no Dagster: the pipeline's assets and ``triage validate`` call the same code.

Flow (all polars expressions; the only per-item Python is one HMAC per patient id and the
``csv`` module for the rare lines that contain quote characters):

1. :func:`read_raw_export` decodes the file (UTF-8 with/without BOM, UTF-16 with BOM, Latin-1
   fallback), sniffs the delimiter from the header line, and returns every value as stripped text
   (empty -> null) plus ``source_file``, ``source_row`` and ``row_error`` (set for ragged rows).
2. :func:`validate_records` parses text into typed columns, records parse failures (not a number,
   not a date), then validates the typed frame with :data:`VALID_RECORDS_SCHEMA` — a Pandera
   schema built from :data:`schemas.clinical.CLINICAL_RANGES` — with ``lazy=True`` and routes
   rows using ``SchemaErrors.failure_cases``. Every quarantined row carries every reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from schemas.clinical import (
    CLINICAL_RANGES,
    DIAGNOSIS_PATTERN,
    FAHRENHEIT_RANGE,
    HPO_ID_PATTERN,
    RAW_COLUMNS,
    SEVERITIES,
    SEXES,
    VITALS,
    normalise_severity,
    normalise_sex,
)
from schemas.pseudonym import pseudonymise_series

__all__ = [
    "RawFileError",
    "ValidationOutcome",
    "VALID_COLUMNS",
    "QUARANTINE_COLUMNS",
    "VALID_RECORDS_SCHEMA",
    "DELIMITERS",
    "read_raw_export",
    "validate_records",
    "validate_file_to_dir",
]

DELIMITERS: tuple[str, ...] = (",", "\t", ";", "|")
ROW_ERROR = "row_error"  # extra column of read_raw_export: null, or why the line is malformed
_IDX = "_idx"
_MAX_QUOTED = 40  # longest raw value quoted in a reason

VALID_COLUMNS: tuple[str, ...] = (
    "patient_key",
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
    "source_file",
    "source_row",
)
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "patient_key",
    *[c for c in RAW_COLUMNS if c != "patient_id"],
    "source_file",
    "source_row",
    "reasons",
)
_REASON_COLUMN_ORDER = {name: i for i, name in enumerate(["row", *RAW_COLUMNS])}


class RawFileError(Exception):
    """The export as a whole cannot be read (as opposed to bad rows, which are quarantined)."""


# --------------------------------------------------------------------------------------------
# Pandera schema, built from the clinical ranges table
# --------------------------------------------------------------------------------------------


def _diastolic_below_systolic(data: Any) -> pl.LazyFrame:
    d, s = pl.col("diastolic_bp"), pl.col("systolic_bp")
    return data.lazyframe.select(d.is_null() | s.is_null() | (d < s))


def _hpo_ids_well_formed(data: Any) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col(data.key).list.eval(pl.element().str.contains(HPO_ID_PATTERN)).list.all()
    )


def _build_schema() -> pa.DataFrameSchema:
    columns: dict[str, pa.Column] = {
        "patient_key": pa.Column(pl.Utf8, nullable=False),
        "recorded_at": pa.Column(pl.Datetime("us"), nullable=False),
    }
    for name in VITALS:
        rng = CLINICAL_RANGES[name]
        checks = [pa.Check.in_range(rng.low, rng.high)]
        if name == "diastolic_bp":
            checks.append(pa.Check(_diastolic_below_systolic, name="below_systolic"))
        columns[name] = pa.Column(
            pl.Float64, checks=checks, nullable=name != "age", description=rng.description
        )
    columns.update(
        {
            "sex": pa.Column(pl.Utf8, pa.Check.isin(list(SEXES)), nullable=False),
            "symptoms": pa.Column(
                pl.List(pl.Utf8), pa.Check(_hpo_ids_well_formed, name="hpo_id"), nullable=False
            ),
            "diagnosis": pa.Column(
                pl.Utf8, pa.Check.str_matches(DIAGNOSIS_PATTERN), nullable=False
            ),
            "severity": pa.Column(pl.Utf8, pa.Check.isin(list(SEVERITIES)), nullable=False),
            "source_file": pa.Column(pl.Utf8, nullable=False),
            "source_row": pa.Column(pl.Int64, nullable=False),
        }
    )
    ordered = {name: columns[name] for name in VALID_COLUMNS}
    return pa.DataFrameSchema(ordered, strict=True, ordered=True, name="validated_patient_records")


#: Contract of the ``valid`` output; also usable by the pipeline in asset checks.
VALID_RECORDS_SCHEMA: pa.DataFrameSchema = _build_schema()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _decode(data: bytes, name: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            text = data[3:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RawFileError(
                f"{name}: undecodable: UTF-8 byte-order mark but invalid UTF-8 ({exc.reason})"
            ) from None
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise RawFileError(
                f"{name}: undecodable: UTF-16 byte-order mark but invalid UTF-16"
            ) from None
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")  # every byte is valid Latin-1
    if "\x00" in text:
        raise RawFileError(f"{name}: not a text file (contains NUL bytes)")
    return text


def _split_header(line: str, delimiter: str) -> list[str]:
    fields = next(csv.reader([line], delimiter=delimiter))
    return [f.strip().lower() for f in fields]


def _sniff(header_line: str, name: str) -> tuple[str, list[str]]:
    """Pick the delimiter that splits the header into all required columns."""
    best: tuple[int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        names = _split_header(header_line, delimiter)
        found = sum(1 for c in RAW_COLUMNS if c in names)
        if found == len(RAW_COLUMNS):
            dupes = sorted({n for n in names if n in RAW_COLUMNS and names.count(n) > 1})
            if dupes:
                raise RawFileError(f"{name}: duplicate header columns: {', '.join(dupes)}")
            return delimiter, names
        if best is None or found > best[0]:
            best = (found, delimiter, names)
    assert best is not None
    found, _, names = best
    if found == 0:
        raise RawFileError(
            f"{name}: no header row: the first line names none of the required columns "
            f"({', '.join(RAW_COLUMNS)})"
        )
    missing = [c for c in RAW_COLUMNS if c not in names]
    raise RawFileError(f"{name}: missing required columns: {', '.join(missing)}")


def _empty_raw(name: str) -> pl.DataFrame:
    schema = {c: pl.Utf8 for c in RAW_COLUMNS} | {
        "source_file": pl.Utf8,
        "source_row": pl.Int64,
        ROW_ERROR: pl.Utf8,
    }
    return pl.DataFrame(schema=schema)


def read_raw_export(path: str | Path) -> pl.DataFrame:
    """Read one raw export; every value as stripped text (empty -> null).

    Columns: RAW_COLUMNS (Utf8), ``source_file`` (file name), ``source_row`` (Int64, 1-based
    among non-blank data lines), ``row_error`` (Utf8: null, or "row: wrong number of fields ..."
    for a line whose field count differs from the header's). Extra columns are ignored; header
    names are matched case-insensitively. Blank lines are skipped and not numbered.
    Raises :class:`RawFileError` when the file itself is unusable.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise RawFileError(f"{name}: file not found")
    if not path.is_file():
        raise RawFileError(f"{name}: not a regular file")
    data = path.read_bytes()
    if not data.strip():
        raise RawFileError(f"{name}: empty file")
    text = _decode(data, name)
    if not text.strip():
        raise RawFileError(f"{name}: empty file")

    newline = "\n" if "\n" in text else "\r"
    lines = pl.Series("line", [text]).str.split(newline).explode()
    if newline == "\n":
        lines = lines.str.strip_suffix("\r")
    frame = pl.DataFrame({"line": lines}).filter(pl.col("line").str.strip_chars() != "")
    header_line = frame.item(0, "line")
    delimiter, names = _sniff(header_line, name)
    positions = {c: names.index(c) for c in RAW_COLUMNS}
    n_fields = len(names)

    data_lines = frame.slice(1).with_columns(
        source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64)
    )
    if data_lines.height == 0:
        return _empty_raw(name)

    # Field count per line, quote-aware: drop quoted sections, then count delimiters.
    line = pl.col("line")
    unquoted = line.str.replace_all(r'"[^"]*"', "")
    data_lines = data_lines.with_columns(
        pl.when(unquoted.str.contains('"', literal=True))
        .then(pl.lit("row: unbalanced quotes"))
        .when(unquoted.str.count_matches(delimiter, literal=True) + 1 != n_fields)
        .then(
            pl.format(
                "row: wrong number of fields ({} instead of {})",
                unquoted.str.count_matches(delimiter, literal=True) + 1,
                pl.lit(n_fields),
            )
        )
        .otherwise(None)
        .cast(pl.Utf8)
        .alias(ROW_ERROR)
    )
    good = data_lines.filter(pl.col(ROW_ERROR).is_null())
    bad = data_lines.filter(pl.col(ROW_ERROR).is_not_null())
    raw_schema = {c: pl.Utf8 for c in RAW_COLUMNS}

    parts = []
    if good.height:
        # Only well-formed lines reach polars' parser, so its rows align with ``good``.
        body = good.get_column("line").str.join("\n").item().encode("utf-8")
        parsed = pl.read_csv(
            body,
            has_header=False,
            separator=delimiter,
            quote_char='"',
            new_columns=[f"_f{i}" for i in range(n_fields)],
            infer_schema=False,
        )
        parts.append(
            parsed.select(
                [pl.col(f"_f{pos}").alias(col) for col, pos in positions.items()]
            ).with_columns(good.select("source_row", ROW_ERROR))
        )
    if bad.height:
        # Malformed lines (rare): keep their fields positionally for the operator.
        rows = [
            next(csv.reader([text], delimiter=delimiter), [])
            for text in bad.get_column("line").to_list()
        ]
        parts.append(
            pl.DataFrame(
                {
                    col: [r[pos] if pos < len(r) else None for r in rows]
                    for col, pos in positions.items()
                },
                schema=raw_schema,
            ).with_columns(bad.select("source_row", ROW_ERROR))
        )
    raw = pl.concat(parts).sort("source_row") if len(parts) > 1 else parts[0]
    return raw.select(
        *[pl.col(c).str.strip_chars().replace("", None).alias(c) for c in RAW_COLUMNS],
        pl.lit(name, dtype=pl.Utf8).alias("source_file"),
        "source_row",
        ROW_ERROR,
    )


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------


def _number(col: str) -> pl.Expr:
    text = pl.col(col)
    # A decimal comma ("37,5") can only reach us in non-comma files; accept it.
    text = (
        pl.when(text.str.contains(r"^[+-]?\d+,\d+$"))
        .then(text.str.replace(",", ".", literal=True))
        .otherwise(text)
    )
    value = text.cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value).otherwise(None)


def _temperature(col: str) -> pl.Expr:
    value = _number(col)
    low, high = FAHRENHEIT_RANGE
    return (
        pl.when(value.is_between(low, high))
        .then(((value - 32.0) * 5.0 / 9.0).round(2))
        .otherwise(value)
    )


def _datetime(col: str) -> pl.Expr:
    text = pl.col(col).str.replace(" ", "T", literal=True)
    return pl.coalesce(
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False),
        text.str.to_datetime("%Y-%m-%dT%H:%M", time_unit="us", strict=False),
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
    )


def _label_mapping(values: pl.Series, normalise: Any) -> tuple[list[str | None], list[str | None]]:
    """Map each distinct raw label to its canonical form; unrecognised labels stay as they are
    (so Pandera's ``isin`` check reports them)."""
    old = values.unique().to_list()
    new = []
    for v in old:
        canonical = normalise(v)
        new.append(canonical if canonical is not None else v)
    return old, new


def _typed(raw: pl.DataFrame) -> pl.DataFrame:
    sex_old, sex_new = _label_mapping(raw.get_column("sex"), normalise_sex)
    sev_old, sev_new = _label_mapping(raw.get_column("severity"), normalise_severity)
    symptoms = (
        pl.col("symptoms")
        .fill_null("")
        .str.split(";")
        .list.eval(pl.element().str.strip_chars().str.to_uppercase())
        .list.eval(pl.element().filter(pl.element() != ""))
        .list.unique(maintain_order=True)
    )
    return raw.select(
        pl.col("patient_key"),
        _datetime("recorded_at").alias("recorded_at"),
        _number("age").alias("age"),
        pl.col("sex").replace_strict(sex_old, sex_new, return_dtype=pl.Utf8).alias("sex"),
        _number("heart_rate").alias("heart_rate"),
        _temperature("body_temperature").alias("body_temperature"),
        _number("systolic_bp").alias("systolic_bp"),
        _number("diastolic_bp").alias("diastolic_bp"),
        symptoms.alias("symptoms"),
        pl.col("diagnosis").str.to_uppercase().alias("diagnosis"),
        pl.col("severity").replace_strict(sev_old, sev_new, return_dtype=pl.Utf8).alias("severity"),
        pl.col("source_file"),
        pl.col("source_row"),
    )


def _quote(col: str) -> pl.Expr:
    return pl.col(col).str.slice(0, _MAX_QUOTED)


def _failure_frame(frame: pl.DataFrame, column: str, check: str, message: pl.Expr) -> pl.DataFrame:
    return frame.select(
        pl.col(_IDX),
        pl.lit(column).alias("column"),
        pl.lit(check).alias("check"),
        message.alias("message"),
    )


def _parse_failures(raw: pl.DataFrame, typed: pl.DataFrame) -> list[pl.DataFrame]:
    both = raw.select(_IDX, *[pl.col(c) for c in ("recorded_at", *VITALS)]).with_columns(
        typed.select(*[pl.col(c).alias(f"_t_{c}") for c in ("recorded_at", *VITALS)])
    )
    out = []
    for col in VITALS:
        bad = both.filter(pl.col(col).is_not_null() & pl.col(f"_t_{col}").is_null())
        out.append(
            _failure_frame(
                bad,
                col,
                "not_a_number",
                pl.format("{}: not a number '{}'", pl.lit(col), _quote(col)),
            )
        )
    bad = both.filter(pl.col("recorded_at").is_not_null() & pl.col("_t_recorded_at").is_null())
    out.append(
        _failure_frame(
            bad,
            "recorded_at",
            "not_a_datetime",
            pl.format("recorded_at: not an ISO date/time '{}'", _quote("recorded_at")),
        )
    )
    return out


def _check_kind(check: str) -> str:
    if check == "not_nullable":
        return "missing"
    if check.startswith("in_range"):
        return "out_of_range"
    if check.startswith("isin"):
        return "unknown_value"
    if check.startswith("str_matches"):
        return "unknown_code"
    if check == "below_systolic":
        return "diastolic_not_below_systolic"
    if check == "hpo_id":
        return "malformed_hpo_id"
    return check  # dtype / column presence: cannot happen with our own typed frame


def _schema_failures(raw: pl.DataFrame, typed: pl.DataFrame) -> list[pl.DataFrame]:
    try:
        VALID_RECORDS_SCHEMA.validate(typed, lazy=True)
        return []
    except SchemaErrors as exc:
        cases = exc.failure_cases
    cases = (
        cases.filter(pl.col("index").is_not_null())
        .select(
            pl.col("index").cast(pl.Int64).alias(_IDX),
            pl.col("column").replace("patient_key", "patient_id"),
            pl.col("check").map_elements(_check_kind, return_dtype=pl.Utf8).alias("check"),
        )
        .unique(maintain_order=True)
    )
    # Give each failure the raw text it is about.
    with_raw = cases.join(raw.drop("patient_key"), on=_IDX, how="left")
    out = []
    for (column, check), group in with_raw.group_by(["column", "check"], maintain_order=True):
        column = str(column)
        check = str(check)
        if check == "missing":
            msg = pl.lit(f"{column}: missing")
        elif check == "out_of_range":
            msg = pl.format(
                "{}: {} outside {}",
                pl.lit(column),
                _quote(column),
                pl.lit(CLINICAL_RANGES[column].bounds_text),
            )
        elif check == "unknown_value":
            msg = pl.format("{}: unknown value '{}'", pl.lit(column), _quote(column))
        elif check == "unknown_code":
            msg = pl.format("{}: unrecognised code '{}'", pl.lit(column), _quote(column))
        elif check == "diastolic_not_below_systolic":
            msg = pl.lit("diastolic_bp: not below systolic_bp")
        elif check == "malformed_hpo_id":
            bad = (
                typed.with_row_index(_IDX)
                .with_columns(pl.col(_IDX).cast(pl.Int64))
                .join(group.select(_IDX), on=_IDX, how="semi")
                .select(
                    _IDX,
                    pl.col("symptoms")
                    .list.eval(pl.element().filter(~pl.element().str.contains(HPO_ID_PATTERN)))
                    .alias("_bad"),
                )
                .explode("_bad")
                .filter(pl.col("_bad").is_not_null())
            )
            out.append(
                _failure_frame(
                    bad,
                    column,
                    check,
                    pl.format(
                        "symptoms: malformed HPO id '{}'", pl.col("_bad").str.slice(0, _MAX_QUOTED)
                    ),
                )
            )
            continue
        else:
            msg = pl.lit(f"{column}: failed check {check}")
        out.append(_failure_frame(group, column, check, msg))
    return out


_DUPLICATE_KEY = [
    "patient_key",
    "recorded_at",
    *VITALS,
    "sex",
    "diagnosis",
    "severity",
]


@dataclass
class ValidationOutcome:
    """Result of :func:`validate_records`.

    ``valid`` has :data:`VALID_COLUMNS`, ``quarantined`` has :data:`QUARANTINE_COLUMNS`;
    ``failures`` is the long form (source_file, source_row, column, check, message), one row
    per failed check, for metrics and asset metadata.
    """

    valid: pl.DataFrame
    quarantined: pl.DataFrame
    failures: pl.DataFrame = field(repr=False)

    def summary(self) -> dict[str, Any]:
        rows = self.valid.height + self.quarantined.height
        by_check = dict(sorted(self.failures.get_column("check").value_counts().iter_rows()))
        by_column = dict(sorted(self.failures.get_column("column").value_counts().iter_rows()))
        return {
            "rows": rows,
            "valid": self.valid.height,
            "quarantined": self.quarantined.height,
            "quarantine_rate": round(self.quarantined.height / rows, 6) if rows else 0.0,
            "reasons": {str(k): int(v) for k, v in by_check.items()},
            "columns": {str(k): int(v) for k, v in by_column.items()},
        }


def validate_records(raw: pl.DataFrame, pseudonym_key: bytes) -> ValidationOutcome:
    """Parse, validate and route every raw row to exactly one of valid / quarantined.

    ``raw`` is the output of :func:`read_raw_export` (or any frame with RAW_COLUMNS,
    ``source_file`` and ``source_row``; ``row_error`` is optional). The clear ``patient_id``
    never leaves this function: both outputs carry ``patient_key`` instead.
    """
    missing = [c for c in (*RAW_COLUMNS, "source_file", "source_row") if c not in raw.columns]
    if missing:
        raise ValueError(f"raw frame lacks columns: {', '.join(missing)}")
    if ROW_ERROR not in raw.columns:
        raw = raw.with_columns(pl.lit(None, dtype=pl.Utf8).alias(ROW_ERROR))
    raw = raw.select(
        *[
            pl.col(c).cast(pl.Utf8).str.strip_chars().replace("", None).alias(c)
            for c in RAW_COLUMNS
        ],
        pl.col("source_file").cast(pl.Utf8),
        pl.col("source_row").cast(pl.Int64),
        pl.col(ROW_ERROR).cast(pl.Utf8),
    )
    raw = raw.with_columns(
        pseudonymise_series(raw.get_column("patient_id"), pseudonym_key).alias("patient_key")
    ).drop("patient_id")
    raw = raw.with_row_index(_IDX).with_columns(pl.col(_IDX).cast(pl.Int64))

    typed = _typed(raw)
    failures = pl.concat(
        [
            _failure_frame(
                raw.filter(pl.col(ROW_ERROR).is_not_null()),
                "row",
                "wrong_field_count",
                pl.col(ROW_ERROR),
            ),
            *_parse_failures(raw, typed),
            *_schema_failures(raw, typed),
        ],
        how="vertical",
    )
    # A value that failed to parse is reported as such, not again as "missing".
    parsed_bad = failures.filter(pl.col("check").is_in(["not_a_number", "not_a_datetime"]))
    failures = failures.join(
        parsed_bad.select(_IDX, "column").with_columns(pl.lit("missing").alias("check")),
        on=[_IDX, "column", "check"],
        how="anti",
    )
    # A ragged row's fields are misaligned: report only the row error.
    ragged = raw.filter(pl.col(ROW_ERROR).is_not_null()).select(_IDX)
    failures = pl.concat(
        [
            failures.filter(pl.col("check") == "wrong_field_count"),
            failures.filter(pl.col("check") != "wrong_field_count").join(
                ragged, on=_IDX, how="anti"
            ),
        ]
    )

    # Exact duplicates among otherwise valid rows: the first stays, later copies quarantined.
    # Symptom order does not matter; sorting lists is slow in polars, so only rows that already
    # collide on every other field get their symptom list sorted.
    clean = (
        typed.with_row_index(_IDX)
        .with_columns(pl.col(_IDX).cast(pl.Int64))
        .join(failures.select(_IDX).unique(), on=_IDX, how="anti")
    )
    candidates = clean.filter(pl.struct(_DUPLICATE_KEY).is_duplicated())
    dupes = candidates.with_columns(pl.col("symptoms").list.sort().alias("_symptom_set")).filter(
        ~pl.struct([*_DUPLICATE_KEY, "_symptom_set"]).is_first_distinct()
    )
    failures = pl.concat([failures, _failure_frame(dupes, "row", "duplicate", pl.lit("duplicate"))])

    failures = failures.with_columns(
        pl.col("column")
        .replace_strict(
            _REASON_COLUMN_ORDER, default=len(_REASON_COLUMN_ORDER), return_dtype=pl.Int64
        )
        .alias("_order")
    ).sort([_IDX, "_order"], maintain_order=True)

    bad_idx = failures.select(_IDX).unique()
    valid = (
        typed.with_row_index(_IDX)
        .with_columns(pl.col(_IDX).cast(pl.Int64))
        .join(bad_idx, on=_IDX, how="anti")
        .select(VALID_COLUMNS)
    )
    reasons = failures.group_by(_IDX, maintain_order=True).agg(pl.col("message").alias("reasons"))
    quarantined = raw.join(reasons, on=_IDX, how="inner").sort(_IDX).select(QUARANTINE_COLUMNS)
    failures_out = failures.join(
        raw.select(_IDX, "source_file", "source_row"), on=_IDX, how="left"
    ).select("source_file", "source_row", "column", "check", "message")
    return ValidationOutcome(valid=valid, quarantined=quarantined, failures=failures_out)


def validate_file_to_dir(file: Path, out_dir: Path, pseudonym_key: bytes) -> dict[str, Any]:
    """Read + validate one export; write ``valid.parquet`` and ``quarantine.parquet``.

    Returns the JSON-serialisable summary (with ``file`` and the two output paths).
    Raises :class:`RawFileError` when the file cannot be read.
    """
    file, out_dir = Path(file), Path(out_dir)
    outcome = validate_records(read_raw_export(file), pseudonym_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    valid_path = out_dir / "valid.parquet"
    quarantine_path = out_dir / "quarantine.parquet"
    outcome.valid.write_parquet(valid_path)
    outcome.quarantined.write_parquet(quarantine_path)
    return {
        "file": file.name,
        **outcome.summary(),
        "outputs": {"valid": str(valid_path), "quarantine": str(quarantine_path)},
    }
