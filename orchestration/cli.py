"""The ``triage`` command: demo data, export validation, the API and the pipeline.

Heavy libraries (dagster, polars, onnxruntime) are imported inside each sub-command so that
``triage --help`` is instant and ``triage serve`` never loads the orchestration stack.

Exit codes (the same for every sub-command): 0 ok, 1 error, 2 usage (bad arguments, or a request
the command refuses without changing anything), 3 the quality gate refused the challenger (the
champion keeps serving), 4 a week's quarantine rate is above ``--max-quarantine-rate``.
An unexpected error prints one line; ``--debug`` (or TRIAGE_DEBUG=1) prints the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GATE_REFUSED, EXIT_QUARANTINE = 0, 1, 2, 3, 4
DEBUG_ENV = "TRIAGE_DEBUG"

EXIT_CODES = """\
exit codes:
  0  ok
  1  error (a failed step, a misconfiguration: one line on stderr; --debug for the traceback)
  2  usage: bad arguments, or a request refused with nothing changed
  3  triage pipeline: the quality gate refused the challenger; the champion keeps serving
  4  triage pipeline: a week's quarantine rate is above --max-quarantine-rate (nothing trained)
"""

EXAMPLES = """\
examples:
  triage simulate --out /tmp/landing --weeks 2          # two synthetic weekly exports
  triage validate /tmp/landing/records_2026-01-05.txt --out /tmp/checked
  triage pipeline --max-quarantine-rate 0.2             # train; stop if a week is >20 % bad
  triage pipeline --retrain                             # train even if nothing changed
  triage serve --port 8000                              # the API and the web form
  triage trace 0123456789abcdef0123456789abcdef         # where one answer came from
  triage rollback 20260105T101500Z --reason "gate miss on week 3"
"""


def _cmd_simulate(args: argparse.Namespace) -> int:
    from diagnosis.simulation import write_weekly_exports

    paths = write_weekly_exports(
        Path(args.out),
        patients=args.patients,
        weeks=args.weeks,
        seed=args.seed,
        defect_rate=args.defect_rate,
        start=args.start,
    )
    for path in paths:
        print(path)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from orchestration.settings import pseudonym_key
    from schemas.validation import RawFileError, validate_file_to_dir

    try:
        summary = validate_file_to_dir(Path(args.file), Path(args.out), pseudonym_key())
    except RawFileError as exc:
        print(f"triage validate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import serve

    serve(host=args.host, port=args.port, workers=args.workers)
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from orchestration.pipeline import run_pipeline

    return run_pipeline(
        seed_demo=not args.no_seed,
        max_quarantine_rate=args.max_quarantine_rate,
        retrain=args.retrain,
    )


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def version_text() -> str:
    """The installed package version and the git commit of the code (TRIAGE_CODE_VERSION when
    set, as in container images built without git), or 'commit unknown'."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("triage")
    except PackageNotFoundError:
        package = "unknown"
    commit = os.environ.get("TRIAGE_CODE_VERSION", "").strip()
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"triage {package} (commit {commit or 'unknown'})"


def _remote_store():
    """The S3 store of this environment, or ``None`` (embedded default)."""
    from diagnosis.remote import RemoteStore
    from orchestration.settings import current_environment

    location = current_environment().s3_location()
    return RemoteStore(location) if location is not None else None


def _mlflow_client(paths):
    """An MLflow client on the pipeline's tracking store (TRIAGE_MLFLOW_TRACKING_URI, else the
    SQLite store under TRIAGE_HOME/mlflow), or ``None`` when there is none."""
    import os

    uri = os.environ.get("TRIAGE_MLFLOW_TRACKING_URI")
    if not uri:
        db = paths.mlflow / "mlflow.db"
        if not db.is_file():
            return None
        uri = f"sqlite:///{db}"
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def trace_links(manifest, client=None) -> dict:
    """The UI links of a deployed version's MLflow run, registered version and Dagster run."""
    from diagnosis import audit

    mlflow_ui, dagster_ui = audit.ui_bases()
    links: dict = {}
    if manifest.mlflow_run_id:
        experiment_id = None
        if client is not None:
            try:
                experiment_id = client.get_run(manifest.mlflow_run_id).info.experiment_id
            except Exception:  # the UI link still works without the experiment id
                experiment_id = None
        links["mlflow_run"] = audit.mlflow_run_url(mlflow_ui, manifest.mlflow_run_id, experiment_id)
    if manifest.mlflow_model_name and manifest.mlflow_model_version:
        links["mlflow_model_version"] = audit.mlflow_model_version_url(
            mlflow_ui, manifest.mlflow_model_name, manifest.mlflow_model_version
        )
    if manifest.dagster_run_id:
        links["dagster_run"] = audit.dagster_run_url(dagster_ui, manifest.dagster_run_id)
    return links


