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
from ..errors import InputError
from .pca import EPS


def _unit_rows(c: Any, xp: ModuleType) -> tuple[Any, Any]:
    norms = xp.sqrt((c * c).sum(axis=1))
    return c / xp.maximum(norms, np.float32(EPS))[:, None], norms


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
    rounded to ``storage`` (float32 values).
    """
    n, d = coeffs.shape
    if k < 1:
        raise InputError(f"k-means needs k >= 1, got {k}")
    if d < 1:
        raise InputError("k-means needs at least one coefficient dimension")
    u_all, norms = _unit_rows(coeffs, xp)
    valid = norms > np.float32(EPS)
    if weights is not None:
        valid &= weights > 0
    valid_idx = xp.nonzero(valid)[0]
    n_valid = int(valid_idx.size)
    if n_valid == 0:
        centre = xp.zeros((1, d), dtype=xp.float32)
        centre[0, 0] = 1.0
        return floats.round_to(centre, storage, xp, "k-means centres")
    u = u_all[valid_idx]
    w = xp.ones(n_valid, dtype=xp.float32) if weights is None else weights[valid_idx].astype(xp.float32)
    k_eff = min(int(k), n_valid)

    # Farthest-first: next centre = row least similar (signed cosine) to all chosen centres.
    first = int(host_rng(seed).integers(0, n_valid))
    chosen = [first]
    best_sim = u @ u[first]
    for _ in range(1, k_eff):
        nxt = int(xp.argmin(best_sim))  # argmax of 1 - max cos; ties -> lowest index
        chosen.append(nxt)
        best_sim = xp.maximum(best_sim, u @ u[nxt])
    centres = u[xp.asarray(chosen)]

    prev = None
    labels = xp.arange(k_eff)[None, :]
    for _ in range(int(max_iter)):
        sims = u @ centres.T  # [n_valid, k_eff]
        assign = xp.argmax(xp.abs(sims), axis=1)
        if prev is not None and bool((assign == prev).all()):
            break
        prev = assign
        member = assign[:, None] == labels  # [n_valid, k_eff] one-hot
        signed = xp.where(sims < 0, np.float32(-1), np.float32(1)) * w[:, None]
        sums = (member * signed).T @ u  # [k_eff, d]: Σ w_i sign_i u_i per cluster
        snorm = xp.sqrt((sums * sums).sum(axis=1))
        keep_old = snorm <= np.float32(EPS)  # empty cluster keeps its centre
        centres = xp.where(keep_old[:, None], centres, sums / xp.maximum(snorm, np.float32(EPS))[:, None])
    return floats.round_to(centres, storage, xp, "k-means centres")


def assign(coeffs: Any, centres: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Per-row centre id and signed projection.

    Returns
    -------
    seg : array [n] int64, ``argmax_c |<c_i, centre_c>|`` (0 for a zero row)
    t : array [n] float32, ``<c_i, centre_seg>`` (0 for a zero row)
    """
    sims = coeffs @ centres.T
    seg = xp.argmax(xp.abs(sims), axis=1)
    t = sims[xp.arange(coeffs.shape[0]), seg]
    zero = (coeffs * coeffs).sum(axis=1) <= np.float32(EPS)
    seg = xp.where(zero, 0, seg).astype(xp.int64)
    t = xp.where(zero, np.float32(0), t).astype(xp.float32)
    return seg, t
