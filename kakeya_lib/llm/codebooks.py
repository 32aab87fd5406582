"""Calibrated Lloyd–Max codebooks for the kakeya codec's residual quantiser (spec §5.3 (a)).

The kakeya codec quantises the unit-scaled rotated residuals ``z`` of every row with a 1-D
Lloyd–Max table designed for N(0, 1). Real residuals are not Gaussian; a table fitted to them
lowers the quantisation error at the same bits. Done faithfully, unlike the seed's script:

* the samples are the **exact** ``z`` the codec quantises (:meth:`KakeyaCodec.unit_residuals`:
  its own skeleton fit, k-means, rotation and scaling; the seed skipped k-means and took a
  full-rank exact PCA whatever the spec said), of the very rows it codes: per compressed layer of
  the plan's main (non-boundary) layers, ``K`` (whitened when the plan preconditions that layer)
  or ``V`` as rows ``[T·n_kv, D]`` after the protected leading tokens;
* coordinates the codec keeps exactly as outliers (``|z| > T`` with ``outlier=T``) are left out:
  their quantiser codes are overwritten at decode, so the table should not spend levels on them;
* calibration passages come from the corpus's **calib** split, never the evaluation split.

:func:`fit_lloyd_max`: midpoint boundaries, centroid = bin mean (on sorted samples with prefix
sums, so each iteration is O(levels · log n)), initialised from the Gaussian table of the same
bits, at most 200 iterations, stop when no level moves by more than 1e-6, on at most 5 M samples
drawn uniformly without replacement (seeded). Ties go to the lower level, as the codec quantises.

Tables are saved as ``CALIB_DIR/NAME.npy`` (float32, ascending; ``CALIB_DIR`` is the kakeya
codec's, ``.cache/calib``) with a JSON sidecar, and specs name them as ``codebook=calib:NAME``, so
a spec never carries a machine path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import codecs, provenance
from ..atomic import tmp_sibling, write_text_atomic
from ..errors import InputError
from ..layout import tensor_to_rows
from ..stages import lloyd_max
from .calibration_inputs import calib_dir, ensure_patched, prefill, slug, token_lists

MAX_SAMPLES = 5_000_000
MAX_ITER = 200
TOL = 1e-6


@dataclass
class LloydFit:
    """A fitted table and how the fit went."""

    levels: np.ndarray  # float32 [2**bits], strictly ascending
    bits: int
    iterations: int
    converged: bool
    n_samples: int  # samples the fit used
    n_total: int  # samples offered before subsampling
    mse_init: float  # mean squared quantisation error of the initial (Gaussian) table
    mse: float  # ... of the fitted table, on the same samples

    def as_dict(self) -> dict[str, Any]:
        return {
            "levels": [float(v) for v in self.levels],
            "bits": self.bits,
            "iterations": self.iterations,
            "converged": self.converged,
            "n_samples": self.n_samples,
            "n_total": self.n_total,
            "mse_gaussian": self.mse_init,
            "mse": self.mse,
        }


def quantisation_mse(samples: Any, levels: Any) -> float:
    """Mean squared error of nearest-level quantisation (ties to the lower level, as the codec)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    lv = np.asarray(levels, dtype=np.float64)
    idx = np.searchsorted((lv[1:] + lv[:-1]) / 2, x, side="left")
    return float(np.mean((x - lv[idx]) ** 2))


def _sorted_mse(x: np.ndarray, csum: np.ndarray, csq: np.ndarray, levels: np.ndarray) -> float:
    edges = np.concatenate([[0], np.searchsorted(x, (levels[1:] + levels[:-1]) / 2, side="right"), [x.size]])
    s1 = csum[edges[1:]] - csum[edges[:-1]]
    s2 = csq[edges[1:]] - csq[edges[:-1]]
    n = np.diff(edges)
    return float((s2 - 2 * levels * s1 + n * levels**2).sum() / x.size)


