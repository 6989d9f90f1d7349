"""Ingestion assets: the weekly-export partitions and each export read as text, exactly as it
arrived (parsing: :func:`schemas.validation.read_raw_export`).

A week becomes a partition only once its file was read: :func:`admit_exports` (called by the
``weekly_export_sensor`` and by ``triage pipeline`` before they register partitions) reads every
new export; a file that cannot be read at all (random bytes, empty, no header) is refused whole:
moved to ``landing/refused/<name>`` with ``<name>.reason.json`` beside it, reported as a failed
``export_readable`` check of ``raw_patient_records`` and as an alert, and the other weeks go on.
"""

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from diagnosis.files import atomic_write, file_sha256, move_private
from orchestration.resources import TriageStorage
from schemas.validation import RawFileError, read_raw_export

# One partition per weekly export, keyed by the Monday that starts the week (YYYY-MM-DD). The
# partitions are the files that actually arrived and could be read: a sensor (or the pipeline
# command) registers a key when records_<monday>.txt lands and reads as an export.
weekly_exports = dg.DynamicPartitionsDefinition(name="weekly_exports")

EXPORT_PREFIX = "records_"
EXPORT_SUFFIXES = (".txt", ".csv", ".tsv")
REFUSED_FOLDER = "refused"
REASON_SUFFIX = ".reason.json"
EXPORT_READABLE_CHECK = "export_readable"
RAW_RECORDS = dg.AssetKey("raw_patient_records")
ALERT_EXPORT_REFUSED = "weekly_export_refused"


def partition_key_for(file_name: str) -> str | None:
    """``records_2026-01-05.txt`` -> ``2026-01-05``; None for files that are not weekly exports."""
    for suffix in EXPORT_SUFFIXES:
        if file_name.startswith(EXPORT_PREFIX) and file_name.endswith(suffix):
            key = file_name[len(EXPORT_PREFIX) : -len(suffix)]
            return key if len(key) == 10 and key[4] == "-" and key[7] == "-" else None
    return None


def landing_partition_keys(storage: TriageStorage) -> list[str]:
    """Weeks with an export in the landing zone (the S3 area's object names when configured);
    files in ``landing/refused/`` are not exports."""
    remote = storage.remote
    if remote is not None:
        names = [name for name in remote.list("landing") if "/" not in name]
    else:
        landing = storage.paths.landing
        names = [p.name for p in landing.iterdir() if p.is_file()] if landing.is_dir() else []
    return sorted({k for k in map(partition_key_for, names) if k})


def find_export(storage: TriageStorage, partition_key: str):
    storage.pull("landing", under=f"{EXPORT_PREFIX}{partition_key}")
    for suffix in EXPORT_SUFFIXES:
        path = storage.paths.landing / f"{EXPORT_PREFIX}{partition_key}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(
        f"no export for week {partition_key} in {storage.paths.landing} "
        f"(expected {EXPORT_PREFIX}{partition_key}.txt)"
    )


# ------------------------------------------------------------------------------ admission
@dataclass(frozen=True)
class RefusedExport:
    """A weekly export refused whole, where it went and why."""

    partition_key: str
    file_name: str
    reason: str
    moved_to: str
    sha256: str

    def summary(self) -> str:
        """One line for an operator: what, why, where it is, what to do."""
        return (
            f"REFUSED week {self.partition_key}: {self.reason}; the file was moved to "
            f"{self.moved_to} (reason beside it) and the other weeks went on; to recover, export "
            f"the week again as {self.file_name} into landing/ and rerun `triage pipeline`"
        )

    def check_evaluation(self) -> dg.AssetCheckEvaluation:
        """The failed ``export_readable`` check this refusal is reported as (runless)."""
        return dg.AssetCheckEvaluation(
            asset_key=RAW_RECORDS,
            check_name=EXPORT_READABLE_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{self.file_name} refused: {self.reason}",
            metadata={
                "week": self.partition_key,
                "file": self.file_name,
                "reason": self.reason,
                "moved_to": self.moved_to,
                "file_sha256": self.sha256,
            },
        )


