"""What the evaluation shows beyond its headline metrics: per-class and per-group recall, the
reliability of the first entry's probability, and Evidently's drift verdicts with the policy's
threshold."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from diagnosis.training.evaluation import Ranked, age_band, breakdown, confusion_figure
from diagnosis.training.monitoring import drift_summary


def _ranked(rows: list[tuple[list[str], list[float]]]) -> Ranked:
    return Ranked(
        codes=[codes for codes, _ in rows],
        probabilities=[probs for _, probs in rows],
        orphan=[0.0] * len(rows),
        severity=[[1.0]] * len(rows),
    )


def test_breakdown_counts_recall_per_class_category_sex_and_age_band() -> None:
    truth = ["J10", "J10", "ORPHA:558", "NONE"]
    ranked = _ranked(
        [
            (["J10", "J18.9", "NONE"], [0.9, 0.05, 0.05]),  # right
            (["J18.9", "J10", "NONE"], [0.6, 0.3, 0.1]),  # second
            (["J10", "NONE", "ORPHA:558"], [0.5, 0.3, 0.2]),  # third
            (["NONE", "J10", "J18.9"], [0.7, 0.2, 0.1]),  # right
        ]
    )
    patients = [
        {"age": 10, "sex": "female"},
        {"age": 70, "sex": "male"},
        {"age": None, "sex": "female"},
        {"age": 30, "sex": None},
    ]
    view = breakdown(ranked, truth, patients)
    per_class = {row["code"]: row for row in view["per_class"]}
    assert per_class["J10"]["rows"] == 2 and per_class["J10"]["recall_top1"] == 0.5
    assert per_class["J10"]["recall_top3"] == 1.0 and per_class["J10"]["predicted_first"] == 2
    assert per_class["ORPHA:558"]["category"] == "orphan"
    assert (
        per_class["ORPHA:558"]["recall_top1"] == 0.0
        and per_class["ORPHA:558"]["recall_top3"] == 1.0
    )
    groups = {(g["group"], g["value"]): g for g in view["groups"]}
    assert groups[("category", "common")]["rows"] == 2
    assert groups[("category", "healthy")]["recall_top1"] == 1.0
    assert groups[("sex", "unknown")]["rows"] == 1  # a missing sex is its own group
    assert groups[("age_band", "unknown")]["rows"] == 1  # and so is a missing age
    assert groups[("age_band", "65+")]["recall_top1"] == 0.0
    # reliability: first-entry probabilities 0.9 (right), 0.6 (wrong), 0.5 (wrong), 0.7 (right)
    bins = [b for b in view["reliability"] if b["cases"]]
    assert sum(b["cases"] for b in bins) == 4
    expected_ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(0 - 0.5) + abs(1 - 0.7)) / 4
    assert view["ece"] == pytest.approx(expected_ece, abs=1e-4)
    assert age_band(17.9) == "0-17" and age_band(65) == "65+"
    figure = confusion_figure(["J10", "NONE"], [[3, 1], [0, 4]])
    assert len(figure.axes) == 1


def _frame(n: int, age_mean: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "age": rng.normal(age_mean, 8, n),
            "heart_rate": rng.normal(80, 6, n),
            "body_temperature": rng.normal(36.9, 0.3, n),
            "systolic_bp": rng.normal(120, 9, n),
            "diastolic_bp": rng.normal(78, 6, n),
            "sex": rng.choice(["female", "male"], n).tolist(),
            "symptoms": [["HP:0001945"] if x < 0.3 else [] for x in rng.random(n)],
        }
    )


def test_drift_verdicts_are_evidentlys_with_the_policys_threshold(tmp_path) -> None:
    """One drifted feature (age) out of seven: a threshold of 0.1 makes it a dataset drift, 0.5
    does not; the report and the verdict come from the same Evidently run."""
    reference, current = _frame(600, 40, 1), _frame(400, 58, 2)
    kwargs = {"tracked_symptoms": 1, "with_predicted": False}
    strict = drift_summary(reference, current, tmp_path / "a.html", drift_share=0.1, **kwargs)
    lenient = drift_summary(reference, current, tmp_path / "b.html", drift_share=0.5, **kwargs)
    for summary in (strict, lenient):
        assert "age" in summary["drifted_columns"]
        assert summary["columns"]["age"]["evidently_test"] == "FAIL"
        assert summary["columns"]["heart_rate"]["evidently_test"] == "SUCCESS"
        assert 0 < summary["drift_share"] < 0.5
    assert strict["dataset_drift"] is True and strict["dataset_test"]["status"] == "FAIL"
    assert "0.100" in strict["dataset_test"]["name"]
    assert lenient["dataset_drift"] is False and lenient["dataset_test"]["status"] == "SUCCESS"
    assert (tmp_path / "a.html").stat().st_size > 10_000
