"""Scoring off the event loop, within a per-request work budget (API v1.4).

A prediction is CPU work (onnxruntime, numpy; the explanation scores one extra row per input of the
patient). Run on the event loop, one large request stops the worker from answering anything else,
``/health`` included, and from reacting to SIGTERM. So every request but a small one (below) is
scored in a worker thread (onnxruntime releases the GIL while it computes), through a per-process
:class:`ScoringPool`:

* **bounded**: at most ``threads`` chunks run at once in a worker process (default 1: one core per
  uvicorn worker, like one onnxruntime thread per session); others wait in FIFO order for a slot;
* **chunked**: a batch is scored in chunks of about :data:`CHUNK_WORK` work units (one patient
  with its explanation is never split), and the slot is released between chunks, so a small
  request waits for one chunk, not for a whole batch;
* **abandoned** when nobody waits for it any more: between chunks the pool checks that the client
  is still connected, that the request's deadline has not passed and that the server is not
  shutting down; the rest of the batch is then never scored;
* **budgeted**: :func:`request_work` prices the request before any scoring; above the budget the
  request is refused with 413, naming the limit, instead of taking minutes of CPU.

**Small requests on the event loop.** A request of one chunk and at most :data:`INLINE_WORK` work
units (one patient, or one explained patient with a few inputs: well under a few milliseconds of
CPU) is scored directly on the event loop when no thread slot is in use and nobody waits for one.
The hop to a worker thread and back (two thread wake-ups and the GIL handed over twice) cost about
as much CPU as the prediction itself, and under concurrent load the two threads fought for the GIL
(the explained p99 at 8 connections was tens of milliseconds for a millisecond of work). The
checks before scoring are the same (shut-down, deadline, departed client); such a request was
never split nor abandoned mid-way anyway (one chunk). Anything larger, or anything arriving while
a chunk is being scored in a thread, goes through the threads in FIFO order as before.

Work units: a scored row costs ``1 + terms / 32``, where ``terms`` counts its symptoms and absent
symptoms (the ranker's cost grows with them; measured on the full catalogue, about 1 ms per row
with no symptom and 7 ms with 256). A patient is one row, or with its explanation one row per input
(each symptom, absent symptom, measured vital sign and the sex) plus one.

Chunking does not change what is scored: rows are scored independently and an explained patient
is always scored whole (its explanation is one batch of its occlusion rows). The one difference is
float rounding: the severity is a matrix product over the whole catalogue whose last bits (about
1e-15) depend on how many rows are multiplied at once, as they already differ between
``/v1/predict`` and a batch (tests/serving/test_budget.py compares chunked and unchunked answers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from serving.structs import Problem

TERMS_PER_UNIT = 32
CHUNK_WORK = 250.0  # about 0.1–0.3 s of CPU: the granularity of fairness and of abandonment
DEFAULT_MAX_WORK = 5000.0
INLINE_WORK = 16.0  # at most this, in one chunk, is scored on the event loop (see above)
DEFAULT_DEADLINE_S = 60.0

T = TypeVar("T")


class WorkBudgetExceeded(Exception):
    """The request would cost more than the budget (mapped to 413 with the limit)."""

    def __init__(self, work: float, limit: float, explain: bool, patients: int) -> None:
        self.work, self.limit = work, limit
        hint = (
            "send fewer patients or symptoms per request, or ask without the explanation "
            "(explain=false)"
            if explain
            else "send fewer patients or symptoms per request"
        )
        super().__init__(
            f"this request needs {work:,.0f} work units; the limit is {limit:,.0f} per request"
        )
        self.problems = [
            Problem(
                field="patients" if patients > 1 else "symptoms",
                value=round(work),
                message=f"{work:,.0f} work units requested ({patients} patient(s)"
                f"{', with explanations' if explain else ''}); the limit is {limit:,.0f}: {hint}",
                allowed=f"at most {limit:,.0f} work units per request (README, Work budget)",
            )
        ]


class ScoringAbandoned(Exception):
    """The request's scoring stopped between chunks; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def row_work(patient: Mapping[str, Any]) -> float:
    terms = len(patient.get("symptoms") or ()) + len(patient.get("absent_symptoms") or ())
    return 1.0 + terms / TERMS_PER_UNIT


