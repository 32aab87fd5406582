"""``kivi``: KIVI (Liu et al., 2024) asymmetric 2/4-bit quantisation.

Keys are quantised **per channel**: for every head and channel, groups of ``group`` consecutive
tokens share a (scale, minimum) pair; values are quantised **per token** in groups of ``group``
coordinates along head_dim. Use ``mode=key`` for the K stream and ``mode=value`` for V, e.g.
``--k-codec kivi:bits=2 --v-codec kivi:bits=2,mode=value``. Rows are token-major with heads
interleaved (``heads`` = KV heads per token, so keys group tokens of one head). KIVI's fp16
window of recent tokens is a cache feature (``CompressedCache`` hot window), counted there.
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
from ._scalar import asym_dequantize, asym_quantize, token_head_view
from .base import Codec, as_host_bytes
from .intq import grouped


@dataclass(frozen=True)
class KiviParams:
    bits: int = 2  # 2 or 4 in the paper; 1..8 accepted
    group: int = 32
    mode: Literal["key", "value"] = "key"
    heads: int = 1  # KV heads interleaved in the rows
    scales: Literal["f16", "bf16", "f32"] = "f16"

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if self.group < 1 or self.heads < 1:
            raise ValueError("group and heads must be >= 1")


class KiviCodec(Codec):
    name = "kivi"
    Params = KiviParams
    max_cols = 4096

    @property
    def groups_by_head(self) -> bool:
        return self.params.mode == "key"

    def _layout(self, n: int, d: int) -> tuple[int, int, int]:
        """(groups per line, line length, number of lines) of the grouped view."""
        p = self.params
        if p.mode == "value":
            return -(-d // min(p.group, d)), d, n
        tokens = n // p.heads
        return -(-tokens // min(p.group, tokens)), tokens, p.heads * d

    def _lines(self, x: Any, xp: ModuleType) -> Any:
        """The array whose rows are quantised group-wise: tokens (value) or channels (key)."""
        if self.params.mode == "value":
            return x
        t_h_d = token_head_view(x, self.params.heads)
        return t_h_d.transpose(1, 2, 0).reshape(-1, t_h_d.shape[0])  # [H·D, T]

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        lines = self._lines(x.astype(xp.float32), xp)
        length = lines.shape[1]
        groups, _ = grouped(lines, min(p.group, length), xp)
        codes, scale, low = asym_quantize(groups, p.bits, p.scales, xp)
        codes = codes.reshape(lines.shape[0], -1)[:, :length]
        return [
            ("codes", as_host_bytes(pack_bits(codes.reshape(-1), p.bits))),
            ("scales", floats.to_bytes(scale, p.scales, xp, "scales") + floats.to_bytes(low, p.scales, xp, "minima")),
        ]

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        if p.mode == "key" and n % p.heads:
            raise CorruptBlobError(f"{n} rows do not split into heads={p.heads}")
        g, length, lines = self._layout(n, d)
        group = min(p.group, length)
        raw = box.section("codes")
        if len(raw) != packed_nbytes(lines * length, p.bits):
            raise CorruptBlobError("codes section length does not match the shape")
        codes = unpack_bits(xp.asarray(np.frombuffer(raw, dtype=np.uint8)), p.bits, lines * length).reshape(lines, length)
        if g * group != length:
            codes = xp.concatenate([codes, xp.zeros((lines, g * group - length), dtype=codes.dtype)], axis=1)
        sc = box.section("scales")
        half = len(sc) // 2
        scale = floats.from_bytes(sc[:half], p.scales, lines * g, xp, "scales").reshape(lines, g)
        low = floats.from_bytes(sc[half:], p.scales, lines * g, xp, "minima").reshape(lines, g)
        y = asym_dequantize(codes.reshape(lines, g, group), scale, low).reshape(lines, g * group)[:, :length]
        if p.mode == "value":
            return y
        tokens = n // p.heads
        return y.reshape(p.heads, d, tokens).transpose(2, 0, 1).reshape(n, d)

