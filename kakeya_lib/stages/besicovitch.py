"""Besicovitch-product stage: group directions on S^{g-1} plus a scalar magnitude (spec §2).

A row ``z`` [W] is cut into ``G = W/g`` groups ``z_k ∈ R^g``. Each group is coded as a line
through the origin from a deterministic codebook of ``M = 2**dir_bits`` unit directions ``d_i``
(never stored) and a signed magnitude ``α_k``::

    id_k = argmax_i |<z_k, d_i>|      (first maximum wins: an all-zero group gets id 0, α 0)
    α_k  = <z_k, d_id>                 ẑ_k = α̂_k · d_id

Magnitude modes (:class:`BesiConfig` ``mag_mode``):

* ``f16``: ``α̂ = f16(α)``, 16 bits per group.
* ``quant``: per-vector scale ``s = max_k |α_k|`` (stored f16) and ``mag_bits``-bit indices into a
  table on ``α/s``. ``legacy_mag=True`` is the seed's table, the N(0,1) Lloyd–Max levels: since
  ``|α/s| <= 1`` only the inner levels are reachable (mag 4: 8 of 16, the largest group decodes
  to 0.9422·s; mag 3: 4 of 8). The default is :func:`range_levels`, a uniform grid on [-1, 1]
  with both end points (see there for why).
* ``riemann``: fixed per-group scales ``s_k`` given by the caller (one per group, or per row and
  group), ``α̂ = c_idx · s_k``, with Gaussian-quantile centroids ``√2·erfinv(2u−1)`` (the seed's
  default), the N(0,1) Lloyd–Max table, or a user table.

Per-vector serialisation (the seed's ``BesicovitchCode``, §2.5), ``vector_nbytes`` bytes a row:
``[dir ids: ceil(G·db/8) B][mag: 2G B (f16) | ceil(G·mb/8) B (+2 B f16 scale in quant)]``,
every field packed LSB-first (:mod:`kakeya_lib.bitpack`) and padded to a whole byte per row.

The public entry points for callers (the ``besicovitch`` codec and the kakeya codec's
K-residual option): :class:`BesiConfig`, :func:`encode_groups` → :class:`GroupCodes`,
:func:`decode_groups`, :func:`codes_to_bytes` / :func:`codes_from_bytes`, :func:`group_scales`.
All array functions take ``xp`` (numpy or CuPy) and work in float32.

One concept (over 400 lines): the Besicovitch group code, its codebooks and magnitude modes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import to_device, to_host
from ..bitpack import pack_bits, unpack_bits
from ..errors import CorruptBlobError, InputError
from . import lloyd_max

MIN_GROUP, MAX_GROUP = 2, 8
MAX_DIR_BITS = 10  # the seed's codebook limit (its serialisation needs <= 8; the codec enforces that)
MAX_MAG_BITS = 8
LEGACY_MAX_MAG_BITS = 4  # the seed's N(0,1) table exists for 1..4 bits only
SCALE_FLOOR = 1e-12  # the seed's floor on the per-vector scale (legacy path)
PCT_DIVISOR = 2.7  # the seed's pctXX_alpha scale: percentile(|α|, XX) / 2.7
GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
_CHUNK_ELEMS = 1 << 23  # projections held at once in the assignment (rows × G × M)

MagMode = Literal["f16", "quant", "riemann"]
MAG_MODES = ("f16", "quant", "riemann")
SCALE_METHODS = ("pct99", "pct95", "pct999", "rms", "sqrt_trace")


# -- direction codebook ----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def direction_codebook(g: int, dir_bits: int) -> np.ndarray:
    """The deterministic direction codebook [M, g] (float32, unit rows, read-only), M = 2**dir_bits.

    g = 2: ``d_i = (cos θ_i, sin θ_i)``, ``θ_i = π i / M`` (half circle; the sign lives in α).
    g >= 3: the seed's crude spherical-Fibonacci construction, reproduced as is: ``t = (i+½)/M``,
    ``z = 1 − 2t``, ``r = √max(0, 1 − z²)``, ``a = 2π i/φ``; coordinates
    ``[|z|, r cos a, r sin a, 0.1·cos(2π i (k+1)/φ) for k = 3..g−1]``, L2-normalised, sign
    flipped so the leading coordinate is >= 0. It is not a good covering for g >= 4 (the extra
    coordinates only get ±0.1 before normalisation), which is the seed's, not ours, to fix.
    """
    _check_group(g)
    if not isinstance(dir_bits, (int, np.integer)) or not 1 <= dir_bits <= MAX_DIR_BITS:
        raise InputError(f"direction bits must be in 1..{MAX_DIR_BITS}, got {dir_bits!r}")
    m = 1 << int(dir_bits)
    i = np.arange(m, dtype=np.float64)
    if g == 2:
        theta = np.pi * i / m
        book = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    else:
        z = 1.0 - 2.0 * (i + 0.5) / m
        r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
        a = 2.0 * np.pi * i / GOLDEN
        cols = [np.abs(z), r * np.cos(a), r * np.sin(a)]
        cols += [0.1 * np.cos(2.0 * np.pi * i * (k + 1) / GOLDEN) for k in range(3, g)]
        book = np.stack(cols, axis=1)
        book /= np.linalg.norm(book, axis=1, keepdims=True)
        book *= np.where(book[:, :1] < 0, -1.0, 1.0)
    out = book.astype(np.float32)
    out.setflags(write=False)
    return out


def _check_group(g: int) -> None:
    if not isinstance(g, (int, np.integer)) or not MIN_GROUP <= g <= MAX_GROUP:
        raise InputError(f"group size g must be in {MIN_GROUP}..{MAX_GROUP}, got {g!r}")


def n_groups(width: int, g: int) -> int:
    """G = width / g; raises InputError when g does not divide the width."""
    _check_group(g)
    if width % g:
        raise InputError(f"group size g={g} must divide the row width {width} (choose g among its divisors)")
    return width // g


def assign(z: Any, g: int, dir_bits: int, xp: ModuleType) -> tuple[Any, Any]:
    """Nearest codebook line of every group of z [n, W].

    Returns
    -------
    ids : int64 [n, G]   argmax_i |<z_k, d_i>| (first maximum: ties and zero groups -> 0)
    alpha : float32 [n, G]   the signed projection <z_k, d_id>
    """
    n, w = (int(s) for s in z.shape)
    groups = n_groups(w, g)
    book = to_device(direction_codebook(g, dir_bits), xp)
    m = int(book.shape[0])
    zg = xp.asarray(z, dtype=xp.float32).reshape(n, groups, g)
    ids = xp.empty((n, groups), dtype=xp.int64)
    alpha = xp.empty((n, groups), dtype=xp.float32)
    step = max(1, _CHUNK_ELEMS // (groups * m))
    for lo in range(0, n, step):
        proj = zg[lo : lo + step] @ book.T  # [rows, G, M]
        best = xp.argmax(xp.abs(proj), axis=2)
        ids[lo : lo + step] = best
        alpha[lo : lo + step] = xp.take_along_axis(proj, best[..., None], axis=2)[..., 0]
    return ids, alpha


def reconstruct(ids: Any, alpha: Any, g: int, dir_bits: int, xp: ModuleType) -> Any:
    """ẑ [n, G·g] from direction ids [n, G] and (decoded) magnitudes [n, G]: ``ẑ_k = α_k d_id``."""
    book = to_device(direction_codebook(g, dir_bits), xp)
    n, groups = (int(s) for s in ids.shape)
    return (alpha[..., None].astype(xp.float32) * book[ids]).reshape(n, groups * g)


# -- magnitude tables ------------------------------------------------------------------------
def range_levels(bits: int) -> np.ndarray:
    """Our fixed per-vector-scale table: ``2**bits`` uniform levels on [-1, 1], end points included.

    Why this is right for ``α/s`` with ``s = max_k |α_k|``: the values lie in [-1, 1] by
    construction and the largest group sits exactly at ±1. A table spanning exactly that range
    makes every level reachable (the seed's N(0,1) table wastes half of them beyond ±1) and has
    ±1 as a level, so the group that sets the scale — the most energetic one — is reproduced
    instead of shrunk to 0.9422·s. The shape of the rest is not Gaussian either: group
    magnitudes are chi-like (density vanishing at 0 for g >= 2) and are divided by their
    maximum, so a table that crowds levels around 0 spends them where few values are; the
    uniform grid is the minimax quantiser of a bounded range and the same grid the ``int``
    codec uses between a group's minimum and maximum. Measured on Gaussian rows (D=128, g=2,
    dir 3): whole-codec rel-MSE 0.0195 vs the seed's 0.0394 at 4 bits, 0.043 vs 0.105 at 3,
    0.145 vs 0.242 at 2. An MSE-optimal (Lloyd) table fitted to the empirical α/s would be
    another 1.27× (4 bits) to 1.8× (2 bits) better on the magnitudes alone, but it depends on
    G, g and the data, and it shrinks the top group again (its outer level is ≈0.95). At 1 bit
    the grid degenerates to ±1 (sign only), so :class:`BesiConfig` refuses it.
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_MAG_BITS:
        raise InputError(f"magnitude bits must be in 1..{MAX_MAG_BITS}, got {bits!r}")
    k = (1 << int(bits)) - 1
    return (np.arange(k + 1, dtype=np.float64) * 2.0 / k - 1.0).astype(np.float32)


