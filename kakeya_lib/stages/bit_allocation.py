"""Bit allocation over transform coordinates (KVTC's dynamic programme) and its uniform quantiser.

KVTC (Staniszewski & Łańcucki, arXiv 2511.01815) quantises each PCA coordinate ``i`` of a
vector with its own bit width ``b_i``; trailing, low-variance coordinates may get ``b_i = 0``
(they are dropped and decode as the calibration mean). Given a distortion table ``D[i, b]``
(expected squared error of coordinate ``i`` at ``b`` bits, ``D[i, 0]`` = its variance) and a
budget of ``B`` bits per vector, :func:`allocate_bits` returns the integer widths minimising
``Σ_i D[i, b_i]`` subject to ``Σ_i b_i ≤ B`` *exactly* (a knapsack over coordinates)::

    F_0(c) = 0                                   for c = 0 … B
    F_i(c) = min_{b ≤ min(c, B_max)} F_{i-1}(c − b) + D[i, b]

``F_i(c)`` is the least distortion of the first ``i`` coordinates using at most ``c`` bits, so
``F_d(B)`` is the optimum and the widths come back by backtracking the stored arg-mins. Work
``O(d · B · B_max)``, vectorised over the budget axis ``c``; memory ``d · (B + 1)`` bytes for the
arg-mins. Ties go to the smaller width (fewer bits for the same distortion).

The quantiser (:func:`quantize` / :func:`dequantize`)
-------------------------------------------------------
A symmetric **mid-rise** uniform quantiser with ``L = 2**b`` levels and step ``Δ``::

    q = clip(floor(y / Δ) + L/2, 0, L − 1)          (an integer in [0, L))
    ŷ = (q − L/2 + 1/2) · Δ                         (levels ±Δ/2, ±3Δ/2, …, ±(L−1)Δ/2)

Mid-rise because the coordinates are centred and roughly symmetric, and at ``b = 1`` it still
has two useful levels (a mid-tread grid would have one). Values beyond ``±LΔ/2`` are clipped to
the outer levels, so ``Δ`` trades granular against overload error.

Distortion models
-----------------
* :func:`measured_distortion_table` (the one KVTC calibration uses): on the calibration samples
  of each coordinate, search the step ``Δ[i, b]`` that minimises the *measured* mean squared
  error of exactly this quantiser (a log grid of multiples of the Gaussian-optimal step, then a
  finer grid around each coordinate's best), and tabulate that error (in-sample). The table is then exact
  for the calibration data, heavy tails and all, which the Gaussian model is not.
* :func:`gaussian_distortion_table`: the model ``D[i, b] = λ_i · G(b)``, with ``G(b)`` the least
  MSE of this quantiser for N(0, 1) at ``2**b`` levels (closed form per cell, minimised over the
  step: :func:`gaussian_optimal_step`; e.g. ``G(1) = 0.3634``, ``G(2) = 0.1188``,
  ``G(3) = 0.03744``, and ``G(b) ≈ c · 4**−b`` beyond), ``G(0) = 1``.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import InputError

MAX_BITS = 8  # symbols fit one byte
COARSE_ROWS = 4096  # rows (evenly strided) that the coarse step grid is evaluated on
FINE_ROWS = 16384  # ... and the fine grid; the table itself is measured on every row
_COARSE = np.geomspace(0.25, 4.0, 15)  # step multipliers of the Gaussian-optimal step (1.0 is the middle one)
_FINE_SPAN = float(_COARSE[1] / _COARSE[0])  # refine within one coarse grid ratio either side
_FINE = np.geomspace(1 / _FINE_SPAN, _FINE_SPAN, 9)


# --------------------------------------------------------------------------------------------
# The dynamic programme


def allocate_bits(dist: Any, budget: int) -> np.ndarray:
    """Integer bits per coordinate minimising ``Σ dist[i, b_i]`` subject to ``Σ b_i ≤ budget``.

    Parameters
    ----------
    dist : array [d, B_max + 1], finite, >= 0
        ``dist[i, b]`` = distortion of coordinate ``i`` at ``b`` bits (``dist[i, 0]`` = its
        variance, the error of dropping it). Need not be monotone in ``b``.
    budget : int >= 0
        Total bits for the ``d`` coordinates of one vector.

    Returns
    -------
    np.ndarray [d] int64, each in ``0 … B_max``, summing to at most ``budget``; an exact optimum,
    deterministic (on ties each step keeps the smaller width).
    """
    table = np.asarray(dist, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise InputError(f"distortion table must be [d, B_max + 1] with d >= 1, got shape {table.shape}")
    if not np.isfinite(table).all() or (table < 0).any():
        raise InputError("distortion table must be finite and non-negative")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise InputError(f"bit budget must be a non-negative integer, got {budget!r}")
    d, n_widths = table.shape
    b_max = n_widths - 1
    cap = int(min(int(budget), d * b_max))  # more budget than d * B_max cannot be spent
    best = np.zeros(cap + 1)  # F_0(c) = 0
    choice = np.zeros((d, cap + 1), dtype=np.uint8)
    cand = np.empty(cap + 1)
    for i in range(d):
        row = table[i]
        new = best + row[0]
        arg = np.zeros(cap + 1, dtype=np.uint8)
        for b in range(1, min(b_max, cap) + 1):
            cand[:b] = np.inf  # fewer than b bits available
            np.add(best[: cap + 1 - b], row[b], out=cand[b:])
            better = cand < new  # strict: ties keep the smaller width
            np.copyto(new, cand, where=better)
            arg[better] = b
        best = new
        choice[i] = arg
    bits = np.zeros(d, dtype=np.int64)
    c = cap
    for i in range(d - 1, -1, -1):
        bits[i] = choice[i, c]
        c -= int(bits[i])
    return bits


def allocation_cost(dist: Any, bits: Any) -> float:
    """``Σ_i dist[i, bits[i]]``: the objective :func:`allocate_bits` minimises."""
    table = np.asarray(dist, dtype=np.float64)
    b = np.asarray(bits, dtype=np.int64)
    return float(table[np.arange(table.shape[0]), b].sum())


# --------------------------------------------------------------------------------------------
# The quantiser


def _check_bits(bits: Any) -> np.ndarray:
    b = np.asarray(bits, dtype=np.int64)
    if b.size and (b.min() < 1 or b.max() > MAX_BITS):
        raise InputError(f"quantiser bit widths must be in 1..{MAX_BITS}, got range [{b.min()}, {b.max()}]")
    return b


def quantize(y: Any, steps: Any, bits: Any, xp: ModuleType = np) -> Any:
    """Mid-rise uniform indices of ``y`` per column (see the module docstring).

    Parameters
    ----------
    y : array [n, m] float (numpy or CuPy, per ``xp``)
    steps : array [m] > 0, the step ``Δ`` of each column (on ``xp``)
    bits : array [m] int in 1..MAX_BITS, the width of each column (host)

    Returns
    -------
    array [n, m] uint8 on ``xp``, column ``j`` in ``[0, 2**bits[j])``.
    """
    b = _check_bits(bits)
    half = xp.asarray((1 << b) // 2, dtype=xp.float32)
    q = xp.floor(y.astype(xp.float32) / steps.astype(xp.float32)) + half
    q = xp.minimum(xp.maximum(q, 0), 2 * half - 1)
    return q.astype(xp.uint8)


def dequantize(q: Any, steps: Any, bits: Any, xp: ModuleType = np) -> Any:
    """Levels of indices ``q`` [n, m] (inverse of :func:`quantize`): ``(q − L/2 + 1/2) · Δ``, float32."""
    b = _check_bits(bits)
    half = xp.asarray((1 << b) // 2, dtype=xp.float32)
    return (q.astype(xp.float32) - half + xp.float32(0.5)) * steps.astype(xp.float32)


# --------------------------------------------------------------------------------------------
# Distortion tables


def _gaussian_cell_mse(step: np.ndarray, levels: int) -> np.ndarray:
    """MSE of the mid-rise quantiser with ``levels`` levels for N(0, 1), per step in ``step``."""
    from scipy.special import ndtr  # noqa: PLC0415

    s = np.asarray(step, dtype=np.float64)[..., None]
    k = np.arange(levels)
    r = (k - levels / 2 + 0.5) * s  # cell levels
    lo = np.where(k == 0, -np.inf, (k - levels / 2) * s)
    hi = np.where(k == levels - 1, np.inf, (k + 1 - levels / 2) * s)
    pdf = lambda t: np.exp(-0.5 * np.square(t)) / math.sqrt(2 * math.pi)  # noqa: E731
    t_pdf = lambda t: np.where(np.isfinite(t), t * pdf(np.where(np.isfinite(t), t, 0.0)), 0.0)  # noqa: E731
    mass = ndtr(hi) - ndtr(lo)
    # ∫_a^b (x − r)² φ(x) dx = (1 + r²)(Φ(b) − Φ(a)) − 2r(φ(a) − φ(b)) − (bφ(b) − aφ(a))
    cell = (1 + r * r) * mass - 2 * r * (pdf(lo) - pdf(hi)) - (t_pdf(hi) - t_pdf(lo))
    return cell.sum(axis=-1)


@functools.lru_cache(maxsize=None)
def gaussian_optimal_step(bits: int) -> tuple[float, float]:
    """``(Δ, MSE)`` of the MSE-optimal mid-rise step for N(0, 1) at ``2**bits`` levels.

    A log grid over the loading ``LΔ/2 ∈ [0.3, 8]``, then two finer grids around the best (the
    MSE is unimodal in Δ); agrees with Max (1960) to 4 digits (``bits=1``: Δ = 1.596, MSE 0.3634).
    """
    if not 1 <= int(bits) <= MAX_BITS:
        raise InputError(f"bits must be in 1..{MAX_BITS}, got {bits!r}")
    levels = 1 << int(bits)
    grid = np.geomspace(0.3, 8.0, 400) * 2 / levels
    for _ in range(3):
        mse = _gaussian_cell_mse(grid, levels)
        j = int(np.argmin(mse))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
        grid = np.linspace(lo, hi, 201)
    mse = _gaussian_cell_mse(grid, levels)
    j = int(np.argmin(mse))
    return float(grid[j]), float(mse[j])


def gaussian_distortion_table(variances: Any, max_bits: int = MAX_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Model tables for Gaussian coordinates of variance ``λ_i``: steps and ``D[i, b] = λ_i · G(b)``.

    Parameters
    ----------
    variances : array [d], >= 0
    max_bits : int in 1..MAX_BITS

    Returns
    -------
    steps : np.ndarray [d, max_bits], ``Δ[i, b−1] = √λ_i · Δ_gauss(b)`` (a tiny positive floor
        where ``λ_i = 0``)
    dist : np.ndarray [d, max_bits + 1], ``D[i, 0] = λ_i``
    """
    lam = np.asarray(variances, dtype=np.float64).reshape(-1)
    if not np.isfinite(lam).all() or (lam < 0).any():
        raise InputError("variances must be finite and non-negative")
    _check_max_bits(max_bits)
    sigma = _sigma_floor(np.sqrt(lam))
    g = np.array([1.0] + [gaussian_optimal_step(b)[1] for b in range(1, max_bits + 1)])
    s = np.array([gaussian_optimal_step(b)[0] for b in range(1, max_bits + 1)])
    return sigma[:, None] * s[None, :], lam[:, None] * g[None, :]


