"""Tidy summary tables from evaluation results (one row per K/V codec pair).

The same rows feed the CLI's markdown, ``summary.csv`` for notebooks, and later the paper's
generated tables. ``bits_per_elem`` is ``16 / ratio_vs_bf16``: every stored bit (codes,
skeletons, scales, headers, uncompressed layers) per cached element.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

COLUMNS = (
    "plan", "k_codec", "v_codec", "bits_per_elem", "ratio_vs_bf16", "delta_ppl_pct", "delta_ppl_ci_lo",
    "delta_ppl_ci_hi", "kl_mean", "kl_ci_lo", "kl_ci_hi", "top1_pct", "k_rel_mse", "v_rel_mse", "k_rel_mse_qmetric", "n_passages",
    "n_scored_tokens", "protect_tokens", "hot_tokens", "boundary",
)


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """One table row from an :func:`~kakeya_lib.llm.evaluate.evaluate` result."""
    lo, hi = result["delta_ppl_ci95"]
    return {
        "plan": result.get("plan", result["k_codec"]),
        "k_codec": result["k_codec"],
        "v_codec": result["v_codec"],
        "bits_per_elem": 16.0 / result["ratio_vs_bf16"],
        "ratio_vs_bf16": result["ratio_vs_bf16"],
        "delta_ppl_pct": result["delta_ppl_pct"],
        "delta_ppl_ci_lo": lo,
        "delta_ppl_ci_hi": hi,
        "kl_mean": result["kl_mean"],
        "kl_ci_lo": (result.get("kl_ci95") or [None, None])[0],
        "kl_ci_hi": (result.get("kl_ci95") or [None, None])[1],
        "top1_pct": result["top1_pct"],
        "k_rel_mse": result["k_rel_mse"],
        "v_rel_mse": result["v_rel_mse"],
        "k_rel_mse_qmetric": result.get("k_rel_mse_qmetric"),
        "n_passages": result["n_passages"],
        "n_scored_tokens": result["n_scored_tokens"],
        # The exact tokens every row must state: a comparison is fair only when they match.
        "protect_tokens": result.get("protect_tokens", 0),
        "hot_tokens": result.get("hot_tokens", 0),
        "boundary": result.get("boundary", 0),
    }


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A compact markdown table (codec, bits/elem, ratio, Δppl with CI, KL, top-1, MSEs)."""
    lines = [
        "| plan | K codec | V codec | bits/elem | ratio | Δppl % [95 % CI] | KL | top-1 % | K rel MSE | V rel MSE |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['plan']} | `{r['k_codec']}` | `{r['v_codec']}` | {r['bits_per_elem']:.2f} | {r['ratio_vs_bf16']:.2f}× | "
            f"{r['delta_ppl_pct']:+.2f} [{r['delta_ppl_ci_lo']:+.2f}, {r['delta_ppl_ci_hi']:+.2f}] | "
            f"{r['kl_mean']:.4f} | {r['top1_pct']:.1f} | {r['k_rel_mse']:.4f} | {r['v_rel_mse']:.4f} |"
        )
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the rows with the fixed :data:`COLUMNS` order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r[k] for k in COLUMNS})
