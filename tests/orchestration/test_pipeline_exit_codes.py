"""`triage pipeline`'s exit code after a failed training run, read from a real Dagster run: 3 when
the quality gate (a blocking check named like the product's) refused and nothing else failed, 1
when a step crashed, even if the gate also refused."""

import dagster as dg

from assets.evaluation import QUALITY_GATE_CHECK
from orchestration.pipeline import EXIT_ERROR, EXIT_GATE_REFUSED, training_failure_code


def _run(gate_passes: bool, crash: bool):
    @dg.asset
    def model_evaluation() -> int:
        return 1

    @dg.asset_check(asset=model_evaluation, name=QUALITY_GATE_CHECK, blocking=True)
    def quality_gate() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=gate_passes, description="worse than the champion")

    @dg.asset(deps=[model_evaluation])
    def deployed_model() -> int:
        return 2

    @dg.asset
    def drift_report() -> int:
        if crash:
            raise RuntimeError("disk full")
        return 3

    return dg.materialize(
        [model_evaluation, deployed_model, drift_report, quality_gate],
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_gate_refusal_alone_exits_3_and_says_the_champion_keeps_serving(capsys):
    result = _run(gate_passes=False, crash=False)
    assert not result.success
    assert training_failure_code(result) == EXIT_GATE_REFUSED == 3
    err = capsys.readouterr().err
    assert f"check {QUALITY_GATE_CHECK} refused: worse than the champion" in err
    assert "champion keeps serving" in err


def test_a_crashed_step_exits_1_even_when_the_gate_also_refused(capsys):
    assert training_failure_code(_run(gate_passes=False, crash=True)) == EXIT_ERROR == 1
    assert "disk full" in capsys.readouterr().err
    assert training_failure_code(_run(gate_passes=True, crash=True)) == EXIT_ERROR
