"""Monitoring stage: what the service predicted, what clinicians confirmed, drift and live quality.

Sources on disk (written by the service and by the labels endpoint, never by Dagster):

- ``TRIAGE_HOME/predictions/predictions-YYYY-MM-DD.jsonl``: one line per served prediction (format
  in :mod:`serving.prediction_log`), one file per UTC day;
- ``TRIAGE_HOME/labels/*.json``: one confirmed label per file (``prediction_id``, ``diagnosis``,
  ``severity``, optionally ``labelled_at`` or ``received_at``), each written atomically
  (:mod:`serving.labels`).

Assets (group ``monitoring``):

- ``prediction_log`` — one daily partition per UTC day: the day's predictions as a table, with
  malformed lines counted. Days are a ``DailyPartitionsDefinition``: every calendar day is a
  partition whether or not a file exists, and a day without a file materialises as an empty table
  ("the service answered nothing that day" is a fact worth recording; an outage shows as zero).
  Dynamic partitions would need a sensor to register each file and could not tell "no traffic"
  from "not registered yet".
- ``clinician_labels`` — every label file, validated: accepted, rejected (with reasons: malformed
  JSON, missing field, unknown diagnosis code or severity, prediction not in the log) or superseded
  by a later label for the same prediction. Nothing is dropped.
- ``labelled_feedback`` — accepted labels joined with their logged predictions: new training rows
  (the logged inputs + the confirmed diagnosis and severity) and, per model version, the predicted
  top-1 against the truth.
- ``drift_reference`` — built in each training run: a seeded sample of the model's training split
  with the model's own top-1 predictions, stored once under ``reports/drift/reference/<run id>``.
  The deployment manifest records the same run id, so the drift report finds the reference of the
  model that serves without recomputing it.
- ``drift_report`` — Evidently data drift of a recent window of served predictions against the
  serving model's reference; HTML + JSON summary under ``reports/drift``.
- ``live_performance`` — accuracy, macro-F1 and orphan recall per model version on labelled
  feedback, with counts.

The unpartitioned assets read the prediction files through the same reader as the daily
partitions (declared as a dependency for lineage) rather than loading every daily partition through
the IO manager: a label may refer to a prediction of any day, and days never materialised must not
block retraining.

Evidently is imported inside functions only (it takes seconds to import).
"""


import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from diagnosis.artifacts import read_current, read_deployed_manifest
from diagnosis.training.dataset import SPLIT_TRAIN, encode_table
from diagnosis.training.fitting import TrainedModel
from orchestration.resources import AlertsResource, MonitoringPolicy, TriageStorage
from diagnosis.categories import CATEGORY_ORPHAN, category_of
from schemas.clinical import DIAGNOSIS_RE, normalise_severity
from diagnosis.features import VITAL_FEATURES

DRIFT_CHECK = "drift_share"
LIVE_PERFORMANCE_CHECK = "live_performance_floors"

PREDICTION_LOG = dg.AssetKey("prediction_log")
DRIFT_REPORT = dg.AssetKey("drift_report")
DRIFT_REFERENCE = dg.AssetKey("drift_reference")

ALERT_DRIFT = "drift_detected"
ALERT_LIVE_PERFORMANCE = "live_performance_below_floor"

PREDICTION_FILE_RE = re.compile(r"^predictions-(\d{4}-\d{2}-\d{2})\.jsonl$")

# UTC days of the service's prediction log. end_offset=1: today's (still growing) file is a
# partition too.
prediction_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)

PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "prediction_id": pl.Utf8,
    "time": pl.Datetime("us", "UTC"),
    "day": pl.Utf8,
    "model_version": pl.Utf8,
    **{name: pl.Float64 for name in VITAL_FEATURES},
    "sex": pl.Utf8,
    "symptoms": pl.List(pl.Utf8),
    "predicted": pl.Utf8,
    "predicted_probability": pl.Float64,
    "orphan_probability": pl.Float64,
    "predicted_severity": pl.Utf8,
}

LABEL_SCHEMA: dict[str, pl.DataType] = {
    "label_file": pl.Utf8,
    "prediction_id": pl.Utf8,
    "diagnosis": pl.Utf8,
    "severity": pl.Utf8,
    "received_at": pl.Datetime("us", "UTC"),
    "status": pl.Utf8,
    "reasons": pl.List(pl.Utf8),
}
STATUS_ACCEPTED, STATUS_REJECTED, STATUS_SUPERSEDED = "accepted", "rejected", "superseded"


