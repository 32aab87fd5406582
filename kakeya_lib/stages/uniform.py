"""Uniform (mid-tread) scalar quantiser for unit-variance coordinates, with Gaussian centroids.

With ``bits`` b the grid has ``L = 2**b - 1`` levels ``(i - h)·step``, ``h = 2**(b-1) - 1``,
``i = 0..L-1`` (zero is a level, so the index histogram is symmetric and peaked: what an entropy
coder wants). Decisions are the uniform grid's midpoints; reconstruction is each cell's N(0, 1)
conditional mean (the centroid condition), which for the outer, open cells is not the grid point.

Two uses:

* fixed rate (``step=0``): the MSE-optimal step for ``L`` levels, stored in ``b`` bits — the
  "plain uniform" rung of the stage ablation, to measure what Lloyd–Max buys;
* entropy-coded (a chosen ``step``, indices rANS-coded): entropy-coded uniform quantisation is
  within ~0.25 bit of the Gaussian rate–distortion bound at these rates, while fixed-rate
  Lloyd–Max is ~0.5–0.7 bit away, so the same MSE costs fewer bytes.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import InputError

MIN_BITS, MAX_BITS = 2, 8


def _check(bits: int, step: float) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise InputError(f"uniform quantiser bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    if not (step >= 0 and np.isfinite(step)):
        raise InputError(f"uniform quantiser step must be a finite number >= 0, got {step}")


def half_levels(bits: int) -> int:
    """``h``: indices run over ``0..2h`` (``2h + 1 = 2**bits - 1`` levels)."""
    return (1 << (bits - 1)) - 1


def _centroids(bits: int, step: float) -> np.ndarray:
    from scipy.special import ndtr  # noqa: PLC0415

    h = half_levels(bits)
    grid = (np.arange(2 * h + 1) - h) * step
    edges = np.concatenate([[-np.inf], grid[:-1] + step / 2, [np.inf]])
    pdf = np.exp(-0.5 * edges**2) / np.sqrt(2 * np.pi)
    mass = np.diff(ndtr(edges))
    return np.where(mass > 1e-300, (pdf[:-1] - pdf[1:]) / np.maximum(mass, 1e-300), grid)


def _gaussian_mse(bits: int, step: float) -> float:
    """Expected squared error of the quantiser on N(0, 1), by numerical integration."""
    from scipy import integrate  # noqa: PLC0415

    h = half_levels(bits)
    lv = _centroids(bits, step)
    edges = np.concatenate([[-np.inf], ((np.arange(2 * h + 1) - h) * step)[:-1] + step / 2, [np.inf]])
    total = 0.0
    for i in range(2 * h + 1):
        f = lambda z, c=lv[i]: (z - c) ** 2 * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)  # noqa: E731
        total += integrate.quad(f, edges[i], edges[i + 1])[0]
    return total


@functools.lru_cache(maxsize=None)
def optimal_step(bits: int) -> float:
    """The MSE-optimal step for N(0, 1) with ``2**bits - 1`` levels."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    _check(bits, 1.0)
    res = minimize_scalar(lambda s: _gaussian_mse(bits, s), bounds=(1e-3, 4.0), method="bounded",
                          options={"xatol": 1e-7})
    return float(res.x)


@functools.lru_cache(maxsize=None)
def _levels_cached(bits: int, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in _centroids(bits, step))


def resolve_step(bits: int, step: float) -> float:
    """``step``, or the MSE-optimal step for ``bits`` when ``step == 0``."""
    _check(bits, step)
    return optimal_step(bits) if step == 0 else float(step)


def levels(bits: int, step: float) -> np.ndarray:
    """Reconstruction levels [2**bits - 1] (ascending float32) for ``step`` (0 = optimal)."""
    return np.asarray(_levels_cached(bits, resolve_step(bits, step)), dtype=np.float32)


def gaussian_mse(bits: int, step: float) -> float:
    """Expected MSE on N(0, 1) (for tests and rate–distortion tables)."""
    return _gaussian_mse(bits, resolve_step(bits, step))


def quantize(z: Any, bits: int, step: float, xp: ModuleType) -> Any:
    """Indices [...] int64 in ``0..2h``: the nearest grid point, clipped to the outer levels.

    Parameters
    ----------
    z : array [...] float32 (unit-variance coordinates)
    bits, step : grid (``step`` 0 = optimal; resolved here)
    """
    s = np.float32(resolve_step(bits, step))
    h = half_levels(bits)
    return (xp.clip(xp.rint(z / s), -h, h) + h).astype(xp.int64)
