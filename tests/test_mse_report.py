"""render-mse's writer over cells built from synthetic captures: every file it promises, and the macros."""

from __future__ import annotations

import json

import pytest

from kakeya_lib.experiments import mse_tables
from kakeya_lib.experiments.mse_report import MseReport
from kakeya_lib.store import Cell, Store

from .test_experiments_tables import INV_FREQ, LAYERS, capture

# the projection table shows only the paper's named configurations (TurboQuant-3 among them)
CONFIGS = mse_tables.resolve_configs({"ref": "kakeya:bits=3,block=64|kakeya:bits=3,block=64", "id": "identity",
                                      "TurboQuant-3": "turboquant:bits=3"})


def test_the_report_writes_its_tables_figures_and_macros(tmp_path):
    rows = mse_tables.layer_rows([capture(0), capture(1)], LAYERS, CONFIGS, INV_FREQ, rope_configs=("ref", "id"))
    store = Store(tmp_path / "store")
    params = {"ctx": 64, "n_passages": 2, "configs": {name: list(pair) for name, pair in CONFIGS.items()}}
    store.save(Cell("smoke", "tiny", "sotu", "mse/layers", "ctx64-n2", params), rows, {}, None)
    scaling = mse_tables.ctx_scaling(capture(0), LAYERS, CONFIGS, [16, 64])
    store.save(Cell("smoke", "tiny", "sotu", "mse/ctx_scaling", "ctx64", {"ctx": 64}), scaling, {}, None)
    out = tmp_path / "generated"
    rep = MseReport(store, "smoke", "tiny", "sotu", out_dir=out)
    assert rep.reference == "ref" and [r["config"] for r in rep.write_summary()] == ["ref", "id", "TurboQuant-3"]
    rep.write_layers(), rep.write_ledger(), rep.write_rope(), rep.write_ctx(), rep.write_projection(1024)
    for name in ("summary", "specs", "layers", "rope", "ctx", "flagship"):
        assert f"\\label{{tab:render-mse-{name}}}" in (out / "tables" / f"render-mse-{name}.tex").read_text()
    for name in ("layer-heatmap", "byte-ledger"):
        assert (out / "figures" / f"render-mse-{name}.pdf").is_file()
    values = rep.write_macros()
    assert values["Reference"] == "ref" and values["ShortestCtx"] == "16" and values["LongestCtx"] == "64"
    assert values["id k mse"] == "0.0000" and float(values["TurboQuant-3 ratio"]) > 1
    assert json.loads((out / "variables" / "render-mse.json").read_text())["values"] == values


def test_the_report_says_which_notebook_to_run_first(tmp_path):
    with pytest.raises(RuntimeError, match="run notebooks/exp-mse.ipynb first"):
        MseReport(Store(tmp_path), "smoke", "tiny", "sotu")