# ------------------------------------------------------------------------------ prediction log
def prediction_file_days(directory: Path) -> list[str]:
    """The UTC days (YYYY-MM-DD) that have a prediction file, oldest first."""
    if not directory.is_dir():
        return []
    days = (PREDICTION_FILE_RE.match(p.name) for p in directory.iterdir() if p.is_file())
    return sorted(m.group(1) for m in days if m)


def _float_or_none(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    return float(value)


def parse_prediction_lines(lines: Iterable[bytes], file_name: str) -> tuple[list[dict], list[str]]:
    """Parse JSON lines of the prediction log. Returns (rows, problems); a problem names the file,
    the line and what is wrong, never the line's content."""
    rows, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            inputs = entry["inputs"]
            differential = entry["differential"]
            top = differential[0] if differential else {}
            when = dt.datetime.fromisoformat(entry["time"])
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            rows.append(
                {
                    "prediction_id": str(entry["prediction_id"]),
                    "time": when.astimezone(dt.timezone.utc),
                    "day": when.astimezone(dt.timezone.utc).date().isoformat(),
                    "model_version": str(entry["model_version"]),
                    **{name: _float_or_none(inputs.get(name)) for name in VITAL_FEATURES},
                    "sex": inputs.get("sex") or "unknown",
                    "symptoms": [str(t) for t in inputs.get("symptoms") or ()],
                    "predicted": top.get("code"),
                    "predicted_probability": _float_or_none(top.get("probability")),
                    "orphan_probability": _float_or_none(entry.get("orphan_probability")),
                    "predicted_severity": entry.get("severity"),
                }
            )
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            kind = "not JSON" if isinstance(exc, json.JSONDecodeError) else f"{type(exc).__name__}"
            problems.append(f"{file_name}:{number}: {kind}")
    return rows, problems


def read_prediction_log(
    directory: Path, days: Sequence[str] | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """Predictions of ``days`` (every day with a file when None) as one table, and the problems.

    A day without a file contributes no rows. The same prediction id appearing twice (a replayed
    file) is kept once.
    """
    wanted = prediction_file_days(directory) if days is None else list(days)
    rows, problems = [], []
    for day in wanted:
        path = directory / f"predictions-{day}.jsonl"
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            day_rows, day_problems = parse_prediction_lines(handle, path.name)
        rows += day_rows
        problems += day_problems
    frame = pl.DataFrame(rows, schema=PREDICTION_SCHEMA)
    return frame.unique("prediction_id", keep="first", maintain_order=True), problems


@dg.asset(
    group_name="monitoring",
    partitions_def=prediction_days,
    kinds={"polars", "file"},
    description=(
        "One UTC day of the service's prediction log (predictions-<day>.jsonl) as a table: "
        "the logged model inputs, the model version, the top-1 diagnosis and severity returned. "
        "A day without a file is an empty table (no predictions served); malformed lines are "
        "counted by file and line, never copied."
    ),
)
def prediction_log(
    context: dg.AssetExecutionContext, storage: TriageStorage
) -> dg.Output[pl.DataFrame]:
    day = context.partition_key
    storage.pull("predictions")
    path = storage.paths.predictions / f"predictions-{day}.jsonl"
    frame, problems = read_prediction_log(storage.paths.predictions, [day])
    by_version = frame.group_by("model_version").len().sort("model_version")
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "file_present": path.is_file(),
            "malformed_lines": len(problems),
            "malformed_sample": dg.MetadataValue.json(problems[:20]),
            "rows_by_model_version": dg.MetadataValue.json(
                dict(zip(by_version["model_version"], by_version["len"]))
            ),
        },
    )


