"""``make pipeline``: seed the demo if needed, then materialise the whole graph headless.

Runs go to the local Dagster instance (TRIAGE_HOME/dagster), so they appear in the UI afterwards.
The in-process executor is used: the multiprocess one re-imports everything per step.
"""

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from schemas.layout import TriagePaths

DEMO_PATIENTS = 4000
DEMO_WEEKS = 4
DEMO_SEED = 7

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

DAGSTER_YAML = """\
# Local single-machine instance: SQLite storage under this directory.
telemetry:
  enabled: false
# Start/cancel timeouts for daemon-launched runs (runs of `triage pipeline` whose process died are
# swept by the next `triage pipeline`).
run_monitoring:
  enabled: true
  poll_interval_seconds: 60
# no first-visit "join the community" pop-up in the UI
nux:
  enabled: false
"""


def ensure_dagster_home(paths: TriagePaths) -> Path:
    """Point DAGSTER_HOME at TRIAGE_HOME/dagster unless the environment already chose one."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(paths.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def seed_demo_if_empty(paths: TriagePaths) -> list[Path]:
    """Write the demo weeks into the landing zone when it holds no export (with S3 configured,
    the bucket's landing area is pulled first and the demo weeks are uploaded to it)."""
    from assets.ingestion import partition_key_for
    from diagnosis.simulation import write_weekly_exports
    from orchestration.resources import TriageStorage

    storage = TriageStorage(home=str(paths.home))
    remote = storage.remote
    storage.pull("landing", remote=remote)
    paths.landing.mkdir(parents=True, exist_ok=True)
    if any(partition_key_for(p.name) for p in paths.landing.iterdir()):
        storage.push("landing", remote=remote)  # exports dropped on this machine, shared too
        return []
    seeded = write_weekly_exports(
        paths.landing,
        patients=DEMO_PATIENTS,
        weeks=DEMO_WEEKS,
        seed=DEMO_SEED,
        defect_rate=0.03,
        start="2026-01-05",
    )
    storage.push("landing", remote=remote)
    return seeded


def already_validated(instance, paths: TriagePaths, key: str) -> bool:
    """True when week ``key`` was validated from a file with the same SHA-256 as the one in the
    landing zone now: re-running the pipeline validates only new or changed weeks."""
    import dagster as dg

    from assets.ingestion import find_export
    from diagnosis.files import file_sha256
    from orchestration.resources import TriageStorage

    raw, valid = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[key]), limit=1
        ).records
        for name in ("raw_patient_records", "validated_patient_records")
    )
    if not raw or not valid:
        return False
    path = find_export(TriageStorage(home=str(paths.home)), key)
    recorded = raw[0].asset_materialization.metadata["file_sha256"].value
    return recorded == file_sha256(path)


def prune_unvalidated_partitions(instance) -> list[str]:
    """Delete weekly partitions that have no validated materialisation and no run in progress: a
    week registered by an older version, or whose validation failed or never finished, would
    otherwise make training read a partition that was never written. Its file, when still in
    landing, is read and registered again by the next run."""
    import dagster as dg

    from assets.ingestion import weekly_exports
    from orchestration.recovery import IN_PROGRESS

    active = [*IN_PROGRESS, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    pruned = []
    for key in instance.get_dynamic_partitions(weekly_exports.name):
        running = instance.get_runs(
            filters=dg.RunsFilter(statuses=active, tags={"dagster/partition": key}), limit=1
        )
        if running:
            continue
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("validated_patient_records"), asset_partitions=[key]
            ),
            limit=1,
        ).records
        if not records:
            instance.delete_dynamic_partition(weekly_exports.name, key)
            pruned.append(key)
    return pruned


EXIT_OK, EXIT_ERROR, EXIT_GATE_REFUSED, EXIT_QUARANTINE = 0, 1, 3, 4  # as orchestration.cli


