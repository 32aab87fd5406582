"""Plan generators for the analyses the paper needs, and a runner that turns them into tidy rows.

* :func:`depth_compounding`: compress only the first k compressible layers, k = 1..L — how error
  compounds with depth;
* :func:`single_layer_attribution`: compress one layer at a time — which layers carry the damage;
* :func:`grid`: every combination of codec spec keys (bits, rank, block, outlier, ...) for
  rate–distortion frontiers;
* :func:`ablation_ladder`: the seed's pipeline built up one stage at a time at 3 bits, then our
  levers one at a time, ending at the tuned recipe — each rung's bytes, Δppl, KL and top-1.

:func:`run` evaluates plans side by side on the same passages and returns one tidy row per plan
(the row of :func:`~kakeya_lib.experiments.table.summary_row` plus the generator's own columns).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

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
# the seed branch's rung names (the render tells the two branches apart by them)
SEED_STAGES = tuple(stage for stage, *_ in _SEED_LADDER)
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