# ------------------------------------------------------------------------------ labels
def label_files(directory: Path) -> list[Path]:
    """Label files in the landing zone: ``*.json``, not hidden (a writer's temporary file)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix == ".json" and not p.name.startswith(".")
    )


def _parse_time(value) -> dt.datetime | None:
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def validate_label_files(paths: Sequence[Path], known_predictions: set[str]) -> pl.DataFrame:
    """One row per label file with its status and every reason it was not accepted.

    A label is accepted when it is a JSON object with a ``prediction_id`` present in the prediction
    log, a well-formed ``diagnosis`` code and a known ``severity`` (English or Spanish). When several
    accepted labels name the same prediction, the latest (``received_at`` or ``labelled_at``, else
    the file time)
    wins and the others are marked superseded.
    """
    rows = []
    for path in paths:
        reasons: list[str] = []
        prediction_id = diagnosis = severity = None
        received_at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
        try:
            body = json.loads(path.read_bytes())
        except (ValueError, OSError):
            body = None
            reasons.append("file: not a JSON document")
        if body is not None and not isinstance(body, dict):
            reasons.append("file: not a JSON object")
            body = None
        if body is not None:
            raw_id = body.get("prediction_id")
            if not isinstance(raw_id, str) or not raw_id.strip():
                reasons.append("prediction_id: missing")
            else:
                prediction_id = raw_id.strip()
                if prediction_id not in known_predictions:
                    reasons.append("prediction_id: not in the prediction log")
            raw_diagnosis = body.get("diagnosis")
            if not isinstance(raw_diagnosis, str) or not raw_diagnosis.strip():
                reasons.append("diagnosis: missing")
            elif not DIAGNOSIS_RE.match(raw_diagnosis.strip().upper()):
                reasons.append("diagnosis: not NONE, ICD-10, ORPHA:n or OMIM:n")
            else:
                diagnosis = raw_diagnosis.strip().upper()
            raw_severity = body.get("severity")
            severity = normalise_severity(raw_severity) if isinstance(raw_severity, str) else None
            if severity is None:
                reasons.append(
                    "severity: missing" if raw_severity in (None, "") else "severity: unknown label"
                )
            stamp_field = next(
                (f for f in ("received_at", "labelled_at") if body.get(f) is not None), None
            )
            if stamp_field is not None:
                try:
                    received_at = _parse_time(body[stamp_field]).astimezone(dt.timezone.utc)
                except (ValueError, TypeError):
                    reasons.append(f"{stamp_field}: not an ISO date-time")
        rows.append(
            {
                "label_file": path.name,
                "prediction_id": prediction_id,
                "diagnosis": diagnosis,
                "severity": severity,
                "received_at": received_at,
                "status": STATUS_REJECTED if reasons else STATUS_ACCEPTED,
                "reasons": reasons,
            }
        )
    accepted = sorted(
        (r for r in rows if r["status"] == STATUS_ACCEPTED),
        key=lambda r: (r["received_at"], r["label_file"]),
    )
    latest = {r["prediction_id"]: r["label_file"] for r in accepted}
    for row in accepted:
        if latest[row["prediction_id"]] != row["label_file"]:
            row["status"] = STATUS_SUPERSEDED
            row["reasons"] = [f"superseded by {latest[row['prediction_id']]}"]
    frame = pl.DataFrame(rows, schema=LABEL_SCHEMA)
    return frame


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "file"},
    deps=[PREDICTION_LOG],
    description=(
        "Every clinician label file in the labels landing zone, validated: accepted, rejected "
        "(with every reason: not JSON, missing field, unknown diagnosis code or severity, "
        "prediction not in the log) or superseded by a later label for the same prediction. "
        "No label is dropped."
    ),
)
def clinician_labels(storage: TriageStorage) -> dg.Output[pl.DataFrame]:
    storage.pull("predictions")
    storage.pull("labels")
    predictions, _ = read_prediction_log(storage.paths.predictions)
    labels = validate_label_files(
        label_files(storage.paths.labels), set(predictions["prediction_id"].to_list())
    )
    by_status = Counter(labels["status"].to_list())
    by_reason = Counter(r for reasons in labels["reasons"].to_list() for r in reasons)
    return dg.Output(
        labels,
        metadata={
            "dagster/row_count": labels.height,
            "accepted": by_status.get(STATUS_ACCEPTED, 0),
            "rejected": by_status.get(STATUS_REJECTED, 0),
            "superseded": by_status.get(STATUS_SUPERSEDED, 0),
            "counts_by_reason": dg.MetadataValue.json(dict(sorted(by_reason.items()))),
        },
    )


# ------------------------------------------------------------------------------ feedback
def join_feedback(labels: pl.DataFrame, predictions: pl.DataFrame) -> pl.DataFrame:
    """Accepted labels with the inputs and answer of their logged prediction."""
    accepted = labels.filter(pl.col("status") == STATUS_ACCEPTED).select(
        "prediction_id", "diagnosis", "severity", "received_at", "label_file"
    )
    joined = accepted.join(predictions.drop("day"), on="prediction_id", how="inner")
    return joined.with_columns(
        (pl.col("predicted") == pl.col("diagnosis")).fill_null(False).alias("correct")
    ).sort("time")


def version_accuracy(feedback: pl.DataFrame) -> dict[str, dict]:
    summary = feedback.group_by("model_version").agg(
        pl.len().alias("labelled"), pl.col("correct").sum().alias("correct")
    )
    return {
        version: {"labelled": n, "top1_correct": c, "top1_accuracy": round(c / n, 4)}
        for version, n, c in summary.sort("model_version").iter_rows()
    }


@dg.asset(
    group_name="monitoring",
    kinds={"polars"},
    deps=[PREDICTION_LOG],
    description=(
        "Accepted clinician labels joined with their logged predictions: each row holds the "
        "model inputs the service received (vitals, sex, symptoms), the confirmed diagnosis and "
        "severity, and what the model version predicted (top-1). These rows join the training "
        "table, marked as clinician labels."
    ),
)
def labelled_feedback(
    storage: TriageStorage, clinician_labels: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    storage.pull("predictions")
    predictions, _ = read_prediction_log(storage.paths.predictions)
    feedback = join_feedback(clinician_labels, predictions)
    return dg.Output(
        feedback,
        metadata={
            "dagster/row_count": feedback.height,
            "by_model_version": dg.MetadataValue.json(version_accuracy(feedback)),
            "diagnoses": feedback["diagnosis"].n_unique(),
        },
    )


# ------------------------------------------------------------------------------ drift
def drift_reference_path(reports: Path, run_id: str) -> Path:
    return reports / "drift" / "reference" / f"{run_id}.parquet"


def build_reference(
    train: pl.DataFrame, model: TrainedModel, max_rows: int, seed: int
) -> pl.DataFrame:
    """A seeded sample of the training split (vitals, sex, symptoms) with the model's top-1."""
    sample = train if train.height <= max_rows else train.sample(max_rows, seed=seed)
    probabilities, _ = model.predict_proba(encode_table(sample, model.spec))
    predicted = [model.classes[i] for i in probabilities.argmax(axis=1)]
    return sample.select(*VITAL_FEATURES, "sex", "symptoms").with_columns(
        pl.Series("predicted", predicted, dtype=pl.Utf8)
    )


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "parquet"},
    description=(
        "The drift reference of the model trained in this run: a seeded sample of its training "
        "split (vitals, sex, symptoms) with the model's own top-1 predictions, stored once as "
        "reports/drift/reference/<run id>.parquet. The deployment manifest records the same run "
        "id, so each drift report only computes the current window."
    ),
)
def drift_reference(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    training_table: pl.DataFrame,
    diagnosis_model: TrainedModel,
) -> dg.MaterializeResult:
    train = training_table.filter(pl.col("split") == SPLIT_TRAIN)
    reference = build_reference(train, diagnosis_model, monitoring.drift_max_rows, seed=7)
    path = drift_reference_path(storage.paths.reports, context.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    reference.write_parquet(tmp)
    tmp.replace(path)
    storage.push("reports", [path.relative_to(storage.paths.reports).as_posix()])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": reference.height,
            "training_rows": train.height,
            "path": dg.MetadataValue.path(str(path)),
            "training_run_id": context.run_id,
        }
    )