def measured_distortion_table(samples: Any, max_bits: int = MAX_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Steps and distortions of :func:`quantize` measured on calibration samples, per column.

    For each column ``i`` (a centred transform coordinate) and width ``b``, the step is searched
    over ``m · σ_i · Δ_gauss(b)`` (``σ_i`` the column's RMS): 15 multipliers ``m`` on a log grid
    over [1/4, 4] (on at most ``COARSE_ROWS`` evenly strided rows), then 9 on a finer log grid
    around each column's best plus ``m = 1`` (on at most ``FINE_ROWS``); the distortion is the
    mean squared error of quantising all the samples at the chosen step. ``D[i, 0]`` is the mean
    square of the column (decoding it as 0). Both are in-sample: with few samples the search under-covers the tails
    (at 7-8 bits the chosen range hugs the sample maximum), so give it thousands of rows.

    Parameters
    ----------
    samples : array [n, d] float, n >= 1 (centred coordinates; numpy)
    max_bits : int in 1..MAX_BITS

    Returns
    -------
    steps : np.ndarray [d, max_bits] float64 > 0
    dist : np.ndarray [d, max_bits + 1] float64 >= 0
    """
    y = np.asarray(samples)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise InputError(f"samples must be [n, d] with n, d >= 1, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise InputError("calibration samples hold NaN/Inf")
    _check_max_bits(max_bits)
    n, d = y.shape
    ms = np.mean(np.square(y, dtype=np.float64), axis=0)
    sigma = _sigma_floor(np.sqrt(ms))
    z = (y / sigma).astype(np.float32)  # unit-RMS columns: one multiplier grid serves all
    steps = np.empty((d, max_bits))
    dist = np.empty((d, max_bits + 1))
    dist[:, 0] = ms
    coarse_rows = z[:: max(1, n // COARSE_ROWS)]  # the coarse grid only brackets the optimum
    fine_rows = z[:: max(1, n // FINE_ROWS)]
    for b in range(1, max_bits + 1):
        base = gaussian_optimal_step(b)[0]
        width = np.full(d, b)
        mse = np.stack([_column_mse(coarse_rows, np.full(d, m * base), width) for m in _COARSE])  # [15, d]
        best_m = _COARSE[np.argmin(mse, axis=0)]
        # [10, d] per-column candidates; the Gaussian-optimal step itself too, so the measured
        # table is never worse than the Gaussian model's step on these samples
        fine = np.vstack([best_m[None, :] * _FINE[:, None], np.ones((1, d))])
        mse_f = np.stack([_column_mse(fine_rows, fine[j] * base, width) for j in range(fine.shape[0])])
        chosen = fine[np.argmin(mse_f, axis=0), np.arange(d)] * base
        steps[:, b - 1] = chosen * sigma
        dist[:, b] = (_column_mse(z, chosen, width) if fine_rows.shape[0] < n else mse_f.min(axis=0)) * sigma * sigma
    return steps, dist


def _column_mse(z: np.ndarray, steps: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Per-column MSE of :func:`quantize` / :func:`dequantize` on ``z`` [n, d] (float32), fused:
    in units of the step the error is ``u − (clip(floor(u), −L/2, L/2 − 1) + 1/2)``, ``u = z/Δ``."""
    step32 = steps.astype(np.float32)
    half = ((1 << bits.astype(np.int64)) // 2).astype(np.float32)
    u = z / step32
    q = np.floor(u)
    np.maximum(q, -half, out=q)  # two ufuncs: np.clip with array bounds is several times slower
    np.minimum(q, half - 1, out=q)
    u -= q
    u -= np.float32(0.5)
    return np.einsum("ij,ij->j", u, u, dtype=np.float64) / z.shape[0] * np.square(step32.astype(np.float64))


def _sigma_floor(sigma: np.ndarray) -> np.ndarray:
    """RMS with a positive floor, so steps stay > 0 for constant (zero-variance) coordinates."""
    peak = float(sigma.max()) if sigma.size else 0.0
    return np.maximum(sigma, max(peak * 1e-12, 1e-30))


def _check_max_bits(max_bits: int) -> None:
    if isinstance(max_bits, bool) or not isinstance(max_bits, (int, np.integer)) or not 1 <= max_bits <= MAX_BITS:
        raise InputError(f"max_bits must be an integer in 1..{MAX_BITS}, got {max_bits!r}")
