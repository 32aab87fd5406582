"""``kivi``: KIVI (Liu et al., 2024) asymmetric 2/4-bit quantisation.

Keys are quantised **per channel**: for every head and channel, groups of ``group`` consecutive
tokens share a (scale, minimum) pair; values are quantised **per token** in groups of ``group``
coordinates along head_dim. Use ``mode=key`` for the K stream and ``mode=value`` for V, e.g.
``--k-codec kivi:bits=2 --v-codec kivi:bits=2,mode=value``. Rows are token-major with heads
interleaved (``heads`` = KV heads per token, so keys group tokens of one head). KIVI's fp16
window of recent tokens is a cache feature (``CompressedCache`` hot window), counted there.

``entropy=1`` stores the same codes as one rANS stream (:mod:`._entropy`, section ``entropy``)
instead of bit-packed, in the grouped view's order (channel-major for keys, token-major for
values); the decoded array is identical. ``entropy=2`` gives every coordinate its own table: every
(head, channel) line for keys, every channel (heads pooled) for values. Per-channel key groups
already adapt to each channel's range, so for keys the extra tables do not pay; for values, heavy
channels take extreme codes and per-channel tables do.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from ..container import Container
from ..errors import CorruptBlobError
from ..layout import token_head_view
from ._entropy import check_entropy
from .base import Codec
from .group_affine import decode_lines, encode_lines


@dataclass(frozen=True)
class KiviParams:
    bits: int = 2  # 2 or 4 in the paper; 1..8 accepted
    group: int = 32  # tokens per group (keys, per channel) or channels per group (values, per token)
    mode: Literal["key", "value"] = "key"  # keys quantised per channel, values per token
    heads: int = 1  # KV heads interleaved in the rows
    scales: Literal["f16", "bf16", "f32"] = "f16"  # storage of each group's scale and minimum
    entropy: int = 0  # 0 bit-packed codes, 1 one rANS stream, 2 one rANS table per coordinate

    def __post_init__(self) -> None:
        check_entropy(self.entropy)
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

    def _layout(self, n: int, d: int) -> tuple[int, int]:
        """(line length, number of lines) of the grouped view: tokens (value) or channels (key)."""
        p = self.params
        if p.mode == "value":
            return d, n
        return n // p.heads, p.heads * d

    @property
    def _tables(self) -> Literal["cols", "rows"]:
        """Coordinates of ``entropy=2`` in the grouped view: (head, channel) lines (key), columns (value)."""
        return "rows" if self.params.mode == "key" else "cols"

    def _lines(self, x: Any, xp: ModuleType) -> Any:
        """The array whose rows are quantised group-wise: tokens (value) or channels (key)."""
        if self.params.mode == "value":
            return x
        t_h_d = token_head_view(x, self.params.heads)
        return t_h_d.transpose(1, 2, 0).reshape(-1, t_h_d.shape[0])  # [H·D, T]

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        return encode_lines(self._lines(x.astype(xp.float32), xp), p.bits, p.group, p.scales, xp, p.entropy,
                            self._tables)

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        if p.mode == "key" and n % p.heads:
            raise CorruptBlobError(f"{n} rows do not split into heads={p.heads}")
        length, lines = self._layout(n, d)
        y = decode_lines(box, lines, length, p.bits, p.group, p.scales, xp, p.entropy, self._tables)
        if p.mode == "value":
            return y
        tokens = n // p.heads
        return y.reshape(p.heads, d, tokens).transpose(2, 0, 1).reshape(n, d)
