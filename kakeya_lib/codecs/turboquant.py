"""``turboquant``: TurboQuant (Zandieh et al., arXiv 2504.19874), as the seed compared against (spec §6).

Per row ``x`` (no blocks, no skeleton): norm ``n = ‖x‖``, unit vector rotated by a seeded
orthogonal ``R`` (``rotation=orth``: Haar-random via QR, the reference's choice; ``wht``: the
randomised Hadamard, zero-padded to a power of two), each rotated coordinate (≈ N(0, 1/d))
quantised with the Lloyd–Max codebook scaled by ``1/√d``. Decode renormalises the quantised
direction (``norm_correction``, on in the reference) and rescales by ``n``.

``qjl=1`` is the inner-product ("prod") variant: the Lloyd–Max part uses ``bits − 1`` bits and
the residual ``r = x − x̂`` gets a 1-bit QJL sketch ``sign(S r)`` (``S`` Gaussian d×d) plus
``‖r‖``; decode adds ``√(π/2)/d · ‖r‖ · Sᵀ sign(S r)``. Bits per element:
``bits + 32/d`` (one f32 norm), ``+ 32/d`` more with ``qjl`` (the residual norm, which the
seed's accounting left out).

``entropy=1`` stores the Lloyd–Max indices as one rANS stream (:mod:`._entropy`, section
``entropy``) instead of bit-packed in ``codes``: one table for all of them, since every rotated
coordinate of a random direction has the same N(0, 1/d) law; the Lloyd–Max cells are not
equiprobable, so the indices' entropy is below their width (≈ 3.77 bits at ``bits=4``, 2.83 at 3,
1.92 at 2 on Gaussian data). ``entropy=2`` gives every rotated coordinate its own table: on real
keys (a shared mean, heavy channels) the rotation does not make the coordinates identically
distributed, and per-coordinate tables then win (3.77 → 2.95 bits/index at ``bits=4`` on
``synthetic.kv_like``). The decoded array is identical for every ``entropy``. With ``qjl`` the
1-bit sketch stays bit-packed in ``codes`` (its signs are equiprobable: nothing to gain).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import host_rng, to_device
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..container import Container
from ..errors import CorruptBlobError
from ..stages import lloyd_max, wht
from ._entropy import check_entropy, check_sections, decode_indices, encode_indices
from .base import Codec, as_host_bytes

QJL_SEED_OFFSET = 1000  # the reference's residual-sketch seed is seed + 1000


@functools.lru_cache(maxsize=16)
def haar_orthogonal(d: int, seed: int) -> np.ndarray:
    """Haar-random orthogonal matrix [d, d] (float32), QR of a seeded Gaussian with sign fixing."""
    q, r = np.linalg.qr(host_rng(seed).standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    q = q.astype(np.float32)
    q.setflags(write=False)
    return q


@functools.lru_cache(maxsize=16)
def gaussian_sketch(d: int, seed: int) -> np.ndarray:
    s = host_rng(seed + QJL_SEED_OFFSET).standard_normal((d, d)).astype(np.float32)
    s.setflags(write=False)
    return s


@dataclass(frozen=True)
class TurboQuantParams:
    bits: int = 3  # total bits per coordinate (incl. the QJL bit when qjl=1)
    qjl: bool = False  # the "prod" variant: one bit per coordinate goes to a QJL sketch of the residual
    rotation: Literal["orth", "wht"] = "orth"  # Haar-random orthogonal rotation or randomised Hadamard
    norm_correction: bool = True  # rescale the decoded row to its stored norm
    norms: Literal["f16", "bf16", "f32"] = "f32"  # storage of the per-row norms
    seed: int = 42  # rotation and sketch draws
    entropy: int = 0  # 0 bit-packed indices, 1 one rANS stream, 2 one rANS table per rotated coordinate

    def __post_init__(self) -> None:
        check_entropy(self.entropy)
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if self.qjl and self.bits < 2:
            raise ValueError("qjl=1 needs bits >= 2 (one bit goes to the QJL sketch)")


class TurboQuantCodec(Codec):
    name = "turboquant"
    Params = TurboQuantParams
    # Every vector is scaled to unit norm before quantising: query whitening breaks it (spec §3.3).
    renormalises_per_vector = True
    max_cols = 4096

    def _width(self, d: int) -> int:
        return wht.next_pow2(d) if self.params.rotation == "wht" else d

    def _rotate(self, u: Any, xp: ModuleType, inverse: bool = False) -> Any:
        p = self.params
        if p.rotation == "wht":
            return wht.inverse_rotate(u, p.seed, xp) if inverse else wht.rotate(u, p.seed, xp)
        r = to_device(haar_orthogonal(int(u.shape[1]), p.seed), xp)
        return u @ r if inverse else u @ r.T

    @property
    def _mse_bits(self) -> int:
        return self.params.bits - int(self.params.qjl)

    def _levels(self, w: int, xp: ModuleType) -> Any:
        return to_device(lloyd_max.gaussian_codebook(self._mse_bits), xp) / np.float32(math.sqrt(w))

    def _mse_decode(self, idx: Any, norms: Any, w: int, d: int, xp: ModuleType) -> Any:
        y = self._levels(w, xp)[idx]
        if self.params.norm_correction:
            yn = xp.sqrt((y * y).sum(axis=1))
            y = y / xp.where(yn > 0, yn, np.float32(1))[:, None]
        return (self._rotate(y, xp, inverse=True)[:, :d]) * norms[:, None]

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        x32 = x.astype(xp.float32)
        n, d = x32.shape
        w = self._width(d)
        norms = floats.round_to(xp.sqrt((x32 * x32).sum(axis=1)), p.norms, xp, "row norms")
        unit = x32 / xp.where(norms > 0, norms, np.float32(1))[:, None]
        y = self._rotate(wht.pad_to(unit, w, xp), xp)
        idx = lloyd_max.quantize(y * np.float32(math.sqrt(w)), lloyd_max.gaussian_codebook(self._mse_bits), xp)
        codes = encode_indices(idx, self._mse_bits, p.entropy, xp)
        signs_bytes = b""
        norm_bytes = floats.to_bytes(norms, p.norms, xp, "row norms")
        if p.qjl:
            residual = x32 - self._mse_decode(idx, norms, w, d, xp)
            sketch = to_device(gaussian_sketch(d, p.seed), xp)
            signs = (residual @ sketch.T >= 0).astype(xp.int64)  # sign 0 counts as +1
            rnorm = xp.sqrt((residual * residual).sum(axis=1))
            signs_bytes = as_host_bytes(pack_bits(signs.reshape(-1), 1))
            norm_bytes += floats.to_bytes(rnorm, p.norms, xp, "residual norms")
        if not p.entropy:
            return [("codes", codes + signs_bytes), ("norms", norm_bytes)]
        # The sketch bits stay packed in `codes` (there is none without qjl).
        return [("entropy", codes)] + ([("codes", signs_bytes)] if p.qjl else []) + [("norms", norm_bytes)]

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        n, d = box.n_rows, box.n_cols
        w = self._width(d)
        sign_bytes = packed_nbytes(n * d, 1) if p.qjl else 0
        if p.entropy:
            check_sections(box, {"entropy", "norms"} | ({"codes"} if p.qjl else set()))
            idx = decode_indices(box.section("entropy"), (n, w), self._mse_bits, p.entropy, xp)
            signs_raw = box.section("codes") if p.qjl else b""
            if len(signs_raw) != sign_bytes:
                raise CorruptBlobError(f"codes section holds {len(signs_raw)} bytes of QJL signs, not {sign_bytes}")
        else:
            check_sections(box, {"codes", "norms"})
            raw = box.section("codes")
            idx_bytes = packed_nbytes(n * w, self._mse_bits)
            if len(raw) != idx_bytes + sign_bytes:
                raise CorruptBlobError(f"codes section holds {len(raw)} bytes, expected {idx_bytes + sign_bytes}")
            idx = decode_indices(raw[:idx_bytes], (n, w), self._mse_bits, 0, xp)
            signs_raw = raw[idx_bytes:]
        scalars = floats.from_bytes(box.section("norms"), p.norms, n * (2 if p.qjl else 1), xp, "norms")
        out = self._mse_decode(idx, scalars[:n], w, d, xp)
        if p.qjl:
            buf = xp.asarray(np.frombuffer(signs_raw, dtype=np.uint8))
            signs = unpack_bits(buf, 1, n * d).reshape(n, d).astype(xp.float32) * 2 - 1
            sketch = to_device(gaussian_sketch(d, p.seed), xp)
            out = out + (signs @ sketch) * (scalars[n:] * np.float32(math.sqrt(math.pi / 2) / d))[:, None]
        return out
