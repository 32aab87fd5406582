"""``fp8``: FP8 E4M3 with one scale per block of tokens and head.

Rows are token-major with ``heads`` interleaved; each (block of ``block`` tokens, head) gets a
scale ``amax / 448`` (``scales`` format, f32 by default) and every value is stored as the
nearest E4M3 code of ``x / scale`` (1 byte). Bits per element: ``8 + 32 / (block · D)``.
The usual asymmetric pairing (fp8 or int8 keys, 4-bit values) is two specs:
``--k-codec fp8 --v-codec int:bits=4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..container import Container
from ..errors import CorruptBlobError, InputError
from ..floats import E4M3_MAX, e4m3_decode, e4m3_encode
from ..layout import token_head_view
from .base import Codec, as_host_bytes


@dataclass(frozen=True)
class Fp8Params:
    block: int = 128  # tokens per scale
    heads: int = 1  # KV heads interleaved in the rows
    scales: Literal["f16", "bf16", "f32"] = "f32"  # storage of the per-block scales

    def __post_init__(self) -> None:
        if self.block < 1 or self.heads < 1:
            raise ValueError("block and heads must be >= 1")


class Fp8Codec(Codec):
    name = "fp8"
    Params = Fp8Params
    groups_by_head = True  # type: ignore[assignment]

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.params.block)

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        t_h_d = token_head_view(x.astype(xp.float32), p.heads)
        tokens, heads, d = t_h_d.shape
        nb = self._blocks(tokens)
        scales = xp.zeros((nb, heads), dtype=xp.float32)
        for b in range(nb):  # one amax per (token block, head): nb is small
            scales[b] = xp.abs(t_h_d[b * p.block : (b + 1) * p.block]).max(axis=(0, 2)) / np.float32(E4M3_MAX)
        # a little headroom so that rounding the scale to f16/bf16 cannot push |x / scale| past 448
        scales = floats.round_to(scales * np.float32(1 + 2**-7), p.scales, xp, "fp8 scales")
        per_token = xp.repeat(scales, p.block, axis=0)[:tokens]  # [T, H]
        safe = xp.where(per_token > 0, per_token, np.float32(1))
        scaled = t_h_d / safe[:, :, None]
        if scaled.size and float(xp.abs(scaled).max()) > E4M3_MAX:
            raise InputError("fp8 scale rounding overflowed E4M3 (cannot happen with the headroom; report it)")
        codes = e4m3_encode(scaled, xp)
        return [("codes", as_host_bytes(codes.reshape(-1))), ("scales", floats.to_bytes(scales, p.scales, xp, "fp8 scales"))]

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        if n % p.heads:
            raise CorruptBlobError(f"{n} rows do not split into heads={p.heads}")
        tokens = n // p.heads
        raw = box.section("codes")
        if len(raw) != n * d:
            raise CorruptBlobError(f"codes section holds {len(raw)} bytes, expected {n * d}")
        try:
            values = e4m3_decode(xp.asarray(np.frombuffer(raw, dtype=np.uint8)), xp)
        except InputError as exc:
            raise CorruptBlobError(str(exc)) from exc
        nb = self._blocks(tokens)
        scales = floats.from_bytes(box.section("scales"), p.scales, nb * p.heads, xp, "fp8 scales").reshape(nb, p.heads)
        per_token = xp.repeat(scales, p.block, axis=0)[:tokens]
        return (values.reshape(tokens, p.heads, d) * per_token[:, :, None]).reshape(n, d)
