"""The runtime: scores patients from a deployed (or about-to-be-deployed) artifact.

This is the one place a patient is scored. The API serves through it, and the pipeline's model
evaluation, quality gate (challenger and champion alike) and the benchmarks score through it too,
on the exported ONNX graph, so what the gate measured is what clinicians are served.

An artifact is three things (written by :mod:`diagnosis.artifacts`, typed in
:mod:`schemas.contracts`)::

    manifest.json   classes, features, ONNX names, the blend, metrics and provenance
    model.onnx      the classifier heads (diagnosis, severity) and the knowledge ranker, one graph
    knowledge.json  the ranker's HPO vocabulary, its diseases and the release's old-id map

A :class:`Runtime` is built only after the SHA-256 of the ONNX bytes (and of the knowledge index)
match the manifest and a smoke prediction returns the shapes the manifest announces; it is
immutable, so a hot reload replaces the whole object and a request is never served by half of one
model and half of another.

Scoring a patient:

1. the patient as the model reads it (:meth:`Runtime.as_scored`): old HPO ids read as their
   current id, ids the release lacks dropped (the answer warns), repeats counted once;
2. :meth:`Runtime.components`: one onnxruntime run gives the classifier's diagnosis and severity
   probabilities and the ranker's log-scores over every ORPHA/OMIM disease;
3. :func:`diagnosis.blend.blend` combines them into one distribution over the classifier's classes
   followed by the ranker's diseases, and the orphan probability;
4. :meth:`Runtime.predict` takes the top k and, when asked, explains the first entries by occlusion
   (:mod:`diagnosis.explain`): the occlusion rows are scored by the same arithmetic, so re-sending a
   patient without one input reproduces the reported effect exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort

from diagnosis.blend import BlendParams, blend
from diagnosis.common_conditions import spanish_names
from diagnosis.explain import (
    EXPLAINED_DIAGNOSES,
    SymptomNamer,
    explanations,
    occlusion_rows,
)
from diagnosis.features import MEASURED_VITALS, FeatureSpec
from diagnosis.knowledge import KnowledgeIndex, KnowledgeLoadError
from diagnosis.severity import coherent_severity
from diagnosis.sparse_graph import encode_queries
from schemas.contracts import (
    CATEGORIES,
    MANIFEST_FORMAT,
    ClassEntry,
    ContractError,
    DeploymentPointer,
    DifferentialEntry,
    Explanation,
    Manifest,
    Prediction,
    Severity,
    SeveritySpec,
    decode,
)

__all__ = [
    "Components",
    "ModelLoadError",
    "Runtime",
    "Scores",
    "load_deployment",
    "read_manifest",
]


THIN_SYMPTOMS = 2  # fewer present findings than this and no vitals: the answer says it is thin


class ModelLoadError(RuntimeError):
    """The artifact cannot be served; the message says which file and why."""


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def session_options() -> ort.SessionOptions:
    """One thread per session; scale with worker processes (README, "Performance")."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{what} not found: {path.name}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what} {path.name}: {exc.strerror}") from None


def _inside(base: Path, relative: str | None, what: str) -> Path:
    """Resolve ``relative`` under ``base`` and refuse paths escaping it."""
    if not isinstance(relative, str) or not relative:
        raise ModelLoadError(f"{what} path is missing")
    target = (base / relative).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ModelLoadError(f"{what} path {relative!r} points outside {base.name}/")
    return target


def read_manifest(path: Path) -> Manifest:
    """``manifest.json`` as its contract, or :class:`ModelLoadError` naming the problem."""
    content = _read(path, "manifest")
    try:
        manifest = decode(content, Manifest, f"manifest {path.parent.name}/{path.name}")
    except ContractError as exc:
        raise ModelLoadError(str(exc)) from None
    return manifest


def read_pointer(deployments_dir: Path) -> DeploymentPointer:
    content = _read(deployments_dir / "current.json", "deployment pointer")
    try:
        return decode(content, DeploymentPointer, "deployment pointer current.json")
    except ContractError as exc:
        raise ModelLoadError(str(exc)) from None


