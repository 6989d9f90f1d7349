"""Shared fixtures: one pipeline run on a small simulated cohort, reused by several suites."""

import pytest

from diagnosis.simulation import write_weekly_exports
from orchestration.pipeline import run_pipeline

WEEKS = ["2026-03-02", "2026-03-09", "2026-03-16"]


@pytest.fixture(scope="session")
def deployed_home(tmp_path_factory):
    """A TRIAGE_HOME after a full pipeline run (3 weekly exports, 2,400 records)."""
    home = tmp_path_factory.mktemp("triage_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    mp.delenv("TRIAGE_MLFLOW_TRACKING_URI", raising=False)
    write_weekly_exports(
        home / "landing", patients=2400, weeks=3, seed=11, defect_rate=0.04, start=WEEKS[0]
    )
    assert run_pipeline(seed_demo=False) == 0
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def deployed_weeks() -> list[str]:
    """The partition keys (Mondays) of the weekly exports behind ``deployed_home``."""
    return list(WEEKS)
