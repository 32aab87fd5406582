"""One plotting style for every figure, and saving as PDF (paper) + PNG (book)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..paths import GENERATED_DIR


def setup_style() -> Any:
    """Matplotlib with a headless backend and the paper's sizes; returns ``pyplot``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update({
        "figure.figsize": (5.5, 3.4), "figure.dpi": 110, "savefig.dpi": 160, "font.size": 9,
        "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7.5, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
        # Reproducible PDFs: no creation date, Type-42 fonts.
        "pdf.fonttype": 42,
    })
    return plt


def save_figure(fig: Any, stem: str, name: str, out_dir: Path = GENERATED_DIR) -> Path:
    """Write ``figures/<stem>-<name>.pdf`` and ``.png``; returns the PDF path."""
    folder = out_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    pdf = folder / f"{stem}-{name}.pdf"
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": f"notebooks/{stem}.ipynb"})
    fig.savefig(pdf.with_suffix(".png"))
    return pdf
