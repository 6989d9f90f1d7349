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
2. :meth:`Runtime.predict` (the API): ONE onnxruntime call (:meth:`Runtime.rank`) gives the
   classifier's diagnosis and severity probabilities and, from the ranker's graph
   (:mod:`diagnosis.sparse_graph`), each patient's top diseases, softmax sums and severity-profile
   mix; the call runs :func:`served_graph`, the artifact's graph fed with the catalogue's
   log-scores that :class:`diagnosis.sparse_graph.SparseScorer` adds up in numpy from the graph's
   own weights (the same float32 sums bit for bit, checked at load); :class:`diagnosis.blend.CandidateBlend` blends only the entries that can reach the top k,
   never a row over the ~12,700 entries of the catalogue. An explanation's occlusion rows
   (:mod:`diagnosis.explain`) go through the same call, scored by the same arithmetic, so
   re-sending a patient without one input reproduces the reported effect exactly;
3. the pipeline's evaluation and gate read the full distribution instead:
   :meth:`Runtime.components` (the graph's log-scores over every ORPHA/OMIM disease),
   :meth:`Runtime.blend` (:func:`diagnosis.blend.blend`) and :meth:`Runtime.top`; the two paths
   agree (``tests/diagnosis/test_runtime_fast.py``, ``tests/e2e/test_gate_equals_served.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort

from diagnosis import sparse_graph, warning_codes
from diagnosis.blend import BlendParams, CandidateBlend, blend
from diagnosis.common_conditions import spanish_names
from diagnosis.explain import (
    EXPLAINED_DIAGNOSES,
    SymptomNamer,
    explanations,
    occlusion_rows,
)
from diagnosis.features import MEASURED_VITALS, FeatureSpec
from diagnosis.knowledge import KnowledgeIndex, KnowledgeLoadError
from diagnosis.severity import coherent_severity, severity_of_mix
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
    WarningDetail,
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
# rows per onnxruntime call: a batch goes through in chunks whose [rows, diseases] buffers stay in
# the CPU's cache (measured: 64-row chunks cost about 35 % less per patient than 1,000 rows at
# once, and peak memory stays bounded); an explanation's rows are never split
CHUNK_ROWS = 64
# the ranker graph's outputs the served path reads (diagnosis.sparse_graph)
_FAST_OUTPUTS = (
    sparse_graph.TOP_SCORES,
    sparse_graph.TOP_INDEX,
    sparse_graph.NORM,
    sparse_graph.PROFILE_MIX,
    sparse_graph.LEAD_TOP_SCORES,
    sparse_graph.PROBE_SCORES,
)

_FAST_NAMES = tuple(sparse_graph.public_name(o) for o in _FAST_OUTPUTS)
# the graph inputs the served graph still reads when the catalogue is scored in numpy
_GRAPH_QUERY_INPUTS = (sparse_graph.QUERY_K, sparse_graph.QUERY_PROBE, sparse_graph.QUERY_LEAD)
_SCORES_NAME = sparse_graph.public_name(sparse_graph.SCORES)


# Rows per runtime call where a whole table is scored (evaluation, ONNX parity, the real cases):
# the ranker scores every patient against the whole catalogue (~12,600 diseases), so
# [rows, catalogue] float64 arrays are ~100 KB a row; a batch bounds them.
BATCH_ROWS = 500


def batches(n: int, size: int = BATCH_ROWS) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``n`` rows."""
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


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
    # no arena: a batch's [rows, diseases] buffers go back to the system after the call instead
    # of staying reserved (RSS after a batch of 1,000: 378 MB instead of 758 MB; same speed)
    options.enable_cpu_mem_arena = False
    return options


def served_graph(model: Any, outputs: Sequence[str], given: str | None = None) -> bytes:
    """The artifact's graph reduced to what :meth:`Runtime.predict` reads: only ``outputs`` left
    as graph outputs and, with ``given``, that tensor (``ranker_scores``) a graph input instead
    of computed (the runtime passes :class:`diagnosis.sparse_graph.SparseScorer`'s scores); the
    nodes, initializers and inputs no output needs any more are dropped.

    onnxruntime runs every node of a session whatever a call fetches, and gives a graph output
    its own buffer: the log-scores over the whole catalogue were copied out of the scatter's
    buffer on every call although predict never reads them. Every output left is computed by
    the same kernels from the same values, so it is the same bit for bit
    (``tests/diagnosis/test_runtime_fast.py``). ``model``: the graph's bytes, or its parsed
    ``onnx.ModelProto`` (changed in place)."""
    import onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    graph = model.graph
    kept = [o for o in graph.output if o.name in outputs]
    nodes = list(graph.node)
    if given is not None:
        declared = next(o for o in graph.output if o.name == given)
        nodes = [n for n in nodes if given not in n.output]
        graph.input.append(declared)
    needed = {o.name for o in kept}
    live = []
    for node in reversed(nodes):  # the graph is topologically sorted
        if needed.intersection(node.output):
            live.append(node)
            needed.update(node.input)
    del graph.output[:]
    graph.output.extend(kept)
    del graph.node[:]
    graph.node.extend(reversed(live))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    inputs = [i for i in graph.input if i.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)
    return model.SerializeToString()


def _scorer(model: Any) -> sparse_graph.SparseScorer | None:
    """The ranker's weights as the exported graph holds them (``rk__``-prefixed initializers,
    :func:`diagnosis.training.export`), or ``None`` for a graph laid out otherwise (it is then
    served through its own CSR walk). ``model``: the parsed ``onnx.ModelProto``."""
    from onnx import numpy_helper

    prefix = "rk__"
    wanted = {prefix + n for n in sparse_graph.SparseScorer.NAMES}
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in wanted}
    try:
        return sparse_graph.SparseScorer.from_initializers(arrays, prefix)
    except KeyError:
        return None


def release_freed_memory(collect_cycles: bool = False) -> None:
    """Hand the heap memory freed so far back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere); with ``collect_cycles``, first free what only reference cycles still hold.

    Loading a deployment: parsing the graph for :func:`served_graph` and the weights'
    :class:`~diagnosis.sparse_graph.SparseScorer` copies frees ~50 MB of temporary buffers that
    glibc otherwise keeps in the process (measured in process: 253 MB after loading the demo
    deployment, 203 MB after the trim; main held 174 MB, the difference being the scorer's
    arrays). Training: an in-process run (``triage pipeline``) reaches its large steps holding
    what the earlier steps freed (measured at 100 k patients before ``diagnosis_model``:
    1,220 MB, 1,005 MB after collecting cycles, 872 MB after the trim)."""
    import ctypes
    import ctypes.util
    import gc

    if collect_cycles:
        gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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
    # [C, 5] each class's profile, a mapped class's that of its ranker disease (its mass is there)
    _class_mix_profiles: np.ndarray | None = field(default=None, repr=False)
    # the ranker's diseases the mapped classes point to (graph input query_probe), in class order
    _probe: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    _is_probe: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    _class_entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _probe_entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _entry_codes: tuple[str, ...] = field(default=(), repr=False)
    _entry_names: tuple[str, ...] = field(default=(), repr=False)
    _entry_categories: tuple[str, ...] = field(default=(), repr=False)
    _entry_names_es: tuple[str | None, ...] = field(default=(), repr=False)
    # the same graph with only the outputs :meth:`_run` reads (:func:`served_graph`)
    _served: ort.InferenceSession | None = field(default=None, repr=False)
    # the ranker's log-scores in numpy, handed to _served (None: _served computes them)
    _scorer: sparse_graph.SparseScorer | None = field(default=None, repr=False)

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
        runtime._set_profiles()
        if class_to_disease is not None:
            probe = class_to_disease[class_to_disease >= 0]
            is_probe = np.zeros(len(knowledge.codes), dtype=bool)
            is_probe[probe] = True
            object.__setattr__(runtime, "_probe", probe)
            object.__setattr__(runtime, "_is_probe", is_probe)
            object.__setattr__(runtime, "_class_entries", np.arange(len(classes)))
            object.__setattr__(runtime, "_probe_entries", len(classes) + probe)
            runtime._check_graph()
            runtime._set_served(onnx_bytes)
            release_freed_memory()
        object.__setattr__(runtime, "_entry_codes", tuple(e.code for e in entries))
        object.__setattr__(runtime, "_entry_names", tuple(e.name for e in entries))
        object.__setattr__(runtime, "_entry_categories", tuple(e.category for e in entries))
        names_es = spanish_names()
        object.__setattr__(runtime, "_entry_names_es", tuple(names_es.get(e.code) for e in entries))
        runtime._smoke_test()
        return runtime

    def _set_served(self, onnx_bytes: bytes) -> None:
        """The session :meth:`_run` calls (:func:`served_graph`): the catalogue's scores from
        :class:`~diagnosis.sparse_graph.SparseScorer` when the graph's weights are found, and
        checked against the artifact's own graph on a few queries before anything is served."""
        import onnx

        version = self.version
        model = onnx.load_from_string(onnx_bytes)
        scorer = _scorer(model)
        given = _SCORES_NAME if scorer is not None else None
        try:
            served = ort.InferenceSession(
                served_graph(model, self._served_outputs(), given),
                session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(
                f"onnxruntime cannot load version {version}'s served graph: {exc}"
            ) from None
        object.__setattr__(self, "_served", served)
        object.__setattr__(self, "_scorer", scorer)
        if scorer is None:
            return
        # a few queries over several contexts and the most used rows of the weight matrix
        terms = np.argsort(-scorer.term_length, kind="stable")[:6].tolist()
        n_contexts = scorer.contexts.shape[0]
        queries = sparse_graph.encode_queries(
            [[], terms[:2], terms[2:], terms[::-1]],
            [0, n_contexts - 1, n_contexts // 2, 0],
        )
        (expected,) = self.session.run(
            [_SCORES_NAME],
            {self.manifest.onnx_input: self.spec.encode([{}] * 4), **queries},
        )
        if not np.array_equal(scorer.scores(queries), expected):
            raise ModelLoadError(
                f"version {version}: the ranker's scores computed from its weights differ from "
                "its graph's; refusing to serve answers that differ from what was evaluated"
            )

    def _check_graph(self) -> None:
        """A ranker graph exported before the batched top-k (issue 13) lacks its inputs and
        outputs: refuse it by name rather than fail on the first request."""
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in sparse_graph.INPUTS if n not in inputs] + [
            sparse_graph.public_name(n) for n in _FAST_OUTPUTS
        ]
        missing = [n for n in missing if n not in inputs and n not in outputs]
        if missing:
            raise ModelLoadError(
                f"version {self.version} was exported with an older ranker graph (missing "
                f"{', '.join(missing)}); run the pipeline to export and deploy it again"
            )

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

    def _queries(
        self, rows: Sequence[Mapping[str, Any]], k: int, lead: list[int] | None = None
    ) -> dict[str, np.ndarray]:
        """The ranker's graph inputs for rows as :meth:`as_scored` reads them."""
        findings, contexts = self._query_parts(rows)
        return sparse_graph.encode_queries(findings, contexts, self._k(k), self._probe, lead)

    def _query_parts(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[list[int]], list[int]]:
        """Each row's findings (rows of the ranker's ``W``) and context row (age bin x sex)."""
        knowledge = self.knowledge
        n_sexes = len(knowledge.sexes)
        findings, contexts = [], []
        for row in rows:
            rows_of = knowledge.rows(row)
            findings.append(rows_of[:-2])
            age, sex = rows_of[-2] - knowledge.age_offset, rows_of[-1] - knowledge.sex_offset
            contexts.append(age * n_sexes + sex)
        return findings, contexts

    def _k(self, k: int) -> int:
        return max(1, min(int(k), len(self.knowledge.codes)))

    def components(self, patients: Sequence[Mapping[str, Any]]) -> Components:
        """The graph's outputs for patients (as :meth:`as_scored` reads them), before blending:
        one onnxruntime call for the whole batch (classifier heads on the feature rows, the
        ranker on every patient's rows of its weight matrix, :mod:`diagnosis.sparse_graph`),
        with the ranker's log-scores over the whole catalogue (the pipeline fits the blend on
        them; :meth:`predict` reads only the graph's top-k and sums).
        A batch of one row is scored as two identical rows by the classifier heads: onnxruntime
        sums a single row in another order than a batch (differences up to ~2e-6), and every
        prediction must go through the same batched arithmetic, so that an explanation's effects
        reproduce exactly.
        """
        m = self.manifest
        rows = [self.as_scored(p) for p in patients]
        n = len(rows)
        features = self.spec.encode(rows if n > 1 else rows + rows)
        symptom_lists = [list(row.get("symptoms") or ()) for row in rows]
        if self.knowledge is None:
            diagnosis, severity = self.session.run(
                [m.onnx_outputs.diagnosis, m.onnx_outputs.severity], {m.onnx_input: features}
            )
            ranker_scores = None
        else:
            diagnosis, severity, scores = self.session.run(
                [m.onnx_outputs.diagnosis, m.onnx_outputs.severity, m.onnx_outputs.ranker],
                {m.onnx_input: features, **self._queries(rows, 1)},
            )
            ranker_scores = np.asarray(scores, dtype=np.float64)
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
        runtime._set_profiles()
        return runtime

    def _set_profiles(self) -> None:
        profiles = self._profiles()
        object.__setattr__(self, "_severity_profiles", profiles)
        if profiles is None or self._class_to_disease is None:
            return
        n_classes = len(self.classes)
        mapped = self._class_to_disease >= 0
        own = profiles[:n_classes].copy()
        own[mapped] = profiles[n_classes + self._class_to_disease[mapped]]
        object.__setattr__(self, "_class_mix_profiles", own)

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
            rows = np.arange(len(probabilities))[:, None]
            kth = probabilities[rows, part].min(axis=1, keepdims=True)
            # argpartition picks any of the entries tied with the k-th: take them all, so that
            # the tie-break below (the lower entry index first) decides, as everywhere else
            tied = probabilities >= kth
            width = int(tied.sum(axis=1).max())
            part = np.argsort(~tied, axis=1, kind="stable")[:, :width]
            keys = np.where(np.take_along_axis(tied, part, axis=1), -probabilities[rows, part], 2.0)
            order = np.lexsort((part, keys), axis=1)[:, :k]
            return np.take_along_axis(part, order, axis=1)
        return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]

    # ---------------------------------------------------------------- cost model
    def stage_costs(
        self, patients: Sequence[Mapping[str, Any]], top_k: int, timer: Any
    ) -> dict[str, float]:
        """CPU µs of each stage of :meth:`predict` (no explanation) for ``patients``, as
        ``timer(call)`` measures a call: scoring (the graph's inputs and the one onnxruntime
        call), blend (with severity), top-k, and the answer objects (the rest of
        :meth:`predict`). Used by ``tests/benchmarks/bench_inprocess.py``."""
        scored = [self.as_scored(p) for p in patients]
        k = max(1, min(int(top_k), self.n_served_entries))
        if self.knowledge is None or self.blend_params is None:
            parts = self.components(scored)
            result = self.blend(parts)
            costs = {
                "scoring": timer(lambda: self.components(scored)),
                "blend": timer(lambda: self.blend(parts)),
                "top-k": timer(lambda: self.top(result.probabilities, k)),
            }
        else:
            raw = self._run(scored, k, None)
            blended, _ = self._blend_raw(scored, raw)

            def blend_and_severity() -> None:
                b, _ = self._blend_raw(scored, raw)
                self._severity_fast(b, raw[1], raw[5])

            costs = {
                "scoring": timer(lambda: self._run(scored, k, None)),
                "blend": timer(blend_and_severity),
                "top-k": timer(lambda: self._top_raw(raw, blended, k, None)),
            }
        total = timer(lambda: self.predict(patients, top_k))
        costs["answer and the rest"] = total - sum(costs.values())
        return costs

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
        entries carry an explanation (occlusion); ``symptom_name`` names HPO ids for its labels.

        One onnxruntime call per :data:`CHUNK_ROWS` rows (:meth:`rank`): a single patient and
        all its occlusion rows, or a chunk of a batch, go through one call."""
        if not patients:
            return []
        scored = [self.as_scored(p) for p in patients]
        k = max(1, min(int(top_k), self.n_served_entries))
        answers: list[Prediction] = []
        start = 0
        while start < len(scored):  # chunks of about CHUNK_ROWS rows, a patient's rows together
            end, rows = start, 0
            if not explain:
                end = min(len(scored), start + CHUNK_ROWS)
            else:
                while end < len(scored) and (end == start or rows < CHUNK_ROWS):
                    rows += 1 + self._n_inputs(scored[end]) if len(scored) > 1 else 1
                    end += 1
            answers += self._predict_chunk(
                patients[start:end], scored[start:end], k, explain, symptom_name
            )
            start = end
        return answers

    def _n_inputs(self, patient: Mapping[str, Any]) -> int:
        return len(occlusion_rows(patient, self.spec.vitals, self.spec.sexes)[0])

    def _predict_chunk(
        self,
        patients: Sequence[Mapping[str, Any]],
        scored: list[Mapping[str, Any]],
        k: int,
        explain: bool,
        symptom_name: SymptomNamer | None,
    ) -> list[Prediction]:
        """:meth:`predict` for a few patients: one onnxruntime call (:meth:`rank`)."""
        if explain:
            inputs, rows, lead = [], [], []
            for patient in scored:
                removed, occluded = occlusion_rows(patient, self.spec.vitals, self.spec.sexes)
                inputs.append(removed)
                lead += [len(rows)] * len(occluded)
                rows += occluded
            ranked = self.rank(rows, k, lead)
            first = sorted(set(lead))
        else:
            ranked = self.rank(scored, k)
            first = list(range(len(scored)))
        order = ranked.order.tolist()
        probabilities = ranked.probabilities.tolist()
        severity = ranked.severity.tolist()
        orphan = ranked.orphan.tolist()
        labels = self.severity_labels
        codes, names, categories = self._entry_codes, self._entry_names, self._entry_categories
        names_es = self._entry_names_es
        ids = _prediction_ids(len(scored))
        answers: list[Prediction] = []
        for i, row in enumerate(first):
            differential = [
                DifferentialEntry(
                    code=codes[j],
                    name=names[j],
                    name_es=names_es[j],
                    category=categories[j],
                    probability=p,
                )
                for j, p in zip(order[row], probabilities[row])
            ]
            if explain:
                m = min(EXPLAINED_DIAGNOSES, len(differential))
                size = len(inputs[i]) + 1
                block = ranked.probabilities[row : row + size, :m]
                notes = explanations(block[0], block[1:], inputs[i], symptom_name)
                for entry, note in zip(differential, notes):
                    entry.explanation = _explanation(note)
            sev = severity[row]
            details = self.warnings_for(patients[i])
            answers.append(
                Prediction(
                    prediction_id=ids[i],
                    model_version=self.version,
                    differential=differential,
                    orphan_probability=orphan[row],
                    severity=Severity(
                        label=labels[max(range(len(sev)), key=sev.__getitem__)],
                        probabilities=dict(zip(labels, sev)),
                    ),
                    warnings=[w.message for w in details],
                    warning_details=details,
                )
            )
        return answers

    def rank(
        self, rows: Sequence[Mapping[str, Any]], k: int, lead: list[int] | None = None
    ) -> Ranking:
        """The top ``k`` entries of rows (as :meth:`as_scored` reads them) from ONE onnxruntime
        call: the graph's top-k, softmax sums and profile mix (:mod:`diagnosis.sparse_graph`)
        blended over the entries that can reach the top k (:class:`diagnosis.blend.CandidateBlend`)
        — the classes, the ranker's top ``k + |mapped|`` diseases and the diseases the classifier
        learned — never over the whole catalogue. Equal to :meth:`score` and :meth:`top` to float
        rounding (``tests/diagnosis/test_runtime_fast.py``); ties keep the entries' order.

        ``lead[i]``: the row whose entries row ``i`` is ranked by (an explanation's occlusion rows
        are reported for the patient's own differential); default: itself."""
        if self.knowledge is None:
            result = self.score(rows)
            order = self.top(result.probabilities, k)
            if lead is not None:
                order = order[np.asarray(lead)]
            return Ranking(
                order,
                np.take_along_axis(result.probabilities, order, axis=1),
                result.severity,
                result.orphan,
            )
        if self.blend_params is None:
            raise ValueError(f"version {self.version} has no blend to score with")
        raw = self._run(rows, k, lead)
        blended, classifier = self._blend_raw(rows, raw)
        order, probabilities = self._top_raw(raw, blended, k, lead)
        return Ranking(
            order,
            probabilities,
            self._severity_fast(blended, raw[1], raw[5]),
            _unit(blended.p_orphan),
        )

    def _run(
        self, rows: Sequence[Mapping[str, Any]], k: int, lead: list[int] | None
    ) -> list[np.ndarray]:
        """The one onnxruntime call of :meth:`rank`: classifier, severity head and the ranker's
        top-k outputs (:data:`_FAST_OUTPUTS`), n rows each."""
        m = self.manifest
        n = len(rows)
        features = self.spec.encode(rows)
        if n == 1:  # the classifier heads score a lone row as a batch of two (see components)
            features = np.concatenate([features, features])
        queries, inverse = self._distinct_queries(rows, k + len(self._probe), lead)
        feeds = {m.onnx_input: features}
        if self._scorer is None:
            feeds.update(queries)
        else:  # the catalogue scored in numpy (sparse_graph.SparseScorer), the rest in the graph
            feeds[_SCORES_NAME] = self._scorer.scores(queries)
            for name in _GRAPH_QUERY_INPUTS:
                feeds[name] = queries[name]
        session = self.session if self._served is None else self._served
        out = session.run(self._served_outputs(), feeds)
        out[0] = _unit(np.asarray(out[0][:n], dtype=np.float64))
        out[1] = np.asarray(out[1][:n], dtype=np.float64)
        if inverse is not None:  # every row gets its distinct query's ranker outputs
            out[2:] = [o[inverse] for o in out[2:]]
        return out

    def _served_outputs(self) -> list[str]:
        """The outputs :meth:`_run` fetches, in the order it reads them."""
        m = self.manifest
        return [m.onnx_outputs.diagnosis, m.onnx_outputs.severity, *_FAST_NAMES]

    def _distinct_queries(
        self, rows: Sequence[Mapping[str, Any]], k: int, lead: list[int] | None
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The ranker's inputs for the distinct queries among ``rows`` that share a lead, and
        each row's index among them (``None``: all distinct, the rows themselves).

        An explanation's occlusion rows that leave out a vital sign other than the age (or any
        input the ranker does not read) ask the ranker exactly what the patient's own row asks:
        the graph scores each distinct (findings, age bin and sex, lead) once, and the rows
        share its outputs. The graph scores every row on its own (a row's outputs do not
        depend on the other rows of the call), so the answers are the same bit for bit; only
        the repeated work goes (4 of the 9 rows of a febrile patient with 4 vital signs)."""
        if lead is None:
            return self._queries(rows, k), None
        findings, contexts = self._query_parts(rows)
        index: dict[tuple[Any, ...], int] = {}
        inverse = np.empty(len(rows), dtype=np.int64)
        first: list[int] = []
        for i, (terms, context) in enumerate(zip(findings, contexts)):
            key = (tuple(terms), context, lead[i])
            at = index.get(key)
            if at is None:
                at = index[key] = len(first)
                first.append(i)
            inverse[i] = at
        if len(first) == len(rows):
            return sparse_graph.encode_queries(
                findings, contexts, self._k(k), self._probe, lead
            ), None
        queries = sparse_graph.encode_queries(
            [findings[i] for i in first],
            [contexts[i] for i in first],
            self._k(k),
            self._probe,
            [int(inverse[lead[i]]) for i in first],
        )
        return queries, inverse

    def _blend_raw(
        self, rows: Sequence[Mapping[str, Any]], raw: list[np.ndarray]
    ) -> tuple[CandidateBlend, np.ndarray]:
        classifier, _, best, _, norm, _, lead_scores, probe_scores = raw
        blended = CandidateBlend.of(
            classifier,
            self._orphan_mask,
            self._class_to_disease,
            best[:, 0],
            norm,
            lead_scores,
            probe_scores,
            self.knowledge.empty_best,
            self._unseen_share([list(r.get("symptoms") or ()) for r in rows]),
            self.blend_params,
        )
        return blended, classifier

    def _top_raw(
        self, raw: list[np.ndarray], blended: CandidateBlend, k: int, lead: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Order the candidate entries by probability, then entry index; k per row."""
        top_index = raw[3]
        n, n_top = top_index.shape
        c = len(self.classes)
        lead_rows = None if lead is None else np.asarray(lead, dtype=np.int64)
        diseases = top_index if lead_rows is None else top_index[lead_rows]
        # candidate entries: every class, the lead row's top diseases, the probed diseases
        width = c + n_top + len(self._probe)
        entries = np.empty((n, width), dtype=np.int64)
        entries[:, :c] = self._class_entries
        np.add(diseases, c, out=entries[:, c : c + n_top])
        entries[:, c + n_top :] = self._probe_entries
        probabilities = np.empty((n, width))
        probabilities[:, :c] = blended.class_probs
        probabilities[:, c : c + n_top] = blended.disease_probs
        probabilities[:, c + n_top :] = blended.probe_probs
        np.minimum(np.maximum(probabilities, 0.0, out=probabilities), 1.0, out=probabilities)
        keys = -probabilities if lead_rows is None else -probabilities[lead_rows]
        # never returned: the hidden classes, and a probed disease among the top ones (it is
        # listed once, with its learned mass, as a probed disease)
        keys[:, self._hidden] = 2.0
        keys[:, c : c + n_top][self._is_probe[diseases]] = 2.0
        order = np.lexsort((entries, keys), axis=1)[:, :k]
        # plain fancy indexing: what np.take_along_axis returns, without its index building
        at = np.arange(n)[:, None]
        return entries[at, order], probabilities[at, order]

    def _severity_fast(
        self, blended: CandidateBlend, head: np.ndarray, mix: np.ndarray
    ) -> np.ndarray:
        """:meth:`severity_of` without a catalogue row: the differential's severity mix is the
        classes' (a mapped class's mass with its disease's profile) plus the ranker's weight
        times the graph's profile mix ``mix`` [n, 5] (``Σ_d exp(score_d - best) profile_d``)."""
        spec = self.manifest.severity
        if spec is None or self._class_mix_profiles is None:
            return _unit(head)
        weights = _unit(blended.class_weights)
        total = _row_product(weights, self._class_mix_profiles)
        total += blended.ranker_weight[:, None] * mix
        return _unit(severity_of_mix(total, head, spec.head_prior, spec.beta))

    def warnings_for(self, patient: Mapping[str, Any]) -> list[WarningDetail]:
        """What the answer says about the request (:mod:`diagnosis.warning_codes`): ids the
        release lacks or reads as another, and a request with neither vitals nor symptoms or with
        few findings and no vitals."""
        if self.knowledge is not None:
            warnings = self.knowledge.warnings(list(patient.get("symptoms") or ()))
            warnings += self.knowledge.warnings(
                list(patient.get("absent_symptoms") or ()), what=warning_codes.ABSENT_SYMPTOM
            )
        else:
            warnings = [
                warning_codes.symptom_not_used(term)
                for term in patient.get("symptoms") or ()
                if not self.spec.knows_symptom(term)
            ]
        no_vitals = all(patient.get(name) is None for name in MEASURED_VITALS)
        if (
            not patient.get("symptoms")
            and not patient.get("absent_symptoms")
            and all(patient.get(name) is None for name in self.spec.vitals)
        ):
            warnings.append(warning_codes.base_rates_only())
        elif no_vitals and len(patient.get("symptoms") or ()) < THIN_SYMPTOMS:
            warnings.append(warning_codes.few_findings())
        return warnings


@dataclass(frozen=True)
class Ranking:
    """What :meth:`Runtime.rank` returns for n rows: ``order`` [n, k] entry indices (most
    probable first; for a row with another lead, its lead's entries), ``probabilities`` [n, k]
    this row's probabilities of those entries, ``severity`` [n, S], ``orphan`` [n]."""

    order: np.ndarray
    probabilities: np.ndarray
    severity: np.ndarray
    orphan: np.ndarray


def _unit(values: np.ndarray) -> np.ndarray:
    """``np.clip(values, 0, 1)`` in two ufunc calls (np.clip's wrappers cost more on small
    arrays)."""
    return np.minimum(np.maximum(values, 0.0), 1.0)


def _row_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` summed row by row in one order whatever the number of rows (BLAS rounds a
    1-row product differently from a batch's: a patient must get the same answer alone)."""
    return (a[:, :, None] * b[None, :, :]).sum(axis=1)


def _prediction_ids(n: int) -> list[str]:
    """n random version-4 UUIDs as 32 hex digits (``uuid.uuid4().hex``), from one read of the
    system's random source."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [text[32 * i : 32 * i + 32] for i in range(n)]


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