def fit_lloyd_max(samples: Any, bits: int, *, init: Any | None = None, max_iter: int = MAX_ITER, tol: float = TOL,
                  max_samples: int = MAX_SAMPLES, seed: int = 0) -> LloydFit:
    """Fit a 1-D Lloyd–Max table of ``2**bits`` levels to ``samples`` (see the module docstring)."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= lloyd_max.MAX_BITS:
        raise InputError(f"bits must be in 1..{lloyd_max.MAX_BITS}, got {bits!r}")
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    n_total = int(x.size)
    if n_total < 4 * (1 << bits):
        raise InputError(f"{n_total} samples are too few to fit {1 << bits} levels")
    if not np.isfinite(x).all():
        raise InputError("calibration samples hold NaN/Inf")
    if x.size > max_samples:
        x = x[np.random.default_rng(seed).choice(x.size, size=max_samples, replace=False, shuffle=False)]
    x = np.sort(x)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    csq = np.concatenate([[0.0], np.cumsum(x * x)])
    levels = (lloyd_max.gaussian_codebook(int(bits)) if init is None
              else lloyd_max.validate_codebook(init, int(bits))).astype(np.float64)
    mse_init = _sorted_mse(x, csum, csq, levels)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        edges = np.concatenate([[0], np.searchsorted(x, (levels[1:] + levels[:-1]) / 2, side="right"), [x.size]])
        counts = np.diff(edges)
        sums = csum[edges[1:]] - csum[edges[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), levels)  # an empty bin keeps its level
        shift = float(np.abs(new - levels).max())
        levels = new
        if shift < tol:
            converged = True
            break
    try:
        table = lloyd_max.validate_codebook(levels, int(bits))
    except InputError as exc:
        raise InputError(f"the fitted table is degenerate ({exc}); the samples have too few distinct values") from exc
    return LloydFit(levels=table, bits=int(bits), iterations=it, converged=converged, n_samples=int(x.size),
                    n_total=n_total, mse_init=mse_init, mse=_sorted_mse(x, csum, csq, table.astype(np.float64)))


# --------------------------------------------------------------------------------------------
# Samples from the codec


def eligible(spec: str) -> bool:
    """Whether a spec is a kakeya codec with a Lloyd–Max quantiser at the default Gaussian table."""
    codec = codecs.get(spec)
    p = codec.params
    return codec.name == "kakeya" and getattr(p, "quant", "lloyd") == "lloyd" and p.codebook == "gaussian"


def with_codebook(spec: str, name: str) -> str:
    """The canonical spec with ``codebook=calib:NAME``."""
    codec = codecs.get(spec)
    return codecs.format_spec(codec.name, dataclasses.replace(codec.params, codebook=f"calib:{name}"))


def unit_residuals(codec: Any, rows: np.ndarray) -> np.ndarray:
    """The codec's ``z`` for ``rows``, flattened, without the coordinates it keeps as outliers."""
    if not hasattr(codec, "unit_residuals"):
        raise InputError(f"{codec.spec!r} has no unit_residuals(): codebook calibration needs the kakeya codec")
    try:
        z = codec.unit_residuals(rows)
    except InputError as exc:
        if "width" not in str(exc):
            raise
        # blocks of different rank: one call per block (each has a single width), pooled as 1-D samples
        block = int(codec.params.block)
        z = np.concatenate([np.asarray(codec.unit_residuals(rows[s : s + block])).reshape(-1)
                            for s in range(0, rows.shape[0], block)])
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    threshold = getattr(codec.params, "outlier", None)
    return z if threshold is None else z[np.abs(z) <= threshold]


@dataclass
class CodebookJob:
    """One table to fit: a stream's spec, the layers whose rows feed it, and its file name."""

    stream: str  # "k" or "v"
    spec: str
    layers: tuple[int, ...]
    name: str


def codebook_name(model: str, corpus: str, stream: str, bits: int, key: str) -> str:
    """``cb-{model}-{corpus}-{K|V}-b{bits}-{hash}``; ``key`` is everything the table depends on."""

    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    corpus = Path(corpus).name if ("/" in corpus or "\\" in corpus) else corpus
    return f"cb-{slug(model, 32)}-{slug(corpus, 24)}-{stream.upper()}-b{bits}-{digest}"


def codebook_path(name: str) -> Path:
    return calib_dir() / f"{name}.npy"


