"""``int``: per-token asymmetric integer quantisation in groups along head_dim.

Every row (a token's key or value for one head) is cut into groups of ``group`` coordinates;
each group stores a scale and a minimum (``scales`` format, fp16 by default) and ``bits``-bit
codes ``round((x - min) / scale)``. ``rotate=1`` first applies the seeded orthonormal
Walsh–Hadamard rotation (zero-padded to a power of two), as llama.cpp's rotated q4_0/q8_0 cache
types do, so outlier channels are spread over the group. Bits per element:
``bits + 2·16/group`` (fp16 scale and minimum), plus the rotation's padding if D is not a power
of two.

``entropy=1`` stores the same codes as one rANS stream (:mod:`._entropy`, section ``entropy``)
instead of bit-packed; the decoded array is identical. The gain is small but real: within a
group the values pile up between its minimum and maximum, so the middle codes are the common ones
(≈ 3.88 bits/code at ``bits=4``, 1.74 at 2, on Gaussian data). ``entropy=2`` gives every
coordinate (column of the, possibly rotated, [N, W] code matrix) its own table: that pays on
keys with a shared mean and heavy channels (3.25 bits/code at ``bits=4`` on ``synthetic.kv_like``),
not on isotropic data (each table costs its own header, table and lane states).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from ..container import Container
from ..stages import wht
from ._entropy import check_entropy
from .base import Codec
from .group_affine import decode_lines, encode_lines
from .kakeya import SEED_ROTATION


@dataclass(frozen=True)
class IntParams:
    bits: int = 4  # 2..8
    group: int = 32  # coordinates per (scale, min) pair
    rotate: bool = False  # seeded Hadamard rotation first
    scales: Literal["f16", "bf16", "f32"] = "f16"  # storage of each group's scale and minimum
    seed: int = SEED_ROTATION  # Hadamard signs
    entropy: int = 0  # 0 bit-packed codes, 1 one rANS stream, 2 one rANS table per coordinate

    def __post_init__(self) -> None:
        check_entropy(self.entropy)
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if self.group < 1:
            raise ValueError(f"group must be >= 1, got {self.group}")


class IntCodec(Codec):
    name = "int"
    Params = IntParams
    max_cols = 4096

    def _width(self, d: int) -> int:
        return wht.next_pow2(d) if self.params.rotate else d

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        y = x.astype(xp.float32)
        w = self._width(int(y.shape[1]))
        if p.rotate:
            y = wht.rotate(wht.pad_to(y, w, xp), p.seed, xp)
        return encode_lines(y, p.bits, p.group, p.scales, xp, p.entropy)

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        w = self._width(d)
        y = decode_lines(box, n, w, p.bits, p.group, p.scales, xp, p.entropy)
        if p.rotate:
            y = wht.inverse_rotate(y, p.seed, xp)[:, :d]
        return y
