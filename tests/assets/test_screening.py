"""The weekly orphan-disease screening: a validated week scored by the deployed model through the
runtime; patients over the threshold listed by pseudonym with ORPHA/OMIM candidates; re-run when
the deployed model changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import msgspec
import polars as pl
import pytest

from diagnosis import artifacts
from diagnosis.categories import CATEGORY_ORPHAN, category_of
from diagnosis.runtime import load_deployment

SCREENING = dg.AssetKey("orphan_screening")


@pytest.fixture(scope="module")
def screening_home(deployed_home, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("screening") / "home"
    shutil.copytree(deployed_home, home, ignore=shutil.ignore_patterns("predictions", "labels"))
    return home


def _screen(home: Path, week: str, threshold: float | None = None):
    from orchestration.definitions import defs

    mp = pytest.MonkeyPatch()
    mp.setenv("TRIAGE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    config = {} if threshold is None else {"orphan_threshold": threshold}
    try:
        job = defs.resolve_implicit_job_def_def_for_assets([SCREENING])
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            result = job.execute_in_process(
                instance=instance,
                asset_selection=[SCREENING],
                partition_key=week,
                run_config={"ops": {"orphan_screening": {"config": config}}},
                raise_on_error=False,
            )
            return result
    finally:
        mp.undo()


def _validated(home: Path, week: str) -> pl.DataFrame:
    import pickle

    with (home / "storage" / "validated_patient_records" / week).open("rb") as handle:
        return pickle.load(handle)


def test_a_week_is_screened_with_the_deployed_model(screening_home, deployed_weeks) -> None:
    week = deployed_weeks[1]
    result = _screen(screening_home, week)
    assert result.success
    listed = result.output_for_node("orphan_screening")
    records = _validated(screening_home, week)
    runtime = load_deployment(screening_home / "deployments")
    # the threshold decides who is listed: every listed patient reaches it, every other does not
    assert listed.height > 0
    assert listed["orphan_probability"].min() >= 0.5
    scores = runtime.score(
        records.select(
            "age",
            "sex",
            "heart_rate",
            "body_temperature",
            "systolic_bp",
            "diastolic_bp",
            "symptoms",
        ).to_dicts()
    )
    assert int((scores.orphan >= 0.5).sum()) == listed.height
    # pseudonymised keys of that week's records, ORPHA/OMIM candidates only, the model named
    assert set(listed["patient_key"]) <= set(records["patient_key"])
    assert all(
        codes and all(category_of(c) == CATEGORY_ORPHAN for c in codes)
        for codes in listed["candidate_codes"].to_list()
    )
    assert set(listed["model_version"]) == {runtime.version}
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["scored"].value == records.height
    assert meta["listed"].value == listed.height
    assert isinstance(meta["patients_for_review"], dg.TableMetadataValue)
    assert len(meta["patients_for_review"].value.records) == min(listed.height, 50)
    csv = Path(meta["csv"].value)
    assert csv.is_file() and pl.read_csv(csv).height == listed.height
    assert "source_file" not in listed.columns  # nothing but the pseudonym identifies a patient


def test_a_higher_threshold_lists_fewer_and_a_bad_one_is_refused(
    screening_home, deployed_weeks
) -> None:
    week = deployed_weeks[0]
    low = _screen(screening_home, week, 0.3).output_for_node("orphan_screening")
    high = _screen(screening_home, week, 0.95).output_for_node("orphan_screening")
    assert high.height < low.height
    assert set(high["patient_key"]) <= set(low["patient_key"])
    assert not _screen(screening_home, week, 1.5).success


def test_a_new_deployed_model_makes_the_screening_stale(screening_home, deployed_weeks) -> None:
    """The screening's data version follows the deployed model: a new deployment shows it stale
    ('upstream changed') and a re-run names the new model."""
    from orchestration.definitions import defs

    week = deployed_weeks[2]
    assert _screen(screening_home, week).success
    deployments = screening_home / "deployments"
    first = artifacts.read_current(deployments).version
    manifest = artifacts.read_deployed_manifest(deployments, first)
    files = {
        p.name: p.read_bytes() for p in (deployments / first).iterdir() if p.name != "manifest.json"
    }
    artifacts.write_deployment(
        deployments, msgspec.structs.replace(manifest, version="29990101T000000Z-next"), files
    )
    with dg.DagsterInstance.from_config(str(screening_home / "dagster")) as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                dg.AssetKey("deployed_model"),
                tags={"dagster/data_version": "29990101T000000Z-next"},
            )
        )
        # Dagster's own staleness (what the UI shows), not a re-implementation
        from dagster._core.definitions.data_version import (
            CachingStaleStatusResolver,
            StaleStatus,
        )
        from dagster._core.loader import LoadingContextForTest

        resolver = CachingStaleStatusResolver(
            instance, defs.resolve_asset_graph(), LoadingContextForTest(instance)
        )
        assert resolver.get_status(SCREENING, week) == StaleStatus.STALE
        causes = resolver.get_stale_root_causes(SCREENING, week)
        assert [c.key.asset_key for c in causes] == [dg.AssetKey("deployed_model")], causes
    rerun = _screen(screening_home, week)
    assert set(rerun.output_for_node("orphan_screening")["model_version"]) == {
        "29990101T000000Z-next"
    }
