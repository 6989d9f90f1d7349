"""The served path (one onnxruntime call, top-k in the graph, blend over the candidates only)
returns what the previous path returned: the ranker's log-scores over the whole catalogue (numpy
reference of the weight matrix, summed as the old graph summed them), the blend of
:func:`diagnosis.blend.blend` over every entry, severity from the full differential, and a sort of
every entry (ties: the lower entry index first).

On a real-sized model: the knowledge ranker over the packaged HPO release (every ORPHA/OMIM
disease, their clinical-course severity profiles) and small classifier heads with a common class,
an orphan class the ranker also lists (its mass moves to the ranker's entry) and one it does not.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import numpy as np
import onnx
import polars as pl
import pytest

from diagnosis import sparse_graph
from diagnosis.blend import BlendParams
from diagnosis.explain import occlusion_rows
from diagnosis.features import FeatureSpec
from diagnosis.hpo import Ontology, hpo_data_dir, load_annotations, parse_context_annotations
from diagnosis.ranker import KnowledgeRanker
from diagnosis.runtime import CHUNK_ROWS, Components, ModelLoadError, Runtime, served_graph
from diagnosis.severity import knowledge_profiles
from schemas.clinical import SEVERITIES

FEVER, COUGH, HEADACHE = "HP:0001945", "HP:0012735", "HP:0002315"
ARACHNODACTYLY, ECTOPIA_LENTIS, TALL = "HP:0001166", "HP:0001083", "HP:0000098"
SYMPTOMS = (FEVER, COUGH, HEADACHE, ARACHNODACTYLY, ECTOPIA_LENTIS, TALL)
CLASSES = {
    "NONE": ("No disease", "healthy"),
    "J10": ("Influenza", "common"),
    "ORPHA:558": ("Marfan syndrome", "orphan"),  # the ranker lists it too
    "ORPHA:999999": ("An orphan class the ranker does not list", "orphan"),
}
BLEND = BlendParams(coef=(0.8, 0.35, 1.5), intercept=-1.2, alpha=0.4)
TOP_K = 10


def _heads(rng: np.random.Generator):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from diagnosis.training.fitting import TrainedModel

    spec = FeatureSpec(symptoms=SYMPTOMS)
    patients, diagnosis, severity = [], [], []
    terms = {0: [], 1: [FEVER, COUGH, HEADACHE], 2: [ARACHNODACTYLY, ECTOPIA_LENTIS, TALL]}
    for _ in range(400):
        d = int(rng.integers(0, 4))
        patients.append(
            {
                "age": float(rng.uniform(5, 80)),
                "sex": str(rng.choice(["female", "male"])),
                "heart_rate": float(rng.normal(110 if d == 1 else 72, 8)),
                "body_temperature": float(rng.normal(39.0 if d == 1 else 36.8, 0.3)),
                "systolic_bp": float(rng.normal(120, 8)),
                "diastolic_bp": float(rng.normal(75, 5)),
                "symptoms": [t for t in terms[min(d, 2)] if rng.random() < 0.8],
            }
        )
        diagnosis.append(d)
        severity.append(SEVERITIES[d if rng.random() < 0.9 else 4])
    X = spec.encode(patients)

    def fit(y):
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="median")),
                ("lr", LogisticRegression(C=2.0, max_iter=2000)),
            ]
        ).fit(X, y)

    codes = list(CLASSES)
    model = TrainedModel(
        spec=spec,
        classes=codes,
        diagnosis=fit(np.array(diagnosis)),
        severity=fit(np.array([SEVERITIES.index(s) for s in severity])),
        params={},
        imputation={},
    )
    return model, [codes[d] for d in diagnosis], severity


@pytest.fixture(scope="module")
def ranker() -> KnowledgeRanker:
    context = parse_context_annotations(hpo_data_dir() / "phenotype.hpoa")
    ranker = KnowledgeRanker.build(Ontology.load(), load_annotations(), context)
    course = context.filter(pl.col("aspect") == "C")
    ranker.disease_profiles = np.asarray(knowledge_profiles(course, ranker.diseases))
    return ranker


@pytest.fixture(scope="module")
def artifact(ranker):
    from diagnosis.training.export import build_artifact, severity_spec

    model, diagnoses, severities = _heads(np.random.default_rng(3))
    artifact = build_artifact(
        model,
        ranker,
        {c: name for c, (name, _) in CLASSES.items()},
        {c: category for c, (_, category) in CLASSES.items()},
        severity=severity_spec(list(CLASSES), diagnoses, severities, beta=0.7),
    )
    manifest = msgspec.structs.replace(artifact.manifest, version="fast", blend=BLEND.to_spec())
    return manifest, artifact.onnx, artifact.knowledge


@pytest.fixture(scope="module")
def runtime(artifact) -> Runtime:
    return Runtime.from_artifact(*artifact)


def _patients(ranker: KnowledgeRanker, n: int, seed: int) -> list[dict[str, Any]]:
    """Patients as the API hands them on: findings drawn from real diseases' annotations plus
    unrelated ones, some excluded findings, ages across the age bins (or none), every sex."""
    rng = np.random.default_rng(seed)
    annotated = ranker.terms[: ranker.n_terms]
    lengths = np.diff(ranker.row_ptr[: ranker.n_terms + 1])
    useful = [t for t, length in zip(annotated, lengths) if length > 0]
    patients: list[dict[str, Any]] = [
        {},  # nothing stated: the catalogue ranks by its priors, many ties
        {"sex": "female"},
        {"age": 30.0, "heart_rate": 80.0},
    ]
    while len(patients) < n:
        present = [str(t) for t in rng.choice(useful, size=int(rng.integers(1, 9)), replace=False)]
        absent = [str(t) for t in rng.choice(useful, size=int(rng.integers(0, 3)), replace=False)]
        patients.append(
            {
                "age": None
                if rng.random() < 0.2
                else float(rng.choice([0.01, 0.5, 3, 12, 30, 70])),
                "sex": [None, "female", "male", "other"][int(rng.integers(0, 4))],
                "heart_rate": float(rng.normal(90, 15)),
                "body_temperature": None if rng.random() < 0.3 else float(rng.normal(37.5, 1)),
                "symptoms": present + ([FEVER] if rng.random() < 0.3 else []),
                "absent_symptoms": [t for t in absent if t not in present and t != FEVER],
            }
        )
    return patients


def _previous_path(runtime: Runtime, ranker: KnowledgeRanker, patients, k: int):
    """The answer as the previous served path computed it: numpy log-scores over the catalogue
    (bias, then every query row in order), the full blend and severity, a sort of all entries."""
    scored = [runtime.as_scored(p) for p in patients]
    rows = [
        ranker.query_rows(
            p.get("symptoms") or (), p.get("absent_symptoms") or (), p.get("age"), p.get("sex")
        )
        for p in scored
    ]
    graph = runtime.components(scored)
    parts = Components(
        graph.classifier,
        graph.severity,
        ranker.score_rows(rows).astype(np.float64),
        graph.unseen_share,
    )
    result = runtime.blend(parts)
    visible = result.probabilities.copy()
    visible[:, runtime._hidden] = -1.0
    order = np.argsort(-visible, axis=1, kind="stable")[:, :k]
    return (
        runtime.codes[order].tolist(),
        np.take_along_axis(result.probabilities, order, axis=1),
        result.severity,
        result.orphan,
    )


def test_served_answers_equal_the_previous_full_catalogue_path(runtime, ranker):
    patients = _patients(ranker, 80, seed=5)
    codes, probabilities, severity, orphan = _previous_path(runtime, ranker, patients, TOP_K)
    answers = runtime.predict(patients, TOP_K)
    assert [[e.code for e in a.differential] for a in answers] == codes
    np.testing.assert_allclose(
        [[e.probability for e in a.differential] for a in answers], probabilities, atol=1e-6
    )
    np.testing.assert_allclose(
        [list(a.severity.probabilities.values()) for a in answers], severity, atol=1e-6
    )
    np.testing.assert_allclose([a.orphan_probability for a in answers], orphan, atol=1e-6)
    # the orphan class the ranker lists is answered once, under the ranker's entry
    assert all(len({e.code for e in a.differential}) == TOP_K for a in answers)


def test_the_pipelines_full_catalogue_scores_rank_as_the_served_path(runtime, ranker):
    """The gate ranks :meth:`Runtime.score` with :meth:`Runtime.top`; the API answers with
    :meth:`Runtime.predict`: the same codes, the same probabilities."""
    patients = _patients(ranker, 40, seed=8)
    result = runtime.score(patients)
    order = runtime.top(result.probabilities, 25)
    answers = runtime.predict(patients, 25)
    assert [[e.code for e in a.differential] for a in answers] == runtime.codes[order].tolist()
    np.testing.assert_allclose(
        [[e.probability for e in a.differential] for a in answers],
        np.take_along_axis(result.probabilities, order, axis=1),
        atol=1e-6,
    )


def test_a_batch_answers_each_patient_exactly_as_a_single_request(runtime, ranker):
    patients = _patients(ranker, CHUNK_ROWS + 10, seed=13)  # more than one onnxruntime call
    batch = runtime.predict(patients, TOP_K)
    for patient, answer in zip(patients, batch):
        (alone,) = runtime.predict([patient], TOP_K)
        assert [(e.code, e.probability) for e in alone.differential] == [
            (e.code, e.probability) for e in answer.differential
        ]
        assert alone.severity == answer.severity
        assert alone.orphan_probability == answer.orphan_probability


def test_an_explained_batch_answers_each_patient_as_an_explained_single_request(runtime, ranker):
    patients = _patients(ranker, 12, seed=17)  # about 120 occlusion rows: several calls
    batch = runtime.predict(patients, TOP_K, explain=True)
    for patient, answer in zip(patients, batch):
        (alone,) = runtime.predict([patient], TOP_K, explain=True)
        assert [(e.code, e.probability, e.explanation) for e in alone.differential] == [
            (e.code, e.probability, e.explanation) for e in answer.differential
        ]
        assert alone.severity == answer.severity


def test_explained_effects_are_reproduced_by_resending_without_the_input(runtime, ranker):
    for patient in _patients(ranker, 12, seed=21)[3:]:
        (explained,) = runtime.predict([patient], 100, explain=True)
        (plain,) = runtime.predict([patient], 100)
        assert [(e.code, e.probability) for e in explained.differential] == [
            (e.code, e.probability) for e in plain.differential
        ]
        scored = runtime.as_scored(patient)
        checked = 0
        for entry in explained.differential[:3]:
            for item in entry.explanation.supports + entry.explanation.against:
                if item.field in ("symptoms", "absent_symptoms"):
                    without = {
                        **scored,
                        item.field: [t for t in scored[item.field] if t != item.value],
                    }
                else:
                    without = {**scored, item.field: None}
                (again,) = runtime.predict([without], 100)
                probability = {e.code: e.probability for e in again.differential}
                if entry.code in probability:
                    assert entry.probability - probability[entry.code] == item.effect
                    checked += 1
        assert checked > 0


def test_an_explanation_scores_each_distinct_ranker_query_once(runtime, ranker, monkeypatch):
    """Occlusion rows that leave out a vital sign the ranker does not read ask it what the
    patient's row asks: the graph gets each distinct query once, and the answer is the one
    every row scored separately gives, bit for bit."""
    patient = {**_patients(ranker, 5, seed=23)[4], "heart_rate": 95.0, "body_temperature": 38.5}
    inputs, rows = occlusion_rows(
        runtime.as_scored(patient), runtime.spec.vitals, runtime.spec.sexes
    )
    ranked: list[int] = []
    real_run = runtime._served.run

    def counting(names, feeds, *args, **kwargs):
        ranked.append(len(feeds[sparse_graph.QUERY_LEAD]))  # one per distinct query
        return real_run(names, feeds, *args, **kwargs)

    monkeypatch.setattr(runtime._served, "run", counting)
    (shared,) = runtime.predict([patient], TOP_K, explain=True)
    # the heart rate's and the temperature's rows share the patient's query
    assert len(rows) == 1 + len(inputs) and ranked == [len(rows) - 2]
    monkeypatch.setattr(
        Runtime,
        "_distinct_queries",
        lambda self, rows, k, lead: (self._queries(rows, k, lead), None),
    )
    (separate,) = runtime.predict([patient], TOP_K, explain=True)
    assert ranked[-1] == len(rows)
    assert [(e.code, e.probability, e.explanation) for e in shared.differential] == [
        (e.code, e.probability, e.explanation) for e in separate.differential
    ]
    assert shared.severity == separate.severity
    assert shared.orphan_probability == separate.orphan_probability


def test_a_graph_exported_before_the_batched_top_k_is_refused_by_name(artifact):
    manifest, content, knowledge = artifact
    model = onnx.load_from_string(content)
    probe = sparse_graph.public_name(sparse_graph.PROBE_SCORES)
    kept = [o for o in model.graph.output if o.name != probe]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    old = model.SerializeToString()
    manifest = msgspec.structs.replace(manifest, onnx_sha256=hashlib.sha256(old).hexdigest())
    with pytest.raises(ModelLoadError, match=f"older ranker graph.*{probe}"):
        Runtime.from_artifact(manifest, old, knowledge)


def test_the_served_graph_and_numpy_scores_give_the_artifact_graphs_outputs(runtime, ranker):
    """The served session (the artifact's graph with ``ranker_scores`` an input, computed by
    :class:`SparseScorer` from the graph's own weights) returns, bit for bit, what the artifact's
    own graph returns: the log-scores themselves and every output predict reads, for a lone
    patient, a batch and an explanation's rows with their leads."""
    assert runtime._served is not None and runtime._scorer is not None
    outputs = runtime._served_outputs()
    scores = sparse_graph.public_name(sparse_graph.SCORES)
    assert {o.name for o in runtime._served.get_outputs()} == set(outputs)
    assert {i.name for i in runtime._served.get_inputs()} == {
        runtime.manifest.onnx_input,
        scores,
        sparse_graph.QUERY_K,
        sparse_graph.QUERY_PROBE,
        sparse_graph.QUERY_LEAD,
    }
    patients = [runtime.as_scored(p) for p in _patients(ranker, 40, seed=31)]
    m = runtime.manifest
    k = TOP_K + len(runtime._probe)
    cases = [(patients[3:4], None), (patients, None), (patients[5:12], [0, 0, 0, 3, 3, 5, 5])]
    for rows, lead in cases:
        features = runtime.spec.encode(rows if len(rows) > 1 else rows + rows)
        queries = runtime._queries(rows, k, lead)
        full = runtime.session.run([*outputs, scores], {m.onnx_input: features, **queries})
        computed = runtime._scorer.scores(queries)
        assert computed.dtype == full[-1].dtype and np.array_equal(computed, full[-1])
        feeds = {m.onnx_input: features, scores: computed}
        feeds.update({n: queries[n] for n in (sparse_graph.QUERY_K, sparse_graph.QUERY_PROBE)})
        feeds[sparse_graph.QUERY_LEAD] = queries[sparse_graph.QUERY_LEAD]
        served = runtime._served.run(outputs, feeds)
        for name, a, b in zip(outputs, full, served):
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_numpy_scores_equal_the_reference_sum(runtime, ranker):
    """:class:`SparseScorer` adds the queried weights onto the context rows one by one in query
    order (a plain loop here), in float32."""
    patients = [runtime.as_scored(p) for p in _patients(ranker, 30, seed=37)]
    findings, contexts = runtime._query_parts(patients)
    queries = sparse_graph.encode_queries(findings, contexts)
    scorer = runtime._scorer
    expected = np.stack([_reference_row(scorer, c, t) for t, c in zip(findings, contexts)])
    assert np.array_equal(scorer.scores(queries), expected)


def _reference_row(scorer, context: int, terms: list[int]) -> np.ndarray:
    row = scorer.contexts[context].copy()
    for t in terms:
        lo = int(scorer.term_start[t])
        hi = lo + int(scorer.term_length[t])
        for d, w in zip(scorer.nnz_disease[lo:hi].tolist(), scorer.nnz_weight[lo:hi]):
            row[d] = np.float32(row[d] + w)
    return row


def test_a_graph_without_the_known_weight_names_is_served_by_its_own_csr_walk(artifact, ranker):
    """Weights laid out under other names: no numpy scorer, the served graph keeps its CSR walk
    and the answers are the same."""
    manifest, content, knowledge = artifact
    model = onnx.load_from_string(content)
    renamed = {"rk__nnz_weight": "rk__nnz_weight_other"}
    for t in model.graph.initializer:
        t.name = renamed.get(t.name, t.name)
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    other = model.SerializeToString()
    manifest = msgspec.structs.replace(manifest, onnx_sha256=hashlib.sha256(other).hexdigest())
    walked = Runtime.from_artifact(manifest, other, knowledge)
    assert walked._scorer is None and walked._served is not None
    assert sparse_graph.QUERY_TERMS in {i.name for i in walked._served.get_inputs()}
    reference = Runtime.from_artifact(*artifact)
    patients = _patients(ranker, 12, seed=41)
    for explain in (False, True):
        a = walked.predict(patients, TOP_K, explain=explain)
        b = reference.predict(patients, TOP_K, explain=explain)
        assert [_answer(x) for x in a] == [_answer(x) for x in b]


def _answer(prediction) -> Any:
    document = msgspec.to_builtins(prediction)
    document.pop("prediction_id")
    return document


def test_scores_that_differ_from_the_graphs_refuse_the_version(artifact, monkeypatch):
    real = sparse_graph.SparseScorer.scores
    monkeypatch.setattr(
        sparse_graph.SparseScorer,
        "scores",
        lambda self, queries: np.nextafter(real(self, queries), np.float32(np.inf)),
    )
    with pytest.raises(ModelLoadError, match="computed from its weights differ from its graph"):
        Runtime.from_artifact(*artifact)


def test_served_graph_keeps_only_the_outputs_asked_for(artifact):
    _, content, _ = artifact
    kept = [sparse_graph.public_name(sparse_graph.TOP_INDEX), "diagnosis_probabilities"]
    model = onnx.load_from_string(served_graph(content, kept))
    assert sorted(o.name for o in model.graph.output) == sorted(kept)
    names = {n.output[0] for n in model.graph.node}
    # the severity head is gone; the ranker's CSR walk stays (top_index needs it)
    assert "severity_probabilities" not in names and "rk__hit_cell" in names
