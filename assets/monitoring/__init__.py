"""Monitoring assets (group ``monitoring``), one module per concern: :mod:`.predictions`,
:mod:`.feedback`, :mod:`.drift`, :mod:`.performance` (logic: :mod:`diagnosis.training.monitoring`).

Monitoring: what the service predicted, what clinicians confirmed, drift and live quality.

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
"""

from assets.monitoring import drift, feedback, performance, predictions

MODULES = [predictions, feedback, drift, performance]
