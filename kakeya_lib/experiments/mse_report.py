"""What ``notebooks/render-mse.ipynb`` writes: the MSE tables on captured K/V, their figures and macros.

:class:`MseReport` reads the ``mse/layers`` and ``mse/ctx_scaling`` cells of one model and corpus
through :mod:`.mse_tables` and writes into ``paper/generated/``: the per-configuration summary
and its spec strings, the per-layer spread and heat map, the byte-ledger bars, keys before vs
after RoPE, the ratio against context length, the projection to large grouped-query models, and
the macros the paper quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import report
from ..paths import GENERATED_DIR
from ..store import CellResult, Store
from . import mse_tables

STEM = "render-mse"
# the configurations the projection table shows, when present
PROJECTED = ("tier-1 (bugs fixed)", "ours-5x", "TurboQuant-3", "TurboQuant-4")


@dataclass
class MseReport:
    """The render-mse outputs for one model and corpus of one profile."""

    store: Store
    profile: str
    model: str
    corpus: str
    out_dir: Path = GENERATED_DIR
    layers: CellResult = field(init=False)
    scaling: CellResult = field(init=False)
    summary: list[dict[str, Any]] = field(init=False)
    rope: list[dict[str, Any]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        layers = self.store.largest(self.profile, "mse/layers", self.model, self.corpus)
        scaling = self.store.largest(self.profile, "mse/ctx_scaling", self.model, self.corpus)
        if layers is None or scaling is None:
            raise RuntimeError(f"no exp-mse results for {self.model}/{self.corpus} in profile {self.profile!r}: "
                               "run notebooks/exp-mse.ipynb first")
        self.layers, self.scaling = layers, scaling
        self.summary = mse_tables.config_summary(layers.rows, self.reference)

    @property
    def reference(self) -> str:
        """The configuration error inflation is measured against (the cell's first)."""
        return next(iter(self.layers.cell.params["configs"]))

    @property
    def where(self) -> str:
        p = self.layers.cell.params
        n = p["n_passages"]
        return f"{self.model}, {self.corpus}, {n} passage{'' if n == 1 else 's'} of {p['ctx']} tokens"

    def _table(self, name: str, rows: list[dict[str, Any]], columns: list[report.Column], caption: str,
               size: str = "\\small") -> None:
        report.write_table(STEM, name, rows, columns, caption, self.out_dir, size=size)

    def write_summary(self) -> list[dict[str, Any]]:
        """The per-configuration table and the spec strings behind it."""
        self._table("summary", self.summary, [
            report.Column("config", "config", str, "l"), report.Column("k_bits_per_elem", "K bits/elem", report.fixed(2)),
            report.Column("v_bits_per_elem", "V bits/elem", report.fixed(2)), report.Column("ratio_vs_bf16", "ratio vs bf16", report.fixed(2)),
            report.Column("k_rel_mse", "K rel. MSE", report.fixed(4)), report.Column("v_rel_mse", "V rel. MSE", report.fixed(4)),
            report.Column("k_inflation", "K MSE / ref.", report.fixed(2)), report.Column("v_inflation", "V MSE / ref.", report.fixed(2))],
            f"Reconstruction error and real bytes per configuration on {self.where}: relative MSE averaged over layers "
            f"(layer 0 excluded, as the seed did), ratios from every byte of K and V; inflation against "
            f"'{self.reference}'.")
        specs = [{"config": r["config"], "k": r["k_spec"], "v": r["v_spec"]} for r in self.summary]
        self._table("specs", specs, [report.Column("config", "config", str, "l"),
                                     report.Column("k", "K spec", str, "l", verbatim=True),
                                     report.Column("v", "V spec", str, "l", verbatim=True)],
                    "The codec spec strings of the MSE-table configurations.", size="\\scriptsize")
        return self.summary

    def write_layers(self) -> list[dict[str, Any]]:
        """The spread of per-layer K error and the per-layer heat map of K and V."""
        import pandas as pd  # noqa: PLC0415  (a notebook-side dependency)

        dist = mse_tables.layer_distribution(self.layers.rows, "k")
        self._table("layers", dist, [
            report.Column("config", "config", str, "l"), report.Column("min", "min", report.fixed(4)), report.Column("p25", "p25", report.fixed(4)),
            report.Column("median", "median", report.fixed(4)), report.Column("p75", "p75", report.fixed(4)), report.Column("max", "max", report.fixed(4)),
            report.Column("max_over_min", "max/min", report.fixed(2)), report.Column("argmax_layer", "worst layer", str)],
            f"Spread of the per-layer K relative MSE over layers 1..L-1 ({self.where}).")
        plt = report.setup_style()
        frame = pd.DataFrame(self.layers.rows)
        fig, axes = plt.subplots(2, 1, figsize=(7.5, 4.6), sharex=True)
        for ax, stream in zip(axes, ("k", "v")):
            grid = frame[frame.stream == stream].pivot(index="config", columns="layer", values="rel_mse")
            grid = grid.loc[[r["config"] for r in self.summary]]
            im = ax.imshow(np.log10(grid.values), aspect="auto", cmap="viridis")
            ax.set_yticks(range(len(grid.index)), grid.index, fontsize=7)
            ax.set_title(f"{stream.upper()}: log10 relative MSE per layer")
            fig.colorbar(im, ax=ax, pad=0.01)
        axes[-1].set_xticks(range(len(grid.columns)), grid.columns, fontsize=6)
        axes[-1].set_xlabel("layer")
        report.save_figure(fig, STEM, "layer-heatmap", self.out_dir)
        plt.close(fig)
        return dist

    def write_ledger(self) -> Any:
        """Bits per element by byte-ledger component, per configuration and stream (a bar chart)."""
        import pandas as pd  # noqa: PLC0415

        ledger = pd.DataFrame(mse_tables.ledger_totals(self.layers.rows))
        bars = ledger.pivot_table(index=["config", "stream"], columns="component", values="bits_per_elem", fill_value=0)
        bars = bars.loc[[(r["config"], s) for r in self.summary for s in ("k", "v")]]
        plt = report.setup_style()
        fig, ax = plt.subplots(figsize=(8.5, 3.4))
        bottom = np.zeros(len(bars))
        for comp in bars.columns:
            ax.bar(range(len(bars)), bars[comp].values, bottom=bottom, label=comp)
            bottom += bars[comp].values
        ax.set_xticks(range(len(bars)), [f"{c} {s.upper()}" for c, s in bars.index], rotation=60, ha="right",
                      fontsize=6.5)
        ax.set_ylabel("bits per element")
        ax.set_ylim(0, 1.05 * bottom.max())  # every bar whole
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: covers no bar
        report.save_figure(fig, STEM, "byte-ledger", self.out_dir)
        plt.close(fig)
        return bars

    def write_rope(self) -> list[dict[str, Any]]:
        self.rope = mse_tables.rope_effect(self.layers.rows)
        self._table("rope", self.rope, [
            report.Column("config", "config", str, "l"),
            report.Column("k_rel_mse_post_rope", "K rel. MSE, post-RoPE", report.fixed(4)),
            report.Column("k_rel_mse_pre_rope", "K rel. MSE, pre-RoPE", report.fixed(4)),
            report.Column("mse_ratio", "MSE pre/post", report.fixed(2)), report.Column("bytes_ratio", "bytes pre/post", report.fixed(3))],
            f"Coding keys before RoPE (our cache) vs after it (a stock cache), {self.where}; below 1 favours pre-RoPE.")
        return self.rope

    def _scaling_wide(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        sc = pd.DataFrame(self.scaling.rows)
        return sc.pivot(index="ctx", columns="config", values="ratio_vs_bf16").reset_index()

    def write_ctx(self) -> Any:
        wide = self._scaling_wide()
        cols = [report.Column("ctx", "context", str)] + [report.Column(c, c, report.fixed(2)) for c in wide.columns if c != "ctx"]
        self._table("ctx", wide.to_dict("records"), cols,
                    f"Whole-cache ratio vs bf16 when the first T tokens of one {self.corpus} passage are cached "
                    f"({self.model}); every entry is the byte count of coding that prefix, none is extrapolated.")
        return wide

    def write_projection(self, ctx_tokens: int) -> Any:
        """The labelled projection to large grouped-query models at the bits measured here."""
        import pandas as pd  # noqa: PLC0415

        proj = pd.DataFrame(mse_tables.flagship_projection(self.summary, ctx_tokens))
        keep = [c for c in PROJECTED if c in set(proj.config)]
        flag = proj[proj.config.isin(keep)].pivot_table(
            index=["flagship", "layers", "kv_heads", "head_dim", "bf16_gib_at_ctx"], columns="config",
            values="gib_at_ctx").reset_index()
        cols = [report.Column("flagship", "model", str, "l"), report.Column("layers", "L", str),
                report.Column("kv_heads", "KV heads", str), report.Column("head_dim", "head dim", str),
                report.Column("bf16_gib_at_ctx", "bf16 GiB", report.fixed(1))]
        cols += [report.Column(c, f"{c} GiB", report.fixed(1)) for c in keep]
        self._table("flagship", flag.to_dict("records"), cols,
                    f"PROJECTION, not a measurement: KV cache of one {ctx_tokens}-token sequence for large models, at "
                    f"the K and V bits per element measured on {self.model}, times each model's layers, KV heads and "
                    "head dim (assumes those bits carry over to another head dim and model). Grouped-query models "
                    "only: an MLA cache (DeepSeek-V3, Kimi-K2) is one shared latent per token and layer, not per-head "
                    "K and V.")
        return flag

    def macro_values(self) -> dict[str, str]:
        """The macros the paper quotes (after :meth:`write_rope`, whose rows it reads)."""
        import pandas as pd  # noqa: PLC0415

        p = self.layers.cell.params
        values = {"Model": self.model, "Ctx": str(p["ctx"]), "Passages": str(p["n_passages"]),
                  "Reference": self.reference}
        for r in self.summary:
            values[f"{r['config']} ratio"] = f"{r['ratio_vs_bf16']:.2f}"
            values[f"{r['config']} k mse"] = f"{r['k_rel_mse']:.4f}"
            values[f"{r['config']} v mse"] = f"{r['v_rel_mse']:.4f}"
        for r in self.rope:
            values[f"{r['config']} rope mse ratio"] = f"{r['mse_ratio']:.2f}"
        sc = pd.DataFrame(self.scaling.rows)
        for name, g in sc.groupby("config"):
            values[f"{name} ratio shortest"] = f"{g.ratio_vs_bf16.iloc[0]:.2f}"
            values[f"{name} ratio longest"] = f"{g.ratio_vs_bf16.iloc[-1]:.2f}"
        values["ShortestCtx"], values["LongestCtx"] = str(sc.ctx.min()), str(sc.ctx.max())
        return values

    def write_macros(self) -> dict[str, str]:
        values = self.macro_values()
        report.write_macros(STEM, values, self.out_dir)
        return values
