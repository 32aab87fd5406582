"""``int``: per-token asymmetric integer quantisation in groups along head_dim.

Every row (a token's key or value for one head) is cut into groups of ``group`` coordinates;
each group stores a scale and a minimum (``scales`` format, fp16 by default) and ``bits``-bit
codes ``round((x - min) / scale)``. ``rotate=1`` first applies the seeded orthonormal
Walsh–Hadamard rotation (zero-padded to a power of two), as llama.cpp's rotated q4_0/q8_0 cache
types do, so outlier channels are spread over the group. Bits per element:
``bits + 2·16/group`` (fp16 scale and minimum), plus the rotation's padding if D is not a power
of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..container import Container
from ..errors import CorruptBlobError
from ..stages import wht
from ._scalar import asym_dequantize, asym_quantize
from .base import Codec, as_host_bytes
from .kakeya import SEED_ROTATION


@dataclass(frozen=True)
class IntParams:
    bits: int = 4  # 2..8
    group: int = 32  # coordinates per (scale, min) pair
    rotate: bool = False  # seeded Hadamard rotation first
    scales: Literal["f16", "bf16", "f32"] = "f16"
    seed: int = SEED_ROTATION

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if self.group < 1:
            raise ValueError(f"group must be >= 1, got {self.group}")


def grouped(x: Any, group: int, xp: ModuleType) -> tuple[Any, int]:
    """x [N, W] -> [N, G, group] padded by repeating the last column (min/max unchanged)."""
    n, w = x.shape
    g = -(-w // group)
    if g * group != w:
        x = xp.concatenate([x, xp.repeat(x[:, -1:], g * group - w, axis=1)], axis=1)
    return x.reshape(n, g, group), g


class IntCodec(Codec):
    name = "int"
    Params = IntParams
    max_cols = 4096

    def _width(self, d: int) -> int:
        return wht.next_pow2(d) if self.params.rotate else d

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        y = x.astype(xp.float32)
        n, d = y.shape
        w = self._width(d)
        if p.rotate:
            y = wht.rotate(wht.pad_to(y, w, xp), p.seed, xp)
        groups, _ = grouped(y, min(p.group, w), xp)
        codes, scale, low = asym_quantize(groups, p.bits, p.scales, xp)
        codes = codes.reshape(n, -1)[:, :w]
        return [
            ("codes", as_host_bytes(pack_bits(codes.reshape(-1), p.bits))),
            ("scales", floats.to_bytes(scale, p.scales, xp, "scales") + floats.to_bytes(low, p.scales, xp, "minima")),
        ]

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        w = self._width(d)
        group = min(p.group, w)
        g = -(-w // group)
        raw = box.section("codes")
        if len(raw) != packed_nbytes(n * w, p.bits):
            raise CorruptBlobError(f"codes section holds {len(raw)} bytes, expected {packed_nbytes(n * w, p.bits)}")
        codes = unpack_bits(xp.asarray(np.frombuffer(raw, dtype=np.uint8)), p.bits, n * w).reshape(n, w)
        if g * group != w:
            codes = xp.concatenate([codes, xp.zeros((n, g * group - w), dtype=codes.dtype)], axis=1)
        sc = box.section("scales")
        half = len(sc) // 2
        scale = floats.from_bytes(sc[:half], p.scales, n * g, xp, "scales").reshape(n, g)
        low = floats.from_bytes(sc[half:], p.scales, n * g, xp, "minima").reshape(n, g)
        y = asym_dequantize(codes.reshape(n, g, group), scale, low).reshape(n, g * group)[:, :w]
        if p.rotate:
            y = wht.inverse_rotate(y, p.seed, xp)[:, :d]
        return y
