"""Randomised PCA (Halko, Martinsson & Tropp 2011, Alg. 4.4), spec §1.3.

Range finder on ``A = diag(sqrt(w)) (X - mean)`` with a Gaussian test matrix, ``power_iters``
subspace iterations *with* QR re-orthogonalisation after every half step (the seed's first
version skipped it and hung on ill-conditioned blocks; ``legacy_no_reorth=True`` reproduces that
loop and raises instead of hanging when it blows up), then an exact SVD of the small sketch.

Truncation: by default the variance ratio is measured against the block's *true* total variance
``‖A‖_F² / Σw``; ``legacy_sketch_total=True`` measures it against the sketched components only, as
the seed did (spec §10.4), which makes ``variance_ratio=1`` keep exactly ``target_rank``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ..backend import host_rng, to_device
from ..errors import InputError
from .pca import (
    EPS,
    VARIANCE_SLACK,
    PcaFit,
    centred_weighted,
    finish_fit,
    rank_for_variance,
    weighted_mean,
)

RSVD_SEED_OFFSET = 0x9E37_79B9_7F4A_7C15


def _orth(m: Any, xp: ModuleType) -> Any:
    q, _ = xp.linalg.qr(m)
    return q


def fit_randomized(
    x: Any,
    w: Any | None,
    xp: ModuleType,
    target_rank: int,
    seed: int,
    oversample: int = 8,
    power_iters: int = 2,
    variance_ratio: float = 0.95,
    storage: str = "f16",
    legacy_no_reorth: bool = False,
    legacy_sketch_total: bool = False,
) -> PcaFit:
    """Fit a rank-<=``target_rank`` skeleton of x [n, D] by randomized SVD.

    The Gaussian test matrix [n, r] is drawn on the host from ``seed ^ RSVD_SEED_OFFSET``.
    """
    n, d = x.shape
    if w is not None and tuple(w.shape) != (n,):
        raise InputError(f"weights must have one entry per row: shape ({n},), got {tuple(w.shape)}")
    if target_rank < 1:
        raise InputError(f"RSVD target rank must be >= 1, got {target_rank}")
    if oversample < 0 or power_iters < 0:
        raise InputError("RSVD oversample and power_iters must be >= 0")
    mean, total_w = weighted_mean(x, w, xp)
    a = centred_weighted(x, w, mean, xp)
    k = min(int(target_rank), d)
    r = max(min(k + int(oversample), d, n), 1)
    k = min(k, r)
    omega = host_rng(int(seed) ^ RSVD_SEED_OFFSET).standard_normal((n, r)).astype(np.float32)
    z = a.T @ to_device(omega, xp)  # [D, r]
    for _ in range(int(power_iters)):
        if legacy_no_reorth:
            z = a.T @ (a @ z)
            if not bool(xp.isfinite(z).all()):
                raise InputError("RSVD power iteration without re-orthogonalisation overflowed (legacy mode)")
        else:
            q1 = _orth(a @ z, xp)  # [n, r]
            z = _orth(a.T @ q1, xp)  # [D, r]
    q = _orth(z, xp)  # [D, r]
    b = a @ q  # [n, r]
    _, s, vt = xp.linalg.svd(b, full_matrices=False)
    basis_all = (q @ vt.T).T  # [r, D], rows ordered by singular value
    lam = (s.astype(xp.float32) ** 2) / np.float32(total_w)
    host_lam = np.asarray(lam.get() if xp is not np else lam, dtype=np.float64)
    true_total = float((a.astype(xp.float32) ** 2).sum()) / total_w
    total = float(host_lam.sum()) if legacy_sketch_total else true_total
    # legacy: the seed's exact comparison against the sketch total (vr=1 keeps every sketched component)
    slack = 0.0 if legacy_sketch_total else VARIANCE_SLACK
    keep = rank_for_variance(host_lam, variance_ratio, total, slack) if total > EPS else 1
    keep = min(max(keep, 1), k)
    captured = float(host_lam[:keep].sum() / true_total) if true_total > EPS else 1.0
    return finish_fit(mean, basis_all[:keep], lam, min(captured, 1.0), storage, xp)
