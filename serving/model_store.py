"""The served model and its hot reload.

:class:`ModelStore` holds the current :class:`diagnosis.runtime.Runtime` (one immutable deployment:
manifest + onnxruntime session, built only after its hashes and a smoke prediction check out) and
swaps the reference when ``deployments/current.json`` changes. A request takes the reference once,
so it is never served by half of one model and half of another. A failed load keeps the previous
model and records the error (shown by ``/ready``).

Last known good (API v1.4): when there is no model yet (start-up) and the version ``current.json``
names fails its checks, the store serves the newest other deployed version that passes them
(newest by deployment time), logs it and says so (:attr:`ModelStore.fallback`, shown by ``/ready``
and ``/metrics``) until the pointer names a version that loads.

Errors shown over HTTP (``/ready``, the 503 body) have digests removed (:func:`public_reason`); the
log keeps the full message.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from diagnosis.runtime import ModelLoadError, Runtime, load_deployment, read_pointer

__all__ = ["ModelLoadError", "ModelStore", "NoModelError", "Runtime"]

log = logging.getLogger("triage.serving.model")


class NoModelError(RuntimeError):
    """No model is loaded (nothing deployed yet, or every load so far failed)."""


_DIGEST = re.compile(r"\b[0-9a-fA-F]{16,}\b")


def public_reason(message: str) -> str:
    """A load error as shown over HTTP: hashes replaced by ``<digest>``, at most 300 characters."""
    return _DIGEST.sub("<digest>", message)[:300]


@dataclass(frozen=True)
class Fallback:
    """Serving a last known good version because the pointer's version failed its checks."""

    served: str  # the version served instead
    pointer_version: str | None  # what current.json names
    reason: str  # why the pointer's version was refused (public form)


class ModelStore:
    """Holds the current :class:`Runtime` and replaces it when ``current.json`` changes.

    ``reload_if_changed()`` costs one ``stat`` when called more often than ``interval_s``; a load runs
    only if the pointer file's (inode, size, mtime) changed since the last attempt, so a broken
    deployment is not retried on every request, only after the pointer is rewritten.
    """

    def __init__(self, deployments_dir: Path, interval_s: float = 1.0) -> None:
        self.deployments_dir = deployments_dir
        self.pointer = deployments_dir / "current.json"
        self.interval_s = interval_s
        self._model: Runtime | None = None
        self.last_error: str | None = None
        self.load_failures = 0  # deployments that could not be loaded (exported as a metric)
        self.fallback: Fallback | None = None
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    @property
    def model(self) -> Runtime | None:
        return self._model

    def require(self) -> Runtime:
        model = self._model
        if model is None:
            reason = self.last_error or "no deployment found (deployments/current.json is missing)"
            raise NoModelError(f"no model is loaded: {reason}")
        return model

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.pointer)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> bool:
        """Load the current deployment now; True when a new model was installed."""
        with self._lock:
            return self._load_locked(self._stat_signature())

    def _load_locked(self, signature: tuple[int, int, int] | None) -> bool:
        self._signature = signature
        if signature is None:
            if self._model is None:
                self.last_error = "no deployment found (deployments/current.json is missing)"
            return False
        try:
            model = load_deployment(self.deployments_dir)
        except ModelLoadError as exc:
            self.last_error = public_reason(str(exc))
            self.load_failures += 1
            log.error(
                "model load failed, keeping %s: %s",
                self._model.version if self._model else "no model",
                exc,
            )
            if self._model is None:
                return self._fall_back(self.last_error)
            return False
        previous = self._model
        self._model = model  # atomic reference swap
        self.last_error = None
        self.fallback = None
        log.info("serving model %s (was %s)", model.version, previous.version if previous else None)
        return True

    def _pointer_version(self) -> str | None:
        try:
            return read_pointer(self.deployments_dir).version
        except ModelLoadError:
            return None

    def candidates(self, exclude: str | None) -> list[Path]:
        """Deployed version folders other than ``exclude``, newest deployment first."""
        found = []
        try:
            entries = list(os.scandir(self.deployments_dir))
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith(".") or entry.name == exclude or not entry.is_dir():
                continue
            manifest = Path(entry.path) / "manifest.json"
            try:
                found.append((manifest.stat().st_mtime_ns, entry.name, manifest))
            except OSError:
                continue
        return [manifest for _, _, manifest in sorted(found, reverse=True)]

    def _fall_back(self, reason: str) -> bool:
        """No model yet and the pointer's version was refused: serve the newest version that
        passes its checks (the same checks as any load)."""
        pointer_version = self._pointer_version()
        for manifest in self.candidates(pointer_version):
            try:
                model = Runtime.from_manifest(manifest)
            except ModelLoadError as exc:
                log.warning("last known good: %s refused too: %s", manifest.parent.name, exc)
                continue
            if model.version != manifest.parent.name:
                log.warning(
                    "last known good: %s names version %s", manifest.parent.name, model.version
                )
                continue
            self._model = model
            self.fallback = Fallback(model.version, pointer_version, reason)
            log.warning(
                "serving last known good version %s: current.json names %s, which failed its "
                "checks (%s)",
                model.version,
                pointer_version,
                reason,
            )
            return True
        log.error("no deployed version passes its checks: starting without a model")
        return False

    def reload_due(self) -> bool:
        """Cheap: at most one ``stat`` per ``interval_s``; True when the pointer file changed."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval_s
        return self._stat_signature() != self._signature

    def reload_if_changed(self) -> bool:
        """Reload when ``current.json`` changed since the last attempt (checked at most once per
        ``interval_s``); True when a new model was installed. Safe to call from any thread."""
        if not self.reload_due():
            return False
        return self.reload_now()

    def reload_now(self) -> bool:
        """Load if the pointer differs from the last attempt, without the interval throttle.

        The app calls ``reload_due()`` on the event loop and, only when it is True, runs this in a
        worker thread so loading a large model does not stall requests served by the old one.
        """
        if not self._lock.acquire(blocking=False):
            return False  # another thread is loading right now
        try:
            signature = self._stat_signature()
            if signature == self._signature:
                return False
            return self._load_locked(signature)
        finally:
            self._lock.release()
