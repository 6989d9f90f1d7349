"""Start-up sweep: no run stays half-open after its process died.

``triage pipeline`` tags each Dagster run it executes with the process id, the process start time
and the host (:func:`process_tags`). When a later ``triage pipeline`` starts, every run of the local
instance still STARTING/STARTED whose recorded process is gone from this host is marked failed,
and every MLflow run still RUNNING whose Dagster run is no longer in progress is ended as KILLED.
Runs launched by the Dagster daemon carry no such tags and are not swept; the instance's run
monitoring (``run_monitoring`` in dagster.yaml, written by
:func:`orchestration.pipeline.ensure_dagster_home`) covers their start and cancel timeouts only
(Dagster's default run launcher does not check a run worker's health).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from diagnosis.remote import host_name

PID_TAG = "triage/pid"
PID_START_TAG = "triage/pid_start"
HOST_TAG = "triage/host"
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def _start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux /proc), or None elsewhere: with
    the pid it tells a process from a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: the fields after its closing parenthesis
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes."""
    pid = os.getpid()
    tags = {PID_TAG: str(pid), HOST_TAG: host_name()}
    started = _start_time(pid)
    if started is not None:
        tags[PID_START_TAG] = started
    return tags


def process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if started is not None:
        now = _start_time(pid)
        if now is not None and now != started:  # the pid was reused by another process
            return False
    return True


@dataclass
class SweepReport:
    failed_runs: list[str] = field(default_factory=list)
    killed_mlflow_runs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"swept run {run_id}: its process is gone, marked failed" for run_id in self.failed_runs
        ]
        out += [
            f"swept MLflow run {run_id}: its Dagster run is over, ended as KILLED"
            for run_id in self.killed_mlflow_runs
        ]
        return out


def sweep_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-progress run of ``instance`` started by a ``triage pipeline`` process
    of this host that no longer runs; the run ids."""
    here = host_name()
    swept = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS))):
        pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if not pid or host != here or not pid.isdigit():
            continue
        if process_alive(int(pid), run.tags.get(PID_START_TAG)):
            continue
        instance.report_run_failed(
            run,
            message=(
                f"the process that ran it (pid {pid} on {host}) is gone; marked failed by the "
                "start-up sweep of a later `triage pipeline`"
            ),
        )
        swept.append(run.run_id)
    return swept


def end_orphaned_mlflow_runs(instance: dg.DagsterInstance, tracking_uri: str) -> list[str]:
    """End as KILLED every RUNNING MLflow run whose Dagster run (tag ``dagster_run_id``) is no
    longer in progress on ``instance``; the MLflow run ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    ended = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return ended
    for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'"):
        dagster_run_id = run.data.tags.get("dagster_run_id")
        if not dagster_run_id:
            continue
        dagster_run = instance.get_run_by_id(dagster_run_id)
        if dagster_run is not None and dagster_run.status in IN_PROGRESS:
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
    return ended


def sweep(instance: dg.DagsterInstance, tracking_uri: str | None) -> SweepReport:
    report = SweepReport(failed_runs=sweep_orphaned_runs(instance))
    if tracking_uri:
        report.killed_mlflow_runs = end_orphaned_mlflow_runs(instance, tracking_uri)
    return report
