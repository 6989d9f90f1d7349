"""Knowledge ranker (diagnosis.ranker): ranking behaviour, excluded findings, age and sex against
the release's onset and inheritance annotations, query rows and ONNX parity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from diagnosis import sparse_graph
from diagnosis.hpo import (
    PHENOTYPIC_ABNORMALITY,
    ROOT,
    Ontology,
    disease_phenotypes,
    hpo_data_dir,
    load_annotations,
    parse_context_annotations,
)
from diagnosis.ranker import KnowledgeRanker, age_row

MARFAN = "ORPHA:558"


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return Ontology.load()


@pytest.fixture(scope="module")
def annotations() -> pl.DataFrame:
    return load_annotations()


@pytest.fixture(scope="module")
def context() -> pl.DataFrame:
    return parse_context_annotations(hpo_data_dir() / "phenotype.hpoa")


@pytest.fixture(scope="module")
def ranker(ontology, annotations, context) -> KnowledgeRanker:
    return KnowledgeRanker.build(ontology, annotations, context)


@pytest.fixture(scope="module")
def session(ranker: KnowledgeRanker) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(ranker.to_onnx(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def phenotypes(annotations: pl.DataFrame) -> pl.DataFrame:
    return disease_phenotypes(annotations.filter(pl.col("database").is_in(["ORPHA", "OMIM"])))


def frequent_terms(phenotypes: pl.DataFrame, disease: str, minimum: float = 0.8) -> list[str]:
    rows = phenotypes.filter(
        (pl.col("disease_id") == disease)
        & ~pl.col("excluded")
        & (pl.col("frequency").fill_null(0.5) >= minimum)
    )
    return sorted(rows["hpo_id"].to_list())


def rank(ranker: KnowledgeRanker, terms: list[str], disease: str, **kwargs) -> int:
    probs = ranker.posterior(terms, **kwargs)
    return 1 + int((probs > probs[ranker.disease_index(disease)]).sum())


def test_every_annotated_orpha_and_omim_disease_is_rankable(ranker, annotations):
    rare = annotations.filter(pl.col("database").is_in(["ORPHA", "OMIM"]))
    assert set(ranker.diseases) == set(rare["disease_id"].to_list())
    assert ranker.nnz_disease.dtype == np.int32 and ranker.nnz_weight.dtype == np.float32
    assert ranker.row_ptr[-1] == ranker.nnz
    probs = ranker.posterior(["HP:0001166"])  # Arachnodactyly
    assert probs.shape == (len(ranker.diseases),)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_exact_terms_rank_their_disease_first(ranker, phenotypes):
    terms = frequent_terms(phenotypes, MARFAN)
    assert len(terms) >= 5
    assert rank(ranker, terms, MARFAN) <= 3


def test_parent_terms_keep_the_disease_in_the_top_ten(ranker, ontology, phenotypes):
    generic = {ROOT, PHENOTYPIC_ABNORMALITY}
    parents = []
    for term in frequent_terms(phenotypes, MARFAN):
        ups = [p for p in ontology.parents[term] if p not in generic]
        parents.append(ups[0] if ups else term)
    assert set(parents) != set(frequent_terms(phenotypes, MARFAN))
    assert rank(ranker, parents, MARFAN) <= 10


def test_an_excluded_finding_lowers_the_diseases_annotated_with_it_by_its_frequency(
    ranker, phenotypes
):
    terms = frequent_terms(phenotypes, MARFAN)
    stated, excluded = terms[1:], terms[0]  # an obligate/very frequent finding of Marfan
    index = ranker.disease_index(MARFAN)
    before = ranker.score(stated)
    after = ranker.score(stated, absent=[excluded])
    assert after[index] < before[index] - 0.2  # 0.1 x T x -log(0.05) for an obligate finding
    # never evidence *for* a disease that has the finding: none of them goes up
    having = phenotypes.filter((pl.col("hpo_id") == excluded) & ~pl.col("excluded"))
    for code in set(having["disease_id"].to_list()):
        i = ranker.disease_index(code)
        assert after[i] <= before[i] + 1e-5, code
    # and a disease not annotated with it (nor anything below it) is not moved
    unrelated = ranker.disease_index(
        next(d for d in ranker.diseases if excluded not in frequent_terms(phenotypes, d, 0.0))
    )
    assert after[unrelated] == pytest.approx(before[unrelated], abs=1e-5)


def test_a_term_both_present_and_excluded_counts_as_present(ranker):
    rows = ranker.query_rows(["HP:0001166"], ["HP:0001166"])
    assert rows[0] == ranker.terms.index("HP:0001166")
    assert not any(ranker.absent_offset <= r < ranker.age_offset for r in rows)


def test_age_and_sex_read_the_onset_and_inheritance_annotations(ranker, context):
    # a disease whose earliest annotated onset is in adulthood: a 2-year-old is less likely
    adult = context.filter((pl.col("aspect") == "C") & (pl.col("hpo_id") == "HP:0003581"))
    code = next(d for d in adult["disease_id"].to_list() if d in set(ranker.diseases))
    index = ranker.disease_index(code)
    onset_low = {
        row[0] for row in context.filter(pl.col("disease_id") == code).select("hpo_id").iter_rows()
    }
    if onset_low & {"HP:0003577", "HP:0003593", "HP:0011463", "HP:0003623", "HP:0030674"}:
        pytest.skip(f"{code} also has an early onset annotated")
    assert ranker.score(["HP:0001250"], age=2.0)[index] < ranker.score(["HP:0001250"])[index]
    # X-linked recessive only: less likely in a woman than when sex is unknown
    xlr = context.filter((pl.col("aspect") == "I") & (pl.col("hpo_id") == "HP:0001419"))
    modes = context.filter(pl.col("aspect") == "I").group_by("disease_id").agg(pl.col("hpo_id"))
    only = {d for d, m in modes.iter_rows() if set(m) == {"HP:0001419"}}
    code = next(d for d in xlr["disease_id"].to_list() if d in only and d in set(ranker.diseases))
    index = ranker.disease_index(code)
    assert ranker.score([], sex="female")[index] < ranker.score([], sex="unknown")[index]
    assert age_row(None) == 0 and age_row(0.5) != age_row(30.0)


def test_alt_ids_and_obsolete_ids_map_to_the_current_term(ranker, ontology):
    alt, primary = next(
        (alt, primary)
        for alt, primary in sorted(ontology.alt_ids.items())
        if primary in ontology and alt not in ontology
    )
    assert ranker.query_rows([alt]) == ranker.query_rows([primary])
    assert ranker.canonical_terms([alt]) == [primary]


def test_unknown_and_malformed_ids_are_not_used(ranker):
    assert ranker.canonical_terms(["HP:0001166", "HP:9999999", "fever", " HP:0001166 "]) == [
        "HP:0001166"
    ]


def test_onnx_graph_matches_the_numpy_scores_for_a_batch(ranker, session, phenotypes):
    patients = [
        ([], [], None, None),  # nothing stated: the bias alone
        (frequent_terms(phenotypes, MARFAN), [], 25.0, "female"),
        (["HP:0001250", "HP:0001263"], ["HP:0000252"], 3.0, "male"),
        ([ROOT, PHENOTYPIC_ABNORMALITY, "HP:0000006"], [], None, "unknown"),
    ]
    rows = [ranker.query_rows(*p) for p in patients]
    (scores,) = session.run([sparse_graph.SCORES], ranker.onnx_feeds(rows))
    assert scores.shape == (len(patients), len(ranker.diseases))
    np.testing.assert_allclose(scores, ranker.score_rows(rows), atol=1e-4)
    # one patient alone gets exactly what it got inside the batch
    (alone,) = session.run([sparse_graph.SCORES], ranker.onnx_feeds(rows[1:2]))
    np.testing.assert_array_equal(alone[0], scores[1])


def test_onnx_top_k_and_softmax_sums_match_numpy_over_the_whole_catalogue(ranker, session):
    """The graph's top-k (ties: the lower index first), softmax denominator, the scores of the
    probed diseases and of each row's lead row's top diseases, against numpy on its scores."""
    patients = [
        ([], [], None, None),  # the priors alone: many diseases tie
        (["HP:0001166", "HP:0001083"], ["HP:0000098"], 25.0, "male"),
        (["HP:0001250"], [], 1.5, "female"),
    ]
    rows = [ranker.query_rows(*p) for p in patients]
    probe = [5, 17, 4000]
    feeds = ranker.onnx_feeds(rows, k=25, probe=probe)
    feeds[sparse_graph.QUERY_LEAD] = np.array([0, 1, 1])  # row 2 reports row 1's diseases
    scores, top, index, norm, lead, probed = session.run(
        [
            sparse_graph.SCORES,
            sparse_graph.TOP_SCORES,
            sparse_graph.TOP_INDEX,
            sparse_graph.NORM,
            sparse_graph.LEAD_TOP_SCORES,
            sparse_graph.PROBE_SCORES,
        ],
        feeds,
    )
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    np.testing.assert_allclose(norm, np.exp(shifted).sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(probed, scores[:, probe])
    np.testing.assert_array_equal(lead[2], scores[2, index[1]])
    np.testing.assert_array_equal(lead[:2], top[:2])
