"""What ``notebooks/render-stages.ipynb`` writes: the per-stage tables, figures and macros.

:class:`StagesReport` reads the synthetic ``stages/*`` cells of one profile (the Hadamard
rotation, the scalar quantisers, outlier compensation, exact PCA vs randomised SVD) and writes
into ``paper/generated/`` the tables the paper's method section cites, the quantiser
rate-distortion and PCA-vs-RSVD figures, and the macros quoted in the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import report
from ..paths import GENERATED_DIR
from ..store import Store

STEM = "render-stages"
MODEL = "synthetic"


@dataclass
class StagesReport:
    """The render-stages outputs of one profile."""

    store: Store
    profile: str
    out_dir: Path = GENERATED_DIR
    wht: pd.DataFrame = field(init=False)
    quantisers: pd.DataFrame = field(init=False)
    outliers: pd.DataFrame = field(init=False)
    rsvd: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        def rows(analysis: str) -> pd.DataFrame:
            return pd.DataFrame(self.store.rows(self.profile, f"stages/{analysis}", model=MODEL))

        self.wht, self.quantisers = rows("wht"), rows("quantisers")
        self.outliers, self.rsvd = rows("outliers"), rows("pca_vs_rsvd")

    def _by_bits(self, quantiser: str) -> pd.DataFrame:
        return self.quantisers[self.quantisers.quantiser == quantiser].set_index("bits")

    def write_quantisers(self) -> Path:
        """The Lloyd–Max vs uniform table and rate-distortion figure; returns the markdown table's path."""
        lm, un = self._by_bits("lloyd-max"), self._by_bits("uniform")
        table = [{"bits": b, "lm_mse": lm.mse[b], "lm_h": lm.entropy_bits[b],
                  "u_mse": un.mse.get(b), "u_h": un.entropy_bits.get(b)} for b in lm.index]
        report.write_table(STEM, "quantisers", table, [
            report.Column("bits", "bits", str), report.Column("lm_mse", "Lloyd–Max MSE", _g3),
            report.Column("lm_h", "Lloyd–Max index entropy (bits)", report.fixed(2)),
            report.Column("u_mse", "uniform grid MSE (2^b−1 levels)", _g3),
            report.Column("u_h", "uniform index entropy (bits)", report.fixed(2))],
            "Scalar quantisers on N(0,1) samples: measured MSE and the entropy of the indices (the rate an "
            "entropy coder reaches).", out_dir=self.out_dir)
        plt = report.setup_style()
        fig, ax = plt.subplots()
        ax.semilogy(lm.index, lm.mse, "o-", label="Lloyd–Max, fixed rate (bits)")
        ax.semilogy(lm.entropy_bits, lm.mse, "s--", label="Lloyd–Max, entropy-coded")
        ax.semilogy(un.entropy_bits, un.mse, "^-", label="uniform grid, entropy-coded")
        ax.set_xlabel("bits per coordinate")
        ax.set_ylabel("MSE on N(0, 1)")
        ax.legend()
        report.save_figure(fig, STEM, "quantiser-rd", out_dir=self.out_dir)
        return self.out_dir / "tables" / f"{STEM}-quantisers.md"

    def write_wht(self) -> pd.DataFrame:
        """Kurtosis and channel spread before and after the Hadamard rotation."""
        f2 = report.fixed(2)
        report.write_table(STEM, "wht", self.wht.to_dict("records"), [
            report.Column("dim", "D", str), report.Column("stage", "rows", str, "l"),
            report.Column("kurtosis_median", "median excess kurtosis", f2),
            report.Column("kurtosis_max", "max excess kurtosis", f2),
            report.Column("channel_rms_spread", "max/min channel RMS", f2),
            report.Column("peak_over_rms", "peak / RMS", f2)],
            "Laplace rows with four channels 8 times larger, before and after the seeded Hadamard rotation.",
            out_dir=self.out_dir)
        return self.wht

    def write_outliers(self) -> pd.DataFrame:
        """Outlier compensation: real bytes against error for each threshold."""
        report.write_table(STEM, "outliers", self.outliers.to_dict("records"), [
            # no threshold is None in the cell, NaN once pandas holds the column
            report.Column("threshold", "T", lambda v: "off" if v is None or v != v else f"{v:g}"),
            report.Column("bits_per_elem", "bits/elem", report.fixed(2)),
            report.Column("outlier_bytes", "outlier bytes", str),
            report.Column("rel_mse", "rel. MSE", report.fixed(4))],
            "Outlier compensation on heavy-tailed rows (kakeya codec, 3 bits, blocks of 1024): real bytes "
            "against error.", out_dir=self.out_dir)
        return self.outliers

    def write_rsvd(self) -> pd.DataFrame:
        """The PCA-vs-RSVD figure; returns the variance left out per rank and method."""
        plt = report.setup_style()
        fig, ax = plt.subplots(1, 2, figsize=(7.5, 3.0))
        for method, g in self.rsvd.groupby("method"):
            ax[0].semilogy(g["rank"], g.residual_share, "o-", label=method)
            ax[1].plot(g["rank"], 1e3 * g.fit_seconds, "o-", label=method)
        ax[0].set_xlabel("rank")
        ax[0].set_ylabel("variance left out")
        ax[0].legend()
        ax[1].set_xlabel("rank")
        ax[1].set_ylabel("fit time (ms, 1 block)")
        report.save_figure(fig, STEM, "pca-vs-rsvd", out_dir=self.out_dir)
        return self.rsvd.pivot_table(index="rank", columns="method", values="residual_share")

    def write_macros(self) -> dict[str, str]:
        """The numbers the method section quotes."""
        lm, un, wht = self._by_bits("lloyd-max"), self._by_bits("uniform"), self.wht
        best = self.rsvd.pivot_table(index="rank", columns="method", values="residual_share")
        two_power = next(c for c in best if c.endswith("q=2"))
        macros = {
            "LloydThreeBitMse": f"{lm.mse[3]:.4f}", "UniformThreeBitMse": f"{un.mse[3]:.4f}",
            "LloydFourBitEntropy": f"{lm.entropy_bits[4]:.2f}",
            "WhtKurtosisBefore": f"{wht[wht.stage == 'input'].kurtosis_median.max():.2f}",
            "WhtKurtosisAfter": f"{wht[wht.stage == 'rotated'].kurtosis_median.max():.2f}",
            "RsvdNoPowerGap": f"{(best.filter(like='q=0').iloc[:, 0] / best['exact']).max():.2f}",
            "RsvdTwoPowerGap": f"{(best[two_power] / best['exact']).max():.3f}",
        }
        report.write_macros(STEM, macros, out_dir=self.out_dir)
        return macros


def _g3(value: float) -> str:
    return f"{value:.3g}"
