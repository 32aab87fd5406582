"""render-stages's writer over tiny stage-demo cells: every file it promises, and the macros."""

from __future__ import annotations

import json

from kakeya_lib.experiments import stage_demos
from kakeya_lib.experiments.stages_report import StagesReport
from kakeya_lib.store import Cell, Store


def test_the_report_writes_its_tables_figures_and_macros(tmp_path):
    store = Store(tmp_path / "store")
    cells = {
        "wht": stage_demos.wht_gaussianisation(n=1024, dims=(64,)),
        "quantisers": stage_demos.quantiser_rate_distortion(bits=(2, 3, 4), n=20000),
        "outliers": stage_demos.outlier_tradeoff((None, 2.0), n=512, d=64),
        "pca_vs_rsvd": stage_demos.pca_vs_rsvd(ranks=(4, 8), n=256, d=32, power_iters=(0, 2), repeat=1),
    }
    for name, rows in cells.items():
        store.save(Cell("smoke", "synthetic", "synthetic", f"stages/{name}", "tiny", {}), rows, {}, None)
    out = tmp_path / "generated"
    rep = StagesReport(store, "smoke", out_dir=out)
    assert "| Lloyd–Max MSE |" in rep.write_quantisers().read_text()
    rep.write_wht(), rep.write_outliers()
    best = rep.write_rsvd()
    assert list(best.index) == [4, 8] and set(best.columns) == {"exact", "rsvd q=0", "rsvd q=2"}
    for name in ("quantisers", "wht", "outliers"):
        assert f"\\label{{tab:render-stages-{name}}}" in (out / "tables" / f"render-stages-{name}.tex").read_text()
    outliers = (out / "tables" / "render-stages-outliers.md").read_text()
    assert "| off |" in outliers and "nan" not in outliers  # no threshold reads "off", not NaN
    for name in ("quantiser-rd", "pca-vs-rsvd"):
        assert (out / "figures" / f"render-stages-{name}.pdf").is_file()
    values = rep.write_macros()
    assert abs(float(values["LloydThreeBitMse"]) - 0.0345) < 0.003  # Lloyd-Max 3 bits on N(0,1): 0.03454
    assert float(values["WhtKurtosisAfter"]) < float(values["WhtKurtosisBefore"])
    assert float(values["RsvdTwoPowerGap"]) <= float(values["RsvdNoPowerGap"]) * 1.0001
    assert json.loads((out / "variables" / "render-stages.json").read_text())["values"] == values
