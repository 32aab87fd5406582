"""Codec stages on synthetic data, one function per demonstration (the ``exp-stages`` notebook).

Each function returns tidy rows (a list of flat dicts) and needs no model:

* :func:`wht_gaussianisation`: the randomised Hadamard rotation spreads heavy channels over all
  coordinates, so the rotated residual is close to Gaussian (excess kurtosis → 0), which is what
  the Gaussian Lloyd–Max table assumes;
* :func:`quantiser_rate_distortion`: Lloyd–Max vs the uniform grid on N(0, 1) samples at 1–8 bits
  (measured MSE next to the analytical value and the index entropy, i.e. the rate an entropy
  coder reaches);
* :func:`outlier_tradeoff`: keeping coordinates with ``|z| > T`` exactly, on heavy-tailed rows:
  bytes against error, from the real codec blob;
* :func:`pca_vs_rsvd`: the skeleton's captured variance and fit time for exact weighted PCA and
  randomized SVD (with and without power iterations) over ranks.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .. import codecs, synthetic
from ..backend import host_rng
from ..stages import lloyd_max, pca, rsvd, uniform, wht


def _excess_kurtosis(x: np.ndarray) -> np.ndarray:
    """Per-column excess kurtosis of x [n, d] (0 for a Gaussian)."""
    z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    return (z**4).mean(axis=0) - 3.0


def heavy_rows(n: int, d: int, seed: int = 0, heavy_channels: int = 4) -> np.ndarray:
    """Rows [n, d] float32 with Laplace coordinates (excess kurtosis 3, every moment finite, so
    sample kurtosis is stable) and a few channels 8× larger (outlier channels)."""
    rng = host_rng(seed)
    x = rng.laplace(size=(n, d))
    x[:, rng.choice(d, size=heavy_channels, replace=False)] *= 8.0
    return x.astype(np.float32)


def wht_gaussianisation(n: int = 4096, dims: Sequence[int] = (64, 128), seed: int = 0) -> list[dict[str, Any]]:
    """Kurtosis and peak-to-RMS of heavy-tailed rows before and after the seeded Hadamard rotation."""
    rows = []
    for d in dims:
        x = heavy_rows(n, d, seed)
        y = wht.rotate(x.astype(np.float32), seed, np)
        for stage, arr in (("input", x), ("rotated", y)):
            k = _excess_kurtosis(arr.astype(np.float64))
            col_rms = np.sqrt((arr.astype(np.float64) ** 2).mean(axis=0))
            rows.append({"dim": d, "stage": stage, "kurtosis_median": float(np.median(k)),
                         "kurtosis_max": float(k.max()), "channel_rms_spread": float(col_rms.max() / col_rms.min()),
                         "peak_over_rms": float(np.abs(arr).max() / np.sqrt((arr.astype(np.float64) ** 2).mean()))})
    return rows


def _index_entropy(idx: np.ndarray, levels: int) -> float:
    counts = np.bincount(idx.reshape(-1), minlength=levels).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def quantiser_rate_distortion(bits: Sequence[int] = range(1, 9), n: int = 200_000, seed: int = 0
                              ) -> list[dict[str, Any]]:
    """Measured MSE on N(0, 1) samples, the expected MSE, and the index entropy (bits) per quantiser."""
    z = host_rng(seed).standard_normal(n).astype(np.float32)
    rows = []
    for b in bits:
        levels = lloyd_max.gaussian_codebook(b)
        idx = lloyd_max.quantize(z, levels, np)
        mse = float(((lloyd_max.dequantize(idx, levels, np) - z) ** 2).mean())
        rows.append({"quantiser": "lloyd-max", "bits": b, "levels": len(levels), "mse": mse,
                     "entropy_bits": _index_entropy(np.asarray(idx), len(levels)),
                     "snr_db": float(-10 * np.log10(mse))})
        if b >= 2:
            ulev = uniform.levels(b, 0)
            uidx = uniform.quantize(z, b, 0, np)
            umse = float(((ulev[uidx] - z) ** 2).mean())
            rows.append({"quantiser": "uniform", "bits": b, "levels": len(ulev), "mse": umse,
                         "mse_expected": uniform.gaussian_mse(b, 0),
                         "entropy_bits": _index_entropy(np.asarray(uidx), len(ulev)),
                         "snr_db": float(-10 * np.log10(umse))})
    return rows


def outlier_tradeoff(thresholds: Sequence[float | None] = (None, 3.0, 2.5, 2.0, 1.5), n: int = 4096, d: int = 128,
                     bits: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """Bytes and relative MSE of the kakeya codec on heavy-tailed rows for each outlier threshold."""
    x = heavy_rows(n, d, seed)
    rows = []
    for t in thresholds:
        spec = f"kakeya:bits={bits},block=1024" + ("" if t is None else f",outlier={t}")
        codec = codecs.get(spec)
        blob = codec.encode(x)
        x_hat = np.asarray(codecs.decode(blob))
        ledger = codec.ledger(blob)
        rows.append({"threshold": t, "spec": codec.spec, "bytes": len(blob),
                     "outlier_bytes": ledger.get("outliers", 0),
                     "bits_per_elem": 8 * len(blob) / x.size,
                     "rel_mse": float(((x_hat - x) ** 2).sum() / (x.astype(np.float64) ** 2).sum())})
    return rows


def pca_vs_rsvd(ranks: Sequence[int] = (8, 16, 32, 48), n: int = 4096, d: int = 128, power_iters: Sequence[int] = (0, 2),
                seed: int = 0, repeat: int = 3) -> list[dict[str, Any]]:
    """Captured variance of the rank-r skeleton and fit seconds (best of ``repeat``) per method."""
    x = synthetic.kv_like(n, d, seed)
    rows = []
    for r in ranks:
        fits: list[tuple[str, Any]] = [("exact", lambda r=r: pca.fit_exact(x, None, np, variance_ratio=1.0, rank_cap=r,
                                                                         storage="f32"))]
        fits += [(f"rsvd q={q}", lambda r=r, q=q: rsvd.fit_randomized(x, None, np, r, seed, power_iters=q,
                                                                       variance_ratio=1.0, storage="f32"))
                 for q in power_iters]
        for method, fit_fn in fits:
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                fit = fit_fn()
                best = min(best, time.perf_counter() - t0)
            rec = pca.unproject(fit, pca.project(fit, x))
            rel = float(((rec - x) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum())
            rows.append({"rank": r, "method": method, "kept": fit.d_eff, "residual_share": rel,
                         "captured_variance": 1.0 - rel, "fit_seconds": best})
    return rows