def explained_rows(patient: Mapping[str, Any], vitals: Sequence[str]) -> int:
    """Rows the explanation scores for this patient: the patient, then one per removable input
    (an upper bound of :func:`diagnosis.explain.occlusion_rows`)."""
    inputs = len(patient.get("symptoms") or ()) + len(patient.get("absent_symptoms") or ())
    inputs += sum(1 for name in vitals if patient.get(name) is not None)
    inputs += 1 if patient.get("sex") not in (None, "unknown") else 0
    return 1 + inputs


def patient_work(patient: Mapping[str, Any], explain: bool, vitals: Sequence[str]) -> float:
    rows = explained_rows(patient, vitals) if explain else 1
    return rows * row_work(patient)


def request_work(
    patients: Sequence[Mapping[str, Any]], explain: bool, vitals: Sequence[str]
) -> list[float]:
    """The work units of each patient (their sum is the request's cost)."""
    return [patient_work(p, explain, vitals) for p in patients]


def chunks(costs: Sequence[float], limit: float | None = None) -> list[range]:
    """Consecutive index ranges whose cost stays within ``limit`` (default :data:`CHUNK_WORK`;
    a patient alone may exceed it)."""
    limit = CHUNK_WORK if limit is None else limit
    out: list[range] = []
    start, total = 0, 0.0
    for i, cost in enumerate(costs):
        if i > start and total + cost > limit:
            out.append(range(start, i))
            start, total = i, 0.0
        total += cost
    if start < len(costs):
        out.append(range(start, len(costs)))
    return out


class ScoringPool:
    """One per worker process (one per app): the thread slots, the budget and the stop flag."""

    def __init__(
        self,
        threads: int = 1,
        max_work: float = DEFAULT_MAX_WORK,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.threads = max(1, int(threads))
        self.max_work = max_work
        self.deadline_s = deadline_s
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, lazily
        self.stopping = False  # set at shut-down: the remaining chunks are not scored
        self.abandoned = 0  # requests stopped between chunks (client gone, deadline, shut-down)
        self.refused = 0  # requests over the budget

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return self._limiter

    def check_budget(self, costs: Sequence[float], explain: bool) -> float:
        work = math.fsum(costs)
        if work > self.max_work:
            self.refused += 1
            raise WorkBudgetExceeded(work, self.max_work, explain, len(costs))
        return work

    async def run_chunks(
        self,
        costs: Sequence[float],
        score: Callable[[range], list[T]],
        disconnected: Callable[[], bool] = lambda: False,
    ) -> list[T]:
        """``score(indices)`` for each chunk of ``costs``, in a worker thread (a small request on
        the event loop: :data:`INLINE_WORK`), in order; raise
        :class:`ScoringAbandoned` between chunks when the client left, the deadline passed or
        the server is stopping."""
        deadline = time.monotonic() + self.deadline_s if self.deadline_s > 0 else math.inf
        parts = chunks(costs)
        if len(parts) == 1 and self._inline(costs):
            self._check(deadline, disconnected)
            return list(score(parts[0]))
        results: list[T] = []
        for part in parts:
            self._check(deadline, disconnected)
            # abandon_on_cancel: a cancelled request (shut-down grace period over) returns at once;
            # the thread finishes its one chunk and its result is dropped
            results.extend(
                await anyio.to_thread.run_sync(
                    score, part, limiter=self.limiter, abandon_on_cancel=True
                )
            )
        return results

    def _inline(self, costs: Sequence[float]) -> bool:
        """Score on the event loop: small, and no thread slot in use or waited for."""
        if math.fsum(costs) > INLINE_WORK:
            return False
        limiter = self.limiter
        return limiter.borrowed_tokens == 0 and limiter.statistics().tasks_waiting == 0

    def _check(self, deadline: float, disconnected: Callable[[], bool]) -> None:
        reason = self._stop_reason(deadline, disconnected)
        if reason is not None:
            self.abandoned += 1
            raise ScoringAbandoned(reason)

    def _stop_reason(self, deadline: float, disconnected: Callable[[], bool]) -> str | None:
        if self.stopping:
            return "the server is shutting down"
        if disconnected():
            return "the client disconnected"
        if time.monotonic() > deadline:
            return f"the request took longer than {self.deadline_s:g} s"
        return None
