"""Benchmark: what ``POST /v1/labels`` pays to look up a prediction id the API process has not
logged itself (another worker's, one from before a restart, or an unknown id), in process.

    python tests/benchmarks/bench_label_lookup.py [--lines 300000] [--days 3] [--lookups 200]

Writes a synthetic prediction log (``--lines`` lines of the served format over ``--days`` daily
files) in a temporary folder, then times, for ids that were never logged and for logged ids:

* the index of API v1.4 (:class:`serving.prediction_log.PredictionIndex`): built once, then fed only
  the bytes appended since;
* a scan of every log file per look-up (how v1.3 found an id: a byte search over a memory map of
  each file, newest first), for comparison.

Prints milliseconds per look-up, the index's build time and memory, the bytes each method read
and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import time
import uuid
from pathlib import Path

from serving.prediction_log import PredictionIndex


def write_log(directory: Path, lines: int, days: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(lines)]
    rest = (
        ',"time":"2026-01-05T10:00:00.000+00:00","model_version":"20260105T030000Z-abcdef12",'
        '"inputs":{"age":41.0,"sex":"female","heart_rate":112.0,"body_temperature":39.4,'
        '"systolic_bp":112.0,"diastolic_bp":70.0,"symptoms":["HP:0001945","HP:0012735"],'
        '"absent_symptoms":[]},"differential":[{"code":"J10","probability":0.61},'
        '{"code":"J18.9","probability":0.2}],"orphan_probability":0.01,"severity":"acute"}\n'
    )
    per_day = -(-lines // days)
    for day in range(days):
        chunk = ids[day * per_day : (day + 1) * per_day]
        path = directory / f"predictions-2026-01-{5 + day:02d}.jsonl"
        path.write_text("".join('{"prediction_id":"' + i + '"' + rest for i in chunk))
    return ids


def scan_every_file(directory: Path, prediction_id: str) -> tuple[bool, int]:
    """The v1.3 look-up: search each file's bytes for the line's opening, newest file first."""
    needle = b'{"prediction_id":"' + prediction_id.encode() + b'"'
    read = 0
    for path in sorted(directory.glob("predictions-*.jsonl"), reverse=True):
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            read += len(view)
            if view.find(needle) >= 0:
                return True, read
    return False, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        ids = write_log(directory, args.lines, args.days)
        size = sum(p.stat().st_size for p in directory.iterdir())
        unknown = [uuid.uuid4().hex for _ in range(args.lookups)]
        known = ids[:: max(1, len(ids) // args.lookups)][: args.lookups]

        index = PredictionIndex(directory, recent_max=0)
        began = time.perf_counter()
        index.catch_up()
        index._merge()
        build = time.perf_counter() - began
        memory = index._keys.nbytes + index._where.nbytes
        results = {}
        for name, batch in (("unknown", unknown), ("logged", known)):
            before = index.bytes_read
            began = time.perf_counter()
            found = sum(index.find(i) is not None for i in batch)
            index_ms = (time.perf_counter() - began) / len(batch) * 1000
            index_read = index.bytes_read - before
            began = time.perf_counter()
            scanned = [scan_every_file(directory, i) for i in batch]
            scan_ms = (time.perf_counter() - began) / len(batch) * 1000
            scan_read = sum(r for _, r in scanned)
            assert found == sum(f for f, _ in scanned)
            results[name] = (index_ms, index_read, scan_ms, scan_read, found)
        print(
            f"log: {args.lines:,} predictions in {args.days} files, {size / 1e6:.1f} MB; "
            f"index built once in {build:.2f} s, {memory / 1e6:.1f} MB of arrays"
        )
        for name, (index_ms, index_read, scan_ms, scan_read, found) in results.items():
            print(
                f"{name:>8} ids ({found}/{args.lookups} found): index {index_ms:.3f} ms/look-up, "
                f"{index_read:,} bytes read; scan of every file {scan_ms:.2f} ms/look-up, "
                f"{scan_read / len(unknown) / 1e6:.1f} MB read per look-up; "
                f"ratio {scan_ms / index_ms:.0f}x"
            )
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
