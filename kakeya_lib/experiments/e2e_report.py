"""What ``notebooks/render-e2e.ipynb`` writes: the end-to-end tables, figures and macros.

:class:`E2EReport` reads the exp-e2e cells of one profile (only those of the given sweep files)
through the builders of :mod:`.e2e_tables` and writes into ``paper/generated/``: the tuning run,
the frontier figure and points, each codec's ratio at the quality bars, the paired comparisons
at matched ratio, where the gain comes from, the seed's recipes head to head, the stage ablation,
depth, long context, error against KL, and the macros the paper's prose quotes. Each ``write_*``
method writes its files and returns what it wrote, so the notebook stays a list of calls.

One concept: the end-to-end cells rendered for the paper (every table, figure and macro it quotes
comes from here; the statistics themselves live in :mod:`.frontier` and :mod:`.e2e_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import report, sweep
from ..paths import GENERATED_DIR, REPO_ROOT
from ..store import CellResult, Store
from . import e2e_tables as tables
from .e2e_labels import PAIRED_READ, display_label
from .error_vs_kl import rank_correlation_ci
from .plans import SEED_STAGES

STEM = "render-e2e"


def with_ci(value: float, lo: float | None, hi: float | None, fmt: Callable[[float], str]) -> str:
    """``"0.0068 [0.0062, 0.0074]"`` (just the value when there is no interval)."""
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]" if lo is not None else fmt(value)


def decorate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the display columns of :data:`QUALITY` (exact tokens, KL and Δppl with their CIs)."""
    for r in rows:
        r["exact"] = tables.exact_tokens_text(r)
        r["kl_ci"] = with_ci(r["kl_mean"], r.get("kl_ci_lo"), r.get("kl_ci_hi"), report.fixed(4))
        r["delta_ci"] = with_ci(r["delta_ppl_pct"], r["delta_ppl_ci_lo"], r["delta_ppl_ci_hi"], report.fixed(2, signed=True))
    return rows


QUALITY = [report.Column("exact", "exact tokens", str, "l"), report.Column("ratio_vs_bf16", "ratio", report.fixed(2)),
           report.Column("kl_ci", "KL [95 % CI]", str, "l"), report.Column("delta_ci", "Δppl % [95 % CI]", str, "l"),
           report.Column("top1_pct", "top-1 %", report.fixed(1))]
TARGETS = [f"kl<={t:g}" for t in tables.KL_TARGETS] + [f"dppl<={tables.PPL_TARGET:g}"]


def _tuning_targets() -> dict[str, float]:
    """Each tuned recipe's KL target (from its tuning record), by recipe name."""
    from ..llm import recipes  # noqa: PLC0415  (torch-side package: imported only when macros are written)

    loaded = (recipes.load(n) for n in recipes.names())
    return {r.name: float(r.tuning["target_kl"]) for r in loaded if r.tuning}


def _family_style(name: str) -> str:
    """Marker and line by family: ours, KVTC, the fixed-rate peers."""
    return "o-" if name.startswith("ours") else "s--" if name.startswith("KVTC") else "^:"


