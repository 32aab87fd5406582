"""KakeyaTurbo: per-block PCA skeleton + spherical k-means + rotated Lloyd–Max residual codes.

For each block of ``block`` consecutive rows of ``x`` [N, D] (spec §1):

1. skeleton: weighted mean μ and basis U [d_eff, D] (exact PCA or randomized SVD, or one basis
   shared by all blocks), rounded to ``skel``; coefficients ``c = (x - μ) Uᵀ``;
2. spherical k-means on ``c``: centre id ``seg`` and signed scale ``t`` per row;
3. residual ``r = c - t·centre[seg]``, zero-padded to ``W = next_pow2(d_eff)``, rotated by the
   orthogonal randomised Hadamard ``R`` and scaled to unit mean square: ``z = √W · R r / ‖r‖``;
4. Lloyd–Max indices of ``z`` at ``bits`` bits (or, ``quant=uniform``, a mid-tread uniform grid,
   :mod:`~kakeya_lib.stages.uniform`); optional outliers ``|z| > T`` kept exactly;
5. stored per row: ``seg`` (ceil(log2 k_eff) bits), quantiser indices (W·bits bits, or one rANS
   stream per block with ``entropy=1``, one per block and coordinate with ``entropy=2``), ``t`` and ``‖r‖`` (``scalars`` floats, or ``scalar_bits``
   codes against the block's range, :mod:`~kakeya_lib.stages.scalarq`), plus the sparse outliers.

Decode: ``ẑ`` from the codebook, outliers written back, ``r̂ = Rᵀ(ẑ · ‖r‖ / √W)``,
``x̂ = μ + (t·centre[seg] + r̂[:d_eff]) U``. This restores the residual norm for every ``metric``.

Seed bugs, reproducible behind named flags (all off by default; spec §1.9, §10):

* ``legacy_wht_scale``: residuals scaled by ``√W/‖r‖`` with the unnormalised WHT, i.e. a
  per-coordinate variance of W instead of 1 (quantiser saturation).
* ``legacy_ip_norm`` (needs ``metric=ip``): the norm slot stores ‖x‖ and decode ignores it, so
  the residual comes back with unit norm instead of ‖r‖.
* ``legacy_unrounded_t``: the residual is taken against the float32 ``t`` while decode uses
  the rounded one.
* ``legacy_rsvd_no_reorth`` / ``legacy_rsvd_sketch_vr``: see :mod:`kakeya_lib.stages.rsvd`.

K-residual Besicovitch (spec §2.6, ``rbesi_dir > 0``): the unit-scaled rotated residual ``z`` is
coded by the Besicovitch group codec (:mod:`~kakeya_lib.stages.besicovitch`: ``rbesi_g``-groups,
``2**rbesi_dir`` directions, ``rbesi_mag``-bit magnitudes, ``rbesi_mode`` f16 | quant) instead of
Lloyd–Max; its per-row records go to ``codes`` and outliers are off, as in the seed.

Switches for the stage-by-stage ablation: ``rotate=0`` skips the Hadamard rotation (then
``W = d_eff``), ``quant=uniform`` replaces Lloyd–Max by the uniform grid.

Byte layout: sections ``blocks`` (per block: d_eff u16, k_eff u16, n_outliers u32),
``skeleton``, ``centres``, ``codes``, ``norms``, ``outliers``, ``entropy`` (rANS streams of the
quantiser indices, ``entropy=1``) and, for a custom codebook, ``codebook``; within each section
the blocks follow each other in order.

One concept (over 400 lines): the kakeya codec, its parameters, block table and byte layout.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import to_device, to_host
from ..bitpack import (
    bits_for,
    pack_bits,
    pack_bits_wide,
    packed_nbytes,
    packed_nbytes_wide,
    unpack_bits,
    unpack_bits_wide,
)
from ..container import Container
from ..errors import CorruptBlobError, InputError
from ..paths import CACHE_DIR
from ..stages import (
    besicovitch,
    kmeans,
    lloyd_max,
    outliers,
    pca,
    rsvd,
    scalarq,
    uniform,
    wht,
)
from ..timing import STAGES
from .base import Codec, as_host_bytes

SEED_ROTATION = 0xCAFEBABE  # the seed's default rotation seed (3405691582)
_BLOCK_ROW = struct.Struct("<HHI")
MAX_COLS = 4096
CALIB_DIR = CACHE_DIR / "calib"  # where ``codebook=calib:NAME`` tables live (NAME.npy)


@dataclass(frozen=True)
class KakeyaParams:
    """Parameters of the ``kakeya`` codec (keys of its spec string)."""

    bits: int = 3  # Lloyd–Max bits per residual coordinate (1..8)
    block: int = 512  # rows per block
    pca: Literal["exact", "rsvd", "none"] = "exact"  # skeleton fit ("none": block mean only, no basis)
    vr: float = 0.95  # variance ratio the skeleton keeps (0..1]
    rank: int = 0  # exact: rank cap (0 = none); rsvd: target rank (0 = max(D/2, 8))
    oversample: int = 8  # rsvd oversampling
    power_iters: int = 2  # rsvd power iterations
    k: int = 16  # spherical k-means centres per block (0 = no k-means: no ids, no t)
    kmeans_iters: int = 32  # Lloyd iterations at most
    skel: Literal["f16", "bf16", "f32"] = "f16"  # storage of mean, basis, centres
    scalars: Literal["f16", "bf16", "f32"] = "f16"  # storage of t, residual norms, outlier values
    outlier: float | None = None  # keep |z| > outlier exactly (None = off)
    share_basis: bool = False  # one skeleton for the whole input (a layer stream)
    metric: Literal["mse", "ip"] = "mse"  # ip only changes behaviour with legacy_ip_norm
    codebook: str = "gaussian"  # "gaussian", "calib:NAME" (CALIB_DIR/NAME.npy) or a .npy / raw f32 path
    quant: Literal["lloyd", "uniform"] = "lloyd"  # residual quantiser
    step: float = 0.0  # uniform grid step in units of the unit-variance residual (0 = MSE-optimal)
    entropy: int = 0  # rANS-code the indices: 0 off, 1 one table per block, 2 one per block and coordinate
    scalar_bits: int = 0  # 0: t and ‖r‖ as `scalars` floats; 2..16: codes on each block's range
    rotate: bool = True  # randomised Hadamard rotation of the residual (0 only for ablations)
    rbesi_dir: int = 0  # K-residual Besicovitch direction bits (0 = off: scalar quantiser)
    rbesi_g: int = 2  # its group size
    rbesi_mag: int = 4  # its magnitude bits (quant mode)
    rbesi_mode: Literal["f16", "quant"] = "quant"  # its magnitude mode
    seed: int = SEED_ROTATION  # WHT signs, k-means init, RSVD test matrix
    legacy_wht_scale: bool = False  # seed bug: residual scaled by √W/‖r‖ (the quantiser saturates)
    legacy_ip_norm: bool = False  # seed bug (needs metric=ip): decode ignores the residual norm
    legacy_unrounded_t: bool = False  # seed quirk: residual against the unrounded t
    legacy_rsvd_no_reorth: bool = False  # seed bug: power iterations without QR (raises on overflow)
    legacy_rsvd_sketch_vr: bool = False  # seed quirk: RSVD variance ratio against the sketch only
    legacy_rbesi_mag: bool = False  # the seed's quantised-magnitude quirk in the K-residual Besicovitch

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.bits <= lloyd_max.MAX_BITS, f"bits must be in 1..{lloyd_max.MAX_BITS}, got {self.bits}"),
            (self.block >= 1, f"block must be >= 1, got {self.block}"),
            (0.0 < self.vr <= 1.0, f"vr must be in (0, 1], got {self.vr}"),
            (self.rank >= 0, f"rank must be >= 0, got {self.rank}"),
            (self.oversample >= 0, f"oversample must be >= 0, got {self.oversample}"),
            (self.power_iters >= 0, f"power_iters must be >= 0, got {self.power_iters}"),
            (0 <= self.k <= 0xFFFF, f"k must be in 0..65535, got {self.k}"),
            (self.kmeans_iters >= 1, f"kmeans_iters must be >= 1, got {self.kmeans_iters}"),
            (self.outlier is None or self.outlier >= 0, f"outlier threshold must be >= 0, got {self.outlier}"),
            (0 <= self.seed < 2**64, f"seed must be in [0, 2**64), got {self.seed}"),
            (not self.legacy_ip_norm or self.metric == "ip", "legacy_ip_norm only applies with metric=ip"),
            (
                self.pca == "rsvd" or not (self.legacy_rsvd_no_reorth or self.legacy_rsvd_sketch_vr),
                "legacy_rsvd_* flags only apply with pca=rsvd",
            ),
            (bool(self.codebook.strip()), "codebook must be 'gaussian', 'calib:NAME' or a file path"),
            (self.quant == "lloyd" or self.bits >= uniform.MIN_BITS, "quant=uniform needs bits >= 2"),
            (self.quant == "lloyd" or self.codebook == "gaussian", "a custom codebook only applies with quant=lloyd"),
            (self.step >= 0, f"step must be >= 0, got {self.step}"),
            (self.entropy in (0, 1, 2), f"entropy must be 0, 1 or 2, got {self.entropy}"),
            (self.step == 0 or self.quant == "uniform", "step only applies with quant=uniform"),
            (0 <= self.rbesi_dir <= 8, f"rbesi_dir must be in 0..8, got {self.rbesi_dir}"),
            (self.rbesi_dir or not self.legacy_rbesi_mag, "legacy_rbesi_mag only applies with rbesi_dir > 0"),
            (not self.rbesi_dir or (self.outlier is None and not self.entropy and self.quant == "lloyd"),
             "rbesi_dir replaces the scalar quantiser: no outlier, entropy or quant=uniform with it"),
            (self.scalar_bits == 0 or scalarq.MIN_BITS <= self.scalar_bits <= scalarq.MAX_BITS,
             f"scalar_bits must be 0 or in {scalarq.MIN_BITS}..{scalarq.MAX_BITS}, got {self.scalar_bits}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class BlockInfo:
    """One row of the ``blocks`` table."""

    rows: int
    d_eff: int
    k_eff: int
    n_outliers: int
    rotate: bool = True

    @property
    def width(self) -> int:
        """Coordinates coded per row: the Hadamard size, or d_eff without rotation."""
        return wht.next_pow2(self.d_eff) if self.rotate else self.d_eff


class KakeyaCodec(Codec):
    name = "kakeya"
    Params = KakeyaParams
    max_cols = MAX_COLS
    _z_sink: list[Any] | None = None  # set by unit_residuals() to collect z during an encode

    # -- sizes ------------------------------------------------------------------------------
    def _sizes(self, info: BlockInfo, d: int) -> dict[str, int]:
        p = self.params
        skel_b = floats.NBYTES[p.skel]
        scal_b = floats.NBYTES[p.scalars]
        n, w = info.rows, info.width
        n_scalars = 2 if info.k_eff else 1  # t (with k-means) and ‖r‖
        return {
            "skeleton": 0 if p.share_basis else self._skeleton_nbytes(info.d_eff, d),
            "centres": skel_b * info.k_eff * info.d_eff,
            "seg": packed_nbytes(n, bits_for(info.k_eff)) if info.k_eff > 1 else 0,
            "idx": 0 if p.entropy else (n * self._besi().vector_nbytes(w) if p.rbesi_dir else packed_nbytes(n * w, p.bits)),
            "norms": n_scalars * (scalarq.nbytes(n, p.scalar_bits) if p.scalar_bits else scal_b * n),
            "out_pos": packed_nbytes_wide(info.n_outliers, max(1, bits_for(n * w))) if info.n_outliers else 0,
            "out_val": scal_b * info.n_outliers,
        }

    def _codebook(self) -> np.ndarray:
        """Reconstruction levels of the residual quantiser (host float32, ascending)."""
        p = self.params
        if p.quant == "uniform":
            return uniform.levels(p.bits, p.step)
        if p.codebook == "gaussian":
            return lloyd_max.gaussian_codebook(p.bits)
        return lloyd_max.load_codebook(resolve_codebook_path(p.codebook), p.bits)

    def _besi(self) -> besicovitch.BesiConfig:
        p = self.params
        return besicovitch.BesiConfig(g=p.rbesi_g, dir_bits=p.rbesi_dir, mag_mode=p.rbesi_mode, mag_bits=p.rbesi_mag,
                               legacy_mag=p.legacy_rbesi_mag)

    def _quantize(self, z: Any, levels: Any, xp: ModuleType) -> Any:
        p = self.params
        return uniform.quantize(z, p.bits, p.step, xp) if p.quant == "uniform" else lloyd_max.quantize(z, levels, xp)

    def unit_residuals(self, x: Any, weights: Any | None = None) -> np.ndarray:
        """The unit-scaled rotated residuals ``z`` [rows, W] this codec quantises for ``x`` [N, D].

        Rows with a zero residual are left out. Used to calibrate codebooks on real data
        (spec §5.3); needs every block to have the same width (e.g. ``pca=none`` or a fixed rank).
        """
        sink: list[Any] = []
        self._z_sink = sink
        try:
            self.encode(x, weights)
        finally:
            self._z_sink = None
        widths = {int(z.shape[1]) for z in sink}
        if len(widths) != 1:
            raise InputError(f"blocks have different residual widths {sorted(widths)}; fix the rank to calibrate")
        z = np.concatenate([to_host(b) for b in sink], axis=0)
        return z[np.any(z != 0, axis=1)]

    def _fit_skeletons(self, x: Any, w: Any | None, xp: ModuleType) -> list[pca.PcaFit]:
        """Skeletons of B equal-size blocks x [B, n, D] (weights [B, n] or None)."""
        p = self.params
        d = int(x.shape[2])
        if p.pca == "none":
            return [pca.fit_mean_only(x[i], None if w is None else w[i], xp, p.skel) for i in range(int(x.shape[0]))]
        if p.pca == "exact":
            return pca.fit_exact_batched(x, w, xp, p.vr, p.rank or None, p.skel)
        target = p.rank or min(d, max(d // 2, 8))
        return [
            rsvd.fit_randomized(
                x[i], None if w is None else w[i], xp, target, p.seed, p.oversample, p.power_iters, p.vr, p.skel,
                legacy_no_reorth=p.legacy_rsvd_no_reorth, legacy_sketch_total=p.legacy_rsvd_sketch_vr,
            )
            for i in range(int(x.shape[0]))
        ]

    # -- encode -----------------------------------------------------------------------------
    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        x32 = x.astype(xp.float32, copy=False)
        n, d = (int(s) for s in x32.shape)
        levels_host = self._codebook()
        levels = to_device(levels_host, xp)
        out: dict[str, list[bytes]] = {k: [] for k in ("blocks", "skeleton", "centres", "codes", "norms", "outliers")}
        queue: list[np.ndarray] = []  # per-block indices, rANS-coded together at the end (entropy=1)
        shared = None
        if p.share_basis:
            with STAGES.stage("encode/skeleton", xp):
                shared = self._fit_skeletons(x32[None], None if weights is None else weights[None], xp)[0]
            out["skeleton"].append(self._skeleton_bytes(shared, xp))
        # Blocks of equal size are fitted together (batched PCA and k-means); the short tail after.
        n_full, tail = divmod(n, p.block)
        groups = [(0, n_full, p.block)] if n_full else []
        if tail:
            groups.append((n_full * p.block, 1, tail))
        for start, count, rows in groups:
            xb = x32[start : start + count * rows].reshape(count, rows, d)
            wb = None if weights is None else weights[start : start + count * rows].reshape(count, rows)
            with STAGES.stage("encode/skeleton", xp):
                fits = [shared] * count if shared is not None else self._fit_skeletons(xb, wb, xp)
                coeffs = [pca.project(fit, xb[i]) for i, fit in enumerate(fits)]  # [rows, d_eff_i]
            with STAGES.stage("encode/kmeans", xp):
                d_max = max(fit.d_eff for fit in fits)
                padded = xp.zeros((count, rows, d_max), dtype=xp.float32)
                for i, c in enumerate(coeffs):
                    padded[i, :, : c.shape[1]] = c
                if p.k:
                    centres = kmeans.fit_batched(padded, p.k, xp, wb, p.kmeans_iters, p.seed, p.skel)
                else:
                    centres = [xp.zeros((0, d_max), dtype=xp.float32)] * count
            for i, fit in enumerate(fits):
                self._encode_block(
                    xb[i], fit, coeffs[i], centres[i][:, : fit.d_eff], levels, out, queue, xp,
                    write_skeleton=shared is None,
                )
        sections = [(name, b"".join(parts)) for name, parts in out.items()]
        if p.entropy:
            from ..stages import rans  # noqa: PLC0415

            with STAGES.stage("encode/entropy", xp):
                if p.entropy == 2:  # per coordinate: unrotated (KLT) coefficients differ in spread
                    queue = [np.ascontiguousarray(col) for block in queue for col in block.T]
                streams = rans.encode_many(queue, len(levels_host))
            sections.append(("entropy", b"".join(streams)))
        if p.quant == "lloyd" and p.codebook != "gaussian":
            sections.append(("codebook", levels_host.astype("<f4").tobytes()))
        return sections

    def _skeleton_bytes(self, fit: pca.PcaFit, xp: ModuleType) -> bytes:
        skel = self.params.skel
        mean = floats.to_bytes(fit.mean, skel, xp, "PCA mean")
        return mean if self.params.pca == "none" else mean + floats.to_bytes(fit.basis, skel, xp, "PCA basis")

    def _skeleton_nbytes(self, d_eff: int, d: int) -> int:
        """Mean, plus the basis unless ``pca=none`` (identity basis, never stored)."""
        return floats.NBYTES[self.params.skel] * (d + (0 if self.params.pca == "none" else d_eff * d))

    def _encode_block(
        self,
        xb: Any,
        fit: pca.PcaFit,
        c: Any,
        centres: Any,
        levels: Any,
        out: dict[str, list[bytes]],
        queue: list[np.ndarray],
        xp: ModuleType,
        write_skeleton: bool,
    ) -> None:
        """Code one block x [rows, D] given its skeleton, coefficients c [rows, d_eff] and centres."""
        p = self.params
        rows = int(xb.shape[0])
        with STAGES.stage("encode/kmeans", xp):
            k_eff = int(centres.shape[0])
            if k_eff:
                seg, t = kmeans.assign(c, centres, xp)
            else:  # no k-means: the whole coefficient vector is the residual
                seg, t = xp.zeros(c.shape[0], dtype=xp.int64), xp.zeros(c.shape[0], dtype=xp.float32)
                centres = xp.zeros((1, c.shape[1]), dtype=xp.float32)
            if p.scalar_bits and k_eff:
                t_bytes, t_stored = scalarq.encode_linear(t, p.scalar_bits, xp)
            else:
                t_stored = floats.round_to(t, p.scalars, xp, "k-means projections t")
                t_bytes = floats.to_bytes(t_stored, p.scalars, xp, "k-means projections t") if k_eff else b""
            res = c - (t if p.legacy_unrounded_t else t_stored)[:, None] * centres[seg]

        d_eff = fit.d_eff
        info = BlockInfo(rows=rows, d_eff=d_eff, k_eff=k_eff, n_outliers=0, rotate=p.rotate)
        w = info.width
        with STAGES.stage("encode/rotate", xp):
            y = wht.rotate(wht.pad_to(res, w, xp), p.seed, xp) if p.rotate else res  # [rows, w], ‖y‖ = ‖res‖
            rnorm = xp.sqrt((res * res).sum(axis=1))
            live = rnorm > np.float32(pca.EPS)
            gain = math.sqrt(w) if p.legacy_wht_scale else 1.0
            z = y * xp.where(live, np.float32(math.sqrt(w) * gain) / xp.maximum(rnorm, np.float32(pca.EPS)), 0)[:, None]
        if getattr(self, "_z_sink", None) is not None:
            self._z_sink.append(z[live])
        with STAGES.stage("encode/quantize", xp):
            if p.rbesi_dir:
                if w % p.rbesi_g:
                    raise InputError(f"rbesi_g={p.rbesi_g} does not divide the residual width {w}")
                idx = besicovitch.encode_groups(z, self._besi(), xp)  # GroupCodes, serialised below
            else:
                idx = self._quantize(z, levels, xp)
            if p.outlier is not None:
                pos, vals = outliers.find(z, p.outlier, xp)
            else:
                pos, vals = xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float32)
        if p.legacy_ip_norm:
            norm_field = xp.sqrt((xb * xb).sum(axis=1))  # stored, never used by decode (seed bug)
        else:
            norm_field = xp.where(live, rnorm / np.float32(gain), 0)
        info = BlockInfo(rows=rows, d_eff=d_eff, k_eff=k_eff, n_outliers=int(pos.size), rotate=p.rotate)

        with STAGES.stage("encode/pack", xp):
            out["blocks"].append(_BLOCK_ROW.pack(info.d_eff, info.k_eff, info.n_outliers))
            if write_skeleton:
                out["skeleton"].append(self._skeleton_bytes(fit, xp))
            if k_eff:
                out["centres"].append(floats.to_bytes(centres, p.skel, xp, "k-means centres"))
            seg_bytes = as_host_bytes(pack_bits(seg, bits_for(info.k_eff))) if info.k_eff > 1 else b""
            if p.entropy:
                out["codes"].append(seg_bytes)
                queue.append(to_host(idx).reshape(rows, -1) if p.entropy == 2 else to_host(idx).reshape(-1))
            elif p.rbesi_dir:
                out["codes"].append(seg_bytes + besicovitch.codes_to_bytes(idx, self._besi(), xp))
            else:
                out["codes"].append(seg_bytes + as_host_bytes(pack_bits(idx.reshape(-1), p.bits)))
            if p.scalar_bits:
                norm_bytes = scalarq.encode_log(norm_field, p.scalar_bits, xp, pca.EPS)[0]
            else:
                norm_bytes = floats.to_bytes(norm_field, p.scalars, xp, "residual norms")
            out["norms"].append(t_bytes + norm_bytes)
            if info.n_outliers:
                pos_bits = max(1, bits_for(rows * w))
                out["outliers"].append(
                    as_host_bytes(pack_bits_wide(pos, pos_bits)) + floats.to_bytes(vals, p.scalars, xp, "outlier values")
                )

    # -- decode -----------------------------------------------------------------------------
    def block_table(self, blob: bytes) -> list[BlockInfo]:
        """Per-block rank, centre count and outlier count of a blob (validated)."""
        box = self._open(blob)
        return self._block_table(box)

    def _block_table(self, box: Container) -> list[BlockInfo]:
        p = self.params
        n, d = box.n_rows, box.n_cols
        n_blocks = -(-n // p.block)
        raw = box.section("blocks")
        if len(raw) != n_blocks * _BLOCK_ROW.size:
            raise CorruptBlobError(f"blocks table has {len(raw)} bytes, {n_blocks} blocks need {n_blocks * _BLOCK_ROW.size}")
        table = []
        for i, (d_eff, k_eff, n_out) in enumerate(_BLOCK_ROW.iter_unpack(raw)):
            rows = min(p.block, n - i * p.block)
            info = BlockInfo(rows=rows, d_eff=d_eff, k_eff=k_eff, n_outliers=n_out, rotate=p.rotate)
            if not 1 <= d_eff <= d:
                raise CorruptBlobError(f"block {i}: rank {d_eff} outside 1..{d}")
            if (p.k == 0 and k_eff != 0) or (p.k and not 1 <= k_eff <= max(1, min(p.k, rows))):
                raise CorruptBlobError(f"block {i}: {k_eff} centres for {rows} rows with k={p.k}")
            if n_out > rows * info.width or (n_out and p.outlier is None):
                raise CorruptBlobError(f"block {i}: {n_out} outliers is impossible here")
            table.append(info)
        if p.share_basis and len({b.d_eff for b in table}) > 1:
            raise CorruptBlobError("blocks disagree on the rank of the shared basis")
        return table

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        d = box.n_cols
        table = self._block_table(box)
        sizes = [self._sizes(info, d) for info in table]
        shared_bytes = self._skeleton_nbytes(table[0].d_eff, d) if p.share_basis else 0
        expect = {
            "skeleton": shared_bytes + sum(s["skeleton"] for s in sizes),
            "centres": sum(s["centres"] for s in sizes),
            "codes": sum(s["seg"] + s["idx"] for s in sizes),
            "norms": sum(s["norms"] for s in sizes),
            "outliers": sum(s["out_pos"] + s["out_val"] for s in sizes),
        }
        for name, nbytes in expect.items():
            if len(box.section(name)) != nbytes:
                raise CorruptBlobError(f"{name} section holds {len(box.section(name))} bytes, the block table implies {nbytes}")
        levels_host = self._stored_codebook(box)
        levels = to_device(levels_host, xp)
        cursors = {name: 0 for name in expect}
        entropy_idx: list[np.ndarray] = []
        if p.entropy:
            from ..stages import rans  # noqa: PLC0415

            with STAGES.stage("decode/entropy", xp):
                raw = box.section("entropy")
                if p.entropy == 2:
                    cols, used = rans.decode_many(raw, [b.rows for b in table for _ in range(b.width)], len(levels_host))
                    starts = np.cumsum([0] + [b.width for b in table])
                    entropy_idx = [np.stack(cols[a:b], axis=1) for a, b in zip(starts[:-1], starts[1:])]
                else:
                    entropy_idx, used = rans.decode_many(raw, [b.rows * b.width for b in table], len(levels_host))
                if used != len(raw):
                    raise CorruptBlobError(f"entropy section holds {len(raw)} bytes, its streams use {used}")
        elif "entropy" in box.sections:
            raise CorruptBlobError("unexpected entropy section for a codec without entropy coding")

        def take(name: str, nbytes: int) -> memoryview:
            start = cursors[name]
            cursors[name] = start + nbytes
            return box.section(name)[start : start + nbytes]

        shared = self._read_skeleton(take("skeleton", shared_bytes), table[0].d_eff, d, xp) if p.share_basis else None
        parts = []
        for i, (info, size) in enumerate(zip(table, sizes)):
            fit = shared if shared is not None else self._read_skeleton(take("skeleton", size["skeleton"]), info.d_eff, d, xp)
            idx = entropy_idx[i] if p.entropy else None
            parts.append(self._decode_block(info, size, fit, levels, take, xp, idx))
        return xp.concatenate(parts, axis=0)

    def _stored_codebook(self, box: Container) -> np.ndarray:
        if self.params.quant == "uniform":
            if "codebook" in box.sections:
                raise CorruptBlobError("unexpected codebook section for a uniform-quantiser codec")
            return self._codebook()
        if self.params.codebook == "gaussian":
            if "codebook" in box.sections:
                raise CorruptBlobError("unexpected codebook section for a gaussian-codebook codec")
            return lloyd_max.gaussian_codebook(self.params.bits)
        raw = box.section("codebook")
        if len(raw) != 4 * (1 << self.params.bits):
            raise CorruptBlobError(f"codebook section has {len(raw)} bytes, expected {4 * (1 << self.params.bits)}")
        try:
            return lloyd_max.validate_codebook(np.frombuffer(raw, dtype="<f4"), self.params.bits)
        except InputError as exc:
            raise CorruptBlobError(f"stored codebook is invalid: {exc}") from exc

    def _read_skeleton(self, buf: memoryview, d_eff: int, d: int, xp: ModuleType) -> pca.PcaFit:
        skel = self.params.skel
        split = floats.NBYTES[skel] * d
        mean = floats.from_bytes(buf[:split], skel, d, xp, "PCA mean")
        if self.params.pca == "none":
            if d_eff != d:
                raise CorruptBlobError(f"pca=none needs full rank {d}, block table says {d_eff}")
            return pca.PcaFit(mean=mean, basis=xp.eye(d, dtype=xp.float32), eigenvalues=None,
                              captured_variance=1.0, identity=True)
        basis = floats.from_bytes(buf[split:], skel, d_eff * d, xp, "PCA basis").reshape(d_eff, d)
        return pca.PcaFit(mean=mean, basis=basis, eigenvalues=None, captured_variance=float("nan"))

    def _decode_block(self, info: BlockInfo, size: dict[str, int], fit: pca.PcaFit, levels: Any, take: Any,
                      xp: ModuleType, entropy_idx: np.ndarray | None = None) -> Any:
        p = self.params
        rows, w = info.rows, info.width
        with STAGES.stage("decode/unpack", xp):
            centres = floats.from_bytes(take("centres", size["centres"]), p.skel, info.k_eff * info.d_eff, xp, "centres")
            centres = centres.reshape(info.k_eff, info.d_eff)
            if info.k_eff > 1:
                seg_packed = xp.asarray(np.frombuffer(take("codes", size["seg"]), dtype=np.uint8))
                seg = unpack_bits(seg_packed, bits_for(info.k_eff), rows)
                if int(seg.max()) >= info.k_eff:
                    raise CorruptBlobError("a centre id exceeds the block's centre count")
            else:
                seg = xp.zeros(rows, dtype=xp.int64)
            if p.rbesi_dir:
                codes = besicovitch.codes_from_bytes(take("codes", size["idx"]), rows, w, self._besi(), xp)
                idx = None
            elif entropy_idx is None:
                idx_packed = xp.asarray(np.frombuffer(take("codes", size["idx"]), dtype=np.uint8))
                idx = unpack_bits(idx_packed, p.bits, rows * w).reshape(rows, w)
            else:
                idx = xp.asarray(entropy_idx).reshape(rows, w)  # uint8/uint16 indices levels[] directly
            if idx is not None and int(idx.max()) >= int(levels.shape[0]):
                raise CorruptBlobError("a quantiser index exceeds the codebook")
            t, norm_field = self._read_scalars(take("norms", size["norms"]), rows, info.k_eff > 0, xp)
        with STAGES.stage("decode/dequantize", xp):
            zhat = besicovitch.decode_groups(codes, self._besi(), xp) if p.rbesi_dir else levels[idx]
            if info.n_outliers:
                pos_buf = take("outliers", size["out_pos"])
                pos = unpack_bits_wide(xp.asarray(np.frombuffer(pos_buf, dtype=np.uint8)), max(1, bits_for(rows * w)),
                                       info.n_outliers)
                vals = floats.from_bytes(take("outliers", size["out_val"]), p.scalars, info.n_outliers, xp, "outliers")
                zhat = outliers.apply(zhat, pos, vals, xp)
        with STAGES.stage("decode/rotate", xp):
            res_norm = xp.ones_like(norm_field) if p.legacy_ip_norm else norm_field
            r_hat = zhat * (res_norm / np.float32(math.sqrt(w)))[:, None]
            if p.rotate:
                r_hat = wht.inverse_rotate(r_hat, p.seed, xp)
        with STAGES.stage("decode/unproject", xp):
            c_hat = r_hat[:, : info.d_eff]
            if info.k_eff:
                c_hat = c_hat + t[:, None] * centres[seg]
            return pca.unproject(fit, c_hat)

    def _read_scalars(self, buf: memoryview, rows: int, has_t: bool, xp: ModuleType) -> tuple[Any, Any]:
        """(t [rows] or empty, residual norms [rows]) of one block's ``norms`` field."""
        p = self.params
        if p.scalar_bits:
            half = scalarq.nbytes(rows, p.scalar_bits) if has_t else 0
            t = scalarq.decode_linear(buf[:half], rows, p.scalar_bits, xp, "k-means projections") if has_t \
                else xp.zeros(0, dtype=xp.float32)
            return t, scalarq.decode_log(buf[half:], rows, p.scalar_bits, xp, "residual norms")
        n_scalars = 2 if has_t else 1
        scalars = floats.from_bytes(buf, p.scalars, n_scalars * rows, xp, "norms")
        return scalars[: rows * (n_scalars - 1)], scalars[rows * (n_scalars - 1) :]


def resolve_codebook_path(codebook: str) -> str:
    """``calib:NAME`` → ``CALIB_DIR/NAME.npy``; anything else is a path, returned as is."""
    if codebook.startswith("calib:"):
        name = codebook[len("calib:") :]
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise InputError(f"codebook {codebook!r}: NAME must be a plain file name")
        return str(CALIB_DIR / f"{name}.npy")
    return codebook