@dataclass(frozen=True)
class Components:
    """What the served graph computes for n patients, before blending."""

    classifier: np.ndarray  # [n, C] diagnosis probabilities of the learned classes
    severity: np.ndarray  # [n, S]
    ranker_scores: np.ndarray | None  # [n, D] log-scores over the ranker's diseases
    unseen_share: np.ndarray  # [n] share of the patient's terms the classifier never saw

    def subset(self, rows: np.ndarray) -> Components:
        return Components(
            self.classifier[rows],
            self.severity[rows],
            None if self.ranker_scores is None else self.ranker_scores[rows],
            self.unseen_share[rows],
        )

    @staticmethod
    def concat(parts: Sequence[Components]) -> Components:
        scores = [p.ranker_scores for p in parts]
        return Components(
            np.concatenate([p.classifier for p in parts]),
            np.concatenate([p.severity for p in parts]),
            None if any(s is None for s in scores) else np.concatenate(scores),
            np.concatenate([p.unseen_share for p in parts]),
        )


@dataclass(frozen=True)
class Scores:
    """The served distribution for n patients: ``probabilities`` [n, E] over :attr:`Runtime.entries`
    (the classifier's classes, then the ranker's diseases), ``severity`` [n, S], ``orphan`` [n]."""

    probabilities: np.ndarray
    severity: np.ndarray
    orphan: np.ndarray