def _cmd_trace(args: argparse.Namespace) -> int:
    import msgspec

    from diagnosis import audit
    from diagnosis.remote import RemoteError
    from schemas.contracts import ContractError
    from schemas.layout import TriagePaths

    prediction_id = args.prediction_id.strip().lower()
    if audit.PREDICTION_ID_RE.match(prediction_id) is None:
        print(
            "triage trace: a prediction id is 32 hexadecimal characters (as /v1/predict returns)",
            file=sys.stderr,
        )
        return 2
    paths = TriagePaths.from_env()
    remote = _remote_store()
    if remote is not None:
        try:
            remote.pull("predictions", paths.prediction_cache)
        except RemoteError as exc:
            print(f"triage trace: cannot read the shared prediction log: {exc}", file=sys.stderr)
    line = audit.find_logged_prediction((paths.predictions, paths.prediction_cache), prediction_id)
    if line is None:
        print(f"triage trace: no prediction {prediction_id} in the prediction log", file=sys.stderr)
        return 1
    result: dict = {"prediction": msgspec.to_builtins(line)}
    try:
        manifest = audit.read_manifest(paths.deployments, line.model_version, remote)
    except (ContractError, audit.AuditError) as exc:
        manifest, result["model_problem"] = None, str(exc)
    if manifest is None:
        result.setdefault("model_problem", f"no manifest of version {line.model_version}")
    else:
        result["model"] = {
            **audit.provenance(manifest),
            "current": audit.current_version(paths.deployments) == manifest.version,
        }
        result["links"] = trace_links(manifest, _mlflow_client(paths))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_trace(result)
    return 0


def _print_trace(result: dict) -> None:
    p = result["prediction"]
    inputs = p["inputs"]
    print(f"prediction  {p['prediction_id']}  at {p['time']}")
    vitals = ", ".join(
        f"{k}={inputs[k]}"
        for k in ("age", "sex", "heart_rate", "body_temperature", "systolic_bp", "diastolic_bp")
        if inputs.get(k) is not None
    )
    print(f"  inputs    {vitals or 'no vitals'}")
    print(f"  symptoms  {', '.join(inputs['symptoms']) or '-'}")
    if inputs.get("absent_symptoms"):
        print(f"  absent    {', '.join(inputs['absent_symptoms'])}")
    top = ", ".join(f"{e['code']} {e['probability']:.3f}" for e in p["differential"][:5])
    print(f"  answer    {top}")
    print(f"            orphan probability {p['orphan_probability']:.3f}, severity {p['severity']}")
    model = result.get("model")
    if model is None:
        print(f"model       {p['model_version']}: {result.get('model_problem')}")
        return
    print(f"model       {model['version']}{'  (serving now)' if model['current'] else ''}")
    print(f"  trained   {model['trained_at']}")
    print(f"  onnx      sha256 {model['onnx_sha256']}")
    print(f"  code      {model['code_version']}")
    print(
        f"  mlflow    run {model['mlflow_run_id']}, model {model['mlflow_model_name']} "
        f"version {model['mlflow_model_version']}"
    )
    print(f"  dagster   run {model['dagster_run_id']}")
    for name, value in sorted(model["data_versions"].items()):
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        print(f"  data      {name}: {shown[:200]}")
    for name, url in result.get("links", {}).items():
        print(f"  link      {name}: {url}")


