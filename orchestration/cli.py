"""The ``triage`` command: demo data, export validation, the API and the pipeline.

Heavy libraries (dagster, polars, onnxruntime) are imported inside each sub-command so that
``triage --help`` is instant and ``triage serve`` never loads the orchestration stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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

    return run_pipeline(seed_demo=not args.no_seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description=(
            "Differential diagnosis for common and orphan diseases. State lives under "
            "TRIAGE_HOME (default ./.triage)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser(
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

    val = sub.add_parser(
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

    srv = sub.add_parser(
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

    pipe = sub.add_parser(
        "pipeline",
        help="seed demo data if the landing zone is empty, then materialise every asset",
        description=(
            "Headless run of the whole asset graph on the local Dagster instance "
            "(TRIAGE_HOME/dagster). Exits non-zero on any failure."
        ),
    )
    pipe.add_argument("--no-seed", action="store_true", help="do not seed demo data")
    pipe.set_defaults(func=_cmd_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
