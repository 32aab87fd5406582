"""Does reconstruction error order configurations as the model's predictions do?

:func:`rank_correlation` is Spearman's ρ between a distortion column (K or V relative MSE, or
the query-weighted key error) and KL across tidy rows; :func:`rank_correlation_ci` adds a
bootstrap interval that resamples both the configurations and the passages.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def rank_correlation(rows: Sequence[dict[str, Any]], x: str, y: str = "kl_mean") -> float:
    """Spearman's ρ between columns ``x`` and ``y`` over ``rows`` (NaN rows dropped).

    E.g. ``rank_correlation(rows, "k_rel_mse")`` vs ``rank_correlation(rows, "k_qw_rel_mse")``:
    does query-weighted key error order the configurations by KL better than plain error?
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    pairs = np.array([(float(r[x]), float(r[y])) for r in rows if r.get(x) is not None and r.get(y) is not None])
    pairs = pairs[np.isfinite(pairs).all(axis=1)] if pairs.size else pairs
    if len(pairs) < 3:
        raise ValueError(f"need at least 3 rows with finite {x!r} and {y!r}, got {len(pairs)}")
    return float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic)


def rank_correlation_ci(x: Sequence[float], kl_per_passage: np.ndarray, n_boot: int = 2000, seed: int = 0
                        ) -> tuple[float, float, float]:
    """Spearman's ρ between ``x`` and the passage-mean KL, with a two-level bootstrap 95 % CI.

    Parameters
    ----------
    x : (P,) one distortion value per configuration (e.g. K relative MSE)
    kl_per_passage : (P, N) each configuration's KL on each of the same N passages

    Each bootstrap draw resamples configurations and, independently, passages (every
    configuration's KL re-averaged over the same drawn passages), so the interval covers both
    which configurations happened to be measured and which text they were measured on.

    Returns
    -------
    (rho, lo, hi) : the point estimate on all configurations and passages, and the 2.5 / 97.5
        percentiles of the draws (draws where every sampled x or KL ties are skipped)
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    xs, kl = np.asarray(x, dtype=np.float64), np.asarray(kl_per_passage, dtype=np.float64)
    if kl.ndim != 2 or xs.shape != (kl.shape[0],):
        raise ValueError(f"x must be (P,) and kl_per_passage (P, N); got {xs.shape} and {kl.shape}")
    if kl.shape[0] < 3 or kl.shape[1] < 1 or not (np.isfinite(xs).all() and np.isfinite(kl).all()):
        raise ValueError(f"need >= 3 configurations, >= 1 passage and finite values; got {kl.shape}")
    rho = float(spearmanr(xs, kl.mean(axis=1)).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        plans = rng.integers(0, kl.shape[0], kl.shape[0])
        passages = rng.integers(0, kl.shape[1], kl.shape[1])
        a, b = xs[plans], kl[np.ix_(plans, passages)].mean(axis=1)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            draws.append(spearmanr(a, b).statistic)
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return rho, float(lo), float(hi)