def unreadable_reason(path: Path) -> str | None:
    """None when ``path`` reads as a weekly export, else why not (one line, no file content)."""
    try:
        read_raw_export(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read refuses the file, never the run
        if isinstance(exc, RawFileError):
            return str(exc).splitlines()[0][:300]
        return f"{path.name}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


def refuse_export(storage: TriageStorage, path: Path, reason: str) -> RefusedExport:
    """Quarantine a whole export: move it to ``landing/refused/`` (0600, folder 0700) with a
    ``.reason.json`` beside it; with S3 the same objects are written there and the original
    object is deleted, so no process registers the week again."""
    key = partition_key_for(path.name) or path.name
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    refused_dir = storage.paths.landing / REFUSED_FOLDER
    target = refused_dir / path.name
    record = {
        "file": path.name,
        "week": key,
        "reason": reason,
        "file_sha256": digest,
        "bytes": len(data),
        "refused_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recovery": f"export the week again as {path.name} into landing/ and rerun the pipeline",
    }
    reason_bytes = json.dumps(record, indent=2).encode()
    move_private(path, target)
    atomic_write(refused_dir / f"{path.name}{REASON_SUFFIX}", reason_bytes)
    remote = storage.remote
    if remote is not None:
        remote.put_bytes("landing", f"{REFUSED_FOLDER}/{path.name}", data)
        remote.put_bytes("landing", f"{REFUSED_FOLDER}/{path.name}{REASON_SUFFIX}", reason_bytes)
        remote.client.delete_object(
            Bucket=remote.location.bucket, Key=remote.key("landing", path.name)
        )
    moved_to = f"{storage.describe('landing')}/{REFUSED_FOLDER}/{path.name}"
    return RefusedExport(key, path.name, reason, moved_to, digest)


def admit_exports(
    storage: TriageStorage, keys: list[str]
) -> tuple[dict[str, str], list[RefusedExport]]:
    """Read the exports of ``keys``; ({key: file SHA-256} of the files that read, refusals).
    Refused files are moved aside (:func:`refuse_export`), so they never become partitions."""
    admitted: dict[str, str] = {}
    refused: list[RefusedExport] = []
    for key in keys:
        try:
            path = find_export(storage, key)
        except FileNotFoundError:  # removed between listing and reading
            continue
        reason = unreadable_reason(path)
        if reason is None:
            admitted[key] = file_sha256(path)
        else:
            refused.append(refuse_export(storage, path, reason))
    return admitted, refused


# ------------------------------------------------------------------------------ asset
@dg.asset(
    group_name="ingestion",
    partitions_def=weekly_exports,
    kinds={"polars", "file"},
    check_specs=[
        dg.AssetCheckSpec(
            EXPORT_READABLE_CHECK,
            asset=RAW_RECORDS,
            description=(
                "The weekly export reads as an export (decodable text, a header naming the "
                "required columns). A refused file is reported here as a failure, with its "
                "reason and where it was moved (landing/refused/)."
            ),
        )
    ],
    description=(
        "One weekly export from the landing zone, every value kept as the original text, with "
        "source_file and source_row (1-based data row) so any record can be traced to its file."
    ),
)
def raw_patient_records(context: dg.AssetExecutionContext, storage: TriageStorage):
    path = find_export(storage, context.partition_key)
    digest = file_sha256(path)
    frame = read_raw_export(path)
    yield dg.Output(
        frame,
        data_version=dg.DataVersion(digest[:16]),
        metadata={
            "source_file": path.name,
            "file_sha256": digest,
            "dagster/row_count": frame.height,
        },
    )
    yield dg.AssetCheckResult(
        check_name=EXPORT_READABLE_CHECK,
        asset_key=RAW_RECORDS,
        passed=True,
        metadata={"file": path.name, "week": context.partition_key},
    )
