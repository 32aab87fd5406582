"""Plan generators for the analyses the paper needs, and a runner that turns them into tidy rows.

* :func:`depth_compounding`: compress only the first k compressible layers, k = 1..L — how error
  compounds with depth;
* :func:`single_layer_attribution`: compress one layer at a time — which layers carry the damage;
* :func:`grid`: every combination of codec spec keys (bits, rank, block, outlier, ...) for
  rate–distortion frontiers.

:func:`run` evaluates plans side by side on the same passages and returns one tidy row per plan
(the row of :func:`~kakeya_lib.experiments.table.summary_row` plus the generator's own columns).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from ..codecs.spec import split_spec
from ..llm.plan import KVPlan, full_attention_layers
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
        specs = []
        for spec in (base, v_base or base):
            name, raw = split_spec(spec)
            raw.update({k: str(v) for k, v in zip(keys, values)})
            specs.append(f"{name}:" + ",".join(f"{k}={v}" for k, v in raw.items()))
        out.append((dict(zip(keys, values)), KVPlan(specs[0], specs[1], name=extra)))
    return out


def run(model: Any, passages: Sequence[Sequence[int]], ctx_len: int,
        labelled_plans: Sequence[tuple[dict[str, Any], KVPlan]], **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate the plans side by side; one tidy row per plan (its columns + the summary row)."""
    from ..llm.evaluate import evaluate_many  # noqa: PLC0415  (torch only when running)

    results = evaluate_many(model, passages, ctx_len, [plan for _, plan in labelled_plans], **kwargs)
    return [{**columns, **summary_row(result)} for (columns, _), result in zip(labelled_plans, results)]
