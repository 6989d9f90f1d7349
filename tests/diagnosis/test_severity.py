"""Severity follows the differential (diagnosis.severity)."""

import numpy as np
import polars as pl

from diagnosis.severity import (
    PROFILE_ORDER,
    class_profiles,
    coherent_severity,
    course_profile,
    incoherent,
    knowledge_profiles,
)
from schemas.clinical import SEVERITIES


def test_not_ill_is_exactly_the_probability_of_no_disease_whatever_the_head_says():
    profiles = class_profiles(
        ["NONE", "J10", "ORPHA:1"],
        ["NONE", "NONE", "J10", "J10", "J10", "ORPHA:1"],
        ["not_ill", "not_ill", "mild", "acute", "acute", "chronic"],
    )
    assert profiles[1, SEVERITIES.index("not_ill")] == 0.0  # influenza never "not ill"
    assert profiles[1, SEVERITIES.index("terminal")] == 0.0  # nor a category never recorded
    entries = np.array([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    head = np.array([[0.9, 0.05, 0.03, 0.01, 0.01], [0.01, 0.01, 0.01, 0.01, 0.96]])
    prior = np.full(5, 0.2)
    severity = coherent_severity(entries, profiles, head, prior, beta=1.0)
    np.testing.assert_allclose(severity[:, 0], entries[:, 0])
    np.testing.assert_allclose(severity.sum(axis=1), 1.0)
    # the head moves mass between ill categories only: acute vs mild for the febrile patient
    flat = coherent_severity(entries, profiles, head, prior, beta=0.0)
    assert severity[0, 0] == flat[0, 0]


def test_a_rare_disease_profile_comes_from_its_clinical_course():
    assert course_profile({"HP:0001522"}) == "mortality"  # death in infancy
    assert course_profile({"HP:0003676"}) == "progressive"
    assert course_profile(set()) == "unannotated"
    course = pl.DataFrame(
        {"disease_id": ["OMIM:1", "OMIM:2"], "hpo_id": ["HP:0003819", "HP:0003680"]}
    )
    indices = knowledge_profiles(course, ["OMIM:1", "OMIM:2", "OMIM:3"])
    assert [PROFILE_ORDER[i] for i in indices] == ["mortality", "nonprogressive", "unannotated"]


def test_an_answer_is_incoherent_when_severity_contradicts_the_differential():
    assert incoherent("not_ill", healthy_probability=0.1)
    assert incoherent("acute", healthy_probability=0.9)
    assert not incoherent("not_ill", healthy_probability=0.8)
    assert not incoherent("chronic", healthy_probability=0.05)
