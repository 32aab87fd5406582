"""Weighted PCA skeleton: mean + orthonormal basis, truncated by captured variance (spec §1.2).

The fit returns the mean and basis already rounded to the storage format, and projection /
reconstruction use those rounded values, so encoder and decoder agree exactly. Basis signs are
fixed (largest-magnitude entry of each row positive) so numpy and CuPy fits match.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .. import floats
from ..backend import to_host
from ..errors import InputError

EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class PcaFit:
    """A fitted skeleton.

    Attributes
    ----------
    mean : array [D] float32, rounded to the storage format
    basis : array [d_eff, D] float32, rows orthonormal before rounding
    eigenvalues : array [r] float32, descending (all computed, not only kept ones)
    captured_variance : float, kept variance / total variance
    identity : bool, the basis is the identity (a mean-only skeleton): projection and
        reconstruction skip the matrix product, whose result would equal the input
    """

    mean: Any
    basis: Any
    eigenvalues: Any
    captured_variance: float
    identity: bool = False

    @property
    def d_eff(self) -> int:
        return int(self.basis.shape[0])


def weighted_mean(x: Any, w: Any | None, xp: ModuleType) -> tuple[Any, float]:
    """Weighted mean [D] of the rows of x [n, D], and the total weight."""
    if w is None:
        return x.mean(axis=0), float(x.shape[0])
    total = float(w.sum())
    if total <= EPS:
        raise InputError("the row weights sum to zero; at least one row needs a positive weight")
    return (w[:, None] * x).sum(axis=0) / np.float32(total), total


def centred_weighted(x: Any, w: Any | None, mean: Any, xp: ModuleType) -> Any:
    """``A = diag(sqrt(w)) (x - mean)`` [n, D]."""
    a = x - mean[None, :]
    return a if w is None else a * xp.sqrt(w)[:, None]


# Shares within this of the target count as reaching it: eigenvalues and ‖A‖_F² come from float32
# arithmetic, so "captures 100 %" can only be decided to about float32 precision.
VARIANCE_SLACK = 1e-6


def rank_for_variance(
    eigvals: Any, variance_ratio: float, total: float | None = None, slack: float = VARIANCE_SLACK
) -> int:
    """Smallest k with (sum of the top-k clipped eigenvalues) / total >= variance_ratio - slack (>= 1)."""
    if not np.isfinite(variance_ratio):
        raise InputError(f"variance ratio must be a finite number, got {variance_ratio!r}")
    lam = np.clip(np.asarray(eigvals, dtype=np.float64), 0, None)
    total = float(lam.sum()) if total is None else float(total)
    if total <= EPS:
        return 1
    vr = min(max(float(variance_ratio), 0.0), 1.0)
    cum = np.cumsum(lam) / total
    hit = np.nonzero(cum >= vr - slack)[0]
    return int(hit[0]) + 1 if hit.size else int(lam.size)


def fix_signs(basis: Any, xp: ModuleType) -> Any:
    """Flip each row so that its largest-magnitude entry is positive (deterministic signs)."""
    idx = xp.argmax(xp.abs(basis), axis=1)
    pivots = basis[xp.arange(basis.shape[0]), idx]
    return basis * xp.where(pivots < 0, -1.0, 1.0).astype(basis.dtype)[:, None]


def finish_fit(mean: Any, basis: Any, eigvals: Any, captured: float, storage: str, xp: ModuleType) -> PcaFit:
    """Round mean and basis to the storage format and wrap them."""
    return PcaFit(
        mean=floats.round_to(mean, storage, xp, "PCA mean"),
        basis=floats.round_to(fix_signs(basis, xp), storage, xp, "PCA basis"),
        eigenvalues=eigvals,
        captured_variance=float(captured),
    )


def fit_exact(
    x: Any,
    w: Any | None,
    xp: ModuleType,
    variance_ratio: float = 0.95,
    rank_cap: int | None = None,
    storage: str = "f16",
) -> PcaFit:
    """Exact weighted PCA by symmetric eigendecomposition of the D×D covariance.

    Parameters
    ----------
    x : array [n, D] float32
    w : array [n] float32 >= 0, or None for uniform weights
    variance_ratio : float, keep the fewest components capturing this share (clamped to [0,1])
    rank_cap : int or None, keep at most this many components
    storage : "f16" | "bf16" | "f32", format the mean and basis are rounded to
    """
    return fit_exact_batched(x[None], None if w is None else w[None], xp, variance_ratio, rank_cap, storage)[0]


def fit_exact_batched(
    x: Any,
    w: Any | None,
    xp: ModuleType,
    variance_ratio: float = 0.95,
    rank_cap: int | None = None,
    storage: str = "f16",
) -> list[PcaFit]:
    """:func:`fit_exact` on B blocks at once: x [B, n, D], w [B, n] or None -> B fits."""
    b_count, n, d = x.shape
    if n == 0 or d == 0:
        raise InputError(f"PCA needs non-empty blocks, got shape ({n}, {d})")
    if w is not None and tuple(w.shape) != (b_count, n):
        raise InputError(f"weights must have one entry per row: shape {(b_count, n)}, got {tuple(w.shape)}")
    if w is None:
        mean = x.mean(axis=1)
        totals = [float(n)] * b_count
        a = x - mean[:, None, :]
    else:
        totals = [float(t) for t in np.asarray(to_host(w.sum(axis=1)))]
        if min(totals) <= EPS:
            raise InputError("the row weights of a block sum to zero; at least one row needs a positive weight")
        tw = xp.asarray(np.asarray(totals, dtype=np.float32))
        mean = (w[:, :, None] * x).sum(axis=1) / tw[:, None]
        a = (x - mean[:, None, :]) * xp.sqrt(w)[:, :, None]
    cov = (a.transpose(0, 2, 1) @ a) / xp.asarray(np.asarray(totals, dtype=np.float32))[:, None, None]
    vals, vecs = xp.linalg.eigh(cov)  # ascending, batched
    vals, vecs = vals[:, ::-1], vecs[:, :, ::-1]
    host_vals = np.asarray(to_host(vals), dtype=np.float64)
    fits = []
    for i in range(b_count):
        k = rank_for_variance(host_vals[i], variance_ratio)
        if rank_cap is not None:
            k = min(k, max(int(rank_cap), 1))
        k = min(max(k, 1), d)
        lam = np.clip(host_vals[i], 0, None)
        captured = lam[:k].sum() / lam.sum() if lam.sum() > EPS else 1.0
        fits.append(finish_fit(mean[i], vecs[i, :, :k].T, vals[i], captured, storage, xp))
    return fits


def fit_mean_only(x: Any, w: Any | None, xp: ModuleType, storage: str = "f16") -> PcaFit:
    """A skeleton of just the (weighted) mean with the identity basis (nothing but the mean is
    stored): at full rank a PCA basis costs D² values and buys nothing before a rotation."""
    mean, _ = weighted_mean(x, w, xp)
    d = int(x.shape[1])
    return PcaFit(mean=floats.round_to(mean, storage, xp, "block mean"), basis=xp.eye(d, dtype=xp.float32),
                  eigenvalues=None, captured_variance=1.0, identity=True)


def project(fit: PcaFit, x: Any) -> Any:
    """Coefficients ``c = (x - mean) basisᵀ`` [n, d_eff] for x [n, D]."""
    if x.shape[1] != fit.basis.shape[1]:
        raise InputError(f"cannot project width {x.shape[1]} onto a basis of width {fit.basis.shape[1]}")
    centred = x - fit.mean[None, :]
    return centred if fit.identity else centred @ fit.basis.T


def unproject(fit: PcaFit, c: Any) -> Any:
    """Reconstruction ``mean + c basis`` [n, D] from coefficients c [n, d_eff]."""
    if c.shape[1] != fit.d_eff:
        raise InputError(f"got {c.shape[1]} coefficients for a basis of rank {fit.d_eff}")
    return fit.mean[None, :] + (c if fit.identity else c @ fit.basis)