def run_pipeline(
    seed_demo: bool = True, max_quarantine_rate: float | None = None, retrain: bool = False
) -> int:
    """Validate new or changed weeks, then train, gate and deploy, unless nothing that determines
    the model changed since the current deployment was trained (:mod:`orchestration.reuse`): then
    that deployment is kept, with one line saying so, and no run starts. ``retrain`` forces the
    training run."""
    with signal_dispositions_kept():
        return _run_pipeline(seed_demo, max_quarantine_rate, retrain)


def _run_pipeline(seed_demo: bool, max_quarantine_rate: float | None, retrain: bool) -> int:
    from diagnosis.files import make_private, private_dir, private_umask

    private_umask()  # exports, tables, labels and keys written by this process are owner-only
    paths = TriagePaths.from_env()
    private_dir(paths.home)
    # areas with patient data (raw exports, validated/quarantined tables, labels, the key), also
    # when written by an older version or restored with another mask
    for area in (paths.landing, paths.labels, paths.storage, paths.secrets):
        make_private(area)
    ensure_dagster_home(paths)
    from orchestration.resources import TriageStorage

    if seed_demo:
        seeded = seed_demo_if_empty(paths)
        if seeded:
            where = TriageStorage(home=str(paths.home)).describe("landing")
            print(f"seeded {len(seeded)} demo weekly exports into {where}")

    import warnings

    import dagster as dg

    # The beta markers of dagster-mlflow and Output(data_version=...) say nothing to an operator.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from assets.ingestion import admit_exports, landing_partition_keys, weekly_exports
    from orchestration import reuse
    from orchestration.definitions import defs
    from orchestration.recovery import process_tags, sweep
    from orchestration.resources import INPUTS_TAG, AlertsResource, existing_tracking_uri
    from orchestration.sensors import alert_refusals
    from orchestration.settings import current_environment

    instance = dg.DagsterInstance.get()
    for line in sweep(instance, existing_tracking_uri(paths)).lines():
        print(line)
    tags = process_tags()

    storage = TriageStorage(home=str(paths.home))
    storage.pull("landing")
    keys = landing_partition_keys(storage)
    pending = [key for key in keys if not already_validated(instance, paths, key)]
    admitted, refused = admit_exports(storage, pending)
    if refused:
        alert_refusals(AlertsResource(), refused, logging.getLogger("triage.pipeline"))
    known = set(instance.get_dynamic_partitions(weekly_exports.name))
    instance.add_dynamic_partitions(weekly_exports.name, [k for k in admitted if k not in known])

    started = time.perf_counter()
    validation = defs.resolve_job_def("weekly_validation")
    failed_weeks = []
    for key in keys:
        if key not in admitted:
            if key not in pending:
                print(f"weekly_validation {key}: unchanged since its last validation, skipped")
            continue
        with StepProgress(instance, f"weekly_validation {key}") as progress:
            result = validation.execute_in_process(
                instance=instance,
                partition_key=key,
                raise_on_error=False,
                run_config=QUIET_LOGS,
                tags=tags,
                run_id=progress.run_id,
            )
        print(f"weekly_validation {key}: {'ok' if result.success else 'FAILED'} ({result.run_id})")
        if not result.success:
            failed_weeks.append((key, result))
    # recorded after this run's validations, so the check's latest evaluation shows the refusal
    for refusal in refused:
        instance.report_runless_asset_event(refusal.check_evaluation())
    pruned = prune_unvalidated_partitions(instance)
    for key in pruned:
        print(f"week {key}: registered but never validated: partition removed (re-read next run)")
    for key, result in failed_weeks:
        print(f"week {key}: validation failed, left out: {_first_failure(result)}", file=sys.stderr)
    valid_weeks = instance.get_dynamic_partitions(weekly_exports.name)
    if not valid_weeks:
        for refusal in refused:
            print(refusal.summary(), file=sys.stderr)
        print(f"no readable weekly export in {storage.describe('landing')}", file=sys.stderr)
        return EXIT_ERROR
    if max_quarantine_rate is not None:
        too_many = quarantine_above(instance, valid_weeks, max_quarantine_rate)
        for key, rate in too_many:
            print(
                f"week {key}: {rate:.1%} of its rows in quarantine, above "
                f"--max-quarantine-rate {max_quarantine_rate:.1%}",
                file=sys.stderr,
            )
        if too_many:
            print("nothing trained (exit 4)", file=sys.stderr)
            return EXIT_QUARANTINE
    decision = reuse.decide(
        storage,
        instance,
        defs.resources,
        current_environment().model_name,
        retrain=retrain,
        validated_now=[k for k in keys if k in admitted] + pruned,
        tracking_uri=existing_tracking_uri(paths),
    )
    for refusal in refused if decision.reuse else ():
        print(refusal.summary())
    print(decision.line(), flush=True)
    if decision.reuse:
        return EXIT_OK
    if decision.inputs is not None:
        tags = {**tags, INPUTS_TAG: decision.inputs.tag()}
    # Observe the HPO release first (as hpo_release_sensor does), so the knowledge assets record
    # its data version: otherwise the sensor's first observation shows them stale right after a
    # clean run ("hpo_release has a new data version").
    release = dg.AssetKey("hpo_release")
    observed = defs.resolve_implicit_job_def_def_for_assets([release]).execute_in_process(
        instance=instance,
        asset_selection=[release],
        raise_on_error=False,
        run_config=QUIET_LOGS,
        tags=tags,
    )
    if not observed.success:
        print("hpo_release: the HPO release files cannot be read", file=sys.stderr)
        return EXIT_ERROR
    with StepProgress(instance, "training", job_name="training", tags=tags):
        # execute_job, not execute_in_process: the latter keeps every step's output in memory
        # until the run ends (training_features, balanced_training_set, ... 1.1 GB at 100 k
        # patients); here each step's inputs are read back through the IO manager and dropped.
        result = dg.execute_job(
            dg.build_reconstructable_job("orchestration.pipeline", "training_job_in_process"),
            instance=instance,
            raise_on_error=False,
            run_config=QUIET_LOGS,
            tags=tags,
        )
    print(f"training: {'ok' if result.success else 'FAILED'} ({result.run_id})")
    for refusal in refused:
        print(refusal.summary())
    if not result.success:
        return training_failure_code(result)
    print(
        f"pipeline finished in {time.perf_counter() - started:.1f} s; model in {storage.describe('deployments')}"
    )
    return EXIT_ERROR if failed_weeks else EXIT_OK


