"""The deployed model: loading, integrity check, prediction and hot reload.

Layout written by the pipeline (see the shared contract)::

    <TRIAGE_HOME>/deployments/current.json      {"version": ..., "manifest": "<version>/manifest.json"}
    <TRIAGE_HOME>/deployments/<version>/manifest.json
    <TRIAGE_HOME>/deployments/<version>/model.onnx

:class:`LoadedModel` is one immutable deployment (manifest + onnxruntime session). It is only built
after the SHA-256 of the ONNX bytes matches ``manifest.onnx_sha256`` and a smoke prediction returns
the shapes the manifest announces. :class:`ModelStore` holds the current ``LoadedModel`` and swaps the
reference when ``current.json`` changes; a request takes the reference once, so it is never served
by half of one model and half of another. A failed load keeps the previous model and records the
error (shown by ``/ready``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from schemas.blend import blend
from schemas.features import FeatureSpec
from serving.explain import (
    EXPLAINED_DIAGNOSES,
    SymptomNamer,
    explanations,
    occlusion_rows,
)
from serving.knowledge import KnowledgeIndex, KnowledgeLoadError

log = logging.getLogger("triage.serving.model")

MANIFEST_FORMAT = 1
CATEGORIES = ("common", "orphan", "healthy")


class ModelLoadError(RuntimeError):
    """The deployment cannot be served; the message says which file and why."""


class NoModelError(RuntimeError):
    """No model is loaded (nothing deployed yet, or every load so far failed)."""


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # one thread per session; scale with worker processes (see stack notes)
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ModelLoadError(f"{what} not found: {path.name}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{what} {path.name} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {path.name} must be a JSON object")
    return data


def _inside(base: Path, relative: str, what: str) -> Path:
    """Resolve ``relative`` under ``base`` and refuse paths escaping it."""
    if not isinstance(relative, str) or not relative:
        raise ModelLoadError(f"{what} path is missing")
    target = (base / relative).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ModelLoadError(f"{what} path {relative!r} points outside {base.name}/")
    return target


@dataclass(frozen=True, slots=True)
class ClassEntry:
    code: str
    name: str
    category: str


@dataclass(frozen=True)
class LoadedModel:
    """One deployment, ready to score. Immutable: hot reload replaces the whole object."""

    version: str
    manifest: Mapping[str, Any]
    session: ort.InferenceSession = field(repr=False)
    spec: FeatureSpec = field(repr=False)
    classes: tuple[ClassEntry, ...]
    severity_labels: tuple[str, ...]
    input_name: str
    diagnosis_output: str
    severity_output: str
    onnx_sha256: str
    loaded_at: str
    _orphan_mask: np.ndarray = field(repr=False)
    knowledge: KnowledgeIndex | None = field(default=None, repr=False)
    query_input: str = "query_terms"
    ranker_output: str = "ranker_scores"
    _class_to_disease: np.ndarray | None = field(default=None, repr=False)
    # classifier classes, then every disease of the knowledge ranker (combined output order)
    _entries: tuple[ClassEntry, ...] = field(default=(), repr=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_manifest(cls, manifest_path: Path) -> "LoadedModel":
        manifest = _read_json(manifest_path, "manifest")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ModelLoadError(
                f"manifest format {manifest.get('format')!r} is not supported (expected {MANIFEST_FORMAT})"
            )
        try:
            version = str(manifest["version"])
            expected_sha = str(manifest["onnx_sha256"]).lower()
            onnx_file = manifest.get("onnx_file", "model.onnx")
            input_name = str(manifest.get("onnx_input", "features"))
            outputs = manifest.get("onnx_outputs") or {}
            diagnosis_output = str(outputs.get("diagnosis", "diagnosis_probabilities"))
            severity_output = str(outputs.get("severity", "severity_probabilities"))
            spec = FeatureSpec.from_manifest(manifest["features"])
            classes = tuple(
                ClassEntry(code=str(c["code"]), name=str(c.get("name") or c["code"]),
                           category=str(c["category"]))
                for c in manifest["classes"]
            )
            severity_labels = tuple(str(s) for s in manifest["severity_labels"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"manifest of {manifest_path.parent.name} is incomplete: {exc!r}") from None
        if not classes:
            raise ModelLoadError(f"manifest of version {version} lists no classes")
        bad = sorted({c.category for c in classes} - set(CATEGORIES))
        if bad:
            raise ModelLoadError(f"manifest of version {version} has unknown class categories {bad}")

        onnx_path = _inside(manifest_path.parent, onnx_file, "onnx_file")
        try:
            content = onnx_path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read {onnx_path.name} of version {version}: {exc.strerror}") from None
        actual_sha = hashlib.sha256(content).hexdigest()
        if actual_sha != expected_sha:
            raise ModelLoadError(
                f"refusing version {version}: sha256 of {onnx_path.name} is {actual_sha}, "
                f"manifest says {expected_sha}"
            )
        try:
            session = ort.InferenceSession(
                content, _session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load version {version}: {exc}") from None

        knowledge = None
        class_to_disease = None
        if manifest.get("knowledge_file"):
            try:
                knowledge = KnowledgeIndex.load(
                    _inside(manifest_path.parent, manifest["knowledge_file"], "knowledge_file"),
                    manifest.get("knowledge_sha256", ""),
                    manifest.get("blend") or {},
                )
            except KnowledgeLoadError as exc:
                raise ModelLoadError(f"refusing version {version}: {exc}") from None
            disease_index = {code: i for i, code in enumerate(knowledge.codes)}
            class_to_disease = np.array(
                [disease_index.get(c.code, -1) if c.category == "orphan" else -1 for c in classes]
            )
        model = cls(
            version=version,
            manifest=manifest,
            session=session,
            spec=spec,
            classes=classes,
            severity_labels=severity_labels,
            input_name=input_name,
            diagnosis_output=diagnosis_output,
            severity_output=severity_output,
            onnx_sha256=actual_sha,
            loaded_at=_utc_now(),
            _orphan_mask=np.array([c.category == "orphan" for c in classes], dtype=bool),
            knowledge=knowledge,
            query_input=str(manifest.get("onnx_query_input", "query_terms")),
            ranker_output=str(outputs.get("ranker", "ranker_scores")),
            _class_to_disease=class_to_disease,
            _entries=classes
            + (
                tuple(
                    ClassEntry(code=c, name=n, category="orphan")
                    for c, n in zip(knowledge.codes, knowledge.names)
                )
                if knowledge
                else ()
            ),
        )
        model._smoke_test()
        return model

    def _smoke_test(self) -> None:
        """Score an empty patient; the output shapes must match the manifest."""
        try:
            diagnosis, severity = self._run(self.spec.encode([{}, {"sex": "female"}]))
        except Exception as exc:
            raise ModelLoadError(f"version {self.version} fails a test prediction: {exc}") from None
        if diagnosis.shape != (2, len(self.classes)):
            raise ModelLoadError(
                f"version {self.version}: diagnosis output has shape {diagnosis.shape}, "
                f"manifest lists {len(self.classes)} classes"
            )
        if severity.shape != (2, len(self.severity_labels)):
            raise ModelLoadError(
                f"version {self.version}: severity output has shape {severity.shape}, "
                f"manifest lists {len(self.severity_labels)} labels"
            )

    # ---------------------------------------------------------------- scoring
    def _run(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.knowledge is not None:  # the graph also wants a query: score without symptoms
            empty = np.zeros(len(self.knowledge.terms), dtype=np.float32)
            rows = [self._run_one(features[i : i + 1], empty) for i in range(len(features))]
            return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        diagnosis, severity = self.session.run(
            [self.diagnosis_output, self.severity_output], {self.input_name: features}
        )
        return np.asarray(diagnosis, dtype=np.float64), np.asarray(severity, dtype=np.float64)

    def _run_one(self, features: np.ndarray, query: np.ndarray):
        diagnosis, severity, scores = self.session.run(
            [self.diagnosis_output, self.severity_output, self.ranker_output],
            {self.input_name: features, self.query_input: query},
        )
        return (
            np.asarray(diagnosis[0], dtype=np.float64),
            np.asarray(severity[0], dtype=np.float64),
            np.asarray(scores, dtype=np.float64).reshape(-1),
        )

    def _blend(
        self, classifier: np.ndarray, scores: np.ndarray, symptom_lists: Sequence[Sequence[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classifier probabilities [n, C] + ranker log-scores [n, D] -> (probabilities over
        ``_entries`` [n, C + D], orphan probability [n]), as in evaluation (schemas/blend.py)."""
        unseen = np.array(
            [
                sum(not self.spec.knows_symptom(t) for t in terms) / len(terms) if terms else 0.0
                for terms in symptom_lists
            ]
        )
        class_probs, disease_probs, p_orphan = blend(
            classifier, self._orphan_mask, self._class_to_disease, scores,
            self.knowledge.empty_best, unseen, self.knowledge.blend,
        )
        return np.concatenate([class_probs, disease_probs], axis=1), p_orphan

    def _predict_with_knowledge(self, patients: Sequence[Mapping[str, Any]]):
        """Classifier + knowledge ranker, one patient per ONNX call, blended as in evaluation."""
        knowledge = self.knowledge
        features = self.spec.encode(patients)
        diagnosis, severity, scores, symptom_lists = [], [], [], []
        for i, patient in enumerate(patients):
            symptoms = list(patient.get("symptoms") or ())
            query, _, _ = knowledge.encode(symptoms)
            dx, sev, sc = self._run_one(features[i : i + 1], query)
            diagnosis.append(dx)
            severity.append(sev)
            scores.append(sc)
            symptom_lists.append(symptoms)
        combined, p_orphan = self._blend(
            np.clip(np.stack(diagnosis), 0.0, 1.0), np.stack(scores), symptom_lists
        )
        return combined, np.stack(severity), p_orphan

    def _score(self, patients: Sequence[Mapping[str, Any]]):
        """(probabilities over the output entries [n, E], severity [n, S], orphan probability [n])
        for the patients, without explanations."""
        if self.knowledge is not None:
            diagnosis, severity, p_orphan = self._predict_with_knowledge(patients)
            return diagnosis, severity, np.minimum(p_orphan, 1.0)
        diagnosis, severity = self._run(self.spec.encode(patients))
        return diagnosis, severity, self._classifier_orphan(diagnosis)

    def _classifier_orphan(self, diagnosis: np.ndarray) -> np.ndarray:
        if self._orphan_mask.any():
            return np.minimum(diagnosis[:, self._orphan_mask].sum(axis=1), 1.0)
        return np.zeros(len(diagnosis))

    def _score_rows(self, rows: Sequence[Mapping[str, Any]]):
        """Score one patient's occlusion rows (:func:`serving.explain.occlusion_rows`); same
        result layout as :meth:`_score`.

        The classifier heads score every row in ONE onnxruntime call. The knowledge ranker's input
        is a single query vector, so that call also gives the ranker's scores for the first row's
        symptoms, and each row with another symptom set (one per removed symptom the ranker knows)
        adds one call that fetches only ``ranker_scores`` (onnxruntime then runs only the ranker's
        nodes). A batch of one row is scored as two identical rows: onnxruntime sums a single row
        in another order than a batch (differences up to ~2e-6), and every explained prediction
        must go through the same batched arithmetic, so that re-sending a patient without one input
        reproduces the reported effect exactly.
        """
        n = len(rows)
        features = self.spec.encode(rows)
        batch = features if n > 1 else np.concatenate([features, features])
        if self.knowledge is None:
            diagnosis, severity = self.session.run(
                [self.diagnosis_output, self.severity_output], {self.input_name: batch}
            )
            diagnosis = np.asarray(diagnosis, dtype=np.float64)[:n]
            severity = np.asarray(severity, dtype=np.float64)[:n]
            return diagnosis, severity, self._classifier_orphan(diagnosis)
        knowledge = self.knowledge
        symptom_lists = [list(row.get("symptoms") or ()) for row in rows]
        queries, keys = [], []
        for terms in symptom_lists:
            query, used, _ = knowledge.encode(terms)
            queries.append(query)
            keys.append(frozenset(used))  # the indicator depends on the set of current terms only
        diagnosis, severity, first_scores = self.session.run(
            [self.diagnosis_output, self.severity_output, self.ranker_output],
            {self.input_name: batch, self.query_input: queries[0]},
        )
        by_key = {keys[0]: np.asarray(first_scores, dtype=np.float64).reshape(-1)}
        for query, key in zip(queries, keys):
            if key not in by_key:
                (scores,) = self.session.run(
                    [self.ranker_output], {self.input_name: batch[:1], self.query_input: query}
                )
                by_key[key] = np.asarray(scores, dtype=np.float64).reshape(-1)
        combined, p_orphan = self._blend(
            np.clip(np.asarray(diagnosis, dtype=np.float64)[:n], 0.0, 1.0),
            np.stack([by_key[key] for key in keys]),
            symptom_lists,
        )
        return combined, np.asarray(severity, dtype=np.float64)[:n], np.minimum(p_orphan, 1.0)

    def _top(self, diagnosis: np.ndarray, k: int) -> list[list[int]]:
        """Indices of the k most probable entries per row, most probable first."""
        if self.knowledge is not None:  # ~12,700 entries: partition first
            top = np.argpartition(-diagnosis, k - 1, axis=1)[:, :k]
            return [
                row[np.argsort(-diagnosis[i, row], kind="stable")].tolist()
                for i, row in enumerate(top)
            ]
        # stable sort on the negated probabilities: ties keep manifest order
        return np.argsort(-diagnosis, axis=1, kind="stable")[:, :k].tolist()

    def _explained(
        self, patient: Mapping[str, Any], k: int, symptom_name: SymptomNamer | None
    ) -> tuple[list[int], list[float], list[float], float, list[dict[str, Any]]]:
        """One patient with explanations: (top-k entry indices, their probabilities, severity,
        orphan probability, one explanation per explained entry). The prediction itself is the
        first row of the occlusion batch, so it and its explanation come from the same call."""
        inputs, rows = occlusion_rows(patient, self.spec.vitals, self.spec.sexes)
        diagnosis, severity, orphan = self._score_rows(rows)
        order = self._top(diagnosis[:1], k)[0]
        probabilities = np.clip(diagnosis[:, order], 0.0, 1.0)  # [rows, k], as returned
        m = min(EXPLAINED_DIAGNOSES, len(order))
        notes = explanations(probabilities[0, :m], probabilities[1:, :m], inputs, symptom_name)
        return (
            order,
            probabilities[0].tolist(),
            np.clip(severity[0], 0.0, 1.0).tolist(),
            float(orphan[0]),
            notes,
        )

    def predict(
        self,
        patients: Sequence[Mapping[str, Any]],
        top_k: int,
        *,
        explain: bool = False,
        symptom_name: SymptomNamer | None = None,
    ) -> list[dict[str, Any]]:
        """Score validated patient dicts (API body fields); one answer dict per patient, same order.

        With ``explain`` the first :data:`~serving.explain.EXPLAINED_DIAGNOSES` differential entries
        carry an ``explanation`` (occlusion, see :mod:`serving.explain`); ``symptom_name`` maps an
        HPO id to its name for the labels.
        """
        if not patients:
            return []
        originals = patients
        patients = [self._as_scored(patient) for patient in patients]
        entries = self._entries if self.knowledge is not None else self.classes
        k = max(1, min(int(top_k), len(entries)))
        notes: list[list[dict[str, Any]]] = [[] for _ in patients]
        if explain:
            order, top_probs, sev_rows, orphan = [], [], [], []
            for i, patient in enumerate(patients):
                o, p, s, orph, notes[i] = self._explained(patient, k, symptom_name)
                order.append(o)
                top_probs.append(p)
                sev_rows.append(s)
                orphan.append(orph)
        else:
            diagnosis, severity, p_orphan = self._score(patients)
            order = self._top(diagnosis, k)
            # float32 sums can drift a hair outside [0, 1]
            np.clip(diagnosis, 0.0, 1.0, out=diagnosis)
            np.clip(severity, 0.0, 1.0, out=severity)
            # plain floats of the returned entries only (the catalogue row has ~12,000 entries)
            top_probs = np.take_along_axis(diagnosis, np.asarray(order), axis=1).tolist()
            sev_rows = severity.tolist()
            orphan = p_orphan.tolist()
        labels = self.severity_labels
        answers: list[dict[str, Any]] = []
        for row, patient in enumerate(patients):
            sev = sev_rows[row]
            differential = [
                {
                    "code": entries[j].code,
                    "name": entries[j].name,
                    "category": entries[j].category,
                    "probability": p,
                }
                for j, p in zip(order[row], top_probs[row])
            ]
            for entry, note in zip(differential, notes[row]):
                entry["explanation"] = note
            answers.append(
                {
                    "prediction_id": uuid.uuid4().hex,
                    "model_version": self.version,
                    "differential": differential,
                    "orphan_probability": orphan[row],
                    "severity": {
                        "label": labels[int(np.argmax(sev))],
                        "probabilities": dict(zip(labels, sev)),
                    },
                    "warnings": self.warnings_for(originals[row]),
                }
            )
        return answers

    def _as_scored(self, patient: Mapping[str, Any]) -> Mapping[str, Any]:
        """The patient as the model scores it: ids the HPO release lacks are dropped (the answer
        warns that they were ignored, so they must not move the prediction), old ids are read as
        their current id, and a term given twice counts once."""
        if self.knowledge is None or not patient.get("symptoms"):
            return patient
        terms: list[str] = []
        for term in patient["symptoms"]:
            current = self.knowledge.canonical(term)
            if current is not None and current not in terms:
                terms.append(current)
        return {**patient, "symptoms": terms}

    def warnings_for(self, patient: Mapping[str, Any]) -> list[str]:
        if self.knowledge is not None:
            warnings = self.knowledge.warnings(list(patient.get("symptoms") or ()))
        else:
            warnings = [
                f"symptom {term} is not used by this model"
                for term in patient.get("symptoms") or ()
                if not self.spec.knows_symptom(term)
            ]
        if not patient.get("symptoms") and all(
            patient.get(name) is None for name in self.spec.vitals
        ):
            warnings.append("no vital signs or symptoms given: the answer reflects base rates only")
        return warnings

    def card(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "version": self.version,
            "trained_at": m.get("trained_at"),
            "onnx_sha256": self.onnx_sha256,
            "metrics": m.get("metrics") or {},
            "mlflow_run_id": m.get("mlflow_run_id"),
            "mlflow_model_version": _str_or_none(m.get("mlflow_model_version")),
            "dagster_run_id": m.get("dagster_run_id"),
            "code_version": m.get("code_version"),
            "data_versions": m.get("data_versions") or {},
            "hpo_release": m.get("hpo_release"),
            "n_classes": len(self.classes),
            "classes": [
                {"code": c.code, "name": c.name, "category": c.category} for c in self.classes
            ],
            "severity_labels": list(self.severity_labels),
            "n_symptoms": len(self.spec.symptoms),
            "loaded_at": self.loaded_at,
        }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def load_deployment(deployments_dir: Path) -> LoadedModel:
    """Load what ``deployments/current.json`` points at, or raise :class:`ModelLoadError`."""
    pointer = _read_json(deployments_dir / "current.json", "deployment pointer")
    manifest_rel = pointer.get("manifest")
    if manifest_rel is None and pointer.get("version"):
        manifest_rel = f"{pointer['version']}/manifest.json"
    manifest_path = _inside(deployments_dir, manifest_rel, "manifest")
    model = LoadedModel.from_manifest(manifest_path)
    if pointer.get("version") is not None and str(pointer["version"]) != model.version:
        raise ModelLoadError(
            f"current.json names version {pointer['version']!r} but its manifest says {model.version!r}"
        )
    return model


