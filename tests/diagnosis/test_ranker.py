"""Knowledge ranker (diagnosis.ranker): ranking behaviour, query encoding and ONNX parity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from diagnosis.hpo import (
    PHENOTYPIC_ABNORMALITY,
    ROOT,
    Ontology,
    disease_phenotypes,
    load_annotations,
)
from diagnosis.ranker import (
    ONNX_PROBABILITIES_OUTPUT,
    ONNX_QUERY_INPUT,
    ONNX_SCORES_OUTPUT,
    KnowledgeRanker,
    to_onnx,
)

MARFAN = "ORPHA:558"


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return Ontology.load()


@pytest.fixture(scope="module")
def annotations() -> pl.DataFrame:
    return load_annotations()


@pytest.fixture(scope="module")
def ranker(ontology: Ontology, annotations: pl.DataFrame) -> KnowledgeRanker:
    return KnowledgeRanker.build(ontology, annotations, universe=("ORPHA",))


@pytest.fixture(scope="module")
def session(ranker: KnowledgeRanker) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(to_onnx(ranker), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def phenotypes(annotations: pl.DataFrame) -> pl.DataFrame:
    return disease_phenotypes(annotations.filter(pl.col("database") == "ORPHA"))


def frequent_terms(phenotypes: pl.DataFrame, disease: str, minimum: float = 0.8) -> list[str]:
    rows = phenotypes.filter(
        (pl.col("disease_id") == disease)
        & ~pl.col("excluded")
        & (pl.col("frequency").fill_null(0.5) >= minimum)
    )
    return sorted(rows["hpo_id"].to_list())


def rank(ranker: KnowledgeRanker, terms: list[str], disease: str) -> int:
    probs = ranker.posterior(terms)
    return 1 + int((probs > probs[ranker.disease_index(disease)]).sum())


def test_every_annotated_orpha_disease_is_rankable(ranker, annotations):
    orpha = set(annotations.filter(pl.col("database") == "ORPHA")["disease_id"].to_list())
    assert set(ranker.diseases) == orpha
    assert len(ranker.diseases) > 4000
    assert ranker.nnz_term.dtype == np.int64 and ranker.nnz_disease.dtype == np.int64
    assert ranker.nnz_weight.dtype == np.float32
    assert np.all(np.diff(ranker.nnz_term) >= 0), "weights must be sorted by term"
    probs = ranker.posterior(["HP:0001166"])  # Arachnodactyly
    assert probs.shape == (len(ranker.diseases),)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_exact_terms_rank_their_disease_first(ranker, phenotypes):
    terms = frequent_terms(phenotypes, MARFAN)
    assert len(terms) >= 5
    assert rank(ranker, terms, MARFAN) == 1
    top_code, _, top_probability = ranker.rank(terms, top_k=1)[0]
    assert top_code == MARFAN and top_probability > 0.5


def test_parent_terms_keep_the_disease_in_the_top_ten(ranker, ontology, phenotypes):
    generic = {ROOT, PHENOTYPIC_ABNORMALITY}
    parents = []
    for term in frequent_terms(phenotypes, MARFAN):
        ups = [p for p in ontology.parents[term] if p not in generic]
        parents.append(ups[0] if ups else term)
    assert set(parents) != set(frequent_terms(phenotypes, MARFAN))
    assert rank(ranker, parents, MARFAN) <= 10


def test_an_unrelated_term_does_not_push_a_rich_disease_out_of_the_top_three(
    ranker, ontology, phenotypes
):
    terms = frequent_terms(phenotypes, MARFAN)
    annotated = set(phenotypes.filter(pl.col("disease_id") == MARFAN)["hpo_id"].to_list())
    noise = "HP:0002240"  # Hepatomegaly
    assert not ontology.ancestors(noise) & annotated
    assert not any(noise in ontology.ancestors(t) for t in annotated)
    assert rank(ranker, terms + [noise], MARFAN) <= 3


def test_an_excluded_term_counts_against_the_disease(ranker, phenotypes):
    excluded = phenotypes.filter(pl.col("excluded")).group_by("disease_id").agg(pl.col("hpo_id"))
    disease, terms = excluded.row(0)
    positive = frequent_terms(phenotypes, disease, minimum=0.0)[:5]
    index = ranker.disease_index(disease)
    with_excluded = ranker.score(ranker.encode(positive + [terms[0]]))[index]
    assert with_excluded < ranker.score(ranker.encode(positive))[index] - 1.0


def test_alt_ids_and_obsolete_ids_map_to_the_current_term(ranker, ontology):
    alt, primary = next(
        (alt, primary)
        for alt, primary in sorted(ontology.alt_ids.items())
        if primary in ontology and alt not in ontology
    )
    assert np.array_equal(ranker.encode([alt]), ranker.encode([primary]))
    assert ranker.encode([alt]).sum() == 1.0
    indicator, unknown = ranker.encode([alt], return_unknown=True)
    assert unknown == [] and indicator[ranker.terms.index(primary)] == 1.0


def test_unknown_and_malformed_ids_are_reported_not_used(ranker):
    indicator, unknown = ranker.encode(
        ["HP:0001166", "HP:9999999", "fever", " HP:0001166 "], return_unknown=True
    )
    assert unknown == ["HP:9999999", "fever"]
    assert indicator.sum() == 1.0
    encoded = ranker.encode_query(["HP:9999999", "fever"])
    assert encoded.unknown == ("HP:9999999",)
    assert encoded.malformed == ("fever",)
    assert encoded.terms == () and encoded.indicator.sum() == 0.0


def test_onnx_graph_matches_the_numpy_scores(ranker, session, phenotypes):
    queries = [
        [],  # empty query: the prior alone
        frequent_terms(phenotypes, MARFAN),
        ["HP:0001250", "HP:0001263", "HP:0000252"],
        [ROOT, PHENOTYPIC_ABNORMALITY, "HP:0000006"],  # generic + inheritance term
    ]
    for terms in queries:
        indicator = ranker.encode(terms)
        scores, probs = session.run(
            [ONNX_SCORES_OUTPUT, ONNX_PROBABILITIES_OUTPUT], {ONNX_QUERY_INPUT: indicator}
        )
        assert probs.shape == (len(ranker.diseases),)
        np.testing.assert_allclose(scores, ranker.score(indicator), atol=1e-4)
        assert np.abs(probs - ranker.posterior(indicator)).max() <= 1e-4
        assert int(np.argmax(probs)) == int(np.argmax(ranker.posterior(indicator)))


def test_build_rejects_unknown_parameters(ontology, annotations):
    with pytest.raises(TypeError, match="unknown ranker parameters"):
        KnowledgeRanker.build(ontology, annotations, universe=("ORPHA",), nosie=0.1)
