"""render-e2e's writer over a small hand-made store: every file it promises, and the macros."""

from __future__ import annotations

import pytest

import json

from kakeya_lib.experiments.e2e_report import E2EReport

from .test_e2e_tables import store_fixture  # noqa: F401  (fixture)


def test_the_report_writes_its_tables_figures_and_macros(store, tmp_path):
    rep = E2EReport(store, "smoke", "tiny", "sotu", "ours-5x", out_dir=tmp_path)
    assert rep.settings == [("tiny", "sotu")]
    assert rep.write_tuning() and rep.write_frontier() and rep.write_frontier_summary()
    paired = rep.write_paired()
    assert [r["verdict"] for r in paired] == ["ours lower"]
    # another recipe of ours against the peers only (here the same point: the fixture has one)
    assert [(r["series"], r["verdict"]) for r in rep.write_paired_recipe("ours-5x", "ours")] == [
        ("TurboQuant +sink", "ours lower")]
    assert (tmp_path / "tables" / "render-e2e-paired-ours-5x.tex").is_file()
    assert rep.write_gain()
    assert rep.write_seed_tables() == []  # no head-to-head, ablation, depth or long-context cell here
    for name in ("tuning", "tuning-all", "points", "points-all", "frontier-summary", "paired", "gain"):
        tex = (tmp_path / "tables" / f"render-e2e-{name}.tex").read_text()
        assert f"\\label{{tab:render-e2e-{name}}}" in tex
        assert (tmp_path / "tables" / f"render-e2e-{name}.md").is_file()
    # the paper's tuning table keeps the selected points, the book's every point
    selected, every = ((tmp_path / "tables" / f"render-e2e-{n}.md").read_text() for n in ("tuning", "tuning-all"))
    assert "| b |" in selected and "| c |" not in selected and "| c |" in every
    # the stored series name "ours" prints as the recipe it is, the tuned point as "(tuned)"
    summary = (tmp_path / "tables" / "render-e2e-frontier-summary.md").read_text()
    assert "| ours-5x |" in summary and "| ours |" not in summary
    assert "ours-5x (as given)" not in (tmp_path / "tables" / "render-e2e-points.md").read_text()
    assert (tmp_path / "figures" / "render-e2e-frontier.pdf").is_file()
    values = rep.macro_values()  # before write_error_vs_kl: no correlation macros yet
    assert values["HeadlineRatio"] == "5.00" and values["HeadlineKl"] == "0.0060"
    assert values["BestPeer"] == "TurboQuant +sink" and values["NScored"] == "7" and values["NScoredTotal"] == "21"
    assert values["TuningPassages"] == "3"
    assert "KL ≤ 0.01, 95 % CI" in summary
    assert values["tiny sotu vs TurboQuant +sink verdict"] == "ours lower"
    assert values["ours-5x tiny sotu vs TurboQuant +sink diff ci"].startswith("[-")
    # prose whose direction the numbers decide: nothing to say without those cells
    assert values["HeldOutSentence"] == "This profile has no held-out setting."
    assert values["LongTargetSentence"] == "This profile has no long-context cell."
    rho = rep.write_error_vs_kl()  # the fixture's errors are 10x and 20x its KL: a perfect ordering
    assert rho["k"][0] == rho["v"][0] == 1.0 and (tmp_path / "figures" / "render-e2e-mse-vs-kl.pdf").is_file()
    # the held-out verdict is worded from the numbers against the recipe's own tuning target
    target = 0.01  # ours-5x's tuning target
    assert rep._held_out_sentence([("m", "wiki", 2 * target)]).endswith("above that target.")
    assert rep._held_out_sentence([("m", "wiki", target / 2)]).endswith("within that target.")
    assert "on some settings" in rep._held_out_sentence([("m", "wiki", 2 * target), ("g", "sotu", target / 2)])
    rep.write_macros()
    stored = json.loads((tmp_path / "variables" / "render-e2e.json").read_text())["values"]
    assert stored["Headline"] == "ours-5x" and stored["OursKlTenRatio"] == values["OursKlTenRatio"]
    assert stored["Rho k"] == "1.00" and stored["Rho points"] == "4"


def test_the_levers_table_lists_the_settings_that_have_the_cell(store, tmp_path):
    from kakeya_lib.llm import recipes

    from .test_e2e_tables import row, save

    plan = recipes.load("ours-klt").plan()
    k = plan.k.replace("calib=auto", "calib=kvtc-x") + ",heads=3"  # the resolved spec a stored row holds
    v = plan.v.replace("calib=auto", "calib=kvtc-x") + ",heads=3"
    save(store, "e2e/frontier", "klt-x", {"series": "ours-klt"},
         [row("ours-klt (as given)", 7.7, 0.009, k, v), row("ours-klt coarse", 9.0, 0.015, k, v)])
    rep = E2EReport(store, "smoke", "tiny", "sotu", "ours-klt", out_dir=tmp_path, headline_series="ours-klt")
    assert rep.write_levers() == []  # no levers cell yet: no table
    save(store, "e2e/head_to_head", "klt-levers-x", {"table": "klt-levers"},
         [row("ours-klt per-head basis", 8.0, 0.012, k.replace("pca=concat", "pca=head"), v)])
    rows = rep.write_levers()
    assert [(r["side"], r["plan"]) for r in rows] == [("ours", "ours-klt"), ("ours − part", "ours-klt per-head basis")]
    # read against the ours-klt series at 8.0x (linear in log KL between 7.7x and 9.0x), paired
    assert rows[1]["kl_vs_ours"] == pytest.approx(0.012 - 0.009 * (0.015 / 0.009) ** (0.3 / 1.3))
    assert rows[1]["vs_ours"].startswith("0.0019")
    assert (tmp_path / "tables" / "render-e2e-levers.tex").is_file()
    assert rep.macro_values()["HeadlineRatio"] == "7.70"
