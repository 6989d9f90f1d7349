"""After a clean pipeline run nothing in the UI reads stale: the HPO release was observed before
the knowledge assets were built, so the sensor's next observation (same files) changes nothing."""

import shutil

import dagster as dg


def test_no_asset_is_stale_after_a_clean_run_and_a_new_observation(deployed_home, tmp_path):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from orchestration.definitions import defs

    home = tmp_path / "home"
    shutil.copytree(deployed_home / "dagster", home / "dagster")
    release = dg.AssetKey("hpo_release")
    graph = defs.resolve_asset_graph()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        observed = defs.resolve_implicit_job_def_def_for_assets([release]).execute_in_process(
            instance=instance, asset_selection=[release]
        )
        assert observed.success  # what hpo_release_sensor does on its next tick
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        stale = {
            key.to_user_string(): resolver.get_stale_root_causes(key)
            for key in graph.get_all_asset_keys()
            if not graph.get(key).is_partitioned
            and graph.get(key).is_materializable
            and resolver.get_status(key) == StaleStatus.STALE
        }
    assert stale == {}
