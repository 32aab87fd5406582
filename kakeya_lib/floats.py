"""Storage float formats (float16, bfloat16, float32): rounding, serialisation, range checks.

numpy has no bfloat16, so bf16 is handled as the upper 16 bits of a float32 with
round-to-nearest-even, on numpy and CuPy alike. Everything stored is little-endian.
Values beyond a format's finite range are an error, never a silent ``inf``: the seed saturated
float16 on whitened layer-0 keys (spec §10.5) and produced garbage.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from .errors import CorruptBlobError, InputError

FloatFormat = Literal["f16", "bf16", "f32"]
FLOAT_FORMATS: tuple[str, ...] = ("f16", "bf16", "f32")
NBYTES = {"f16": 2, "bf16": 2, "f32": 4}
MAX_FINITE = {"f16": 65504.0, "bf16": 3.3895313892515355e38, "f32": 3.4028234663852886e38}


def _check_format(fmt: str) -> None:
    if fmt not in NBYTES:
        raise InputError(f"unknown float storage format {fmt!r}; choose one of {FLOAT_FORMATS}")


def _bf16_bits(x32: Any, xp: ModuleType) -> Any:
    """Round float32 to bfloat16 (nearest-even) and return the 16-bit patterns as uint16."""
    u = xp.ascontiguousarray(x32).view(xp.uint32)
    rounding = xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1))
    return ((u + rounding) >> xp.uint32(16)).astype(xp.uint16)


def _bf16_from_bits(bits16: Any, xp: ModuleType) -> Any:
    return (bits16.astype(xp.uint32) << xp.uint32(16)).view(xp.float32)


def check_range(x: Any, fmt: str, what: str) -> None:
    """Raise InputError if any |x| exceeds the finite range of ``fmt``."""
    _check_format(fmt)
    if x.size == 0:
        return
    peak = float(abs(x).max())
    if peak > MAX_FINITE[fmt]:
        raise InputError(
            f"{what} reaches |{peak:.6g}|, beyond the finite range of {fmt} "
            f"(max {MAX_FINITE[fmt]:.6g}); store it in a wider format (e.g. skel=f32 / scalars=f32)"
        )


def round_to(x: Any, fmt: str, xp: ModuleType, what: str = "value") -> Any:
    """Round ``x`` to the storage format and return it as float32 (what the decoder will see).

    Raises InputError when a value does not fit the format (see :func:`check_range`).
    """
    _check_format(fmt)
    x32 = xp.asarray(x, dtype=xp.float32)
    check_range(x32, fmt, what)
    if fmt == "f32":
        return x32
    if fmt == "f16":
        return x32.astype(xp.float16).astype(xp.float32)
    return _bf16_from_bits(_bf16_bits(x32, xp), xp)


def to_bytes(x: Any, fmt: str, xp: ModuleType, what: str = "value") -> bytes:
    """Serialise ``x`` (any shape, row-major) in the storage format, little-endian."""
    _check_format(fmt)
    x32 = xp.ascontiguousarray(xp.asarray(x, dtype=xp.float32)).reshape(-1)
    check_range(x32, fmt, what)
    if fmt == "f32":
        arr = x32.astype("<f4")
    elif fmt == "f16":
        arr = x32.astype("<f2")
    else:
        arr = _bf16_bits(x32, xp).astype("<u2")
    host = arr.get() if xp is not np else arr
    return host.tobytes()


def from_bytes(buf: bytes | memoryview, fmt: str, count: int, xp: ModuleType, what: str = "values") -> Any:
    """Read ``count`` values of the storage format as a float32 array [count] on ``xp``."""
    _check_format(fmt)
    need = count * NBYTES[fmt]
    if len(buf) != need:
        raise CorruptBlobError(f"{what}: expected {need} bytes for {count} {fmt} values, found {len(buf)}")
    dtype = {"f32": "<f4", "f16": "<f2", "bf16": "<u2"}[fmt]
    host = np.frombuffer(buf, dtype=dtype, count=count)
    dev = xp.asarray(host)
    if fmt == "bf16":
        out = _bf16_from_bits(dev, xp)
    else:
        out = dev.astype(xp.float32)
    if not bool(xp.isfinite(out).all()):
        raise CorruptBlobError(f"{what}: stored values are not finite (corrupted bytes?)")
    return out


# --------------------------------------------------------------------------------------------
# OCP FP8 E4M3 (bias 7, no infinities, max 448; NaN codes are never produced), nearest value with
# ties to even: the fp8 codec's element format.


def _e4m3_table() -> np.ndarray:
    """Float32 value of each of the 256 E4M3 codes (NaN for the two NaN codes)."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    normal = (1 + man / 8.0) * 2.0 ** (exp - 7)
    subnormal = (man / 8.0) * 2.0**-6
    values = sign * np.where(exp == 0, subnormal, normal)
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values.astype(np.float32)


E4M3_VALUES = _e4m3_table()
E4M3_MAX = 448.0
_POS_CODES = np.arange(0, 0x7F)  # 0 .. 0x7E: all finite non-negative codes, ascending in value
_POS_VALUES = E4M3_VALUES[_POS_CODES]


def e4m3_encode(x: Any, xp: ModuleType) -> Any:
    """Nearest E4M3 code (uint8) of each float32 in x (|x| <= 448), ties to the even code."""
    if x.size and float(abs(x).max()) > E4M3_MAX:
        raise InputError("value beyond the E4M3 range (448); scale before encoding")
    mag = xp.abs(x)
    values = xp.asarray(_POS_VALUES)
    mids = (values[1:] + values[:-1]) * np.float32(0.5)
    idx = xp.searchsorted(mids, mag, side="left")  # ties -> lower code
    tie = (idx < values.size - 1) & (mag == mids[xp.minimum(idx, mids.size - 1)])
    idx = xp.where(tie & (idx % 2 == 1), idx + 1, idx)  # ties to even mantissa
    return (idx | xp.where(x < 0, 0x80, 0)).astype(xp.uint8)


def e4m3_decode(codes: Any, xp: ModuleType) -> Any:
    """Float32 values of E4M3 codes; NaN codes raise (they never come from :func:`e4m3_encode`)."""
    table = xp.asarray(E4M3_VALUES)
    out = table[codes.astype(xp.int64)]
    if not bool(xp.isfinite(out).all()):
        raise InputError("E4M3 NaN code in the data (corrupted bytes?)")
    return out