@dataclass
class E2EReport:
    """The render-e2e outputs of one profile; ``model``/``corpus`` name the main setting."""

    store: Store
    profile: str
    model: str
    corpus: str
    headline: str
    out_dir: Path = GENERATED_DIR  # where tables/, figures/ and variables/ are written
    headline_series: str = "ours"  # the frontier series the headline recipe is a point of
    settings: list[tuple[str, str]] = field(init=False)
    # filled by the write_* methods, read by write_macros
    tuning: list[dict[str, Any]] = field(init=False, default_factory=list)
    summary: list[dict[str, Any]] = field(init=False, default_factory=list)
    paired: list[dict[str, Any]] = field(init=False, default_factory=list)
    paired_recipes: dict[str, list[dict[str, Any]]] = field(init=False, default_factory=dict)
    rho: dict[str, tuple[float, float, float]] = field(init=False, default_factory=dict)
    n_scored_points: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.settings = tables.settings(self.store, self.profile)
        if not self.settings:
            raise RuntimeError(f"no frontier cells in profile {self.profile!r}: run notebooks/exp-e2e.ipynb first")

    @classmethod
    def for_sweeps(cls, profile: str, model: str, corpus: str, headline: str, sweep_files: Sequence[str],
                   store: Store | None = None, out_dir: Path = GENERATED_DIR, headline_series: str = "ours"
                   ) -> "E2EReport":
        """The report over the cells of ``sweep_files`` only (other stored cells are ignored)."""
        base = store if store is not None else Store()
        only = base.only(t.cell.relpath for f in sweep_files for t in sweep.load(REPO_ROOT / f).tasks)
        return cls(only, profile, model, corpus, headline, out_dir, headline_series)

    # -- tables and figures -------------------------------------------------------------------
    def _table(self, name: str, rows: list[dict[str, Any]], columns: list[report.Column], caption: str,
               size: str = "\\small") -> None:
        report.write_table(STEM, name, rows, columns, caption, self.out_dir, size=size)

    def write_tuning(self) -> list[dict[str, Any]]:
        """The tuning runs: every row (``tuning-all``, the book's) and the selected ones (``tuning``)."""
        self.tuning = decorate(tables.tuning_rows(self.store, self.profile))
        if self.tuning:
            t0 = self.tuning[0]
            columns = [report.Column("plan", "configuration", display_label, "l"),
                       report.Column("selected", "selected for", str, "l")] + QUALITY
            caption = (f"our recipes' grid steps on {t0['n_passages']} passages of the calib split of {t0['corpus']} "
                       f"({t0['model']}, ctx {t0['ctx']}), document-disjoint from every evaluation passage. Rule: for "
                       "each KL target, the largest ratio whose KL on these passages is <= the target. ours-klt-sal "
                       "rows use the saliency exponent a = 0.25 unless they say a=0.5.")
            self._table("tuning-all", self.tuning, columns, f"Tuning runs, every point: {caption}", size="\\scriptsize")
            selected = [r for r in self.tuning if r["selected"]] or self.tuning  # none meets a target: show all
            self._table("tuning", selected, columns,
                        f"Tuning runs, the selected points ({len(self.tuning)} points were run; the book lists them "
                        f"all): {caption}")
        return self.tuning

    def write_frontier(self) -> list[dict[str, Any]]:
        """The frontier figure (every series, every setting) and the tables of its points."""
        plt = report.setup_style()
        fig, axes = plt.subplots(2, len(self.settings), figsize=(4.2 * len(self.settings), 6.4), squeeze=False)
        all_points: list[dict[str, Any]] = []
        names: list[str] = []
        by_setting = {(m, c): tables.series_points(self.store, self.profile, m, c) for m, c in self.settings}
        # where uncoded layers bound every codec's whole-cache ratio, the panel plots the coded layers' ratio
        coded = {(m, c): tables.coded_series_points(self.store, self.profile, m, c) for m, c in self.settings}
        for series in by_setting.values():
            names += [n for n in series if n not in names]
        # one colour per series in every panel; the marker and line say the family
        palette = plt.get_cmap("tab10").colors
        color = {n: palette[i % len(palette)] for i, n in enumerate(names)}
        for col, ((m, c), series) in enumerate(by_setting.items()):
            shown = coded[m, c] or series
            for name, pts in shown.items():
                pts = sorted(pts, key=lambda r: r["ratio_vs_bf16"])
                x = [r["ratio_vs_bf16"] for r in pts]
                kw = dict(ms=4, lw=1.2 if name.startswith("ours") else 0.9, color=color[name], label=display_label(name))
                axes[0, col].semilogy(x, [r["kl_mean"] for r in pts], _family_style(name), **kw)
                axes[1, col].plot(x, [r["delta_ppl_pct"] for r in pts], _family_style(name), **kw)
            all_points += [dict(r, model=m, corpus=c, series=name) for name, pts in series.items()
                           for r in sorted(pts, key=lambda r: r["ratio_vs_bf16"])]
            head = tables.recipe_point(shown.get(self.headline_series, []), self.headline)
            if head is not None:  # name the tuned recipe's point
                axes[0, col].annotate(self.headline, (head["ratio_vs_bf16"], head["kl_mean"]), xytext=(6, -10),
                                      textcoords="offset points", fontsize=7, color=color[self.headline_series])
            for t in tables.KL_TARGETS:
                axes[0, col].axhline(t, color="0.7", lw=0.6, zorder=0)
            axes[1, col].axhline(tables.PPL_TARGET, color="0.7", lw=0.6, zorder=0)
            axes[1, col].set_yscale("symlog", linthresh=2.0)
            axes[1, col].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))  # not "−10⁰"
            axes[0, col].set_title(f"{m} on {c}", fontsize=9)
            axes[1, col].set_xlabel("ratio vs bf16, coded layers only (real bytes)" if coded[m, c]
                                    else "ratio vs bf16 (real bytes)")
        axes[0, 0].set_ylabel("KL(ref || codec) per token")
        axes[1, 0].set_ylabel("Δppl %")
        handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines() if not h.get_label().startswith("_")}
        fig.legend([handles[display_label(n)] for n in names], [display_label(n) for n in names], loc="lower center", ncol=min(len(names), 5), fontsize=7,
                   bbox_to_anchor=(0.5, 0.0), frameon=False)
        fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(names) - 1) // 5), 1, 1))
        report.save_figure(fig, STEM, "frontier", self.out_dir)
        plt.close(fig)
        decorate(all_points)
        main_points = [r for r in all_points if (r["model"], r["corpus"]) == (self.model, self.corpus)]
        n = main_points[0]["n_passages"]
        self._table("points", main_points, [report.Column("plan", "codec", display_label, "l")] + QUALITY,
                           f"Every frontier point on {self.model} / {self.corpus} ({n} passages of "
                           f"{main_points[0]['ctx']} tokens, the same for every row): ratios from every stored byte "
                           "(codes, tables, scales, headers, exact tokens at bf16) against bf16.", size="\\scriptsize")
        self._table("points-all", all_points, [report.Column("model", "model", str, "l"),
                           report.Column("corpus", "corpus", str, "l"), report.Column("plan", "codec", display_label, "l")] + QUALITY,
                           "Every frontier point of every setting (each setting's rows on its own passages).",
                           size="\\scriptsize")
        return all_points

    def write_frontier_summary(self) -> list[dict[str, Any]]:
        self.summary = tables.frontier_summary(self.store, self.profile)
        self._table("frontier-summary", self.summary, [report.Column("model", "model", str, "l"),
                           report.Column("corpus", "corpus", str, "l"), report.Column("series", "codec", display_label, "l"),
                           report.Column("exact_tokens", "exact tokens", str, "l"),
                           report.Column("model_bytes", "per-model MB",
                                         lambda v: "--" if v is None else f"{v / 1e6:.1f}")] + [
                           report.Column(t, t.replace("kl<=", "KL ≤ ").replace("dppl<=", "Δppl % ≤ "), str)
                           for t in TARGETS] + [report.Column("kl<=0.01 ci", "KL ≤ 0.01, 95 % CI", str),
                                                report.Column("coded kl<=0.01", "KL ≤ 0.01, coded layers", str)],
                           "Compression ratio each codec reaches at a quality bar, read from its measured frontier: "
                           "linear in log KL (linear in Δppl) between the two measured points that bracket the bar, "
                           "the last crossing when a series is not monotone; '≥ x' when every point meets the bar "
                           "(x is the largest measured ratio), '--' when none does. No extrapolation. The CI of the "
                           "KL ≤ 0.01 reading: 2000 bootstrap resamples of the passages, each point's KL averaged "
                           "over the resample and the series read again (ratios as measured). Per-model MB: "
                           "calibration tables stored once per model (KVTC's PCA bases and quantiser tables, which "
                           "ours-klt reads too, fitted on calib passages), not counted in the per-prompt ratios. "
                           "Last column: the KL ≤ 0.01 "
                           "reading with the ratio over the coded layers alone (Gemma-3 codes 3 of its 18 layers; "
                           "its sliding-window layers stay bf16 and bound the whole-cache ratio).")
        return self.summary

    def _paired_rows(self, recipe: str, series: str, peers_only: bool) -> list[dict[str, Any]]:
        rows = []
        for m, c in self.settings:
            points = tables.series_points(self.store, self.profile, m, c)
            point = tables.recipe_point(points.get(series, []), recipe)
            for r in tables.paired_at_matched_ratio(self.store, self.profile, m, c, point["plan"],
                                                    series) if point else []:
                if peers_only and points[r["series"]][0].get("family") == "ours":
                    continue
                verdict = ("ours lower" if r["kl_diff_hi"] < 0 else "peer lower" if r["kl_diff_lo"] > 0
                           else "not resolved")
                rows.append(dict(r, model=m, corpus=c, verdict=verdict, read=PAIRED_READ[r["match"]],
                                 diff=with_ci(r["kl_diff"], r["kl_diff_lo"], r["kl_diff_hi"], report.fixed(4))))
        return rows

    def _paired_table(self, name: str, rows: list[dict[str, Any]], caption: str) -> None:
        self._table(name, rows, [report.Column("model", "model", str, "l"),
                                 report.Column("corpus", "corpus", str, "l"),
                                 report.Column("peer_plan", "peer point(s)", display_label, "l"),
                                 report.Column("read", "matched at", str, "l"),
                                 report.Column("ours_ratio", "ours ratio", report.fixed(2)),
                                 report.Column("peer_ratio", "peer ratio", report.fixed(2)),
                                 report.Column("ours_kl", "ours KL", report.fixed(4)),
                                 report.Column("peer_kl", "peer KL", report.fixed(4)),
                                 report.Column("diff", "KL ours − peer [95 % CI]", str, "l"),
                                 report.Column("verdict", "verdict", str, "l")],
                    caption + " 'our ratio': the peer read at our point's ratio, each passage's KL interpolated "
                    "in log between the peer's two points that bracket it; 'peer's ratio' (our ratio beyond the "
                    "peer's range): our series read the same way at the ratio of the peer's nearest point; "
                    "'own ratios' (neither possible): both points as measured, each at its own ratio, a "
                    "dominance reading, not an equal-byte one. Bootstrap CI of the per-passage KL difference "
                    "(negative: ours lower); 'not resolved' when the interval contains zero.", size="\\scriptsize")

    def write_paired(self) -> list[dict[str, Any]]:
        """The headline recipe against every other series (ours and the peers') at matched ratio."""
        self.paired = self._paired_rows(self.headline, self.headline_series, peers_only=False)
        if self.paired:
            self._paired_table("paired", self.paired, f"{self.headline} against every other series at the same "
                               "ratio, paired over the same passages.")
        return self.paired

    def write_paired_recipe(self, recipe: str = "ours-5x", series: str = "ours") -> list[dict[str, Any]]:
        """Another recipe of ours (its point on ``series``) against the peers only, as table
        ``paired-<recipe>``: how the recipe fares without the headline's parts."""
        rows = self._paired_rows(recipe, series, peers_only=True)
        self.paired_recipes[recipe] = rows
        if rows:
            self._paired_table(f"paired-{recipe}", rows, f"{recipe} against each peer series at the same ratio, "
                               "paired over the same passages.")
        return rows

    def _parts_rows(self, recipe: str, **kwargs: Any) -> list[dict[str, Any]]:
        rows = decorate([dict(r, model=m, corpus=c) for m, c in self.settings
                         for r in tables.gain_rows(self.store, self.profile, m, c, recipe, **kwargs)])
        for r in rows:
            r["vs_ours"] = ("" if r.get("kl_vs_ours") is None
                            else with_ci(r["kl_vs_ours"], r["kl_vs_ours_lo"], r["kl_vs_ours_hi"], report.fixed(4)))
        return rows

    def _parts_table(self, name: str, rows: list[dict[str, Any]], caption: str) -> None:
        self._table(name, rows, [report.Column("model", "model", str, "l"),
                           report.Column("corpus", "corpus", str, "l"), report.Column("side", "row", str, "l"),
                           report.Column("plan", "configuration", display_label, "l")] + QUALITY + [
                           report.Column("vs_ours", "KL − ours at its ratio [95 % CI]", str, "l")],
                    caption, size="\\scriptsize")

    def write_gain(self, recipe: str = "ours-5x") -> list[dict[str, Any]]:
        """Where the Hadamard recipe's gain comes from: its parts added to TurboQuant-4, removed from it."""
        gain = self._parts_rows(recipe)
        if gain:
            self._parts_table("gain", gain,
                              f"Each of our parts added to TurboQuant-4 (f16 norms) and removed from {recipe}, "
                              "per setting (each setting's rows on its own passages). Last column, for each removal: "
                              "its KL minus our series' KL read at the same ratio (each passage interpolated in log KL "
                              "between the two bracketing points of our series; blank outside its range), paired "
                              "bootstrap CI; positive: the part is worth that much KL at equal bytes.")
        return gain

    def write_levers(self, recipe: str = "ours-klt", series: str = "ours-klt", table: str = "klt-levers",
                     out: str = "levers") -> list[dict[str, Any]]:
        """A recipe's levers: each part removed or changed, at matched rate (the cell ``table`` of the
        head-to-head analysis; written as the table ``out``)."""
        rows = self._parts_rows(recipe, peer_series=(), table=table, ours_series=series)
        with_levers = {(r["model"], r["corpus"]) for r in rows if r["side"] != "ours"}
        rows = [r for r in rows if (r["model"], r["corpus"]) in with_levers]  # settings that have the cell
        if rows:
            self._parts_table(out, rows,
                              f"{recipe}'s parts, each removed or changed (every other part as tuned), per setting. "
                              f"Last column: the row's KL minus the {series} series' KL read at the row's own ratio "
                              "(paired bootstrap CI; positive: the recipe's choice is worth that much KL at equal "
                              "bytes; blank outside the series' measured range).")
        return rows

    def _main_cells(self) -> dict[str, CellResult | None]:
        s, p, m, c = self.store, self.profile, self.model, self.corpus
        return {"head": s.largest(p, "e2e/head_to_head", m, c, label_prefix="ctx"),
                "ablation": s.largest(p, "e2e/ablation", m, c), "depth": s.largest(p, "e2e/depth", m, c)}

    def write_seed_tables(self) -> list[str]:
        """The seed's recipes head to head, the stage ablation, depth and long context (main setting)."""
        cells = self._main_cells()
        head, ablation, depth = cells["head"], cells["ablation"], cells["depth"]
        where = f"{self.model} on {self.corpus}"
        if head:
            self._table("head-to-head", decorate(head.rows), [report.Column("plan", "plan", display_label, "l")] + QUALITY,
                               f"The seed's recipes, ours and TurboQuant-4 on the same passages ({where}, "
                               f"{head.cell.params['n_passages']} passages of {head.cell.params['ctx']} tokens).")
        if ablation:
            self._table("ablation", decorate(ablation.rows), [report.Column("stage", "rung", display_label, "l")] + QUALITY,
                               f"The seed's pipeline built one stage at a time (3 bits per coordinate), then our levers "
                               f"({where}, {ablation.cell.params['n_passages']} passages).")
        if depth:
            self._table("depth", decorate(depth.rows), [report.Column("depth", "layers compressed", str)] + QUALITY,
                               f"{depth.cell.params.get('recipe', self.headline)} on the first j layers only, the rest "
                               f"kept exact ({where}).")
        long_rows = decorate([dict(r, ctx=c.cell.params["ctx"]) for c in self._long_cells() for r in c.rows])
        if long_rows:
            self._table("long-context", long_rows, [report.Column("plan", "plan", display_label, "l"),
                               report.Column("ctx", "context", str)] + QUALITY, f"Longer prefixes ({where}).")
        return [name for name, x in (("head", head), ("ablation", ablation), ("depth", depth), ("long", long_rows)) if x]

    def _long_cells(self) -> list[CellResult]:
        """The main setting's long-context cells, shortest context first."""
        return sorted(self.store.cells(self.profile, "e2e/long_context", self.model, self.corpus),
                      key=lambda c: c.cell.params["ctx"])

    def write_error_vs_kl(self) -> dict[str, tuple[float, float, float]]:
        """KL against K and V relative MSE for every frontier point of the main setting, with ρ and CIs."""
        scored, kl_pp = tables.series_per_passage(self.store, self.profile, self.model, self.corpus)
        # an entropy-coded twin decodes to the same values as its fixed-rate point (same errors, same
        # KL, other bytes): one point per reconstruction, so no configuration counts twice
        keep = sorted({(r["k_rel_mse"], r["v_rel_mse"], tuple(kl)): i
                       for i, (r, kl) in reversed(list(enumerate(zip(scored, kl_pp))))}.values())
        scored, kl_pp = [scored[i] for i in keep], kl_pp[keep]
        self.rho = {s: rank_correlation_ci([r[f"{s}_rel_mse"] for r in scored], kl_pp) for s in ("k", "v")}
        self.n_scored_points = len(scored)
        plt = report.setup_style()
        fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
        for ax, s, color in ((axes[0], "k", "tab:blue"), (axes[1], "v", "tab:orange")):
            ax.loglog([r[f"{s}_rel_mse"] for r in scored], [r["kl_mean"] for r in scored], "o", ms=4, color=color)
            ax.set_xlabel(f"{s.upper()} relative MSE")
            ax.set_title(f"Spearman ρ = {self.rho[s][0]:.2f} [{self.rho[s][1]:.2f}, {self.rho[s][2]:.2f}]", fontsize=9)
        axes[0].set_ylabel("KL per token")
        report.save_figure(fig, STEM, "mse-vs-kl", self.out_dir)
        plt.close(fig)
        return self.rho

    # -- macros ------------------------------------------------------------------------------
    def macro_values(self) -> dict[str, str]:
        """Every macro the paper quotes (call the ``write_*`` methods first: it reads their results)."""
        values = {"Model": self.model, "Corpus": self.corpus, "Headline": self.headline,
                  "Settings": str(len(self.settings))}
        main_cells = tables.series_cells(self.store, self.profile, self.model, self.corpus)
        if main_cells:
            P = next(iter(main_cells.values())).cell.params
            # n_eval continuation tokens give n_eval - 1 scored next-token predictions per passage
            values.update({"Ctx": str(P["ctx"]), "NEval": str(P["n_eval"]), "Passages": str(P["n_passages"]),
                           "NScored": str(P["n_eval"] - 1), "NScoredTotal": f"{(P['n_eval'] - 1) * P['n_passages']:,}"})
            if "calib_passages" in P:  # the calibration tables' passages (every e2e cell names them)
                values["CalibPassages"] = str(P["calib_passages"])
        cells = self._main_cells()
        head, ablation = cells["head"], cells["ablation"]
        for cell, prefix in ((head, "head"), (ablation, "ablation")):
            for r in cell.rows if cell else []:
                key = f"{prefix} {r.get('stage', r['plan'])}"
                values[f"{key} ratio"], values[f"{key} kl"] = f"{r['ratio_vs_bf16']:.2f}", f"{r['kl_mean']:.4f}"
                values[f"{key} delta"] = f"{r['delta_ppl_pct']:+.2f}"
        for r in self.summary:
            key = f"{r['model']} {r['corpus']} {r['series']}"
            for t in TARGETS:
                values[f"{key} {t.replace('<=', ' at ')}"] = report.latex_escape(r[t])
        # each paired row: "<model> <corpus> vs <series> diff" (and its ci, both ratios and KLs); another
        # recipe's rows are prefixed by its name
        for prefix, rows in [("", self.paired)] + [(f"{k} ", v) for k, v in self.paired_recipes.items()]:
            for r in rows:
                key = f"{prefix}{r['model']} {r['corpus']} vs {r['series']}"
                values[f"{key} diff"] = f"{r['kl_diff']:.4f}"
                values[f"{key} diff ci"] = f"[{r['kl_diff_lo']:.4f}, {r['kl_diff_hi']:.4f}]"
                values[f"{key} ours ratio"], values[f"{key} peer ratio"] = f"{r['ours_ratio']:.2f}", f"{r['peer_ratio']:.2f}"
                values[f"{key} ours kl"], values[f"{key} peer kl"] = f"{r['ours_kl']:.4f}", f"{r['peer_kl']:.4f}"
                values[f"{key} verdict"] = r["verdict"]
        # each plan of the long-context cells at its longest context ("Long ours-klt-sal ratio", "... ctx")
        for c in self._long_cells():
            for r in c.rows:
                key = f"long {r['plan']}"
                values[f"{key} ctx"], values[f"{key} passages"] = str(c.cell.params["ctx"]), str(c.cell.params["n_passages"])
                values[f"{key} ratio"], values[f"{key} kl"] = f"{r['ratio_vs_bf16']:.2f}", f"{r['kl_mean']:.4f}"
                if r.get("kl_ci_lo") is not None:
                    values[f"{key} kl ci"] = f"[{r['kl_ci_lo']:.4f}, {r['kl_ci_hi']:.4f}]"
        values["LongTargetSentence"] = self._long_target_sentence()
        values.update(self._headline_values())
        values.update(self._ablation_values(ablation))
        for key, (val, lo, hi) in self.rho.items():
            values[f"Rho {key}"] = f"{val:.2f}"
            values[f"Rho {key} ci"] = f"[{lo:.2f}, {hi:.2f}]"
        values["Rho points"] = str(self.n_scored_points)
        if self.tuning:
            values["TuningPassages"] = str(self.tuning[0]["n_passages"])
        return values

    def _headline_values(self) -> dict[str, str]:
        """The tuned recipe itself on the main setting's eval passages, and the frontier readings."""
        values: dict[str, str] = {}
        series = tables.series_points(self.store, self.profile, self.model, self.corpus)
        head_row = tables.recipe_point(series.get(self.headline_series, []), self.headline)
        if head_row is not None:
            values["HeadlineRatio"] = f"{head_row['ratio_vs_bf16']:.2f}"
            values["HeadlineKl"] = f"{head_row['kl_mean']:.4f}"
            if head_row.get("kl_ci_lo") is not None:
                values["HeadlineKlCi"] = f"[{head_row['kl_ci_lo']:.4f}, {head_row['kl_ci_hi']:.4f}]"
            values["HeadlineDelta"] = f"{head_row['delta_ppl_pct']:+.2f}"
            values["HeadlineDeltaCi"] = f"[{head_row['delta_ppl_ci_lo']:+.2f}, {head_row['delta_ppl_ci_hi']:+.2f}]"
            values["HeadlineTopOne"] = f"{head_row['top1_pct']:.1f}"
            values.update(self._tables_break_even(head_row))
        # the tuned point on every other setting (held-out transfers): "Headline at <model> <corpus> kl"
        held_out: list[tuple[str, str, float]] = []
        for m, c in self.settings:
            if (m, c) == (self.model, self.corpus):
                continue
            point = tables.recipe_point(tables.series_points(self.store, self.profile, m, c).get(
                self.headline_series, []), self.headline)
            if point is not None:
                values[f"Headline at {m} {c} ratio"] = f"{point['ratio_vs_bf16']:.2f}"
                values[f"Headline at {m} {c} kl"] = f"{point['kl_mean']:.4f}"
                held_out.append((m, c, float(point["kl_mean"])))
        values["HeldOutSentence"] = self._held_out_sentence(held_out)
        main = [r for r in self.summary if (r["model"], r["corpus"]) == (self.model, self.corpus)]
        ours = [r for r in main if r["series"] == self.headline_series]
        if ours:
            values["OursKlTenRatio"] = report.latex_escape(ours[0]["kl<=0.01"])
            values["OursKlTenRatioCi"] = report.latex_escape(ours[0]["kl<=0.01 ci"])
            values["OursPplOneRatio"] = report.latex_escape(ours[0]["dppl<=1"])
        # our recipe families at KL <= 0.01 on the main setting ("--" when a series is absent)
        for name in ("ours", "ours-klt", "ours-klt-alloc", "ours-klt-sal"):
            row = next((r for r in main if r["series"] == name), None)
            values[f"Series {name} kl ten"] = report.latex_escape(row["kl<=0.01"]) if row else "--"
        peers = [r for r in main if not r["series"].startswith("ours") and r["kl<=0.01 ratio"] is not None]
        if peers:
            best = max(peers, key=lambda r: r["kl<=0.01 ratio"])
            values["BestPeer"] = report.latex_escape(best["series"])
            values["BestPeerKlTenRatio"] = report.latex_escape(best["kl<=0.01"])
            values["BestPeerKlTenRatioCi"] = report.latex_escape(best["kl<=0.01 ci"])
        return values

    def _long_target_sentence(self) -> str:
        """Each tuned recipe of the longest long-context cell against the KL target it was tuned for
        at the main context, the direction worded from the numbers."""
        cells = self._long_cells()
        if not cells:
            return "This profile has no long-context cell."
        ctx, targets = cells[-1].cell.params["ctx"], _tuning_targets()
        read = [(r, targets[r["plan"]]) for c in cells if c.cell.params["ctx"] == ctx
                for r in c.rows if r["plan"] in targets]
        if not read:
            return "No tuned recipe was run at the longest context."
        parts = ", ".join(f"{r['plan']} KL {r['kl_mean']:.4f} [{r['kl_ci_lo']:.4f}, {r['kl_ci_hi']:.4f}] "
                          f"(target {t:g})" for r, t in read)
        above = [r["plan"] for r, t in read if r["kl_mean"] > t]
        verdict = (f"above its target: {', '.join(above)}" if above else "every one within its target")
        return (f"Tuned at the main context, the recipes read at {ctx} tokens: {parts}; "
                f"{verdict}.")

    def _held_out_sentence(self, held_out: list[tuple[str, str, float]]) -> str:
        """The tuned point's KL on the held-out settings against its tuning target, its direction
        worded from the numbers (so the prose cannot claim a transfer the cells do not show)."""
        target = _tuning_targets().get(self.headline)
        if not held_out or target is None:
            return "This profile has no held-out setting."
        readings = " and ".join(f"{kl:.4f} on {m} / {c}" for m, c, kl in held_out)
        above = [kl > target for _, _, kl in held_out]
        verdict = ("above that target" if all(above) else "within that target" if not any(above)
                   else "above that target on some settings and within it on others")
        return (f"Transferred without retuning, the tuned point reads KL {readings}, against the {target:g} it "
                f"was tuned for on calibration passages of {self.model} / {self.corpus}: {verdict}.")

    def _tables_break_even(self, head_row: dict[str, Any]) -> dict[str, str]:
        """How many prompts' compressed caches (at the headline point) the per-model tables weigh."""
        table_bytes = head_row.get("kvtc_artifact_bytes")
        cell = tables.series_cells(self.store, self.profile, self.model, self.corpus).get(self.headline_series)
        if not table_bytes or cell is None:
            return {}
        cell = self.store.load(cell.cell, with_results=True)
        result = cell.results["results"][[r["plan"] for r in cell.rows].index(head_row["plan"])]
        per_prompt = result["bytes_compressed"] / head_row["n_passages"]
        return {"HeadlineTablesMb": f"{table_bytes / 1e6:.1f}", "HeadlineTablesPrompts": f"{table_bytes / per_prompt:.1f}"}

    @staticmethod
    def _ablation_values(ablation: CellResult | None) -> dict[str, str]:
        if not ablation:
            return {}
        rows = ablation.rows
        seed_rungs = [r for r in rows if r["stage"] in SEED_STAGES]
        values = {"AblationFirstKl": f"{rows[0]['kl_mean']:.3f}",
                  "AblationSeedBestKl": f"{min(r['kl_mean'] for r in seed_rungs):.4f}",
                  "AblationOursLastKl": f"{rows[-1]['kl_mean']:.4f}",
                  "AblationOursLastRatio": f"{rows[-1]['ratio_vs_bf16']:.2f}"}
        # what the seed's query whitening costs: the rung that adds it against the rung before
        sq = next((i for i, r in enumerate(rows) if r["stage"].startswith("+ Sigma_q")), None)
        if sq:
            values["AblationSigmaQBeforeKl"] = f"{rows[sq - 1]['kl_mean']:.4f}"
            values["AblationSigmaQKl"] = f"{rows[sq]['kl_mean']:.4f}"
        return values

    def write_macros(self) -> dict[str, str]:
        values = self.macro_values()
        report.write_macros(STEM, values, self.out_dir)
        return values
