"""The issue-5 analyses on a real model, as tidy tables: stage ablation, depth compounding, a
rate–distortion grid of our recipe, and the MSE-vs-KL rank correlation over all their rows.

``run_analyses`` is what ``kakeya analyses`` calls; the notebooks will call it too. Every table is
written as CSV (all columns, tidy) and markdown, with a provenance JSON beside them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from . import sweeps
from .table import to_markdown

OURS_K = "kakeya:pca=none,bits=5,quant=uniform,step=0.55,entropy=1,scalar_bits=8,block=3072"
OURS_V = "kakeya:pca=none,k=0,bits=5,quant=uniform,step=0.7,entropy=1,scalar_bits=8,block=3072"


def write_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """All columns of tidy rows as CSV (the union of keys, first-seen order) plus ``.md``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    path.with_suffix(".md").write_text(to_markdown(rows) + "\n")


def run_analyses(model: Any, passages: Sequence[Sequence[int]], ctx: int, out: Path, *, corpus: Any,
                 tokenizer: Any, k_metric: Any | None = None, calib_passages: int = 8, steps: Sequence[float] = (0.5, 0.65, 0.8, 1.0),
                 progress: bool = False) -> dict[str, Any]:
    """Run the three analyses side by side on ``passages``; returns a summary dict (also saved)."""
    common = dict(progress=progress, corpus=corpus, tokenizer=tokenizer, calib_passages=calib_passages,
                  k_metric=k_metric)
    ladder = sweeps.run(model, passages, ctx, sweeps.ablation_ladder(), **common)
    write_rows(ladder, out / "ablation.csv")
    depth = sweeps.run(model, passages, ctx, sweeps.depth_compounding(model.config, OURS_K, OURS_V), **common)
    write_rows(depth, out / "depth_compounding.csv")
    from .e2e import frontier_plans  # noqa: PLC0415  (e2e imports this module's recipe specs)

    grid_plans = [({"step": cols["step"]}, plan) for cols, plan in frontier_plans(steps)]
    grid = sweeps.run(model, passages, ctx, grid_plans, **common)
    write_rows(grid, out / "rate_distortion.csv")
    every = ladder + grid
    summary: dict[str, Any] = {
        "spearman_kl_vs_k_rel_mse": sweeps.rank_correlation(every, "k_rel_mse"),
        "spearman_kl_vs_v_rel_mse": sweeps.rank_correlation(every, "v_rel_mse"),
        "pareto_front": [r["plan"] for r in sweeps.pareto_front(every)],
    }
    if k_metric is not None:
        summary["spearman_kl_vs_k_rel_mse_qmetric"] = sweeps.rank_correlation(every, "k_rel_mse_qmetric")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
