"""Monitoring logic (no Dagster): the service's prediction log and the clinicians' label files
decoded with their contracts (:class:`schemas.contracts.PredictionLogLine`,
:class:`schemas.contracts.LabelRecord`), labelled feedback, the drift reference and Evidently drift
summary, and live performance per model version. The assets in :mod:`assets.monitoring`
orchestrate these.

Evidently is imported inside :func:`drift_summary` only (it takes seconds to import).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl

from diagnosis.categories import CATEGORY_ORPHAN, category_of
from diagnosis.features import VITAL_FEATURES
from diagnosis.training.dataset import encode_table
from diagnosis.training.fitting import TrainedModel
from schemas.clinical import DIAGNOSIS_RE, normalise_severity
from schemas.contracts import LabelRecord, PredictionLogLine
from schemas.layout import PREDICTION_LOG_RE, prediction_log_file

_LOG_LINE = msgspec.json.Decoder(PredictionLogLine)
_LABEL = msgspec.json.Decoder(LabelRecord)
_NOT_JSON = object()


def _read_label(path: Path) -> Any:
    """The label file as a dict: decoded as a LabelRecord when it meets the contract, else as
    plain JSON (checked field by field by the caller); ``_NOT_JSON`` when it is not JSON."""
    try:
        content = path.read_bytes()
    except OSError:
        return _NOT_JSON
    try:
        return msgspec.structs.asdict(_LABEL.decode(content))
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        return _NOT_JSON
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return _NOT_JSON


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
    "confirmed_by": pl.Utf8,
    "revisions": pl.Int64,
    "status": pl.Utf8,
    "reasons": pl.List(pl.Utf8),
}
STATUS_ACCEPTED, STATUS_REJECTED, STATUS_SUPERSEDED = "accepted", "rejected", "superseded"


def prediction_file_days(directory: Path) -> list[str]:
    """The UTC days (YYYY-MM-DD) that have a prediction file, oldest first."""
    if not directory.is_dir():
        return []
    days = (PREDICTION_LOG_RE.match(p.name) for p in directory.iterdir() if p.is_file())
    return sorted(m.group(1) for m in days if m)


def parse_prediction_lines(lines: Iterable[bytes], file_name: str) -> tuple[list[dict], list[str]]:
    """Decode lines of the prediction log as :class:`schemas.contracts.PredictionLogLine`.
    Returns (rows, problems); a problem names the file, the line and what is wrong (msgspec names
    the field and the expected type), never the line's content."""
    rows, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = _LOG_LINE.decode(line)
            when = dt.datetime.fromisoformat(entry.time)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
            problems.append(f"{file_name}:{number}: not a prediction log line ({exc})")
            continue
        except msgspec.DecodeError:
            problems.append(f"{file_name}:{number}: not JSON")
            continue
        except ValueError:
            problems.append(f"{file_name}:{number}: time is not an ISO date-time")
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        when = when.astimezone(dt.UTC)
        inputs = entry.inputs
        top = entry.differential[0] if entry.differential else None
        rows.append(
            {
                "prediction_id": entry.prediction_id,
                "time": when,
                "day": when.date().isoformat(),
                "model_version": entry.model_version,
                **{name: getattr(inputs, name) for name in VITAL_FEATURES},
                "sex": inputs.sex or "unknown",
                "symptoms": list(inputs.symptoms),
                "predicted": top.code if top else None,
                "predicted_probability": top.probability if top else None,
                "orphan_probability": entry.orphan_probability,
                "predicted_severity": entry.severity,
            }
        )
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
        path = prediction_log_file(directory, day)
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            day_rows, day_problems = parse_prediction_lines(handle, path.name)
        rows += day_rows
        problems += day_problems
    frame = pl.DataFrame(rows, schema=PREDICTION_SCHEMA)
    return frame.unique("prediction_id", keep="first", maintain_order=True), problems


REVISIONS_FOLDER = "revisions"  # serving.labels.REVISIONS_DIR (the API's label history)