@dataclass(frozen=True)
class Runtime:
    """One artifact, ready to score. Immutable: a hot reload replaces the whole object."""

    manifest: Manifest
    session: ort.InferenceSession = field(repr=False)
    spec: FeatureSpec = field(repr=False)
    onnx_sha256: str
    loaded_at: str
    knowledge: KnowledgeIndex | None = field(default=None, repr=False)
    blend_params: BlendParams | None = None
    entries: tuple[ClassEntry, ...] = field(default=(), repr=False)
    _orphan_mask: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _class_to_disease: np.ndarray | None = field(default=None, repr=False)
    # entries never returned: an orphan class the ranker also lists (the blend moves its mass to
    # the ranker's entry of the same code, so the class's own column is 0 and only a duplicate)
    _hidden: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    _severity_profiles: np.ndarray | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_artifact(
        cls,
        manifest: Manifest,
        onnx_bytes: bytes,
        knowledge_bytes: bytes | None = None,
        *,
        blend_params: BlendParams | None = None,
    ) -> Runtime:
        """A runtime from an artifact's parts in memory (the pipeline's challenger before it is
        deployed; :meth:`from_manifest` for a deployment on disk). ``blend_params`` overrides the
        manifest's blend (evaluation fits it on the runtime's own components)."""
        version = manifest.version
        if manifest.format != MANIFEST_FORMAT:
            raise ModelLoadError(
                f"manifest format {manifest.format!r} is not supported (expected {MANIFEST_FORMAT})"
            )
        if not manifest.classes:
            raise ModelLoadError(f"manifest of version {version} lists no classes")
        bad = sorted({c.category for c in manifest.classes} - set(CATEGORIES))
        if bad:
            raise ModelLoadError(
                f"manifest of version {version} has unknown class categories {bad}"
            )
        actual_sha = hashlib.sha256(onnx_bytes).hexdigest()
        if actual_sha != manifest.onnx_sha256.lower():
            raise ModelLoadError(
                f"refusing version {version}: sha256 of {manifest.onnx_file} is {actual_sha}, "
                f"manifest says {manifest.onnx_sha256}"
            )
        try:
            session = ort.InferenceSession(
                onnx_bytes, session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load version {version}: {exc}") from None
        spec = FeatureSpec(
            symptoms=tuple(manifest.features.symptoms),
            vitals=tuple(manifest.features.vitals),
            sexes=tuple(manifest.features.sexes),
            missing_indicators=tuple(manifest.features.missing_indicators),
        )
        classes = tuple(manifest.classes)
        knowledge = None
        class_to_disease = None
        entries = classes
        if manifest.knowledge_file:
            if knowledge_bytes is None:
                raise ModelLoadError(f"version {version} names a knowledge file but none was given")
            try:
                knowledge = KnowledgeIndex.from_bytes(
                    knowledge_bytes, manifest.knowledge_sha256 or ""
                )
            except KnowledgeLoadError as exc:
                raise ModelLoadError(f"refusing version {version}: {exc}") from None
            if blend_params is None and manifest.blend is not None:
                blend_params = BlendParams.from_spec(manifest.blend)
            disease_index = {code: i for i, code in enumerate(knowledge.codes)}
            class_to_disease = np.array(
                [disease_index.get(c.code, -1) if c.category == "orphan" else -1 for c in classes]
            )
            entries = classes + tuple(
                ClassEntry(code=c, name=n, category="orphan")
                for c, n in zip(knowledge.codes, knowledge.names)
            )
        runtime = cls(
            manifest=manifest,
            session=session,
            spec=spec,
            onnx_sha256=actual_sha,
            loaded_at=_utc_now(),
            knowledge=knowledge,
            blend_params=blend_params,
            entries=entries,
            _orphan_mask=np.array([c.category == "orphan" for c in classes], dtype=bool),
            _class_to_disease=class_to_disease,
            _hidden=(
                np.flatnonzero(class_to_disease >= 0)
                if class_to_disease is not None
                else np.empty(0, dtype=np.int64)
            ),
        )
        object.__setattr__(runtime, "_severity_profiles", runtime._profiles())
        runtime._smoke_test()
        return runtime

    @classmethod
    def from_manifest(cls, manifest_path: Path) -> Runtime:
        """The deployment whose ``manifest.json`` is at ``manifest_path``."""
        manifest = read_manifest(manifest_path)
        if manifest.knowledge_file and manifest.blend is None:
            raise ModelLoadError(f"version {manifest.version} has a knowledge ranker but no blend")
        base = manifest_path.parent
        onnx_bytes = _read(_inside(base, manifest.onnx_file, "onnx_file"), "model")
        knowledge_bytes = None
        if manifest.knowledge_file:
            knowledge_bytes = _read(
                _inside(base, manifest.knowledge_file, "knowledge_file"), "knowledge index"
            )
        return cls.from_artifact(manifest, onnx_bytes, knowledge_bytes)

    def with_blend(self, params: BlendParams) -> Runtime:
        """The same artifact with another blend (evaluation fits the blend on this runtime)."""
        return dataclasses.replace(self, blend_params=params)

    def _smoke_test(self) -> None:
        """Score an empty patient; the output shapes must match the manifest."""
        try:
            parts = self.components([{}, {"sex": "female"}])
        except Exception as exc:
            raise ModelLoadError(f"version {self.version} fails a test prediction: {exc}") from None
        if parts.classifier.shape != (2, len(self.classes)):
            raise ModelLoadError(
                f"version {self.version}: diagnosis output has shape {parts.classifier.shape}, "
                f"manifest lists {len(self.classes)} classes"
            )
        if parts.severity.shape != (2, len(self.severity_labels)):
            raise ModelLoadError(
                f"version {self.version}: severity output has shape {parts.severity.shape}, "
                f"manifest lists {len(self.severity_labels)} labels"
            )
        if self.knowledge is not None and parts.ranker_scores.shape != (
            2,
            len(self.knowledge.codes),
        ):
            raise ModelLoadError(
                f"version {self.version}: ranker output has shape {parts.ranker_scores.shape}, "
                f"knowledge index lists {len(self.knowledge.codes)} diseases"
            )

    # ---------------------------------------------------------------- properties
    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def classes(self) -> tuple[ClassEntry, ...]:
        return tuple(self.manifest.classes)

    @property
    def severity_labels(self) -> tuple[str, ...]:
        return tuple(self.manifest.severity_labels)

    @property
    def codes(self) -> np.ndarray:
        """The code of every entry of :class:`Scores` ``probabilities``, in column order."""
        return np.array([e.code for e in self.entries])

    # ---------------------------------------------------------------- scoring
    def as_scored(self, patient: Mapping[str, Any]) -> Mapping[str, Any]:
        """The patient as the model scores it: ids the HPO release lacks are dropped (the answer
        warns that they were ignored, so they must not move the prediction), old ids are read as
        their current id, and a term given twice counts once; likewise for the excluded findings
        (``absent_symptoms``), where a term also reported present is dropped."""
        if self.knowledge is None or not (
            patient.get("symptoms") or patient.get("absent_symptoms")
        ):
            return patient
        present = self._canonical_terms(patient.get("symptoms") or ())
        absent = [
            t
            for t in self._canonical_terms(patient.get("absent_symptoms") or ())
            if t not in present
        ]
        return {**patient, "symptoms": present, "absent_symptoms": absent}

    def _canonical_terms(self, terms) -> list[str]:
        out: list[str] = []
        for term in terms:
            current = self.knowledge.canonical(term)
            if current is not None and current not in out:
                out.append(current)
        return out

    def _unseen_share(self, symptom_lists: Sequence[Sequence[str]]) -> np.ndarray:
        return np.array(
            [
                sum(not self.spec.knows_symptom(t) for t in terms) / len(terms) if terms else 0.0
                for terms in symptom_lists
            ],
            dtype=np.float64,
        )

    def components(self, patients: Sequence[Mapping[str, Any]]) -> Components:
        """The graph's outputs for patients (as :meth:`as_scored` reads them), before blending:
        one onnxruntime call for the whole batch (classifier heads on the feature rows, the
        ranker on every patient's rows of its weight matrix, :mod:`diagnosis.sparse_graph`).
        A batch of one row is scored as two identical rows: onnxruntime sums a single row in
        another order than a batch (differences up to ~2e-6), and every prediction must go through
        the same batched arithmetic, so that an explanation's effects reproduce exactly.
        """
        m = self.manifest
        rows = [self.as_scored(p) for p in patients]
        n = len(rows)
        batch_rows = rows if n > 1 else rows + rows
        features = self.spec.encode(batch_rows)
        symptom_lists = [list(row.get("symptoms") or ()) for row in rows]
        if self.knowledge is None:
            diagnosis, severity = self.session.run(
                [m.onnx_outputs.diagnosis, m.onnx_outputs.severity], {m.onnx_input: features}
            )
            ranker_scores = None
        else:
            queries = encode_queries([self.knowledge.rows(row) for row in batch_rows])
            diagnosis, severity, scores = self.session.run(
                [m.onnx_outputs.diagnosis, m.onnx_outputs.severity, m.onnx_outputs.ranker],
                {m.onnx_input: features, **queries},
            )
            ranker_scores = np.asarray(scores, dtype=np.float64)[:n]
        return Components(
            np.clip(np.asarray(diagnosis, dtype=np.float64)[:n], 0.0, 1.0),
            np.asarray(severity, dtype=np.float64)[:n],
            ranker_scores,
            self._unseen_share(symptom_lists),
        )

    def blend(self, parts: Components) -> Scores:
        """Combine components into the served distribution (:func:`diagnosis.blend.blend`)."""
        if self.knowledge is None:
            orphan = (
                parts.classifier[:, self._orphan_mask].sum(axis=1)
                if self._orphan_mask.any()
                else np.zeros(len(parts.classifier))
            )
            probabilities = parts.classifier
        else:
            if self.blend_params is None:
                raise ValueError(f"version {self.version} has no blend to score with")
            class_probs, disease_probs, orphan = blend(
                parts.classifier,
                self._orphan_mask,
                self._class_to_disease,
                parts.ranker_scores,
                self.knowledge.empty_best,
                parts.unseen_share,
                self.blend_params,
            )
            probabilities = np.concatenate([class_probs, disease_probs], axis=1)
        # float32 sums can drift a hair outside [0, 1]
        probabilities = np.clip(probabilities, 0.0, 1.0)
        return Scores(
            probabilities,
            np.clip(self.severity_of(probabilities, parts.severity), 0.0, 1.0),
            np.clip(orphan, 0.0, 1.0),
        )

    def severity_of(self, probabilities: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Severity coherent with the differential (:mod:`diagnosis.severity`) when the manifest
        says how, else the severity head alone (models trained before it)."""
        spec = self.manifest.severity
        profiles = self._severity_profiles
        if spec is None or profiles is None:
            return head
        return coherent_severity(
            probabilities, profiles, head, np.asarray(spec.head_prior), spec.beta
        )

    def with_severity(self, spec: SeveritySpec) -> Runtime:
        """The same artifact with another severity spec (evaluation fits ``beta``)."""
        runtime = dataclasses.replace(
            self, manifest=msgspec.structs.replace(self.manifest, severity=spec)
        )
        object.__setattr__(runtime, "_severity_profiles", runtime._profiles())
        return runtime

    def _profiles(self) -> np.ndarray | None:
        """[E, 5] severity mix of every entry: learned classes from their training records, the
        ranker's diseases from the release's clinical course."""
        spec = self.manifest.severity
        if spec is None:
            return None
        classes = np.asarray(spec.class_profiles, dtype=np.float64)
        if self.knowledge is None:
            return classes
        if self.knowledge.severity is None:
            return None
        return np.concatenate([classes, self.knowledge.severity])

    def score(self, patients: Sequence[Mapping[str, Any]]) -> Scores:
        """The served distribution for patients (API body fields), without explanations."""
        return self.blend(self.components(patients))

    @property
    def n_served_entries(self) -> int:
        """How many entries a differential can list (:attr:`entries` minus the orphan classes
        the ranker lists under the same code)."""
        return len(self.entries) - len(self._hidden)

    def top(self, probabilities: np.ndarray, k: int) -> np.ndarray:
        """Indices [n, k] of the k most probable entries per row, most probable first; ties keep
        the entries' order. An orphan class the ranker also lists is never returned (its mass is
        in the ranker's entry of the same code), so a code appears once."""
        hidden = self._hidden
        if not len(hidden):
            return self._top(probabilities, k)
        k = max(1, min(int(k), probabilities.shape[1] - len(hidden)))
        picked = self._top(probabilities, k + len(hidden))
        # keep each row's first k visible entries (at least k are among the k + |hidden| picked)
        visible_first = np.argsort(np.isin(picked, hidden), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(picked, visible_first, axis=1)

    def _top(self, probabilities: np.ndarray, k: int) -> np.ndarray:
        k = max(1, min(int(k), probabilities.shape[1]))
        if probabilities.shape[1] > 4 * k:  # the full catalogue: partition first
            part = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
            # order the k by probability, then by entry index (a stable tie-break)
            rows = np.arange(len(probabilities))[:, None]
            order = np.lexsort((part, -probabilities[rows, part]), axis=1)
            return np.take_along_axis(part, order, axis=1)
        return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]

    # ---------------------------------------------------------------- answers
    def predict(
        self,
        patients: Sequence[Mapping[str, Any]],
        top_k: int,
        *,
        explain: bool = False,
        symptom_name: SymptomNamer | None = None,
    ) -> list[Prediction]:
        """Score validated patient dicts (API body fields); one :class:`Prediction` per patient,
        in order. With ``explain`` the first :data:`~diagnosis.explain.EXPLAINED_DIAGNOSES`
        entries carry an explanation (occlusion); ``symptom_name`` names HPO ids for its labels."""
        if not patients:
            return []
        scored = [self.as_scored(p) for p in patients]
        k = max(1, min(int(top_k), self.n_served_entries))
        notes: list[list[dict[str, Any]]] = [[] for _ in scored]
        if explain:
            order, top_probs, sev_rows, orphan = [], [], [], []
            for i, patient in enumerate(scored):
                o, p, s, orph, notes[i] = self._explained(patient, k, symptom_name)
                order.append(o)
                top_probs.append(p)
                sev_rows.append(s)
                orphan.append(orph)
        else:
            result = self.score(scored)
            picked = self.top(result.probabilities, k)
            order = picked.tolist()
            # plain floats of the returned entries only (the catalogue row has ~12,700 entries)
            top_probs = np.take_along_axis(result.probabilities, picked, axis=1).tolist()
            sev_rows = result.severity.tolist()
            orphan = result.orphan.tolist()
        labels = self.severity_labels
        names_es = spanish_names()
        answers: list[Prediction] = []
        for row in range(len(scored)):
            sev = sev_rows[row]
            differential = [
                DifferentialEntry(
                    code=self.entries[j].code,
                    name=self.entries[j].name,
                    name_es=names_es.get(self.entries[j].code),
                    category=self.entries[j].category,
                    probability=p,
                )
                for j, p in zip(order[row], top_probs[row])
            ]
            for entry, note in zip(differential, notes[row]):
                entry.explanation = _explanation(note)
            answers.append(
                Prediction(
                    prediction_id=uuid.uuid4().hex,
                    model_version=self.version,
                    differential=differential,
                    orphan_probability=orphan[row],
                    severity=Severity(
                        label=labels[int(np.argmax(sev))],
                        probabilities=dict(zip(labels, sev)),
                    ),
                    warnings=self.warnings_for(patients[row]),
                )
            )
        return answers

    def _explained(
        self, patient: Mapping[str, Any], k: int, symptom_name: SymptomNamer | None
    ) -> tuple[list[int], list[float], list[float], float, list[dict[str, Any]]]:
        """One patient with explanations: (top-k entry indices, their probabilities, severity,
        orphan probability, one explanation per explained entry). The prediction itself is the
        first row of the occlusion batch, so it and its explanation come from the same call."""
        inputs, rows = occlusion_rows(patient, self.spec.vitals, self.spec.sexes)
        result = self.score(rows)
        order = self.top(result.probabilities[:1], k)[0].tolist()
        probabilities = result.probabilities[:, order]  # [rows, k], as returned
        m = min(EXPLAINED_DIAGNOSES, len(order))
        notes = explanations(probabilities[0, :m], probabilities[1:, :m], inputs, symptom_name)
        return (
            order,
            probabilities[0].tolist(),
            result.severity[0].tolist(),
            float(result.orphan[0]),
            notes,
        )

    def warnings_for(self, patient: Mapping[str, Any]) -> list[str]:
        """What the answer says about the request: ids the release lacks or reads as another, and
        a request with neither vitals nor symptoms."""
        if self.knowledge is not None:
            warnings = self.knowledge.warnings(list(patient.get("symptoms") or ()))
            warnings += self.knowledge.warnings(
                list(patient.get("absent_symptoms") or ()), what="absent symptom"
            )
        else:
            warnings = [
                f"symptom {term} is not used by this model"
                for term in patient.get("symptoms") or ()
                if not self.spec.knows_symptom(term)
            ]
        no_vitals = all(patient.get(name) is None for name in MEASURED_VITALS)
        if (
            not patient.get("symptoms")
            and not patient.get("absent_symptoms")
            and all(patient.get(name) is None for name in self.spec.vitals)
        ):
            warnings.append("no vital signs or symptoms given: the answer reflects base rates only")
        elif no_vitals and len(patient.get("symptoms") or ()) < THIN_SYMPTOMS:
            warnings.append(
                "few findings and no vital signs measured: the differential is broad and its "
                "probabilities uncertain; add vital signs or further findings"
            )
        return warnings


def _explanation(note: Mapping[str, Any]) -> Explanation:
    from schemas.contracts import ExplanationItem

    return Explanation(
        supports=[ExplanationItem(**item) for item in note["supports"]],
        against=[ExplanationItem(**item) for item in note["against"]],
    )


def load_deployment(deployments_dir: Path) -> Runtime:
    """The runtime ``deployments/current.json`` points at, or :class:`ModelLoadError`."""
    pointer = read_pointer(deployments_dir)
    manifest_path = _inside(deployments_dir, pointer.manifest, "manifest")
    runtime = Runtime.from_manifest(manifest_path)
    if pointer.version != runtime.version:
        raise ModelLoadError(
            f"current.json names version {pointer.version!r} but its manifest says {runtime.version!r}"
        )
    return runtime
