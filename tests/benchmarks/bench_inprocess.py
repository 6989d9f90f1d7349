"""Benchmark: where a prediction's CPU goes, in process, stage by stage, beside each stage's limit.

    python tests/benchmarks/bench_inprocess.py [--home TRIAGE_HOME] [--repeat 400] [--batch 1000]

Loads the deployment ``TRIAGE_HOME/deployments/current.json`` points to (default ./.triage, as
left by ``make pipeline``) and times, with the thread's CPU clock (other jobs on a shared machine
disturb it much less than wall time), every stage a ``POST /v1/predict`` request goes through
after the HTTP server has read it, for the febrile patient of ``bench_api.py`` (top_k=10):

* parse: the JSON body decoded (what Litestar does once per request);
* validation: ``top_k``/``explain`` and the full-body check of :mod:`serving.structs`, the typed
  ``Patient`` and the dict the runtime scores;
* scoring / blend / top-k / answer: the runtime's stages (:meth:`Runtime.stage_costs`), the
  explanation as the extra CPU of an explained prediction;
* prediction log: one request's line written (to a temporary directory);
* response encoding: the answer encoded as JSON.

Beside each stage, its limit on this machine: the smallest vectorised kernel doing the arithmetic
the stage cannot avoid, timed here (for scoring, adding the weights the query touches onto a
catalogue row; for the blend, one exp over the catalogue; for the top-k, one pass reading every
score; for validation, msgspec converting the body into the typed struct; for the log, one
``write`` of the line; for encoding, msgspec encoding the same answer). A batch of ``--batch``
patients (the first valid records of ``landing/``, as ``bench_explain.py`` reads them) gives the
in-process batch throughput on one core. Targets are printed with met / not met.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import PATIENT  # noqa: E402
from bench_explain import patients_from_landing  # noqa: E402

from diagnosis.explain import occlusion_rows  # noqa: E402
from diagnosis.runtime import Runtime, load_deployment  # noqa: E402
from serving.explain_params import parse_explain  # noqa: E402
from serving.prediction_log import PredictionLog  # noqa: E402
from serving.structs import (  # noqa: E402
    Patient,
    patient_input,
    validate_patient_body,
    validate_top_k,
)

TOP_K = 10
TARGET_BATCH_PER_S = 20_000  # patients/s in process, one core


def cpu_us(call: Callable[[], Any], repeat: int) -> float:
    """Median over 5 blocks of the thread CPU time per call, in µs."""
    call()
    block = max(1, repeat // 5)
    per_block = []
    for _ in range(5):
        started = time.thread_time_ns()
        for _ in range(block):
            call()
        per_block.append((time.thread_time_ns() - started) / block / 1e3)
    return float(np.median(per_block))


def touched_weights(model: Runtime, patient: dict[str, Any], home: Path) -> int:
    """How many of the ranker's weights the patient's findings add (present and excluded terms;
    age and sex are the same for many patients): read from the deployed graph's CSR row lengths."""
    import onnx
    from onnx import numpy_helper

    if model.knowledge is None:
        return 0
    path = home / "deployments" / model.version / model.manifest.onnx_file
    graph = onnx.load(str(path)).graph
    lengths = next(
        numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("term_length")
    )
    rows = model.knowledge.rows(model.as_scored(patient))[:-2]  # without the age and sex rows
    return int(lengths[rows].sum())


