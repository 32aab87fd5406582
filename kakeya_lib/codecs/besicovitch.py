"""``besicovitch``: the Besicovitch-product codec (spec §2; stage functions in
:mod:`kakeya_lib.stages.besicovitch`).

Per block of ``block`` rows (the last block may be shorter; it is encoded too, as the seed's
besicovitch-bench did): optional f16 block mean subtracted (``mean=1``, the harness default),
then every row is cut into ``G = D/g`` groups, each coded as a direction id from a fixed
``2**dir``-line codebook on S^{g−1} plus a signed magnitude:

* ``mode=f16``: f16 magnitude per group.
* ``mode=quant``: ``mag``-bit magnitudes against a per-vector f16 scale ``s = max_k |α_k|``.
  ``legacy_mag=1`` is the seed's N(0,1) Lloyd–Max table, of which only the inner half is
  reachable (``|α/s| <= 1``: mag 4 uses 8 of 16 levels and decodes the largest group to
  0.9422·s); the default is a uniform table on [-1, 1] with its end points
  (:func:`~kakeya_lib.stages.besicovitch.range_levels`), which uses every level and keeps the largest
  group. Either way the code renormalises every vector by its largest group, which is why it
  breaks under query whitening (spec §2.3/§3.3: one whitened outlier group sets ``s`` and crushes
  the others, +700 % Δppl); :attr:`BesicovitchCodec.renormalises_per_vector` says so to harnesses.
* ``mode=riemann``: fixed scale per (block, group), ``α̂ = c_idx · s_k``, with the seed's best
  scale rule ``scale=pct99`` (``percentile(|α_k|, 99)/2.7`` over the block's rows; also
  ``pct95``, ``pct999``, ``rms``, ``sqrt_trace``) and ``cb=quantile`` (Gaussian quantiles
  ``√2·erfinv(2u−1)``, the seed's default) or ``cb=lloyd`` (N(0,1) Lloyd–Max). The scales are
  computed on the block being encoded and **stored** (f16, ``2G`` bytes per block, ledger
  ``scales``): the seed computed them on the same prefill and did not count their bytes.
  The seed's Riemannian script kept the tail rows exact; here the tail block is coded too. The
  tables have an even number of symmetric levels and no zero, so a zero group decodes to
  ``±c_0·s_k`` (the per-vector modes decode an all-zero row exactly: its scale is 0).

Byte layout (spec §2.5; every id field packed LSB-first and padded to a whole byte per row, so
each row is the seed's per-vector record split over sections):

| section | contents | bytes |
|---|---|---|
| ``skeleton`` | f16 block means (``mean=1``) | ``2D`` per block |
| ``scales`` | f16 per-(block, group) scales (riemann) | ``2G`` per block |
| ``codes`` | direction ids of all rows, then magnitude indices (quant, riemann) | ``ceil(G·dir/8)`` (+ ``ceil(G·mag/8)``) per row |
| ``norms`` | f16 α per group (f16) or the f16 per-vector scale (quant) | ``2G`` or ``2`` per row |

So a row costs ``ceil(G·dir/8) + 2G`` (f16) or ``ceil(G·dir/8) + ceil(G·mag/8) + 2`` (quant)
bytes, e.g. D=128, g=2, dir=3, mag=4, quant: 24 + 32 + 2 = 58 B plus 256 B per block of means.
``weights`` are ignored (nothing here is fitted by least squares).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import to_host
from ..container import Container
from ..errors import CorruptBlobError
from ..stages import besicovitch
from .base import Codec

MAX_DIR_BITS = 8  # ids are serialised in at most a byte each (the seed's limit)


@dataclass(frozen=True)
class BesicovitchParams:
    g: int = 2  # coordinates per group, 2..8, must divide D
    dir: int = 5  # direction bits (2**dir lines on S^{g-1}), 1..8
    mag: int = 4  # magnitude bits (quant, riemann), 1..8
    mode: Literal["f16", "quant", "riemann"] = "quant"  # magnitudes: f16, mag-bit against a per-vector scale, or per-(block, group) scales
    mean: bool = True  # subtract the f16 block mean
    block: int = 1024  # rows per block (means, riemann scales)
    legacy_mag: bool = False  # quant only: the seed's N(0,1) table on α/s (inner levels only)
    scale: Literal["pct99", "pct95", "pct999", "rms", "sqrt_trace"] = "pct99"  # riemann scale rule
    cb: Literal["quantile", "lloyd"] = "quantile"  # riemann centroid table

    def __post_init__(self) -> None:
        checks = [
            (besicovitch.MIN_GROUP <= self.g <= besicovitch.MAX_GROUP, f"g must be in {besicovitch.MIN_GROUP}..{besicovitch.MAX_GROUP}, got {self.g}"),
            (1 <= self.dir <= MAX_DIR_BITS, f"dir must be in 1..{MAX_DIR_BITS} (ids are stored in a byte), got {self.dir}"),
            (1 <= self.mag <= besicovitch.MAX_MAG_BITS, f"mag must be in 1..{besicovitch.MAX_MAG_BITS}, got {self.mag}"),
            (self.block >= 1, f"block must be >= 1, got {self.block}"),
            (self.mode != "f16" or self.mag == 4, "mag is not used with mode=f16 (magnitudes are f16); drop it"),
            (not self.legacy_mag or self.mode == "quant", "legacy_mag applies to mode=quant only"),
            (self.mode != "quant" or self.legacy_mag or self.mag >= 2,
             "mode=quant with mag=1 is sign only with the range table; use mag >= 2 (or legacy_mag=1)"),
            (not self.legacy_mag or self.mag <= besicovitch.LEGACY_MAX_MAG_BITS,
             "legacy_mag needs mag <= 4: the seed's N(0,1) table exists for 1..4 bits only"),
            (self.mode == "riemann" or (self.scale == "pct99" and self.cb == "quantile"),
             "scale and cb apply to mode=riemann only"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def config(self) -> besicovitch.BesiConfig:
        return besicovitch.BesiConfig(g=self.g, dir_bits=self.dir, mag_mode=self.mode, mag_bits=self.mag,
                               legacy_mag=self.legacy_mag, centroids=self.cb)


class BesicovitchCodec(Codec):
    name = "besicovitch"
    Params = BesicovitchParams
    max_cols = 4096

    @property
    def renormalises_per_vector(self) -> bool:
        """True in mode=quant: every vector is rescaled by its own largest group, which query
        whitening turns into an outlier (spec §3.3); harnesses refuse such codecs there."""
        return self.params.mode == "quant"

    def _blocks(self, n: int) -> list[tuple[int, int]]:
        b = self.params.block
        return [(lo, min(lo + b, n)) for lo in range(0, n, b)]

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        cfg = p.config()
        n, d = (int(s) for s in x.shape)
        cfg.groups(d)  # InputError unless g divides D
        z = x.astype(xp.float32)
        blocks = self._blocks(n)
        rows_block = xp.arange(n) // p.block
        sections: list[tuple[str, bytes]] = []
        if p.mean:
            means = xp.stack([z[lo:hi].mean(axis=0) for lo, hi in blocks])
            means = floats.round_to(means, "f16", xp, "block means")
            z = z - means[rows_block]
            sections.append(("skeleton", floats.to_bytes(means, "f16", xp, "block means")))
        ids, alpha = besicovitch.assign(z, p.g, p.dir, xp)
        row_scales = None
        if p.mode == "riemann":
            scales = xp.stack([besicovitch.group_scales(z[lo:hi], p.g, p.scale, xp, alpha=alpha[lo:hi]) for lo, hi in blocks])
            scales = floats.round_to(scales, "f16", xp, "per-group Besicovitch scales")
            row_scales = scales[rows_block]
            sections.append(("scales", floats.to_bytes(scales, "f16", xp, "per-group scales")))
        mags, vec_scales = besicovitch.quantize_magnitudes(alpha, cfg, xp, row_scales)
        codes = to_host(besicovitch.pack_rows(ids, p.dir, xp)).tobytes()
        if p.mode == "f16":
            sections += [("codes", codes), ("norms", floats.to_bytes(mags, "f16", xp, "magnitudes"))]
        else:
            codes += to_host(besicovitch.pack_rows(mags, p.mag, xp)).tobytes()
            sections.append(("codes", codes))
            if p.mode == "quant":
                sections.append(("norms", floats.to_bytes(vec_scales, "f16", xp, "per-vector scales")))
        return sections

    def _expected_sections(self, n: int, d: int) -> dict[str, int]:
        p = self.params
        cfg = p.config()
        groups, n_blocks = cfg.groups(d), len(self._blocks(n))
        out = {}
        if p.mean:
            out["skeleton"] = 2 * d * n_blocks
        if p.mode == "riemann":
            out["scales"] = 2 * groups * n_blocks
        out["codes"] = n * cfg.dir_nbytes(d) + (0 if p.mode == "f16" else n * -(-groups * p.mag // 8))
        if p.mode != "riemann":
            out["norms"] = n * (2 * groups if p.mode == "f16" else 2)
        return out

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        cfg = p.config()
        n, d = box.n_rows, box.n_cols
        if n == 0 or d == 0:
            raise CorruptBlobError(f"header shape ({n}, {d}) is empty; the encoder never writes that")
        if d % p.g:
            raise CorruptBlobError(f"header width D={d} is not a multiple of g={p.g}")
        groups = d // p.g
        expected = self._expected_sections(n, d)
        if set(box.sections) != set(expected):
            raise CorruptBlobError(
                f"blob has sections {', '.join(box.sections) or 'none'}; {self.spec} writes {', '.join(expected)}"
            )
        for name, nbytes in expected.items():
            if len(box.sections[name]) != nbytes:
                raise CorruptBlobError(f"{name} section holds {len(box.sections[name])} bytes, expected {nbytes}")
        blocks = self._blocks(n)
        rows_block = xp.arange(n) // p.block
        raw = np.frombuffer(box.section("codes"), dtype=np.uint8)
        nd = cfg.dir_nbytes(d)
        # every dir-bit value is a valid id (the codebook has exactly 2**dir lines), likewise for
        # magnitude indices; unpack_rows still rejects non-zero padding bits
        ids = besicovitch.unpack_rows(xp.asarray(raw[: n * nd].reshape(n, nd)), p.dir, groups, xp)
        row_scales = None
        if p.mode == "riemann":
            scales = floats.from_bytes(box.section("scales"), "f16", len(blocks) * groups, xp, "per-group scales")
            if bool((scales < 0).any()):
                raise CorruptBlobError("a per-group Besicovitch scale is negative (corrupted bytes?)")
            row_scales = scales.reshape(len(blocks), groups)[rows_block]
        if p.mode == "f16":
            mags = floats.from_bytes(box.section("norms"), "f16", n * groups, xp, "magnitudes").reshape(n, groups)
            vec_scales = None
        else:
            nm = -(-groups * p.mag // 8)
            mags = besicovitch.unpack_rows(xp.asarray(raw[n * nd :].reshape(n, nm)), p.mag, groups, xp)
            vec_scales = None
            if p.mode == "quant":
                vec_scales = floats.from_bytes(box.section("norms"), "f16", n, xp, "per-vector scales")
                if bool((vec_scales < 0).any()):
                    raise CorruptBlobError("a per-vector Besicovitch scale is negative (corrupted bytes?)")
        out = besicovitch.decode_groups(besicovitch.GroupCodes(ids, mags, vec_scales), cfg, xp, row_scales)
        if p.mean:
            means = floats.from_bytes(box.section("skeleton"), "f16", len(blocks) * d, xp, "block means")
            out = out + means.reshape(len(blocks), d)[rows_block]
        return out