def label_files(directory: Path) -> list[Path]:
    """Label files in the landing zone: ``*.json`` at any depth (a revision may be kept in a
    folder of its prediction), not hidden (a writer's temporary file)."""
    if not directory.is_dir():
        return []
    found = sorted(
        p
        for p in directory.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    # The API keeps every revision as revisions/<prediction_id>.<n>.json and a copy of the latest
    # as <prediction_id>.json: a prediction with revisions is read from them only (counted once).
    revised = {p.name.split(".", 1)[0] for p in found if p.parent.name == REVISIONS_FOLDER}
    return [p for p in found if not (p.parent == directory and p.stem in revised)]


def _parse_time(value) -> dt.datetime | None:
    when = dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _label_name(path: Path) -> str:
    """The label's name in the table: the file name, with its folder below the labels area."""
    return path.name if path.parent.name == "labels" else f"{path.parent.name}/{path.name}"


def validate_label_files(
    paths: Sequence[Path],
    known_predictions: set[str],
    catalogue_codes: set[str] | None = None,
    max_labels_per_token_per_day: int | None = None,
) -> pl.DataFrame:
    """One row per label file with its status and every reason it was not accepted.

    A file is decoded as :class:`schemas.contracts.LabelRecord` (what the API writes); a file that
    does not meet that contract (written by another tool) is checked field by field, so every
    reason is reported. A label is accepted when it is a JSON object with a ``prediction_id``
    present in the prediction log, a well-formed ``diagnosis`` code that is in
    ``catalogue_codes`` (the disease catalogue in use, when given) and a known ``severity``
    (English or Spanish). Labels are quarantined (status rejected, with the reason), never
    dropped.

    Revisions: every label for the same prediction is a record; the latest (``received_at`` or
    ``labelled_at``, else the file time) wins, the others are superseded; ``revisions`` counts
    the valid records of the prediction. Cap: a token (``confirmed_by``) that confirmed more than
    ``max_labels_per_token_per_day`` valid labels in one UTC day has the later ones quarantined
    with the reason, before any of them reaches training.
    """
    rows = []
    for path in paths:
        reasons: list[str] = []
        prediction_id = diagnosis = severity = confirmed_by = None
        received_at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        body = _read_label(path)
        if body is _NOT_JSON:
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
            elif catalogue_codes is not None and (
                raw_diagnosis.strip().upper() not in catalogue_codes
            ):
                reasons.append(
                    f"diagnosis: {raw_diagnosis.strip().upper()[:40]} is not in the disease "
                    "catalogue in use"
                )
            else:
                diagnosis = raw_diagnosis.strip().upper()
            raw_severity = body.get("severity")
            severity = normalise_severity(raw_severity) if isinstance(raw_severity, str) else None
            if severity is None:
                reasons.append(
                    "severity: missing" if raw_severity in (None, "") else "severity: unknown label"
                )
            raw_token = body.get("confirmed_by")
            if isinstance(raw_token, str) and raw_token.strip():
                confirmed_by = raw_token.strip()
            stamp_field = next(
                (f for f in ("received_at", "labelled_at") if body.get(f) is not None), None
            )
            if stamp_field is not None:
                try:
                    received_at = _parse_time(body[stamp_field]).astimezone(dt.UTC)
                except (ValueError, TypeError):
                    reasons.append(f"{stamp_field}: not an ISO date-time")
        rows.append(
            {
                "label_file": _label_name(path),
                "prediction_id": prediction_id,
                "diagnosis": diagnosis,
                "severity": severity,
                "received_at": received_at,
                "confirmed_by": confirmed_by,
                "revisions": None,
                "status": STATUS_REJECTED if reasons else STATUS_ACCEPTED,
                "reasons": reasons,
            }
        )
    accepted = sorted(
        (r for r in rows if r["status"] == STATUS_ACCEPTED),
        key=lambda r: (r["received_at"], r["label_file"]),
    )
    if max_labels_per_token_per_day is not None:
        per_token_day: Counter = Counter()
        for row in accepted:
            if row["confirmed_by"] is None:
                continue
            day = row["received_at"].date().isoformat()
            per_token_day[(row["confirmed_by"], day)] += 1
            if per_token_day[(row["confirmed_by"], day)] > max_labels_per_token_per_day:
                row["status"] = STATUS_REJECTED
                row["reasons"] = [
                    f"cap: {row['confirmed_by']} confirmed more than "
                    f"{max_labels_per_token_per_day} labels on {day}"
                ]
        accepted = [r for r in accepted if r["status"] == STATUS_ACCEPTED]
    revisions = Counter(r["prediction_id"] for r in accepted)
    latest = {r["prediction_id"]: r["label_file"] for r in accepted}
    for row in accepted:
        row["revisions"] = revisions[row["prediction_id"]]
        if latest[row["prediction_id"]] != row["label_file"]:
            row["status"] = STATUS_SUPERSEDED
            row["reasons"] = [f"superseded by {latest[row['prediction_id']]}"]
    frame = pl.DataFrame(rows, schema=LABEL_SCHEMA)
    return frame


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
        pl.col("symptoms")
        .list.contains(term)
        .fill_null(False)
        .cast(pl.Int8)
        .alias(symptom_column(term))
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
    drift_share: float = 0.5,
) -> dict:
    """Run Evidently's DataDriftPreset with the policy's ``drift_share`` and its tests; save the
    HTML report; return a JSON-ready summary with each feature's method, threshold, score and
    Evidently's own verdict, and the dataset verdict (``dataset_drift``: Evidently's test "share
    of drifted columns less than ``drift_share``" failed).

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
    snapshot = Report([DataDriftPreset(drift_share=drift_share)], include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    result = snapshot.dict()
    per_column: dict[str, dict] = {}
    share = None
    for metric in result["metrics"]:
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
    verdicts, dataset_test = evidently_verdicts(result.get("tests") or [])
    for column, entry in per_column.items():
        status = verdicts.get(column)
        entry["evidently_test"] = status
        if status is not None:  # Evidently's own verdict
            entry["drifted"] = status == "FAIL"
            continue
        score, threshold, method = entry["score"], entry["threshold"], entry["method"] or ""
        if score is None or threshold is None or np.isnan(score):
            entry["drifted"] = False
        elif "p_value" in method:  # p-values drift when small; distances when large
            entry["drifted"] = bool(score < threshold)
        else:
            entry["drifted"] = bool(score >= threshold)
    for column, entry in per_column.items():
        if entry["kind"] == "symptom_prevalence":
            entry["reference_prevalence"] = round(float(ref[column].mean()), 4)
            entry["current_prevalence"] = round(float(cur[column].mean()), 4)
        elif entry["kind"] == "vital":
            entry["reference_mean"] = _round(ref[column].mean())
            entry["current_mean"] = _round(cur[column].mean())
    drifted = sorted(c for c, e in per_column.items() if e["drifted"])
    if share is None and per_column:
        share = len(drifted) / len(per_column)
    if dataset_test is not None:
        dataset_drift = dataset_test["status"] == "FAIL"
    else:  # no test in the snapshot: the same rule as Evidently's (share < drift_share passes)
        dataset_drift = share is not None and share >= drift_share
    return {
        "reference_rows": reference.height,
        "current_rows": current.height,
        "drift_share": share,
        "drift_share_threshold": drift_share,
        "dataset_drift": bool(dataset_drift),
        "dataset_test": dataset_test,
        "drifted_columns": drifted,
        "tracked_symptoms": symptoms,
        "columns": per_column,
    }


def evidently_verdicts(tests: Sequence[dict]) -> tuple[dict[str, str], dict | None]:
    """Evidently's test results: the status (``SUCCESS``/``FAIL``/...) of each column's drift
    test, and the dataset test on the share of drifted columns (name, description, status)."""
    columns: dict[str, str] = {}
    dataset = None
    for test in tests:
        params = (test.get("metric_config") or {}).get("params") or {}
        status = test.get("status")
        status = str(getattr(status, "value", status))  # TestStatus enum -> "FAIL", "SUCCESS", ...
        if "column" in params:
            columns[str(params["column"])] = status
        elif "drift_share" in params:
            dataset = {
                "name": test.get("name"),
                "description": test.get("description"),
                "status": status,
            }
    return columns, dataset


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
                        truth,
                        predicted,
                        labels=sorted(set(truth)),
                        average="macro",
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


def performance_failures(metrics: dict, policy: Any) -> list[str]:
    """The floors (``policy``: min_live_accuracy, min_live_macro_f1, min_live_orphan_recall) that
    ``metrics`` miss."""
    failures = []
    if metrics["accuracy"] < policy.min_live_accuracy:
        failures.append(f"accuracy {metrics['accuracy']:.3f} < {policy.min_live_accuracy}")
    if metrics["macro_f1"] < policy.min_live_macro_f1:
        failures.append(f"macro_f1 {metrics['macro_f1']:.3f} < {policy.min_live_macro_f1}")
    recall = metrics["orphan_recall"]
    if recall is not None and recall < policy.min_live_orphan_recall:
        failures.append(f"orphan_recall {recall:.3f} < {policy.min_live_orphan_recall}")
    return failures
