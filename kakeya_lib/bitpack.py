"""Pack unsigned integers of 1..16 bits into an LSB-first byte stream, and back.

Layout: value ``i`` occupies stream bits ``[i*b, (i+1)*b)``; stream bit ``k`` is bit ``k % 8``
(least significant first) of byte ``k // 8``. A value may straddle a byte boundary. For b = 3::

    values   v0=5 (101)  v1=3 (011)  v2=6 (110)
    stream   bit: 0 1 2 | 3 4 5 | 6 7 8 ...
                  1 0 1 | 1 1 0 | 0 1 1
    byte 0 = 0b10_011_101 (bits 7..0) = 0x9D, byte 1 = 0b0000000_1 = 0x01

The packed length is exactly ``ceil(n*b/8)`` bytes (:func:`packed_nbytes`). For b <= 8 both
directions work on groups of 8 values = ``b`` bytes held in one uint64 word, vectorised on numpy
and CuPy alike; wider values use a bit-matrix path. :func:`pack_bits_reference` is the plain
bit-by-bit definition that tests compare against.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .backend import namespace_of
from .errors import CorruptBlobError, InputError

MAX_BITS = 16


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` values of ``bits`` bits: ``ceil(n*bits/8)``."""
    _check_bits(bits)
    if n < 0:
        raise InputError(f"cannot pack a negative count of values ({n})")
    return (n * bits + 7) // 8


def bits_for(n_symbols: int) -> int:
    """Smallest bit width that can index ``n_symbols`` distinct values (0 when only one)."""
    if n_symbols < 1:
        raise InputError(f"need at least one symbol, got {n_symbols}")
    return int(n_symbols - 1).bit_length()


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise InputError(f"bit width must be an integer in 1..{MAX_BITS}, got {bits!r}")


def pack_bits(values: Any, bits: int) -> Any:
    """Pack a 1-D array of unsigned ints < 2**bits into ``ceil(n*bits/8)`` uint8.

    Parameters
    ----------
    values : array [n], integer dtype (numpy or cupy)
    bits : int in 1..16

    Returns
    -------
    array [ceil(n*bits/8)] uint8, on the same backend as ``values``.
    """
    _check_bits(bits)
    xp = namespace_of(values)
    v = xp.asarray(values)
    if v.ndim != 1:
        raise InputError(f"pack_bits expects a 1-D array, got shape {tuple(v.shape)}")
    if v.size and v.dtype.kind not in "iu":
        raise InputError(f"pack_bits expects integers, got dtype {v.dtype}")
    n = int(v.size)
    if n == 0:
        return xp.zeros(0, dtype=xp.uint8)
    if int(v.min()) < 0 or int(v.max()) >= (1 << bits):
        raise InputError(f"values must lie in [0, {1 << bits}) to pack at {bits} bits")
    if bits <= 8:
        return _pack_words(v, bits, xp)[: packed_nbytes(n, bits)]
    return _pack_bitmatrix(v, bits, xp)


def unpack_bits(packed: Any, bits: int, n: int) -> Any:
    """Inverse of :func:`pack_bits`: read ``n`` values of ``bits`` bits.

    Raises :class:`CorruptBlobError` when ``packed`` is shorter than ``ceil(n*bits/8)`` bytes.
    Returns an int64 array [n] on the backend of ``packed``.
    """
    _check_bits(bits)
    xp = namespace_of(packed)
    p = xp.asarray(packed)
    need = packed_nbytes(n, bits)
    if p.ndim != 1 or p.dtype != xp.uint8:
        raise InputError(f"unpack_bits expects a 1-D uint8 array, got {p.dtype} {tuple(p.shape)}")
    if p.size < need:
        raise CorruptBlobError(f"packed stream has {p.size} bytes, {n} values of {bits} bits need {need}")
    if n == 0:
        return xp.zeros(0, dtype=xp.int64)
    if bits <= 8:
        return _unpack_words(p[:need], bits, n, xp)
    return _unpack_bitmatrix(p[:need], bits, n, xp)


def _pack_words(v: Any, bits: int, xp: ModuleType) -> Any:
    # 8 values of b bits = b bytes: build one uint64 word per group, keep its low b bytes.
    n = v.size
    groups = (n + 7) // 8
    padded = xp.zeros(groups * 8, dtype=xp.uint64)
    padded[:n] = v.astype(xp.uint64)
    g = padded.reshape(groups, 8)
    shifts = (xp.arange(8, dtype=xp.uint64) * xp.uint64(bits))
    # The shifted fields are disjoint, so their sum is their bitwise OR (and works on CuPy too).
    words = (g << shifts[None, :]).sum(axis=1, dtype=xp.uint64)
    as_bytes = words.astype("<u8").view(xp.uint8).reshape(groups, 8)
    return xp.ascontiguousarray(as_bytes[:, :bits]).reshape(-1)


