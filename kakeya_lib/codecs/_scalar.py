"""Scalar-quantiser building blocks shared by the baseline codecs (int, kivi, fp8).

* :func:`asym_quantize` / :func:`asym_dequantize`: asymmetric uniform quantisation of groups
  along the last axis with a stored (scale, minimum) pair per group; the pair is rounded to its
  storage format *before* the codes are computed, so encoder and decoder agree exactly.
* :data:`E4M3_VALUES` and :func:`e4m3_encode` / :func:`e4m3_decode`: OCP FP8 E4M3 (bias 7, no
  infinities, max 448; NaN codes are never produced), nearest value with ties to even.
* :func:`encode_lines` / :func:`decode_lines`: the ``codes`` (or, ``entropy`` >= 1, rANS-coded
  ``entropy``) and ``scales`` sections of int and kivi, from lines [L, W] quantised in groups.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..container import Container
from ..errors import InputError
from ._entropy import check_sections, decode_indices, encode_indices, index_section


def asym_quantize(x: Any, bits: int, fmt: str, xp: ModuleType) -> tuple[Any, Any, Any]:
    """Quantise x [..., G] group-wise along the last axis.

    Returns
    -------
    codes : int64 [..., G] in [0, 2**bits)
    scale : float32 [...], rounded to ``fmt``
    low : float32 [...], rounded to ``fmt``
    """
    levels = (1 << bits) - 1
    low = floats.round_to(x.min(axis=-1), fmt, xp, "group minima")
    high = x.max(axis=-1)
    scale = floats.round_to((high - low) / np.float32(levels), fmt, xp, "group scales")
    safe = xp.where(scale > 0, scale, np.float32(1))
    codes = xp.clip(xp.rint((x - low[..., None]) / safe[..., None]), 0, levels).astype(xp.int64)
    return codes, scale, low


def asym_dequantize(codes: Any, scale: Any, low: Any) -> Any:
    """Inverse of :func:`asym_quantize`: ``codes * scale + low`` (float32)."""
    return codes.astype(scale.dtype) * scale[..., None] + low[..., None]


def grouped(x: Any, group: int, xp: ModuleType) -> tuple[Any, int]:
    """x [L, W] -> [L, G, group] padded by repeating the last column (min/max unchanged)."""
    n, w = x.shape
    g = -(-w // group)
    if g * group != w:
        x = xp.concatenate([x, xp.repeat(x[:, -1:], g * group - w, axis=1)], axis=1)
    return x.reshape(n, g, group), g


def encode_lines(lines: Any, bits: int, group: int, fmt: str, xp: ModuleType, entropy: int = 0,
                 tables: Literal["cols", "rows"] = "cols") -> list[tuple[str, bytes]]:
    """Sections for asymmetric quantisation of each line [L, W] in groups.

    ``codes`` (bit-packed, ``entropy=0``) or ``entropy`` (rANS, :mod:`._entropy`; ``tables`` says
    whether columns or lines are the coordinates of ``entropy=2``), then ``scales``.
    """
    n, length = lines.shape
    groups, _ = grouped(lines, min(group, length), xp)
    codes, scale, low = asym_quantize(groups, bits, fmt, xp)
    codes = codes.reshape(n, -1)[:, :length]
    return [
        (index_section(entropy), encode_indices(codes, bits, entropy, xp, tables)),
        ("scales", floats.to_bytes(scale, fmt, xp, "scales") + floats.to_bytes(low, fmt, xp, "minima")),
    ]


def decode_lines(box: Container, n: int, length: int, bits: int, group: int, fmt: str, xp: ModuleType,
                 entropy: int = 0, tables: Literal["cols", "rows"] = "cols") -> Any:
    """Inverse of :func:`encode_lines`: lines [n, length] (float32), every length validated."""
    check_sections(box, {index_section(entropy), "scales"})
    group = min(group, length)
    g = -(-length // group)
    codes = decode_indices(box.section(index_section(entropy)), (n, length), bits, entropy, xp, tables)
    if g * group != length:
        codes = xp.concatenate([codes, xp.zeros((n, g * group - length), dtype=codes.dtype)], axis=1)
    scales_raw = box.section("scales")
    half = len(scales_raw) // 2
    scale = floats.from_bytes(scales_raw[:half], fmt, n * g, xp, "scales").reshape(n, g)
    low = floats.from_bytes(scales_raw[half:], fmt, n * g, xp, "minima").reshape(n, g)
    return asym_dequantize(codes.reshape(n, g, group), scale, low).reshape(n, g * group)[:, :length]


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
