"""Model selection re-runs only when what it depends on changed enough (issue 17): the rule that
decides between re-running the comparison and reusing the last selection with its evidence."""

from assets.training import SelectionConfig, reuse_decision, selection_fingerprint
from orchestration.resources import ModelPolicy

SHARES = {"J10": 0.5, "NONE": 0.3, "ORPHA:558": 0.2}


def _previous(fingerprint: str, rows: int = 10_000) -> dict:
    return {"fingerprint": fingerprint, "rows": rows, "class_shares": SHARES, "selected": {}}


def test_a_few_new_rows_of_the_same_mix_reuse_the_last_selection():
    config, policy = SelectionConfig(), ModelPolicy()
    fp = selection_fingerprint(config, policy)
    reuse, why = reuse_decision(_previous(fp), fp, 12_500, dict(SHARES), config)
    assert reuse and "25%" in why


def test_growth_class_shift_changed_settings_or_force_run_the_comparison_again():
    config, policy = SelectionConfig(), ModelPolicy()
    fp = selection_fingerprint(config, policy)
    grown = reuse_decision(_previous(fp), fp, 16_000, SHARES, config)
    assert grown == (False, "training rows changed by 60% (>= 50%)")
    shifted = {"J10": 0.3, "NONE": 0.3, "ORPHA:558": 0.2, "E11": 0.2}
    assert not reuse_decision(_previous(fp), fp, 10_000, shifted, config)[0]
    other = selection_fingerprint(SelectionConfig(folds=5), policy)
    assert other != fp
    assert not reuse_decision(_previous(fp), other, 10_000, SHARES, config)[0]
    assert selection_fingerprint(config, ModelPolicy(random_seed=8)) != fp
    assert reuse_decision(_previous(fp), fp, 10_000, SHARES, SelectionConfig(force=True)) == (
        False,
        "forced by config",
    )
    assert reuse_decision(None, fp, 10_000, SHARES, config) == (False, "no earlier selection")


def test_the_thresholds_are_not_part_of_the_fingerprint():
    policy = ModelPolicy()
    assert selection_fingerprint(SelectionConfig(), policy) == selection_fingerprint(
        SelectionConfig(reselect_row_change=0.2, force=True), policy
    )
