"""Asymmetric group-affine quantisation shared by the ``int`` and ``kivi`` codecs.

* :func:`asym_quantize` / :func:`asym_dequantize`: asymmetric uniform quantisation of groups
  along the last axis with a stored (scale, minimum) pair per group; the pair is rounded to its
  storage format *before* the codes are computed, so encoder and decoder agree exactly.
* :func:`encode_lines` / :func:`decode_lines`: the ``codes`` (or, ``entropy`` >= 1, rANS-coded
  ``entropy``) and ``scales`` sections of int and kivi, from lines [L, W] quantised in groups.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..container import Container
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