def quantile_levels(bits: int) -> np.ndarray:
    """The seed's Riemannian default: Gaussian quantiles ``√2·erfinv(2u_j − 1)``, ``u_j = (j+½)/2**b``
    (not Lloyd–Max: for 4 bits the outer level is ±1.86, not ±2.73)."""
    from scipy.special import ndtri  # noqa: PLC0415  (scipy only needed here)

    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_MAG_BITS:
        raise InputError(f"magnitude bits must be in 1..{MAX_MAG_BITS}, got {bits!r}")
    n = 1 << int(bits)
    return ndtri((np.arange(n) + 0.5) / n).astype(np.float32)


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BesiConfig:
    """What a Besicovitch code is: group size, direction bits, magnitude mode and table.

    ``centroids`` (riemann only): ``"quantile"`` (seed default), ``"lloyd"`` (N(0,1) Lloyd–Max)
    or a tuple of ``2**mag_bits`` strictly ascending values.
    """

    g: int = 2
    dir_bits: int = 6
    mag_mode: MagMode = "quant"
    mag_bits: int = 4
    legacy_mag: bool = False
    centroids: str | tuple[float, ...] = "quantile"

    def __post_init__(self) -> None:
        if not isinstance(self.g, (int, np.integer)) or not MIN_GROUP <= self.g <= MAX_GROUP:
            raise ValueError(f"g must be in {MIN_GROUP}..{MAX_GROUP}, got {self.g}")
        if not isinstance(self.dir_bits, (int, np.integer)) or not 1 <= self.dir_bits <= MAX_DIR_BITS:
            raise ValueError(f"direction bits must be in 1..{MAX_DIR_BITS}, got {self.dir_bits}")
        if self.mag_mode not in MAG_MODES:
            raise ValueError(f"magnitude mode must be one of {', '.join(MAG_MODES)}, got {self.mag_mode!r}")
        if not isinstance(self.mag_bits, (int, np.integer)) or not 1 <= self.mag_bits <= MAX_MAG_BITS:
            raise ValueError(f"magnitude bits must be in 1..{MAX_MAG_BITS}, got {self.mag_bits}")
        if self.legacy_mag and self.mag_mode != "quant":
            raise ValueError("legacy_mag (the seed's N(0,1) table on α/s) applies to mode=quant only")
        if self.mag_mode == "quant" and not self.legacy_mag and self.mag_bits < 2:
            raise ValueError(
                "the range table at 1 bit is sign only (every group decodes to ±s); "
                "use mag >= 2, or legacy_mag for the seed's ±0.798 table"
            )
        if self.legacy_mag and self.mag_bits > LEGACY_MAX_MAG_BITS:
            raise ValueError(
                f"legacy_mag needs mag <= {LEGACY_MAX_MAG_BITS}: the seed's N(0,1) table exists for 1..4 bits only"
            )
        if isinstance(self.centroids, str):
            if self.centroids not in ("quantile", "lloyd"):
                raise ValueError(f"centroids must be 'quantile', 'lloyd' or a table, got {self.centroids!r}")
        else:
            try:
                lloyd_max.validate_codebook(self.centroids, int(self.mag_bits))
            except InputError as exc:
                raise ValueError(f"riemann centroid table: {exc}") from None

    @property
    def n_directions(self) -> int:
        return 1 << int(self.dir_bits)

    def groups(self, width: int) -> int:
        return n_groups(width, int(self.g))

    def levels(self) -> np.ndarray | None:
        """The magnitude table (host float32, ascending), None in f16 mode."""
        if self.mag_mode == "f16":
            return None
        if self.mag_mode == "quant":
            return lloyd_max.seed_table(int(self.mag_bits)) if self.legacy_mag else range_levels(int(self.mag_bits))
        if self.centroids == "quantile":
            return quantile_levels(int(self.mag_bits))
        if self.centroids == "lloyd":
            return lloyd_max.gaussian_codebook(int(self.mag_bits))
        return lloyd_max.validate_codebook(self.centroids, int(self.mag_bits))

    # byte accounting (spec §2.5) -------------------------------------------------------------
    def dir_nbytes(self, width: int) -> int:
        return -(-self.groups(width) * int(self.dir_bits) // 8)

    def mag_nbytes(self, width: int) -> int:
        """Magnitude bytes per row: 2G (f16), ceil(G·mb/8) + 2 (quant), ceil(G·mb/8) (riemann)."""
        groups = self.groups(width)
        if self.mag_mode == "f16":
            return 2 * groups
        packed = -(-groups * int(self.mag_bits) // 8)
        return packed + (floats.NBYTES["f16"] if self.mag_mode == "quant" else 0)

    def vector_nbytes(self, width: int) -> int:
        """Bytes of one serialised row (the seed's ``serialized_nbytes``)."""
        return self.dir_nbytes(width) + self.mag_nbytes(width)

    def analytical_bits(self, width: int) -> int:
        """The seed's ``per_vector_bits_analytical``: G·db + 16G (f16) or G·db + G·mb (+16 in quant)."""
        groups = self.groups(width)
        mag = 16 * groups if self.mag_mode == "f16" else groups * int(self.mag_bits)
        return groups * int(self.dir_bits) + mag + (16 if self.mag_mode == "quant" else 0)


@dataclass(frozen=True)
class GroupCodes:
    """Encoded rows.

    dir_ids : int64 [n, G]
    mags : int64 [n, G] magnitude indices (quant, riemann) or float32 [n, G] f16-rounded α (f16)
    scales : float32 [n] f16-rounded per-vector scales (quant), else None
    """

    dir_ids: Any
    mags: Any
    scales: Any | None


# -- magnitudes ------------------------------------------------------------------------------
def quantize_magnitudes(alpha: Any, cfg: BesiConfig, xp: ModuleType, group_scales: Any | None = None) -> tuple[Any, Any | None]:
    """Code the magnitudes alpha [n, G] per ``cfg``: returns (mags [n, G], scales [n] or None).

    ``group_scales`` (riemann only): fixed scales [G] or [n, G], already in the precision the
    decoder will see (e.g. f16-rounded when stored as f16).
    """
    if cfg.mag_mode == "f16":
        return floats.round_to(alpha, "f16", xp, "Besicovitch magnitudes"), None
    levels = cfg.levels()
    if cfg.mag_mode == "quant":
        peak = xp.abs(alpha).max(axis=1)
        if cfg.legacy_mag:
            # the seed: index against the unrounded floored scale, store f16(s)
            s = xp.maximum(peak, np.float32(SCALE_FLOOR))
            idx = lloyd_max.quantize(alpha / s[:, None], levels, xp)
            return idx, floats.round_to(s, "f16", xp, "per-vector Besicovitch scales")
        s16 = floats.round_to(peak, "f16", xp, "per-vector Besicovitch scales")
        safe = xp.where(s16 > 0, s16, np.float32(1))
        return lloyd_max.quantize(alpha / safe[:, None], levels, xp), s16
    scales = _check_group_scales(group_scales, alpha.shape, xp)
    safe = xp.where(scales > 0, scales, np.float32(1))
    return lloyd_max.quantize(alpha / safe, levels, xp), None


def dequantize_magnitudes(mags: Any, scales: Any | None, cfg: BesiConfig, xp: ModuleType,
                          group_scales: Any | None = None) -> Any:
    """Decoded magnitudes α̂ [n, G] (float32)."""
    if cfg.mag_mode == "f16":
        return xp.asarray(mags, dtype=xp.float32)
    lv = to_device(cfg.levels(), xp)
    if cfg.mag_mode == "quant":
        if scales is None:
            raise InputError("mode quant needs the per-vector scales to decode")
        return lv[mags] * scales[:, None]
    return lv[mags] * _check_group_scales(group_scales, mags.shape, xp)


def _check_group_scales(group_scales: Any | None, shape: tuple[int, ...], xp: ModuleType) -> Any:
    if group_scales is None:
        raise InputError("mode riemann needs fixed per-group scales (group_scales [G] or [n, G])")
    s = xp.asarray(group_scales, dtype=xp.float32)
    n, groups = (int(v) for v in shape)
    if s.shape not in ((groups,), (n, groups)):
        raise InputError(f"group_scales must have shape ({groups},) or ({n}, {groups}), got {tuple(s.shape)}")
    if not bool(xp.isfinite(s).all()) or bool((s < 0).any()):
        raise InputError("group_scales must be finite and non-negative")
    return s if s.ndim == 2 else s[None, :]


def group_scales(z: Any, g: int, method: str, xp: ModuleType, alpha: Any | None = None,
                 dir_bits: int = 4) -> Any:
    """Fixed per-group scales [G] (float32) of rows z [n, W], the seed's Riemannian scale methods.

    ``pct99`` / ``pct95`` / ``pct999``: ``percentile(|α_k|, XX) / 2.7`` (the seed's best is pct99);
    ``rms``: RMS of α_k; ``sqrt_trace``: ``√mean(z_k²)`` over the group's coordinates and rows.
    ``alpha`` [n, G] is the projection to use; when None it is computed with a ``dir_bits`` Haar
    assignment (the seed's ``rms_alpha`` used db = 4).
    """
    if method not in SCALE_METHODS:
        raise InputError(f"scale method must be one of {', '.join(SCALE_METHODS)}, got {method!r}")
    n, w = (int(s) for s in z.shape)
    groups = n_groups(w, g)
    if method == "sqrt_trace":
        zg = xp.asarray(z, dtype=xp.float32).reshape(n, groups, g)
        return xp.sqrt((zg * zg).mean(axis=(0, 2))).astype(xp.float32)
    if alpha is None:
        _, alpha = assign(z, g, dir_bits, xp)
    if method == "rms":
        return xp.sqrt((alpha * alpha).mean(axis=0)).astype(xp.float32)
    pct = {"pct95": 95.0, "pct99": 99.0, "pct999": 99.9}[method]
    return (xp.percentile(xp.abs(alpha), pct, axis=0) / PCT_DIVISOR).astype(xp.float32)


# -- whole rows ------------------------------------------------------------------------------
def encode_groups(z: Any, cfg: BesiConfig, xp: ModuleType, group_scales: Any | None = None) -> GroupCodes:
    """Encode rows z [n, W] (W divisible by g). ``group_scales`` is needed in riemann mode only."""
    if z.ndim != 2:
        raise InputError(f"expected rows [n, W], got shape {tuple(z.shape)}")
    ids, alpha = assign(z, int(cfg.g), int(cfg.dir_bits), xp)
    mags, scales = quantize_magnitudes(alpha, cfg, xp, group_scales)
    return GroupCodes(ids, mags, scales)


def decode_groups(codes: GroupCodes, cfg: BesiConfig, xp: ModuleType, group_scales: Any | None = None) -> Any:
    """Rows ẑ [n, G·g] (float32) from :func:`encode_groups` output."""
    alpha_hat = dequantize_magnitudes(codes.mags, codes.scales, cfg, xp, group_scales)
    return reconstruct(codes.dir_ids, alpha_hat, int(cfg.g), int(cfg.dir_bits), xp)


# -- row-aligned packing and the per-vector serialisation ------------------------------------
def pack_rows(values: Any, bits: int, xp: ModuleType) -> Any:
    """Pack int values [n, G] (< 2**bits) row by row: uint8 [n, ceil(G·bits/8)].

    Each row is :func:`kakeya_lib.bitpack.pack_bits` of that row alone (LSB-first), its last
    byte zero-padded, so every row starts on a byte boundary (the seed's per-vector layout).
    """
    n, count = (int(s) for s in values.shape)
    nb = -(-count * bits // 8)
    if n == 0 or count == 0:
        return xp.zeros((n, nb), dtype=xp.uint8)
    if (count * bits) % 8 == 0:  # rows already end on a byte: one stream is the same bytes
        return pack_bits(values.reshape(-1), bits).reshape(n, nb)
    v = xp.asarray(values)
    if v.dtype.kind not in "iu" or int(v.min()) < 0 or int(v.max()) >= (1 << bits):
        raise InputError(f"values must be integers in [0, {1 << bits}) to pack at {bits} bits")
    bitmat = ((v.astype(xp.int64)[:, :, None] >> xp.arange(bits, dtype=xp.int64)) & 1).reshape(n, count * bits)
    padded = xp.zeros((n, nb * 8), dtype=xp.int64)
    padded[:, : count * bits] = bitmat
    weights = xp.asarray(1 << np.arange(8, dtype=np.int64))
    return (padded.reshape(n, nb, 8) * weights).sum(axis=2).astype(xp.uint8)


def unpack_rows(packed: Any, bits: int, count: int, xp: ModuleType) -> Any:
    """Inverse of :func:`pack_rows`: uint8 [n, ceil(count·bits/8)] -> int64 [n, count].

    Raises CorruptBlobError on a wrong row length or non-zero padding bits.
    """
    n, nb = (int(s) for s in packed.shape)
    if nb != -(-count * bits // 8):
        raise CorruptBlobError(f"packed rows hold {nb} bytes, {count} values of {bits} bits need {-(-count * bits // 8)}")
    if n == 0 or count == 0:
        return xp.zeros((n, count), dtype=xp.int64)
    if (count * bits) % 8 == 0:
        return unpack_bits(packed.reshape(-1), bits, n * count).reshape(n, count)
    stream = ((packed.astype(xp.int64)[:, :, None] >> xp.arange(8, dtype=xp.int64)) & 1).reshape(n, nb * 8)
    if bool(stream[:, count * bits :].any()):
        raise CorruptBlobError("non-zero padding bits after a packed row (corrupted bytes?)")
    bitmat = stream[:, : count * bits].reshape(n, count, bits)
    return (bitmat << xp.arange(bits, dtype=xp.int64)).sum(axis=2).astype(xp.int64)


def codes_to_bytes(codes: GroupCodes, cfg: BesiConfig, xp: ModuleType) -> bytes:
    """Serialise rows as the seed's per-vector records, ``cfg.vector_nbytes(W)`` bytes each:
    ``[dir ids | magnitude indices or f16 α | f16 scale (quant)]``."""
    n = int(codes.dir_ids.shape[0])
    parts = [pack_rows(codes.dir_ids, int(cfg.dir_bits), xp)]
    if cfg.mag_mode == "f16":
        parts.append(_f16_rows(codes.mags, xp))
    else:
        parts.append(pack_rows(codes.mags, int(cfg.mag_bits), xp))
        if cfg.mag_mode == "quant":
            parts.append(_f16_rows(codes.scales.reshape(n, 1), xp))
    return to_host(xp.concatenate(parts, axis=1)).tobytes()


def codes_from_bytes(buf: bytes | memoryview, n: int, width: int, cfg: BesiConfig, xp: ModuleType) -> GroupCodes:
    """Inverse of :func:`codes_to_bytes` for ``n`` rows of width ``width`` (lengths validated)."""
    groups = cfg.groups(width)
    rec = cfg.vector_nbytes(width)
    if len(buf) != n * rec:
        raise CorruptBlobError(f"Besicovitch codes hold {len(buf)} bytes, {n} rows of {rec} B need {n * rec}")
    rows = xp.asarray(np.frombuffer(buf, dtype=np.uint8).reshape(n, rec))
    nd = cfg.dir_nbytes(width)
    ids = unpack_rows(rows[:, :nd], int(cfg.dir_bits), groups, xp)
    if cfg.mag_mode == "f16":
        return GroupCodes(ids, _f16_from_rows(rows[:, nd:], groups, xp, "Besicovitch magnitudes"), None)
    nm = -(-groups * int(cfg.mag_bits) // 8)
    mags = unpack_rows(rows[:, nd : nd + nm], int(cfg.mag_bits), groups, xp)
    if cfg.mag_mode == "riemann":
        return GroupCodes(ids, mags, None)
    scales = _f16_from_rows(rows[:, nd + nm :], 1, xp, "per-vector Besicovitch scales").reshape(n)
    if bool((scales < 0).any()):
        raise CorruptBlobError("a per-vector Besicovitch scale is negative (corrupted bytes?)")
    return GroupCodes(ids, mags, scales)


def _f16_rows(values: Any, xp: ModuleType) -> Any:
    n = int(values.shape[0])
    raw = np.frombuffer(floats.to_bytes(values, "f16", xp, "Besicovitch f16 values"), dtype=np.uint8)
    return xp.asarray(raw.reshape(n, -1))


def _f16_from_rows(rows: Any, count: int, xp: ModuleType, what: str) -> Any:
    n = int(rows.shape[0])
    raw = to_host(xp.ascontiguousarray(rows)).tobytes()
    return floats.from_bytes(raw, "f16", n * count, xp, what).reshape(n, count)