def _cmd_rollback(args: argparse.Namespace) -> int:
    import getpass

    from diagnosis import audit
    from diagnosis.remote import RemoteError
    from schemas.contracts import ContractError
    from schemas.layout import TriagePaths

    paths = TriagePaths.from_env()
    deployments = paths.deployments
    reason = " ".join(args.reason.split())
    if not reason:
        print(
            "triage rollback: --reason must say why (it goes into the audit record)",
            file=sys.stderr,
        )
        return 2
    by = (args.by or "").strip() or getpass.getuser()
    remote = _remote_store()
    try:
        if remote is not None:
            remote.pull_deployment(deployments)
        before = audit.current_version(deployments)
        if before == args.version:
            print(f"triage rollback: {args.version} is already the served version", file=sys.stderr)
            return 2
        s3_pointer = audit.repoint(deployments, args.version, remote)
        manifest = audit.read_manifest(deployments, args.version)
    except (audit.AuditError, ContractError, RemoteError) as exc:
        print(f"triage rollback: {exc}; nothing was changed", file=sys.stderr)
        return 2
    record = audit.RollbackRecord(
        at=audit.now_utc(),
        by=by,
        reason=reason,
        from_version=before,
        to_version=args.version,
        mlflow_model_name=manifest.mlflow_model_name,
        mlflow_model_version=manifest.mlflow_model_version,
        s3_pointer=s3_pointer,
    )
    record.mlflow_alias = _move_champion(paths, manifest, record)
    path = audit.write_rollback_record(deployments, record, remote)
    print(f"serving {args.version} (was {before}); the API picks it up at its next pointer check")
    print(f"MLflow alias champion: {record.mlflow_alias}; S3 pointer: {s3_pointer}")
    print(f"audit record: {path}")
    return 0 if record.mlflow_alias in {"moved", "no MLflow model recorded"} else 1


def _move_champion(paths, manifest, record) -> str:
    from diagnosis.audit import CHAMPION_ALIAS

    if not (manifest.mlflow_model_name and manifest.mlflow_model_version):
        return "no MLflow model recorded"
    try:
        client = _mlflow_client(paths)
        if client is None:
            return "failed: no MLflow tracking store (set TRIAGE_MLFLOW_TRACKING_URI)"
        name, version = manifest.mlflow_model_name, manifest.mlflow_model_version
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        client.set_model_version_tag(name, version, "rollback_reason", record.reason)
        client.set_model_version_tag(name, version, "rollback_by", record.by)
        client.set_model_version_tag(name, version, "rollback_at", record.at)
    except Exception as exc:  # the pointer already moved: report, do not undo
        return f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    return "moved"


