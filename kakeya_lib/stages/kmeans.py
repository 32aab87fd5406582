"""Weighted spherical k-means on PCA coefficients with sign-invariant (|cos|) assignment, spec §1.6.

Each coefficient vector ``c`` is coded as ``t · centre[seg]`` plus a residual, where ``seg``
maximises ``|<c, centre>|`` and ``t = <c, centre[seg]>`` is signed, so a centre serves both
directions of its line. Fitting: farthest-first initialisation on the unit sphere (first centre
drawn by the seeded host RNG), then Lloyd iterations until no assignment changes; every step is
a matrix product over all vectors of the block (no per-vector loops).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .. import floats
from ..backend import host_rng
from ..backend import to_host as backend_to_host
from ..errors import InputError
from .pca import EPS


def fit(
    coeffs: Any,
    k: int,
    xp: ModuleType,
    weights: Any | None = None,
    max_iter: int = 32,
    seed: int = 0,
    storage: str = "f16",
) -> Any:
    """Fit unit-norm centres [k_eff, d] to coefficient rows coeffs [n, d].

    Rows with zero weight or (near-)zero norm are ignored; ``k_eff = min(k, valid rows)`` (at
    least 1: with no valid row the single centre is the first axis). Centres are returned
    rounded to ``storage`` (float32 values). See :func:`fit_batched` for many blocks at once.
    """
    return fit_batched(coeffs[None], k, xp, None if weights is None else weights[None], max_iter, seed, storage)[0]


def fit_batched(
    coeffs: Any,
    k: int,
    xp: ModuleType,
    weights: Any | None = None,
    max_iter: int = 32,
    seed: int = 0,
    storage: str = "f16",
) -> list[Any]:
    """:func:`fit` on B independent blocks at once (same result as B separate calls).

    Parameters
    ----------
    coeffs : array [B, n, d] float32 (zero-padded columns are fine: they stay zero)
    weights : array [B, n] float32 >= 0, or None

    Returns
    -------
    list of B arrays [k_eff_b, d]
    """
    b_count, n, d = coeffs.shape
    if k < 1:
        raise InputError(f"k-means needs k >= 1, got {k}")
    if d < 1:
        raise InputError("k-means needs at least one coefficient dimension")
    norms = xp.sqrt((coeffs * coeffs).sum(axis=2))
    units = coeffs / xp.maximum(norms, np.float32(EPS))[:, :, None]
    valid = norms > np.float32(EPS)
    if weights is not None:
        valid &= weights > 0
    n_valid = [int(v) for v in np.asarray(backend_to_host(valid.sum(axis=1)))]
    out: list[Any] = [None] * b_count
    # Blocks with the same k_eff run together; usually that is all of them.
    for k_eff in sorted({min(int(k), nv) for nv in n_valid}):
        members = [i for i, nv in enumerate(n_valid) if min(int(k), nv) == k_eff]
        if k_eff == 0:
            axis = xp.zeros((1, d), dtype=xp.float32)
            axis[0, 0] = 1.0
            for i in members:
                out[i] = floats.round_to(axis, storage, xp, "k-means centres")
            continue
        sel = xp.asarray(members)
        w = valid[sel].astype(xp.float32) if weights is None else xp.where(valid[sel], weights[sel], 0).astype(xp.float32)
        centres = _lloyd(units[sel], valid[sel], w, [n_valid[i] for i in members], k_eff, int(max_iter), seed, xp)
        rounded = floats.round_to(centres, storage, xp, "k-means centres")
        for j, i in enumerate(members):
            out[i] = rounded[j]
    return out


def _first_argmax(a: Any, xp: ModuleType) -> Any:
    """``argmax`` over axis 1 of a [B, k, n] (ties -> lowest index), without numpy's slow
    short-axis argmax: mark the maxima, weight them k..1, and take the largest weight."""
    k = a.shape[1]
    is_max = a == a.max(axis=1, keepdims=True)
    weight = xp.arange(k, 0, -1, dtype=xp.int32)[None, :, None]
    return k - (is_max * weight).max(axis=1).astype(xp.int64)


def _lloyd(u: Any, valid: Any, w: Any, n_valid: list[int], k_eff: int, max_iter: int, seed: int, xp: ModuleType) -> Any:
    """Farthest-first init + Lloyd iterations on unit rows u [B, n, d]; returns centres [B, k_eff, d].

    Works in a [B, k, n] layout so every reduction runs over the long row axis.
    """
    b_count, n, _ = u.shape
    batch = xp.arange(b_count)
    u_t = xp.ascontiguousarray(u.transpose(0, 2, 1))  # [B, d, n]
    # First centre: the r-th valid row, r drawn by the seeded host RNG (same draw as a lone block).
    first = [int(host_rng(seed).integers(0, nv)) for nv in n_valid]
    rank_in_valid = xp.cumsum(valid, axis=1) - 1
    target = xp.asarray(first)[:, None]
    chosen = [xp.argmax(valid & (rank_in_valid == target), axis=1)]

    def cos_to(rows: Any) -> Any:  # [B, n]: cosine of every row to the chosen row of each block
        return (u[batch, rows][:, None, :] @ u_t)[:, 0, :]

    best_sim = xp.where(valid, cos_to(chosen[0]), np.inf)
    for _ in range(1, k_eff):
        nxt = xp.argmin(best_sim, axis=1)  # = argmax of 1 - max cos; ties -> lowest index
        chosen.append(nxt)
        best_sim = xp.maximum(best_sim, cos_to(nxt))
    centres = u[batch[:, None], xp.stack(chosen, axis=1)]  # [B, k_eff, d]

    labels = xp.arange(k_eff)[None, :, None]
    active = xp.ones(b_count, dtype=bool)
    prev = None
    for _ in range(max_iter):
        sims = centres @ u_t  # [B, k_eff, n]
        assign = _first_argmax(xp.abs(sims), xp)  # [B, n]
        if prev is not None:
            # a block whose (valid) assignments did not change is done; freeze it exactly there
            active &= ~((assign == prev) | ~valid).all(axis=1)
            if not bool(active.any()):
                break
        prev = assign
        member = assign[:, None, :] == labels  # [B, k_eff, n]
        own = (member * sims).sum(axis=1)  # each row's cosine to its own centre
        signed = xp.where(own < 0, np.float32(-1), np.float32(1)) * w  # sign 0 counts as +1
        sums = (member * signed[:, None, :]) @ u  # [B, k_eff, d]: Σ w_i sign_i u_i
        snorm = xp.sqrt((sums * sums).sum(axis=2))
        update = active[:, None] & (snorm > np.float32(EPS))  # empty clusters keep their centre
        centres = xp.where(update[:, :, None], sums / xp.maximum(snorm, np.float32(EPS))[:, :, None], centres)
    return centres


def assign(coeffs: Any, centres: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Per-row centre id and signed projection.

    Returns
    -------
    seg : array [n] int64, ``argmax_c |<c_i, centre_c>|`` (0 for a zero row)
    t : array [n] float32, ``<c_i, centre_seg>`` (0 for a zero row)
    """
    sims = centres @ coeffs.T  # [k, n]
    seg = _first_argmax(xp.abs(sims)[None], xp)[0]
    t = (sims * (seg[None, :] == xp.arange(centres.shape[0])[:, None])).sum(axis=0)
    zero = (coeffs * coeffs).sum(axis=1) <= np.float32(EPS)
    seg = xp.where(zero, 0, seg).astype(xp.int64)
    t = xp.where(zero, np.float32(0), t).astype(xp.float32)
    return seg, t
