"""Shared fixtures: one pipeline run on a small simulated cohort, reused by several suites, and
one second run on a copy of it (the shared home itself is never retrained)."""

import contextlib
import io
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from diagnosis.simulation import write_weekly_exports
from orchestration.pipeline import run_pipeline

WEEKS = ["2026-03-02", "2026-03-09", "2026-03-16"]
NEW_WEEK = "2026-03-23"

# SIGINT and SIGTERM as the suite started with. Dagster's interrupt capture leaves SIGTERM with
# SIGINT's handler after each run it executes in this process (orchestration.pipeline.
# signal_dispositions_kept); in a suite started in the background, where SIGINT is ignored, the
# processes later tests start would then ignore SIGTERM (measured: test_run_local's stand-in
# services outlived the script that stopped them).
_SIGNALS_AT_START = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


@pytest.fixture(autouse=True)
def _signals_as_the_suite_started():
    def restore():
        for sig, handler in _SIGNALS_AT_START.items():
            if handler is not None:
                signal.signal(sig, handler)

    restore()  # also after what session fixtures ran before this test
    yield
    restore()


@pytest.fixture(scope="session")
def deployed_home(tmp_path_factory):
    """A TRIAGE_HOME after a full pipeline run (3 weekly exports, 2,400 records). Shared by every
    suite: a test that writes to it (retrains, rolls back, changes files) takes a copy instead."""
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


@dataclass(frozen=True)
class SecondRun:
    """``deployed_home`` copied (without the predictions and labels other suites add to it, so the
    copy is the home its deployment was trained on), one more weekly export (``new_week``, 600
    records) dropped in, and ``run_pipeline`` run again on the copy."""

    home: Path
    new_week: str
    exit_code: int
    out: str  # what run_pipeline printed
    pointer_before: dict  # deployments/current.json before the second run
    selection_before: dict  # {"run_id", "metadata"} of the last model selection that ran


@pytest.fixture(scope="session")
def second_run(deployed_home, tmp_path_factory) -> SecondRun:
    """One second pipeline run, read by the suites that check what a second run does (only the
    new week validated, a new version deployed, the model selection reused with its evidence)."""
    import dagster as dg

    home = tmp_path_factory.mktemp("second_run") / "home"
    shutil.copytree(
        deployed_home, home, symlinks=True, ignore=shutil.ignore_patterns("predictions", "labels")
    )
    pointer = json.loads((home / "deployments" / "current.json").read_text())
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.fetch_materializations(dg.AssetKey("model_selection"), limit=100).records
    ran = [
        r
        for r in sorted(records, key=lambda r: r.timestamp)
        if r.asset_materialization.metadata["reused"].value is False
    ][-1]
    selection = {
        "run_id": ran.run_id,
        "metadata": {k: v.value for k, v in ran.asset_materialization.metadata.items()},
    }
    write_weekly_exports(
        home / "landing", patients=600, weeks=1, seed=12, defect_rate=0.04, start=NEW_WEEK
    )
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("TRIAGE_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        exit_code = run_pipeline(seed_demo=False)
    print(printed.getvalue())  # in the test report when a test that reads it fails
    return SecondRun(home, NEW_WEEK, exit_code, printed.getvalue(), pointer, selection)
