"""Per-block quantisation of per-row scalars (residual norms, k-means projections).

A float16 per row and scalar costs 16 bits; over a 64-wide row that is 0.25 bit per element,
as much as a twelfth of a 3-bit code. The values of one block span a small dynamic range, so
``b``-bit codes against the block's own range (two float32 bounds per block) lose almost
nothing: norms are coded on a log scale (relative error ≤ range / 2**(b+1)), signed projections
on a linear one (their error moves into the residual, which is coded after them).

Layout of one block's field: ``lo`` f32, ``hi`` f32, then ``rows`` codes of ``b`` bits packed
LSB-first (:mod:`kakeya_lib.bitpack`).
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import to_host
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..errors import CorruptBlobError

_BOUNDS = struct.Struct("<ff")
MIN_BITS, MAX_BITS = 2, 16


def nbytes(rows: int, bits: int) -> int:
    """Bytes of one block's field."""
    return _BOUNDS.size + packed_nbytes(rows, bits)


def _bounds(v: Any, xp: ModuleType) -> tuple[float, float]:
    if v.size == 0:
        return 0.0, 0.0
    return float(np.float32(to_host(v.min()))), float(np.float32(to_host(v.max())))


def encode_linear(values: Any, bits: int, xp: ModuleType) -> tuple[bytes, Any]:
    """Codes of ``values`` [rows] on ``[min, max]``; returns (field bytes, decoded values [rows])."""
    lo, hi = _bounds(values, xp)
    top = (1 << bits) - 1
    span = np.float32(hi - lo)
    idx = xp.zeros(values.shape, dtype=xp.int64) if span == 0 else \
        xp.clip(xp.rint((values - np.float32(lo)) / span * np.float32(top)), 0, top).astype(xp.int64)
    return _BOUNDS.pack(lo, hi) + to_host(pack_bits(idx, bits)).tobytes(), _linear(idx, lo, hi, bits)


def _linear(idx: Any, lo: float, hi: float, bits: int) -> Any:
    top = (1 << bits) - 1
    return np.float32(lo) + idx.astype(np.float32) * np.float32((np.float32(hi) - np.float32(lo)) / top)


def encode_log(values: Any, bits: int, xp: ModuleType, eps: float) -> tuple[bytes, Any]:
    """Log-scale codes of non-negative ``values`` [rows]; code 0 means "≤ eps" (decoded as 0).

    Returns (field bytes, decoded values [rows]).
    """
    live = values > np.float32(eps)
    logs = xp.log(xp.where(live, values, np.float32(1)))
    lo, hi = _bounds(logs[live], xp)
    top = (1 << bits) - 2  # codes 1..top+1 for live values
    span = np.float32(hi - lo)
    pos = xp.zeros(values.shape, dtype=xp.int64) if span == 0 else \
        xp.clip(xp.rint((logs - np.float32(lo)) / span * np.float32(top)), 0, top).astype(xp.int64)
    idx = xp.where(live, pos + 1, 0)
    return _BOUNDS.pack(lo, hi) + to_host(pack_bits(idx, bits)).tobytes(), _log(idx, lo, hi, bits, xp)


def _log(idx: Any, lo: float, hi: float, bits: int, xp: ModuleType) -> Any:
    top = (1 << bits) - 2
    step = np.float32((np.float32(hi) - np.float32(lo)) / top)
    vals = xp.exp(np.float32(lo) + (idx - 1).astype(np.float32) * step)
    return xp.where(idx > 0, vals, np.float32(0)).astype(xp.float32)


def _read(buf: memoryview, rows: int, bits: int, xp: ModuleType, what: str) -> tuple[Any, float, float]:
    if len(buf) != nbytes(rows, bits):
        raise CorruptBlobError(f"{what}: field holds {len(buf)} bytes, {rows} rows need {nbytes(rows, bits)}")
    lo, hi = _BOUNDS.unpack_from(buf, 0)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise CorruptBlobError(f"{what}: invalid range [{lo}, {hi}]")
    packed = xp.asarray(np.frombuffer(buf[_BOUNDS.size :], dtype=np.uint8))
    return unpack_bits(packed, bits, rows), lo, hi


def decode_linear(buf: memoryview, rows: int, bits: int, xp: ModuleType, what: str = "scalars") -> Any:
    """Decoded values [rows] float32 of a :func:`encode_linear` field."""
    idx, lo, hi = _read(buf, rows, bits, xp, what)
    return _linear(idx, lo, hi, bits).astype(xp.float32)


def decode_log(buf: memoryview, rows: int, bits: int, xp: ModuleType, what: str = "norms") -> Any:
    """Decoded values [rows] float32 of an :func:`encode_log` field."""
    idx, lo, hi = _read(buf, rows, bits, xp, what)
    if rows and int(idx.max()) > (1 << bits) - 1:
        raise CorruptBlobError(f"{what}: code out of range")
    return _log(idx, lo, hi, bits, xp)