def save_codebook(levels: np.ndarray, name: str, meta: dict[str, Any]) -> Path:
    """Write ``NAME.npy`` (float32, no pickle) and ``NAME.json`` under :func:`calib_dir`."""
    table = lloyd_max.validate_codebook(levels)
    path = codebook_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path, ".npy")
    np.save(tmp, table.astype("<f4"), allow_pickle=False)
    write_text_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2))
    tmp.replace(path)
    return path


def load_codebook_meta(name: str) -> dict[str, Any] | None:
    """The sidecar of a saved table, or None when the table is not there."""
    path = codebook_path(name)
    if not path.is_file():
        return None
    lloyd_max.load_codebook(path)  # validates the table itself
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else {}


def fit_codebooks(model: Any, passages: Sequence[Sequence[int]], jobs: Sequence[CodebookJob], *,
                  qprecond: Any | None = None, protect_tokens: int = 0, max_samples: int = MAX_SAMPLES,
                  seed: int = 0, meta: dict[str, Any] | None = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Fit and save one table per job from one prefill of each calibration passage.

    Parameters
    ----------
    passages : calib-split token-id lists (``Passage`` records of the eval split are refused)
    jobs : what to fit (stream, spec, layers, file name)
    qprecond : a :class:`~.qprecond.QPrecond`; K rows of its active layers are whitened first
    protect_tokens : leading tokens the plan keeps exact (the codec never sees them)

    Returns
    -------
    job name → fit summary (levels, MSE of the Gaussian and of the fitted table, samples, file)
    """
    from .prerope import make_cache  # noqa: PLC0415

    ids_list = token_lists(passages)
    ensure_patched(model)
    rng = np.random.default_rng(seed)
    built = [codecs.get(job.spec) for job in jobs]
    pools: list[list[np.ndarray]] = [[] for _ in jobs]
    totals = [0 for _ in jobs]
    rates: list[float | None] = [None for _ in jobs]
    iterator: Any = ids_list
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        iterator = tqdm(ids_list, desc="codebook calibration", unit="passage")
    for ids in iterator:
        cache = make_cache(model)
        prefill(model, ids, cache)
        for j, job in enumerate(jobs):
            for layer in job.layers:
                tensor = getattr(cache.layers[layer], "keys" if job.stream == "k" else "values")
                keep = min(protect_tokens, tensor.shape[2])
                if keep == tensor.shape[2]:
                    continue
                rows = tensor_to_rows(tensor[:, :, keep:])
                if job.stream == "k" and qprecond is not None:
                    rows = qprecond.whiten(rows, layer)
                z = unit_residuals(built[j], rows)
                totals[j] += z.size
                if rates[j] is None:  # thin uniformly as we go so the pool stays near the cap
                    expected = max(1, z.size * len(job.layers) * len(ids_list))
                    rates[j] = min(1.0, 1.5 * max_samples / expected)
                if rates[j] < 1.0:
                    z = z[rng.random(z.size) < rates[j]]
                pools[j].append(z)
        del cache
    out: dict[str, dict[str, Any]] = {}
    for j, job in enumerate(jobs):
        if not pools[j]:
            raise InputError(f"no calibration rows for the {job.stream.upper()} codebook (every token protected?)")
        samples = np.concatenate(pools[j])
        pools[j] = []
        bits = int(built[j].params.bits)
        fit = fit_lloyd_max(samples, bits, max_samples=max_samples, seed=seed)
        info = {
            "name": job.name,
            "stream": job.stream,
            "spec": job.spec,
            "layers": list(job.layers),
            "whitened_layers": [] if job.stream != "k" or qprecond is None
            else [layer for layer in job.layers if qprecond.active(layer)],
            "qprecond": None if job.stream != "k" or qprecond is None else qprecond.name,
            "protect_tokens": protect_tokens,
            "n_passages": len(ids_list),
            "n_samples_seen": totals[j],
            "outliers_excluded": getattr(built[j].params, "outlier", None),
            **fit.as_dict(),
            **(meta or {}),
            "provenance": provenance.collect(command="codebooks.fit_codebooks"),
        }
        save_codebook(fit.levels, job.name, info)
        out[job.name] = info
    return out