@contextlib.contextmanager
def signal_dispositions_kept():
    """SIGINT and SIGTERM as they were before the block. Dagster captures interrupts during a run
    and, when it ends, gives SIGTERM whatever SIGINT has: in a process started in the background,
    where SIGINT is ignored, SIGTERM would then be ignored too, by this process and by every
    process it starts afterwards (a test's stand-in services, in one such run of the suite)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


def training_job_in_process():
    """The training job as ``triage pipeline`` runs it: every step in this process, whatever
    executor the code location uses (TRIAGE_EXECUTOR); rebuilt by name for
    ``dagster.execute_job``."""
    import dagster as dg

    from orchestration.definitions import defs

    return defs.resolve_job_def("training").with_executor_def(dg.in_process_executor)


def training_failure_code(result) -> int:
    """Report a failed training run on stderr and choose the exit code: 3 when the quality gate
    refused the challenger and nothing else failed, else 1."""
    import dagster as dg

    from assets.evaluation import QUALITY_GATE_CHECK

    refused_checks = [
        check
        for check in result.get_asset_check_evaluations()
        if not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    ]
    for check in refused_checks:
        print(f"  check {check.check_name} refused: {check.description}", file=sys.stderr)
    for event in result.all_events:
        if event.is_failure:
            print(f"  {event.step_key}: {event.message}", file=sys.stderr)
    # the gate's refusal fails exactly one step (the blocking check; the run's own failure event
    # is not a step); any other failed step is an error whatever the gate said
    failed_steps = {event.step_key for event in result.all_events if event.is_step_failure}
    if QUALITY_GATE_CHECK in {c.check_name for c in refused_checks} and len(failed_steps) <= 1:
        print(
            "the quality gate refused the challenger; the champion keeps serving (exit 3)",
            file=sys.stderr,
        )
        return EXIT_GATE_REFUSED
    return EXIT_ERROR


def quarantine_above(instance, weeks, limit: float) -> list[tuple[str, float]]:
    """The validated weeks whose share of rows in quarantine is above ``limit``, from each week's
    latest materialisations of the validated and quarantined tables (their row counts)."""
    import dagster as dg

    from assets.validation import QUARANTINED, VALIDATED

    def rows(asset: dg.AssetKey, week: str) -> int | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[week]), limit=1
        ).records
        if not records:
            return None
        value = records[0].asset_materialization.metadata.get("dagster/row_count")
        return None if value is None else int(value.value)

    above = []
    for week in weeks:
        valid, quarantined = rows(VALIDATED, week), rows(QUARANTINED, week)
        if valid is None or quarantined is None or valid + quarantined == 0:
            continue
        rate = quarantined / (valid + quarantined)
        if rate > limit:
            above.append((week, rate))
    return above


class StepProgress:
    """Prints each step of a run as it starts and finishes, with the seconds since the run began:
    a background thread reads the run's step events from the instance's event log once a second
    (the run blocks and its console log is kept at WARNING).

    The run is the one given by ``run_id`` (for ``execute_in_process``, which takes one), else
    the first run of ``job_name`` with ``tags`` (this process's, :func:`process_tags`) created
    after the progress began (``dagster.execute_job`` chooses its own id)."""

    POLL_SECONDS = 1.0

    def __init__(self, instance, label: str, job_name: str | None = None, tags=None):
        import datetime
        import threading
        import uuid

        self.instance, self.label = instance, label
        self.run_id = None if job_name else str(uuid.uuid4())
        self._job_name, self._tags = job_name, dict(tags or {})
        self._since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._seen = 0
        self._started = time.perf_counter()

    def __enter__(self) -> "StepProgress":
        if self.run_id is not None:  # else printed once the run is found
            print(f"{self.label}: started (run {self.run_id})", flush=True)
        self._thread.start()
        return self

    def _find_run(self) -> str | None:
        import dagster as dg

        runs = self.instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=self._job_name, tags=self._tags, created_after=self._since
            ),
            limit=1,
            ascending=True,
        )
        return runs[0].dagster_run.run_id if runs else None

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._report()  # the steps that finished since the last poll

    def _watch(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self._report()

    def _report(self) -> None:
        import dagster as dg

        kinds = {
            dg.DagsterEventType.STEP_START: "started",
            dg.DagsterEventType.STEP_SUCCESS: "done",
            dg.DagsterEventType.STEP_FAILURE: "FAILED",
            dg.DagsterEventType.STEP_SKIPPED: "skipped",
        }
        try:
            if self.run_id is None:
                self.run_id = self._find_run()
                if self.run_id is None:
                    return
                print(f"{self.label}: started (run {self.run_id})", flush=True)
            events = self.instance.all_logs(self.run_id, of_type=set(kinds))
        except Exception:  # progress is a courtesy: never fail the run over it
            return
        for entry in events[self._seen :]:
            event = entry.dagster_event
            elapsed = time.perf_counter() - self._started
            print(f"  [{elapsed:6.1f} s] {event.step_key}: {kinds[event.event_type]}", flush=True)
        self._seen = max(self._seen, len(events))


def _first_failure(result) -> str:
    """The first failed step's message, first line only (the trace stays in the run's logs)."""
    for event in result.all_events:
        if event.is_failure:
            return f"{event.step_key}: {str(event.message).splitlines()[0][:300]} (run {result.run_id})"
    return f"run {result.run_id}"