def _unpack_words(p: Any, bits: int, n: int, xp: ModuleType) -> Any:
    groups = (n + 7) // 8
    buf = xp.zeros(groups * bits, dtype=xp.uint8)
    buf[: p.size] = p
    word_bytes = xp.zeros((groups, 8), dtype=xp.uint8)
    word_bytes[:, :bits] = buf.reshape(groups, bits)
    words = word_bytes.reshape(-1).view("<u8").reshape(groups, 1)
    shifts = (xp.arange(8, dtype=xp.uint64) * xp.uint64(bits))[None, :]
    mask = xp.uint64((1 << bits) - 1)
    vals = (words >> shifts) & mask
    return vals.reshape(-1)[:n].astype(xp.int64)


def _pack_bitmatrix(v: Any, bits: int, xp: ModuleType) -> Any:
    n = v.size
    bitmat = ((v.astype(xp.int64)[:, None] >> xp.arange(bits)[None, :]) & 1).astype(xp.uint8)
    stream = bitmat.reshape(-1)
    if xp is np:  # numpy's packbits is the same layout, several times faster on short tables
        return np.packbits(stream, bitorder="little")
    nbytes = packed_nbytes(n, bits)
    padded = xp.zeros(nbytes * 8, dtype=xp.uint8)
    padded[: stream.size] = stream
    weights = (1 << xp.arange(8)).astype(xp.uint8)
    return (padded.reshape(nbytes, 8) * weights[None, :]).sum(axis=1).astype(xp.uint8)


def _unpack_bitmatrix(p: Any, bits: int, n: int, xp: ModuleType) -> Any:
    if xp is np:
        stream = np.unpackbits(p, bitorder="little").astype(np.int64)
    else:
        stream = ((p[:, None].astype(xp.int64) >> xp.arange(8)[None, :]) & 1).reshape(-1)
    bitmat = stream[: n * bits].reshape(n, bits)
    return (bitmat << xp.arange(bits)[None, :]).sum(axis=1).astype(xp.int64)


def pack_bits_reference(values: list[int], bits: int) -> bytes:
    """Bit-by-bit definition of the layout, for tests (slow, pure Python)."""
    _check_bits(bits)
    out = bytearray(packed_nbytes(len(values), bits))
    for i, value in enumerate(values):
        for j in range(bits):
            if (value >> j) & 1:
                k = i * bits + j
                out[k // 8] |= 1 << (k % 8)
    return bytes(out)


# Wide fields (positions in large blocks) need more than 16 bits: a field of b > 16 bits is
# stored as two runs, the low 16 bits of every value, then the high b − 16 bits of every value.
# For b <= 16 the layout is exactly pack_bits'.
MAX_WIDE_BITS = 32


def _check_wide_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_WIDE_BITS:
        raise InputError(f"wide bit width must be an integer in 1..{MAX_WIDE_BITS}, got {bits!r}")


def packed_nbytes_wide(n: int, bits: int) -> int:
    """Bytes of :func:`pack_bits_wide` for ``n`` values of ``bits`` (1..32) bits."""
    _check_wide_bits(bits)
    if bits <= MAX_BITS:
        return packed_nbytes(n, bits)
    return packed_nbytes(n, MAX_BITS) + packed_nbytes(n, bits - MAX_BITS)


def pack_bits_wide(values: Any, bits: int) -> Any:
    """Like :func:`pack_bits` for widths up to 32 bits (low 16-bit run, then the high run)."""
    _check_wide_bits(bits)
    if bits <= MAX_BITS:
        return pack_bits(values, bits)
    xp = namespace_of(values)
    v = xp.asarray(values)
    if v.ndim != 1 or (v.size and v.dtype.kind not in "iu"):
        raise InputError(f"pack_bits_wide expects a 1-D integer array, got {v.dtype} {tuple(v.shape)}")
    if v.size and (int(v.min()) < 0 or int(v.max()) >= (1 << bits)):
        raise InputError(f"values must lie in [0, {1 << bits}) to pack at {bits} bits")
    v = v.astype(xp.int64)
    low = pack_bits(v & ((1 << MAX_BITS) - 1), MAX_BITS)
    high = pack_bits(v >> MAX_BITS, bits - MAX_BITS)
    return xp.concatenate([low, high])


def unpack_bits_wide(packed: Any, bits: int, n: int) -> Any:
    """Inverse of :func:`pack_bits_wide` (int64 [n]); short input raises :class:`CorruptBlobError`."""
    _check_wide_bits(bits)
    if bits <= MAX_BITS:
        return unpack_bits(packed, bits, n)
    # Each run is validated (dtype, length) by unpack_bits; a short stream raises CorruptBlobError there.
    p = namespace_of(packed).asarray(packed)
    split = packed_nbytes(n, MAX_BITS)
    low = unpack_bits(p[:split], MAX_BITS, n)
    high = unpack_bits(p[split:packed_nbytes_wide(n, bits)], bits - MAX_BITS, n)
    return low | (high << MAX_BITS)