class ModelStore:
    """Holds the current :class:`LoadedModel` and replaces it when ``current.json`` changes.

    ``reload_if_changed()`` costs one ``stat`` when called more often than ``interval_s``; a load runs
    only if the pointer file's (inode, size, mtime) changed since the last attempt, so a broken
    deployment is not retried on every request, only after the pointer is rewritten.
    """

    def __init__(self, deployments_dir: Path, interval_s: float = 1.0) -> None:
        self.deployments_dir = deployments_dir
        self.pointer = deployments_dir / "current.json"
        self.interval_s = interval_s
        self._model: LoadedModel | None = None
        self.last_error: str | None = None
        self.load_failures = 0  # deployments that could not be loaded (exported as a metric)
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def require(self) -> LoadedModel:
        model = self._model
        if model is None:
            reason = self.last_error or "no deployment found (deployments/current.json is missing)"
            raise NoModelError(f"no model is loaded: {reason}")
        return model

    def predict(self, patients: Sequence[Mapping[str, Any]], top_k: int) -> list[dict[str, Any]]:
        return self.require().predict(patients, top_k)

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.pointer)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> bool:
        """Load the current deployment now; True when a new model was installed."""
        with self._lock:
            return self._load_locked(self._stat_signature())

    def _load_locked(self, signature: tuple[int, int, int] | None) -> bool:
        self._signature = signature
        if signature is None:
            if self._model is None:
                self.last_error = "no deployment found (deployments/current.json is missing)"
            return False
        try:
            model = load_deployment(self.deployments_dir)
        except ModelLoadError as exc:
            self.last_error = str(exc)
            self.load_failures += 1
            log.error("model load failed, keeping %s: %s",
                      self._model.version if self._model else "no model", exc)
            return False
        previous = self._model
        self._model = model  # atomic reference swap
        self.last_error = None
        log.info("serving model %s (was %s)", model.version, previous.version if previous else None)
        return True

    def reload_due(self) -> bool:
        """Cheap: at most one ``stat`` per ``interval_s``; True when the pointer file changed."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval_s
        return self._stat_signature() != self._signature

    def reload_if_changed(self) -> bool:
        """Reload when ``current.json`` changed since the last attempt (checked at most once per
        ``interval_s``); True when a new model was installed. Safe to call from any thread."""
        if not self.reload_due():
            return False
        return self.reload_now()

    def reload_now(self) -> bool:
        """Load if the pointer differs from the last attempt, without the interval throttle.

        The app calls ``reload_due()`` on the event loop and, only when it is True, runs this in a
        worker thread so loading a large model does not stall requests served by the old one.
        """
        if not self._lock.acquire(blocking=False):
            return False  # another thread is loading right now
        try:
            signature = self._stat_signature()
            if signature == self._signature:
                return False
            return self._load_locked(signature)
        finally:
            self._lock.release()
