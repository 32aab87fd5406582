"""Deterministic synthetic inputs for demos, benchmarks and tests (no model needed)."""

from __future__ import annotations

import numpy as np

from .backend import host_rng


def gaussian(n: int, d: int, seed: int = 0) -> np.ndarray:
    """i.i.d. N(0, 1) rows [n, d] float32: the hardest case for a low-rank skeleton."""
    return host_rng(seed).standard_normal((n, d)).astype(np.float32)


def kv_like(n: int, d: int, seed: int = 0, decay: float = 12.0, offset: float = 2.0) -> np.ndarray:
    """Rows [n, d] float32 shaped like attention keys: a non-zero mean, an exponentially decaying
    spectrum in a random orthonormal frame, and a few heavy channels.

    Parameters
    ----------
    decay : e-folding length of the spectrum in components
    offset : scale of the shared mean vector
    """
    rng = host_rng(seed)
    frame, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.exp(-np.arange(d) / decay) * 4.0
    coeffs = rng.standard_normal((n, d)) * scales[None, :]
    x = coeffs @ frame.T + offset * rng.standard_normal(d)[None, :]
    heavy = rng.choice(d, size=max(1, d // 32), replace=False)
    x[:, heavy] *= 4.0
    return x.astype(np.float32)


GENERATORS = {"gaussian": gaussian, "kv_like": kv_like}
