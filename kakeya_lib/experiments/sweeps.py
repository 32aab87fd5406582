"""Plan generators for the analyses the paper needs, and a runner that turns them into tidy rows.

* :func:`depth_compounding`: compress only the first k compressible layers, k = 1..L — how error
  compounds with depth;
* :func:`single_layer_attribution`: compress one layer at a time — which layers carry the damage;
* :func:`grid`: every combination of codec spec keys (bits, rank, block, outlier, ...) for
  rate–distortion frontiers;
* :func:`ablation_ladder`: the seed's pipeline built up one stage at a time at 3 bits, then our
  levers one at a time — each rung's bytes, Δppl, KL and top-1;
* :func:`rank_correlation`: how well a distortion column (plain or query-weighted MSE) ranks
  configurations by KL (Spearman's ρ across rows).

:func:`run` evaluates plans side by side on the same passages and returns one tidy row per plan
(the row of :func:`~kakeya_lib.experiments.table.summary_row` plus the generator's own columns).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import numpy as np

from .. import codecs
from ..llm import recipes
from ..llm.models import full_attention_layers
from ..llm.plan import KVPlan
from .table import summary_row


def depth_compounding(config: Any, k: str, v: str | None = None, depths: Sequence[int] | None = None
                      ) -> list[tuple[dict[str, Any], KVPlan]]:
    """Plans compressing the first ``depth`` compressible layers, for each depth."""
    layers = full_attention_layers(config)
    depths = depths or range(1, len(layers) + 1)
    return [({"depth": d}, KVPlan(k, v, layers=tuple(layers[:d]), name=f"first {d} layers")) for d in depths]


def single_layer_attribution(config: Any, k: str, v: str | None = None) -> list[tuple[dict[str, Any], KVPlan]]:
    """One plan per compressible layer, compressing that layer alone."""
    return [({"layer": i}, KVPlan(k, v, layers=(i,), name=f"layer {i} only")) for i in full_attention_layers(config)]


def grid(base: str, v_base: str | None = None, **axes: Sequence[Any]) -> list[tuple[dict[str, Any], KVPlan]]:
    """Plans for every combination of spec-key values, applied to both K and V specs.

    >>> grid("kakeya:pca=none", bits=[2, 3, 4], block=[512, 1024])   # 6 plans
    """
    keys = sorted(axes)
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        extra = ",".join(f"{k}={v}" for k, v in zip(keys, values))
        k, v = (codecs.with_keys(spec, **dict(zip(keys, values))) for spec in (base, v_base or base))
        out.append((dict(zip(keys, values)), KVPlan(k, v, name=extra)))
    return out


def run(model: Any, passages: Sequence[Sequence[int]], ctx_len: int,
        labelled_plans: Sequence[tuple[dict[str, Any], KVPlan]], **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate the plans side by side; one tidy row per plan (its columns + the summary row)."""
    from ..llm.evaluate import evaluate_many  # noqa: PLC0415  (torch only when running)

    results = evaluate_many(model, passages, ctx_len, [plan for _, plan in labelled_plans], **kwargs)
    return [{**columns, **summary_row(result)} for (columns, _), result in zip(labelled_plans, results)]