def top_symptoms(symptom_lists: Sequence[Sequence[str] | None], n: int) -> list[str]:
    counts = Counter(term for terms in symptom_lists for term in (terms or ()))
    return [term for term, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def symptom_column(term: str) -> str:
    return f"symptom {term}"


def drift_features(frame: pl.DataFrame, symptoms: Sequence[str], with_predicted: bool):
    """The drift features as pandas: vitals (numerical); sex, one present/absent indicator per
    tracked symptom and the predicted class (categorical)."""
    columns = [pl.col(name).cast(pl.Float64) for name in VITAL_FEATURES]
    columns.append(pl.col("sex").fill_null("unknown"))
    columns += [
        pl.col("symptoms").list.contains(term).fill_null(False).cast(pl.Int8).alias(
            symptom_column(term)
        )
        for term in symptoms
    ]
    if with_predicted:
        columns.append(pl.col("predicted").fill_null("none"))
    return frame.select(columns).to_pandas()


def _feature_kind(column: str) -> str:
    if column in VITAL_FEATURES:
        return "vital"
    if column.startswith("symptom "):
        return "symptom_prevalence"
    return "predicted_class" if column == "predicted" else "categorical"


def drift_summary(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    html_path: Path,
    *,
    tracked_symptoms: int,
    with_predicted: bool,
) -> dict:
    """Run Evidently's DataDriftPreset; save the HTML report; return a JSON-ready summary with
    each feature's method, threshold, score and verdict.

    Evidently picks the method per column from the data: up to 1,000 reference rows K-S (vitals) or
    chi-square (categories) p-values, drifting below the threshold; above, Wasserstein distance
    (normed) or Jensen-Shannon distance, drifting at or above it. Evidently is imported here: it
    takes seconds to load.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    symptoms = top_symptoms(reference["symptoms"].to_list(), tracked_symptoms)
    ref = drift_features(reference, symptoms, with_predicted)
    cur = drift_features(current, symptoms, with_predicted)
    numerical = list(VITAL_FEATURES)
    categorical = [c for c in ref.columns if c not in numerical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    per_column: dict[str, dict] = {}
    share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config") or {}
        if "column" in config and "method" in config:
            score = metric["value"]
            per_column[config["column"]] = {
                "kind": _feature_kind(config["column"]),
                "method": config["method"],
                "threshold": config.get("threshold"),
                "score": None if score is None else float(score),
            }
        elif isinstance(metric.get("value"), dict) and "share" in metric["value"]:
            share = float(metric["value"]["share"])
    for column, entry in per_column.items():
        score, threshold, method = entry["score"], entry["threshold"], entry["method"] or ""
        if score is None or threshold is None or np.isnan(score):
            entry["drifted"] = False
        elif "p_value" in method:  # p-values drift when small; distances when large
            entry["drifted"] = bool(score < threshold)
        else:
            entry["drifted"] = bool(score >= threshold)
        if entry["kind"] == "symptom_prevalence":
            entry["reference_prevalence"] = round(float(ref[column].mean()), 4)
            entry["current_prevalence"] = round(float(cur[column].mean()), 4)
        elif entry["kind"] == "vital":
            entry["reference_mean"] = _round(ref[column].mean())
            entry["current_mean"] = _round(cur[column].mean())
    drifted = sorted(c for c, e in per_column.items() if e["drifted"])
    if share is None and per_column:
        share = len(drifted) / len(per_column)
    return {
        "reference_rows": reference.height,
        "current_rows": current.height,
        "drift_share": share,
        "drifted_columns": drifted,
        "tracked_symptoms": symptoms,
        "columns": per_column,
    }


def _round(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 3)


def current_window(
    predictions_dir: Path, window_days: int
) -> tuple[pl.DataFrame, list[str], list[str]]:
    """The last ``window_days`` days of the prediction log, ending with the newest day that has a
    file (so a quiet day does not empty the window). Returns (frame, days, problems)."""
    days = prediction_file_days(predictions_dir)
    if not days:
        return pl.DataFrame(schema=PREDICTION_SCHEMA), [], []
    end = dt.date.fromisoformat(days[-1])
    window = [(end - dt.timedelta(days=i)).isoformat() for i in range(window_days - 1, -1, -1)]
    frame, problems = read_prediction_log(predictions_dir, window)
    return frame, window, problems


def serving_reference(
    context: dg.AssetExecutionContext, storage: TriageStorage
) -> tuple[Path | None, dict]:
    """The stored reference of the model that serves now (current.json -> manifest -> the training
    run id); else the newest stored reference, with where it came from."""
    deployments = storage.paths.deployments
    storage.pull_deployment()
    pointer = read_current(deployments)
    if pointer is not None:
        manifest = read_deployed_manifest(deployments, pointer.version)
        path = drift_reference_path(storage.paths.reports, str(manifest.dagster_run_id))
        storage.pull("reports", under=path.relative_to(storage.paths.reports).as_posix())
        if path.is_file():
            return path, {"model_version": pointer.version, "reference": "serving model"}
    event = context.instance.get_latest_materialization_event(DRIFT_REFERENCE)
    if event is not None and event.asset_materialization is not None:
        path = Path(event.asset_materialization.metadata["path"].value)
        if path.is_file():
            return path, {
                "model_version": pointer.version if pointer else None,
                "reference": "latest trained model (no stored reference for the serving model)",
            }
    return None, {"model_version": pointer.version if pointer else None, "reference": None}


@dg.asset(
    group_name="monitoring",
    kinds={"evidently"},
    deps=[PREDICTION_LOG, DRIFT_REFERENCE],
    ins={"validated_patient_records": dg.AssetIn()},
    description=(
        "Evidently data-drift report of the recent window of served predictions (the last "
        "drift_window_days of the prediction log) against the training data of the model that "
        "serves: each vital, sex, the prevalence of the most frequent symptoms and the predicted "
        "class, with the method, threshold and score of each, and the share of drifted features. "
        "Before any prediction is logged, the newest weekly export stands in for the window. "
        "HTML report and JSON summary under reports/drift."
    ),
)
def drift_report(
    context: dg.AssetExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    validated_patient_records: dict[str, pl.DataFrame],
) -> dg.Output[dict]:
    reference_path, reference_info = serving_reference(context, storage)
    if reference_path is None:
        raise dg.Failure(
            "no drift reference stored yet: materialise drift_reference (a training run) first"
        )
    reference = pl.read_parquet(reference_path)
    storage.pull("predictions")
    current, window, problems = current_window(storage.paths.predictions, monitoring.drift_window_days)
    with_predicted = current.height > 0
    if with_predicted:
        source = f"prediction log {window[0]}..{window[-1]}"
        label = f"predictions_{window[-1]}"
    else:
        week = max(validated_patient_records)
        current = validated_patient_records[week]
        source = f"weekly export {week} (no predictions logged yet)"
        label = week
    if current.height > monitoring.drift_max_rows:
        current = current.sample(monitoring.drift_max_rows, seed=7)
    html_path = storage.paths.reports / "drift" / f"drift_{label}.html"
    summary = drift_summary(
        reference,
        current,
        html_path,
        tracked_symptoms=monitoring.drift_top_symptoms,
        with_predicted=with_predicted,
    )
    summary.update(
        {
            "current_source": source,
            "window_days": window if with_predicted else [],
            "malformed_log_lines": len(problems),
            "reference_path": str(reference_path),
            **reference_info,
            "drift_share_threshold": monitoring.drift_share_threshold,
            "report_html": str(html_path),
        }
    )
    if not with_predicted:
        summary["week"] = label
    json_path = html_path.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2))
    storage.push("reports", [p.relative_to(storage.paths.reports).as_posix()
                             for p in (html_path, json_path)])
    return dg.Output(
        summary,
        metadata={
            "current_source": source,
            "model_version": reference_info["model_version"],
            "reference_rows": summary["reference_rows"],
            "current_rows": summary["current_rows"],
            "drift_share": summary["drift_share"],
            "drift_share_threshold": monitoring.drift_share_threshold,
            "drifted_columns": dg.MetadataValue.json(summary["drifted_columns"]),
            "columns": dg.MetadataValue.json(summary["columns"]),
            "report_html": dg.MetadataValue.path(str(html_path)),
            "summary_json": dg.MetadataValue.path(str(json_path)),
        },
    )


@dg.asset_check(
    asset=drift_report,
    name=DRIFT_CHECK,
    description="Warns (and alerts) when the share of drifted features passes the configured "
    "threshold; the drift sensor then requests a retraining run.",
)
def drift_share_check(
    context: dg.AssetCheckExecutionContext,
    monitoring: MonitoringPolicy,
    alerts: AlertsResource,
    drift_report: dict,
) -> dg.AssetCheckResult:
    share = drift_report["drift_share"] or 0.0
    passed = share <= monitoring.drift_share_threshold
    description = (
        f"drift share {share:.2f} <= {monitoring.drift_share_threshold}"
        if passed
        else f"drift share {share:.2f} > {monitoring.drift_share_threshold}: "
        + ", ".join(drift_report["drifted_columns"])
    )
    alerted = False
    if not passed:
        alerted = alerts.send(
            ALERT_DRIFT,
            description,
            {
                "model_version": drift_report.get("model_version"),
                "current_source": drift_report.get("current_source"),
                "drifted_columns": drift_report["drifted_columns"],
                "report_html": drift_report.get("report_html"),
            },
            log=context.log,
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "drift_share": share,
            "threshold": monitoring.drift_share_threshold,
            "drifted_columns": dg.MetadataValue.json(drift_report["drifted_columns"]),
            "alert_delivered": alerted,
        },
    )


# ------------------------------------------------------------------------------ performance
def live_metrics(feedback: pl.DataFrame) -> dict[str, dict]:
    """Per model version, on labelled feedback: counts, top-1 accuracy, macro-F1 over the
    confirmed diagnoses, orphan recall (orphan truths predicted exactly) and severity accuracy."""
    from sklearn.metrics import f1_score

    result: dict[str, dict] = {}
    for version in sorted(feedback["model_version"].unique().to_list()):
        rows = feedback.filter(pl.col("model_version") == version)
        truth = rows["diagnosis"].to_list()
        predicted = [p or "" for p in rows["predicted"].to_list()]
        orphan = [category_of(c) == CATEGORY_ORPHAN for c in truth]
        orphan_hits = [p == t for p, t, o in zip(predicted, truth, orphan) if o]
        result[version] = {
            "labelled": rows.height,
            "accuracy": round(float(np.mean([p == t for p, t in zip(predicted, truth)])), 4),
            "macro_f1": round(
                float(
                    f1_score(
                        truth, predicted, labels=sorted(set(truth)), average="macro",
                        zero_division=0,
                    )
                ),
                4,
            ),
            "orphan_labelled": len(orphan_hits),
            "orphan_recall": round(float(np.mean(orphan_hits)), 4) if orphan_hits else None,
            "severity_accuracy": round(
                float((rows["predicted_severity"] == rows["severity"]).fill_null(False).mean()), 4
            ),
        }
    return result


@dg.asset(
    group_name="monitoring",
    kinds={"scikitlearn"},
    description=(
        "Live performance per model version on clinician-confirmed labels: counts, top-1 "
        "accuracy, macro-F1 over the confirmed diagnoses, orphan recall and severity accuracy."
    ),
)
def live_performance(labelled_feedback: pl.DataFrame) -> dg.Output[dict]:
    metrics = live_metrics(labelled_feedback)
    return dg.Output(
        metrics,
        metadata={
            "labelled": labelled_feedback.height,
            "model_versions": len(metrics),
            "by_model_version": dg.MetadataValue.json(metrics),
        },
    )


def performance_failures(metrics: dict, policy: MonitoringPolicy) -> list[str]:
    failures = []
    if metrics["accuracy"] < policy.min_live_accuracy:
        failures.append(f"accuracy {metrics['accuracy']:.3f} < {policy.min_live_accuracy}")
    if metrics["macro_f1"] < policy.min_live_macro_f1:
        failures.append(f"macro_f1 {metrics['macro_f1']:.3f} < {policy.min_live_macro_f1}")
    recall = metrics["orphan_recall"]
    if recall is not None and recall < policy.min_live_orphan_recall:
        failures.append(f"orphan_recall {recall:.3f} < {policy.min_live_orphan_recall}")
    return failures


@dg.asset_check(
    asset=live_performance,
    name=LIVE_PERFORMANCE_CHECK,
    description="Warns (and alerts) when the serving model's live accuracy, macro-F1 or orphan "
    "recall on labelled feedback falls below the configured floors, once it has enough labels.",
)
def live_performance_check(
    context: dg.AssetCheckExecutionContext,
    storage: TriageStorage,
    monitoring: MonitoringPolicy,
    alerts: AlertsResource,
    live_performance: dict,
) -> dg.AssetCheckResult:
    storage.pull_deployment()
    pointer = read_current(storage.paths.deployments)
    version = pointer.version if pointer else None
    metrics = live_performance.get(version) if version else None
    if metrics is None or metrics["labelled"] < monitoring.min_labels_for_performance:
        n = metrics["labelled"] if metrics else 0
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{n} labels for serving model {version}; "
            f"{monitoring.min_labels_for_performance} needed to judge",
            metadata={"model_version": str(version), "labelled": n},
        )
    failures = performance_failures(metrics, monitoring)
    alerted = False
    if failures:
        alerted = alerts.send(
            ALERT_LIVE_PERFORMANCE,
            f"model {version}: " + "; ".join(failures),
            {"model_version": version, "metrics": metrics},
            log=context.log,
        )
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(failures) or "all floors met",
        metadata={
            "model_version": version,
            **{k: v for k, v in metrics.items() if v is not None},
            "alert_delivered": alerted,
        },
    )
