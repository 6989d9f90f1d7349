"""The gate judges what a clinician reads: the orphan probability served for rare patients.

A blend that tells a rare patient with few findings "not rare" once passed the gate: the simulated
rare cases have many findings (their mean orphan probability stayed high), macro-F1 and orphan
recall on the hospital's records did not move, and the real-case calibration was only compared
with a champion a fresh home does not have. Here the fixture's own model is scored as
``model_evaluation`` scores it, once with the blend it fits and once with that blend broken in the
same way (shifted so weak evidence reads as "not rare"): the gate of before would have deployed
the broken one; the gate now refuses it, naming what a clinician would have been told.
"""

import dagster as dg
import pytest

from assets.evaluation import QUALITY_GATE_CHECK, REAL_GROUPS, gate_failures, score_challenger
from diagnosis.blend import BlendParams
from diagnosis.training import evaluation as training_evaluation
from diagnosis.training.fitting import knowledge_cases
from orchestration.resources import ModelPolicy

# the patient of the incident: a 3-year-old with seizures, developmental delay and microcephaly
INCIDENT = {"age": 3, "sex": "female", "symptoms": ["HP:0001250", "HP:0001263", "HP:0000252"]}
# the gate as it was: every check added for the incident switched off
GATE_BEFORE = ModelPolicy(
    min_real_orphan_probability=0.0, min_desk_orphan_probability=0.0, max_real_ece=1.0
)


@pytest.fixture(scope="module")
def fixture_inputs(deployed_home):
    """What ``model_evaluation`` reads in the fixture's home: the training table, the real cases
    as the release reads them, the simulated rare cases, and the deployed artifact's runtime."""
    from diagnosis.runtime import load_deployment
    from orchestration.definitions import defs

    policy = ModelPolicy()
    with dg.DagsterInstance.from_config(str(deployed_home / "dagster")) as instance:
        table = defs.load_asset_value("training_table", instance=instance)
        reference = defs.load_asset_value("reference_cases", instance=instance)
        evaluation = defs.load_asset_value("model_evaluation", instance=instance)
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("model_evaluation"), QUALITY_GATE_CHECK), limit=1
        )
    return {
        "policy": policy,
        "table": table,
        "reference": reference,
        "cases": knowledge_cases(policy.knowledge_cases, policy.random_seed + 1),
        "runtime": load_deployment(deployed_home / "deployments"),
        "evaluation": evaluation,
        "gate": history[0].evaluation,
    }


def test_the_fixture_model_passes_the_gate_on_what_clinicians_read(fixture_inputs):
    """The pipeline's own gate passed the fixture's model with the new checks, and every new
    figure is measured, above its floor (the ceiling for calibration)."""
    policy, metrics = fixture_inputs["policy"], fixture_inputs["evaluation"].metrics
    gate = fixture_inputs["gate"]
    assert gate.passed, gate.description
    assert gate_failures(policy, metrics, fixture_inputs["evaluation"].champion_version) == []
    for group in REAL_GROUPS:
        orphan = metrics[f"real_{group}_mean_orphan_probability"]
        assert orphan >= policy.min_real_orphan_probability
        assert gate.metadata[f"real_{group}_mean_orphan_probability"].value == orphan
    assert metrics["rare_desk_cases"] > 100 and metrics["rare_desk_findings"] == 3
    assert metrics["rare_desk_mean_orphan_probability"] >= policy.min_desk_orphan_probability
    assert metrics["real_all_ece"] <= policy.max_real_ece
    # the same served model tells the incident's patient "rare"
    assert fixture_inputs["runtime"].score([INCIDENT]).orphan[0] > 0.9


def test_a_blend_that_tells_rare_patients_with_few_findings_not_rare_is_refused(
    fixture_inputs, monkeypatch
):
    """The blend ``evaluate`` fits, broken after fitting (intercept 10 lower, evidence weighted
    1.5 times): a real runtime with those parameters, scored by the same code as any challenger."""
    fit_blend = training_evaluation.fit_blend

    def broken_fit(runtime, parts, truth):
        fitted = fit_blend(runtime, parts, truth)
        c = fitted.coef
        return BlendParams((c[0], 1.5 * c[1], c[2]), fitted.intercept - 10.0, fitted.alpha)

    monkeypatch.setattr(training_evaluation, "fit_blend", broken_fit)
    policy = fixture_inputs["policy"]
    result = score_challenger(
        fixture_inputs["runtime"],
        fixture_inputs["table"],
        fixture_inputs["cases"],
        fixture_inputs["reference"],
        policy.random_seed,
    )
    metrics = result.metrics
    # the served answer is wrong for the incident's patient ...
    assert result.served.score([INCIDENT]).orphan[0] < 0.5
    # ... yet the figures the gate had still look healthy, and the gate of before deploys it
    assert metrics["rare_mean_orphan_probability"] > 0.85
    assert gate_failures(GATE_BEFORE, metrics) == []
    # the gate now refuses it, on every check added for the incident
    failures = "; ".join(gate_failures(policy, metrics))
    assert "rare patients with 3 findings and no vitals: mean orphan probability" in failures
    assert "real-case (all) mean orphan probability" in failures
    assert "real-case calibration error" in failures and "no champion" in failures
    assert metrics["rare_desk_mean_orphan_probability"] < policy.min_desk_orphan_probability
    assert metrics["real_all_mean_orphan_probability"] < policy.min_real_orphan_probability


def test_the_calibration_ceiling_applies_without_a_champion_and_the_comparison_with_one(
    fixture_inputs,
):
    """The same calibration error: refused by the ceiling when there is no champion; with a
    champion, judged against the champion's (within tolerance passes, beyond it is refused)."""
    policy = fixture_inputs["policy"]
    metrics = dict(fixture_inputs["evaluation"].metrics)
    metrics.pop("champion_real_all_ece", None)
    metrics["real_all_ece"] = policy.max_real_ece + 0.02
    assert gate_failures(policy, metrics) == [
        f"real-case calibration error {metrics['real_all_ece']:.3f} > {policy.max_real_ece} "
        "(no champion to compare with)"
    ]
    metrics["champion_real_all_ece"] = metrics["real_all_ece"] - policy.real_ece_tolerance / 2
    assert gate_failures(policy, metrics) == []
    metrics["champion_real_all_ece"] = metrics["real_all_ece"] - 2 * policy.real_ece_tolerance
    (failure,) = gate_failures(policy, metrics)
    assert "above the champion's" in failure