# The seed's stages added one at a time (spec §1), then ours; every rung codes K and V at 3 bits.
_SEED_LADDER: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("skeleton + uniform", "kakeya:vr=1.0,k=0,rotate=0,quant=uniform,bits=3", "", {}),
    ("+ k-means", "kakeya:vr=1.0,k=16,rotate=0,quant=uniform,bits=3", "", {}),
    ("+ WHT", "kakeya:vr=1.0,k=16,quant=uniform,bits=3", "", {}),
    ("+ Lloyd-Max", "kakeya:vr=1.0,k=16,bits=3", "", {}),
    ("+ outliers T=2", "kakeya:vr=1.0,k=16,bits=3,outlier=2.0", "", {}),
    ("+ Sigma_q whitening", "kakeya:vr=1.0,k=16,bits=3,outlier=2.0", "", {"qprecond": "calib"}),
    ("+ calibrated codebook", "kakeya:vr=1.0,k=16,bits=3,outlier=2.0", "",
     {"qprecond": "calib", "calibrated_codebook": True}),
    ("+ boundary layers (2+2 exact)", "kakeya:vr=1.0,k=16,bits=3,outlier=2.0", "",
     {"qprecond": "calib", "calibrated_codebook": True, "boundary": 2}),
)
# Our branch ends at the tuned recipe itself ("recipe:NAME": its specs and exact tokens), so the
# ladder's last row is the headline configuration, not a neighbour of it.
_OURS_LADDER: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("ours: mean only, no basis", "kakeya:pca=none,bits=3,block=3072", "kakeya:pca=none,k=0,bits=3,block=3072", {}),
    ("+ sink token exact", "kakeya:pca=none,bits=3,block=3072", "kakeya:pca=none,k=0,bits=3,block=3072",
     {"protect_tokens": 1}),
    ("+ 8-bit row scalars", "kakeya:pca=none,bits=3,block=3072,scalar_bits=8",
     "kakeya:pca=none,k=0,bits=3,block=3072,scalar_bits=8", {"protect_tokens": 1}),
    ("+ entropy-coded uniform grid (= ours-5x)", "recipe:ours-5x", "", {}),
)


def ablation_ladder(include_seed: bool = True, include_ours: bool = True, block: int | None = None
                    ) -> list[tuple[dict[str, Any], KVPlan]]:
    """The stage-by-stage ablation as labelled plans (``stage``, ``rung`` columns).

    Seed rungs: PCA skeleton with a plain uniform 3-bit grid → + spherical k-means → + Hadamard
    rotation → + Lloyd–Max → + outliers → + Σ_q whitening → + calibrated codebooks → + boundary
    layers. Our rungs replace the skeleton by the block mean, keep the sink token exact, code the
    per-row scalars in 8 bits and the residual with an entropy-coded uniform grid. Bits differ a
    little between rungs (the stages' own overheads); the rows report each rung's real ratio.
    ``block`` overrides the rows per block of every spec (tiny models in tests).
    """
    rungs = (_SEED_LADDER if include_seed else ()) + (_OURS_LADDER if include_ours else ())
    out = []
    for i, (stage, k, v, extra) in enumerate(rungs):
        if k.startswith("recipe:"):
            tuned = recipes.load(k.removeprefix("recipe:")).plan()
            k, v, extra = tuned.k, tuned.v or "", {"protect_tokens": tuned.protect_tokens, "hot_tokens": tuned.hot_tokens}
        if block is not None:
            k, v = codecs.with_keys(k, block=block), (codecs.with_keys(v, block=block) if v else v)
        plan = dataclasses.replace(KVPlan(k, v or None, name=stage), **extra)
        out.append(({"rung": i, "stage": stage}, plan))
    return out


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


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "ratio_vs_bf16", y: str = "delta_ppl_pct"
                 ) -> list[dict[str, Any]]:
    """Rows not dominated by another (higher ``x`` is better, lower ``y`` is better), by ``x``.

    The quality-at-ratio frontier: for every ratio, the best quality any configuration reached
    there. Ties on both columns keep the first row.
    """
    ordered = sorted(rows, key=lambda r: (-float(r[x]), float(r[y])))
    front: list[dict[str, Any]] = []
    best = float("inf")
    for r in ordered:
        if float(r[y]) < best:
            front.append(r)
            best = float(r[y])
    return front[::-1]


def best_at(rows: Sequence[dict[str, Any]], max_delta_pct: float, min_top1: float | None = None,
            max_ci_hi: float | None = None) -> dict[str, Any] | None:
    """The highest-ratio row with |Δppl| ≤ ``max_delta_pct`` (and the optional top-1 / CI bounds)."""
    ok = [r for r in rows if abs(float(r["delta_ppl_pct"])) <= max_delta_pct
          and (min_top1 is None or float(r["top1_pct"]) >= min_top1)
          and (max_ci_hi is None or float(r["delta_ppl_ci_hi"]) <= max_ci_hi)]
    return max(ok, key=lambda r: float(r["ratio_vs_bf16"])) if ok else None
