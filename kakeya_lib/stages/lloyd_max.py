"""Lloyd–Max scalar quantiser (Lloyd 1982; Max 1960) for unit-variance coordinates.

Codebooks for N(0, 1) and 1..8 bits are *computed* (Lloyd's fixed-point iteration with exact
Gaussian conditional means from scipy), not only hard-coded; the seed's 1..4-bit tables
(:data:`SEED_GAUSSIAN_TABLES`) are kept to test against. User codebooks (e.g. calibrated on real
residuals, spec §5.3) are any strictly ascending table of 2**b finite values.

Quantisation is nearest level with ties to the lower index, done with ``searchsorted`` on the
midpoints between levels (one vectorised pass on numpy and CuPy).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import to_device
from ..errors import InputError

MAX_BITS = 8

# The seed's hard-coded N(0,1) tables (quantize.rs), for comparison in tests.
SEED_GAUSSIAN_TABLES: dict[int, tuple[float, ...]] = {
    1: (0.798156,),
    2: (0.4528, 1.5100),
    3: (0.244943, 0.756268, 1.343757, 2.151945),
    4: (0.1281, 0.3885, 0.6566, 0.9422, 1.2563, 1.6177, 2.0690, 2.7322),
}


def seed_table(bits: int) -> np.ndarray:
    """The seed's symmetric table for ``bits`` (ascending, float32)."""
    half = np.asarray(SEED_GAUSSIAN_TABLES[bits], dtype=np.float32)
    return np.concatenate([-half[::-1], half])


def _gaussian_centroids(levels: np.ndarray) -> np.ndarray:
    """Lloyd's update: the N(0,1) mean of each level's Voronoi cell."""
    from scipy.special import ndtr  # noqa: PLC0415  (scipy only needed here)

    edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
    pdf = np.exp(-0.5 * edges**2) / np.sqrt(2.0 * np.pi)
    return (pdf[:-1] - pdf[1:]) / np.diff(ndtr(edges))


@functools.lru_cache(maxsize=None)
def _gaussian_codebook(bits: int) -> tuple[float, ...]:
    from scipy.optimize import root  # noqa: PLC0415
    from scipy.special import ndtri  # noqa: PLC0415

    n = 1 << bits
    # Start from the companding approximation (level density ∝ p^(1/3), i.e. N(0, 3) quantiles),
    # take a few hundred Lloyd steps, then solve the fixed point "level = cell mean" by Powell's
    # hybrid method: plain Lloyd needs >50k steps at 8 bits.
    levels = ndtri((np.arange(n) + 0.5) / n) * np.sqrt(3.0)
    for _ in range(200):
        levels = _gaussian_centroids(levels)
    levels = root(lambda v: _gaussian_centroids(v) - v, levels, method="hybr", tol=1e-13).x
    residual = float(np.max(np.abs(_gaussian_centroids(levels) - levels)))
    if residual > 1e-9 or not (np.diff(levels) > 0).all():
        raise RuntimeError(f"Lloyd–Max solve for {bits} bits did not converge (residual {residual:.2e})")
    levels = (levels - levels[::-1]) / 2  # exact symmetry
    return tuple(float(v) for v in levels)


def gaussian_codebook(bits: int) -> np.ndarray:
    """Lloyd–Max levels [2**bits] for N(0,1), ascending float32 (computed, cached)."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise InputError(f"Lloyd–Max bit width must be in 1..{MAX_BITS}, got {bits!r}")
    return np.asarray(_gaussian_codebook(int(bits)), dtype=np.float32)


def validate_codebook(levels: Any, bits: int | None = None) -> np.ndarray:
    """Check a user codebook: 1-D, 2**b finite values, strictly ascending. Returns float32 [2**b]."""
    arr = np.asarray(levels, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or (arr.size & (arr.size - 1)) != 0 or arr.size > (1 << MAX_BITS):
        raise InputError(f"a codebook needs 2**b levels (b in 1..{MAX_BITS}), got shape {arr.shape}")
    if bits is not None and arr.size != (1 << bits):
        raise InputError(f"codebook has {arr.size} levels but bits={bits} needs {1 << bits}")
    if not np.isfinite(arr).all():
        raise InputError("codebook levels must be finite")
    arr32 = arr.astype(np.float32)
    if not (np.diff(arr32) > 0).all():
        raise InputError("codebook levels must be strictly ascending")
    return arr32


def load_codebook(path: str | Path, bits: int | None = None) -> np.ndarray:
    """Read a codebook file: ``.npy`` (no pickle) or raw little-endian float32 (the seed's ``.f32``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"codebook file {str(p)!r} does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        raw = p.read_bytes()
        if len(raw) % 4:
            raise InputError(f"codebook file {str(p)!r} is not a whole number of float32 values")
        arr = np.frombuffer(raw, dtype="<f4")
    return validate_codebook(arr, bits)


def quantize(z: Any, levels: Any, xp: ModuleType) -> Any:
    """Index of the nearest level for every element of ``z`` (ties to the lower index).

    Parameters
    ----------
    z : array [...] float32
    levels : array [2**b] ascending (host or ``xp``)

    Returns
    -------
    array [...] int64 in ``[0, 2**b)``
    """
    lv = to_device(np.asarray(levels, dtype=np.float32), xp) if isinstance(levels, np.ndarray) else levels
    mids = (lv[1:] + lv[:-1]) * np.float32(0.5)
    # side="left": a value exactly on a midpoint goes to the lower level.
    return xp.searchsorted(mids, z, side="left").astype(xp.int64)


def dequantize(idx: Any, levels: Any, xp: ModuleType) -> Any:
    """Levels at the given indices (same shape as ``idx``)."""
    lv = to_device(np.asarray(levels, dtype=np.float32), xp) if isinstance(levels, np.ndarray) else levels
    return lv[idx]
