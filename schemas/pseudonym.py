"""Keyed pseudonymisation of patient identifiers.

A patient key is the **full** HMAC-SHA256 of the stripped patient id (UTF-8) under the secret
pseudonym key, as 64 lower-case hex characters (no truncation: the contract says "HMAC-SHA256 hex",
and 32 extra bytes per row cost nothing). The same id and key always give the same patient key,
so records of one patient can be linked across weekly files; without the key the id cannot be
recovered or confirmed by brute force over the id space.

The vectorised variant computes one HMAC per *unique* id and maps the digests back with a hash
join. ``hmac.digest`` re-derives the padded key on every call (about 2.7 µs here); the vectorised
path instead keys two SHA-256 states once (RFC 2104: inner = H(K^ipad || m), outer =
H(K^opad || inner)) and copies them per id, about 1 µs, so 1 M distinct ids take about 1 s.
Both paths give byte-identical results (tested against :func:`hmac.digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import polars as pl

__all__ = ["PATIENT_KEY_HEX_CHARS", "pseudonymise", "pseudonymise_series"]

PATIENT_KEY_HEX_CHARS = 64


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise ValueError("pseudonym key must be non-empty bytes")


def pseudonymise(patient_id: str, key: bytes) -> str:
    """HMAC-SHA256 hex digest (64 chars) of ``patient_id.strip()`` under ``key``."""
    _check_key(key)
    return hmac.digest(key, patient_id.strip().encode("utf-8"), "sha256").hex()


def _hmac_sha256_factory(key: bytes) -> Callable[[bytes], str]:
    """Return ``m -> HMAC-SHA256(key, m).hexdigest()`` with the key schedule computed once."""
    block = 64  # SHA-256 block size in bytes
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def mac(message: bytes) -> str:
        h = inner.copy()
        h.update(message)
        o = outer.copy()
        o.update(h.digest())
        return o.hexdigest()

    return mac


def _mac_all(values: pl.Series, mac: Callable[[bytes], str]) -> pl.Series:
    # Null in, null out; the list comprehension is the only per-item Python.
    return pl.Series(
        [None if v is None else mac(v) for v in values.cast(pl.Binary).to_list()],
        dtype=pl.Utf8,
    )


def pseudonymise_series(ids: pl.Series, key: bytes) -> pl.Series:
    """Vectorised :func:`pseudonymise`: nulls and empty/blank ids stay null.

    Few distinct ids (patients seen repeatedly): one HMAC per distinct id, mapped back through
    an Enum's physical codes. Mostly distinct ids: one HMAC per row (mapping back would cost
    more than it saves).
    """
    _check_key(key)
    mac = _hmac_sha256_factory(bytes(key))
    stripped = ids.cast(pl.Utf8).str.strip_chars()
    stripped = pl.Series(ids.name, stripped).set(stripped == "", None)
    uniques = stripped.drop_nulls().unique()
    if len(uniques) > 0.6 * len(stripped):
        return _mac_all(stripped, mac).alias(ids.name)
    digests = _mac_all(uniques, mac)
    codes = stripped.cast(pl.Enum(uniques.to_list())).to_physical()
    return digests.gather(codes).alias(ids.name)