def stage_table(model: Runtime, repeat: int, home: Path) -> list[tuple[str, float, float, str]]:
    """(stage, µs per request, limit µs, what the limit is) for one patient, top_k=10."""
    body = msgspec.json.encode(PATIENT)
    parsed = msgspec.json.decode(body)

    def validate() -> dict[str, Any]:
        validate_top_k("10")
        parse_explain(None, True)
        validate_patient_body(parsed)
        return patient_input(msgspec.convert(parsed, Patient))

    patient = validate()
    rows: list[tuple[str, float, float, str]] = []
    rows.append(
        ("parse JSON body", cpu_us(lambda: msgspec.json.decode(body), repeat), 0.0, "(is one)")
    )
    rows.append(
        (
            "request validation",
            cpu_us(validate, repeat),
            cpu_us(lambda: msgspec.convert(parsed, Patient), repeat),
            "msgspec typed convert",
        )
    )
    stages = model.stage_costs([patient], TOP_K, lambda call: cpu_us(call, repeat))
    n_entries = len(model.entries)
    scores = np.random.default_rng(0).normal(size=n_entries)
    touched = touched_weights(model, patient, home)
    weights = np.ones(touched, dtype=np.float32)
    cells = np.random.default_rng(1).integers(0, n_entries, size=touched)
    row = np.zeros(n_entries, dtype=np.float32)

    def touch() -> None:
        out = row.copy()
        out[cells] += weights

    limits = {
        "scoring": (cpu_us(touch, repeat), f"{touched} weights added onto a catalogue row"),
        "blend": (cpu_us(lambda: np.exp(scores), repeat), f"one exp over {n_entries} entries"),
        "top-k": (cpu_us(lambda: scores.max(), repeat), f"one pass over {n_entries} entries"),
    }
    for name, value in stages.items():
        limit, what = limits.get(name, (0.0, ""))
        rows.append((name, value, limit, what))
    predict_plain = cpu_us(lambda: model.predict([patient], TOP_K), repeat)
    predict_explained = cpu_us(lambda: model.predict([patient], TOP_K, explain=True), repeat)
    inputs, occluded = occlusion_rows(patient, model.spec.vitals, model.spec.sexes)
    per_row = sum(limits[name][0] for name in ("scoring", "blend", "top-k"))
    rows.append(
        (
            "explanation (extra)",
            predict_explained - predict_plain,
            per_row * len(inputs),
            f"{len(inputs)} more rows scored",
        )
    )
    answer = model.predict([patient], TOP_K, explain=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog(Path(tmp))
        line = msgspec.json.encode(answer[0]) + b"\n"
        handle = open(Path(tmp) / "limit.jsonl", "ab", buffering=0)  # noqa: SIM115
        try:
            rows.append(
                (
                    "prediction log",
                    cpu_us(lambda: log.record([patient], answer), repeat),
                    cpu_us(lambda: handle.write(line), repeat),
                    "one write() of the line",
                )
            )
        finally:
            handle.close()
            log.close()
    encoded = msgspec.json.encode(answer[0])
    rows.append(
        (
            "response encoding",
            cpu_us(lambda: msgspec.json.encode(answer[0]), repeat),
            cpu_us(lambda: bytes(encoded), repeat),
            f"copy of the {len(encoded)} bytes",
        )
    )
    rows.append(("= predict, no explanation", predict_plain, 0.0, "runtime only"))
    rows.append(("= predict, explained", predict_explained, 0.0, "runtime only"))
    return rows


def batch_rate(model: Runtime, patients: list[dict], rounds: int = 3) -> float:
    """Patients per second of one ``predict`` call for the whole batch (CPU time, best round)."""
    model.predict(patients[:50], TOP_K)
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        model.predict(patients, TOP_K)
        best = min(best, time.thread_time() - started)
    return len(patients) / best


def single_rate(model: Runtime, patients: list[dict]) -> float:
    started = time.thread_time()
    for patient in patients:
        model.predict([patient], TOP_K)
    return len(patients) / (time.thread_time() - started)


def main(argv: list[str] | None = None) -> int:
    measure(argv)
    return 0


def measure(argv: list[str] | None = None) -> dict[str, float]:
    """Print the table and the batch figures; return ``{stage: CPU µs}`` (``bench_api.py`` sets
    the HTTP figures beside the runtime's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("TRIAGE_HOME", ".triage"))
    parser.add_argument("--repeat", type=int, default=400, help="calls per timed stage")
    parser.add_argument("--batch", type=int, default=1000, help="patients of the batch call")
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if not (home / "deployments" / "current.json").exists():
        raise SystemExit(f"no deployed model under {home} (run make pipeline first)")
    model = load_deployment(home / "deployments")
    print(
        f"in-process cost model, model {model.version} ({len(model.entries)} entries), "
        f"thread CPU time, load average {os.getloadavg()[0]:.2f} at start"
    )
    rows = stage_table(model, args.repeat, home)
    print(f"  {'stage (one patient, top_k=10)':<28} | {'CPU µs':>8} | {'limit µs':>8} | limit")
    # "answer objects" is the rest of Runtime.predict: building the answer, and the stages
    # running colder in sequence than alone
    for name, value, limit, what in rows:
        shown = f"{limit:>8.1f}" if limit else f"{'':>8}"
        print(f"  {name:<28} | {value:>8.1f} | {shown} | {what}")
    patients = patients_from_landing(home / "landing", args.batch)
    batch = batch_rate(model, patients)
    single = single_rate(model, patients[:200])
    met = batch >= TARGET_BATCH_PER_S
    print(
        f"  batch of {len(patients)} patients (landing records), one call: {batch:,.0f} patients/s "
        f"({1e6 / batch:.1f} µs each); single calls: {single:,.0f} patients/s "
        f"({1e6 / single:.1f} µs each); batch/single per patient "
        f"{single / batch:.2f}"
    )
    print(
        f"  target: batch >= {TARGET_BATCH_PER_S:,} patients/s in process on one core "
        f"({batch:,.0f}): {'met' if met else 'NOT met'}; a batch cheaper per patient than single "
        f"calls: {'met' if batch > single else 'NOT met'}"
    )
    print(f"  load average {os.getloadavg()[0]:.2f} at the end")
    return {name: value for name, value, _, _ in rows}


if __name__ == "__main__":
    sys.exit(main())