def build_parser() -> argparse.ArgumentParser:
    class Formatter(argparse.ArgumentDefaultsHelpFormatter):
        """Defaults shown after each option; text with line breaks (the exit codes and examples
        epilog) kept as written, single paragraphs wrapped."""

        def _fill_text(self, text, width, indent):
            if "\n" in text:
                return "".join(indent + line for line in text.splitlines(keepends=True))
            return super()._fill_text(text, width, indent)

    parser = argparse.ArgumentParser(
        prog="triage",
        description=(
            "Differential diagnosis for common and orphan diseases. State lives under "
            "TRIAGE_HOME (default ./.triage)."
        ),
        epilog=EXIT_CODES + "\n" + EXAMPLES,
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"print the full traceback of an unexpected error (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=Formatter, epilog=EXIT_CODES, **kwargs)

    sim = add(
        "simulate",
        help="write a synthetic demo cohort as weekly hospital exports",
        description=(
            "Write weekly raw exports (records_<monday>.txt, comma-delimited, header row) of a "
            "synthetic cohort: common conditions from the curated table, orphan diseases from the "
            "HPO/Orphanet annotations, healthy patients, and a configurable rate of real-world "
            "defects (bad numbers, impossible vitals, °F temperatures, duplicates, missing values)."
        ),
    )
    sim.add_argument("--patients", type=int, default=2000, help="records in the whole cohort")
    sim.add_argument("--weeks", type=int, default=4, help="number of weekly files")
    sim.add_argument("--seed", type=int, default=7, help="random seed (same seed, same files)")
    sim.add_argument("--out", required=True, help="directory to write the weekly files into")
    sim.add_argument(
        "--defect-rate", type=float, default=0.03, help="share of rows given a defect (0–1)"
    )
    sim.add_argument("--start", default="2026-01-05", help="Monday of the first week (YYYY-MM-DD)")
    sim.set_defaults(func=_cmd_simulate)

    val = add(
        "validate",
        help="check one raw export with the pipeline's own schemas, outside Dagster",
        description=(
            "Validate one raw export exactly as the pipeline does. Writes OUT/valid.parquet and "
            "OUT/quarantine.parquet (every quarantined row with its reasons) and prints a JSON "
            "summary. Exits 0 when the file was read (even if rows were quarantined), 2 when the "
            "file itself cannot be read."
        ),
    )
    val.add_argument("file", help="the export to check (.txt, .csv or .tsv)")
    val.add_argument(
        "--out", required=True, help="directory for valid.parquet and quarantine.parquet"
    )
    val.set_defaults(func=_cmd_validate)

    srv = add(
        "serve",
        help="serve the deployed model over HTTP (Litestar + onnxruntime)",
        description=(
            "Start the API on HOST:PORT. It serves the model that TRIAGE_HOME/deployments/"
            "current.json points to; tokens come from TRIAGE_API_KEYS."
        ),
    )
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1, help="server worker processes")
    srv.set_defaults(func=_cmd_serve)

    pipe = add(
        "pipeline",
        help="seed demo data if the landing zone is empty, then materialise every asset",
        description=(
            "Headless run of the whole asset graph on the local Dagster instance "
            "(TRIAGE_HOME/dagster), printing each step as it starts and finishes. When code, "
            "weekly exports, clinician labels, settings and the HPO release are those the current "
            "deployment was trained on, it is kept (one line names it; no run starts) unless "
            "--retrain is given. Exits 1 on a "
            "failed step, 3 when the quality gate refuses the challenger (the champion keeps "
            "serving), 4 when a week's quarantine rate is above --max-quarantine-rate."
        ),
    )
    pipe.add_argument("--no-seed", action="store_true", help="do not seed demo data")
    pipe.add_argument(
        "--max-quarantine-rate",
        type=_rate,
        default=None,
        metavar="RATE",
        help="stop before training (exit 4) when any validated week has a larger share of its "
        "rows in quarantine (0-1; None: no limit)",
    )
    pipe.add_argument(
        "--retrain",
        action="store_true",
        help="train, gate and deploy even when code, data, labels, settings and the HPO release "
        "are those the current deployment was trained on (by default it is kept: one line says "
        "which version and why, and no run starts)",
    )
    pipe.set_defaults(func=_cmd_pipeline)

    trace = add(
        "trace",
        help="show one prediction, the model version that gave it and where that came from",
        description=(
            "Print a logged prediction (its identifier-free inputs and the answer), the model "
            "version that served it and that version's provenance from its manifest (MLflow run "
            "and registered version, Dagster run, code commit, data versions) with links to the "
            "MLflow UI (TRIAGE_MLFLOW_UI_URL, default http://127.0.0.1:5000) and the Dagster UI "
            "(TRIAGE_DAGSTER_UI_URL, default http://127.0.0.1:3000). Exits 1 when the id was "
            "never logged, 2 when it is malformed."
        ),
    )
    trace.add_argument("prediction_id", help="the prediction_id returned by /v1/predict")
    trace.add_argument("--json", action="store_true", help="print JSON instead of text")
    trace.set_defaults(func=_cmd_trace)

    back = add(
        "rollback",
        help="serve an earlier deployed version again, with who and why on record",
        description=(
            "Re-point the service to VERSION: checks that the version loads (hashes and a smoke "
            "prediction), switches deployments/current.json (and the S3 pointer when "
            "TRIAGE_S3_BUCKET is set), moves the MLflow `champion` alias to its registered "
            "version and writes deployments/audit/<time>-rollback-<VERSION>.json. Running APIs "
            "reload within their pointer check interval. Exits 2 when nothing was changed, 1 "
            "when the service was re-pointed but the MLflow alias could not be moved."
        ),
    )
    back.add_argument("version", help="a folder name under TRIAGE_HOME/deployments")
    back.add_argument("--reason", required=True, help="why (kept in the audit record)")
    back.add_argument("--by", help="who (default: the operating-system user)")
    back.set_defaults(func=_cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here (argparse)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"triage {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes"}:
            raise
        print(f"triage {args.command}: {_one_line(exc)}", file=sys.stderr)
        print(f"  (run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: Exception) -> str:
    """A configuration error names the variable itself; anything else also names its type."""
    from orchestration.settings import ConfigurationError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConfigurationError):
        return f"configuration error: {text}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    return f"{type(exc).__name__}: {text[:500]}"


if __name__ == "__main__":
    sys.exit(main())
