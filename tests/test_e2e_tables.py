"""The render notebook's table builders over a small hand-made store."""

from __future__ import annotations

import pytest

from kakeya_lib import codecs
from kakeya_lib.experiments import e2e, e2e_tables
from kakeya_lib.llm import recipes
from kakeya_lib.store import Cell, Store

SIZE = {"ctx": 64, "n_eval": 8, "n_passages": 3}


def row(plan, ratio, kl, k="turboquant", v="turboquant", protect=1, hot=0):
    return {"plan": plan, "ratio_vs_bf16": ratio, "kl_mean": kl, "delta_ppl_pct": 100 * kl, "k_codec": k,
            "v_codec": v, "protect_tokens": protect, "hot_tokens": hot, "boundary": 0,
            # the remaining columns every stored row has (render-e2e shows them)
            "delta_ppl_ci_lo": 90 * kl, "delta_ppl_ci_hi": 110 * kl, "top1_pct": 95.0, "ctx": SIZE["ctx"],
            "n_passages": SIZE["n_passages"], "k_rel_mse": 10 * kl, "v_rel_mse": 20 * kl}


def result(kls):
    return {"per_passage": [{"kl_mean": x, "delta_ppl_pct": 100 * x} for x in kls]}


def save(store, analysis, label, params, rows, results=None):
    cell = Cell("smoke", "tiny", "sotu", analysis, label, {**SIZE, **params})
    store.save(cell, rows, {}, {"results": results or [result([r["kl_mean"]] * 3) for r in rows],
                                "passage_ids": ["a", "b", "c"], "split": params.get("split", "eval")})


@pytest.fixture(name="store")
def store_fixture(tmp_path):
    store = Store(tmp_path)
    plan = recipes.load("ours-5x").plan()
    k, v = codecs.get(plan.k).spec, codecs.get(plan.v).spec
    save(store, "e2e/frontier", "ours-x", {"series": "ours"},
         [row("ours (as given)", 5.0, 0.006, k, v), row("ours coarse", 6.0, 0.015, k + "x", v)],
         [result([0.005, 0.006, 0.007]), result([0.014, 0.015, 0.016])])
    save(store, "e2e/frontier", "tq-x", {"series": "TurboQuant +sink"},
         [row("TurboQuant +sink bits=3", 4.8, 0.03), row("TurboQuant +sink bits=4", 3.7, 0.009)],
         [result([0.02, 0.03, 0.04]), result([0.008, 0.009, 0.010])])
    save(store, "e2e/frontier", "ctx64-old", {"steps": [0.5]}, [row("old grid", 5.0, 0.01)])  # the old format
    save(store, "e2e/head_to_head", "gain-x", {"table": "gain"}, [row("ours-5x -sink", 5.1, 0.02, protect=0)])
    save(store, "e2e/tuning", "tune-x", {"split": "calib"},
         e2e.mark_selected([row("a", 4.0, 0.004), row("b", 5.0, 0.009), row("c", 6.0, 0.03)], [0.005, 0.01]))
    return store


def test_series_points_skip_old_cells_and_order_ours_first(store):
    assert e2e_tables.settings(store, "smoke") == [("tiny", "sotu")]
    assert list(e2e_tables.series_points(store, "smoke", "tiny", "sotu")) == ["ours", "TurboQuant +sink"]


def test_frontier_summary_reads_each_series_at_the_bars(store):
    rows = {r["series"]: r for r in e2e_tables.frontier_summary(store, "smoke")}
    assert rows["ours"]["kl<=0.005"] == "--" and 5.0 < rows["ours"]["kl<=0.01 ratio"] < 6.0
    assert rows["TurboQuant +sink"]["kl<=0.01 kind"] == "interpolated" and rows["ours"]["exact_tokens"] == "sink 1"
    assert rows["ours"]["coded kl<=0.01"] is None  # the fixture's results hold no per-layer tallies


def test_the_coded_layers_ratio_leaves_the_uncoded_layers_out():
    def layer(compressed, k, v, bf16, sink=0):
        return {"compressed": compressed, "k_bytes": k, "v_bytes": v, "hot_bytes": 0, "protected_bytes": sink,
                "bf16_bytes": bf16}

    result = {"per_layer": [layer(False, 0, 0, 1000), layer(True, 100, 80, 1000, sink=20), layer(True, 90, 110, 1000)]}
    assert e2e_tables.coded_layers_ratio(result) == pytest.approx(2000 / 400)
    assert e2e_tables.coded_layers_ratio({"per_layer": [layer(False, 0, 0, 1000)]}) is None


def test_paired_comparison_picks_the_nearest_ratio_point_and_its_interval(store):
    ours = e2e_tables.recipe_point(e2e_tables.series_points(store, "smoke", "tiny", "sotu")["ours"], "ours-5x")
    assert ours["plan"] == "ours (as given)"
    (r,) = e2e_tables.paired_at_matched_ratio(store, "smoke", "tiny", "sotu", ours["plan"])
    # ours' 5.0x lies beyond the peer's measured range (3.7x-4.8x): its nearest point stands in
    assert r["peer_plan"] == "TurboQuant +sink bits=3" and r["match"] == "nearest" and r["kl_diff"] == pytest.approx(-0.024)
    assert r["kl_diff_hi"] < 0 and r["decided"]
    # ours' coarse point (6.0x) inside a peer range (5.5x-6.5x): the peer is read at exactly 6.0x
    save(store, "e2e/frontier", "kivi-x", {"series": "KIVI +sink"},
         [row("KIVI +sink bits=2", 6.5, 0.04), row("KIVI +sink bits=3", 5.5, 0.01)],
         [result([0.04] * 3), result([0.01] * 3)])
    got = {r["series"]: r for r in e2e_tables.paired_at_matched_ratio(store, "smoke", "tiny", "sotu", "ours coarse")}
    kivi = got["KIVI +sink"]
    assert kivi["match"] == "interpolated" and kivi["peer_ratio"] == 6.0 and kivi["peer_kl"] == pytest.approx(0.02)
    assert kivi["peer_plan"] == "KIVI +sink bits=3 .. KIVI +sink bits=2" and kivi["kl_diff"] == pytest.approx(-0.005)
    # a peer whose range (5.2x-5.5x) ours' 6.0x lies beyond, but whose nearest point (5.5x) lies inside
    # our series' range (5.0x-6.0x): our series is read at 5.5x (halfway in log KL), the peer as measured
    save(store, "e2e/frontier", "kvtc-x", {"series": "KVTC +sink"},
         [row("KVTC +sink bits=2", 5.5, 0.012), row("KVTC +sink bits=3", 5.2, 0.008)],
         [result([0.012] * 3), result([0.008] * 3)])
    kvtc = {r["series"]: r for r in e2e_tables.paired_at_matched_ratio(store, "smoke", "tiny", "sotu",
                                                                        "ours coarse")}["KVTC +sink"]
    halfway = [(a * b) ** 0.5 for a, b in ((0.005, 0.014), (0.006, 0.015), (0.007, 0.016))]
    assert kvtc["match"] == "ours interpolated" and kvtc["ours_ratio"] == kvtc["peer_ratio"] == 5.5
    assert kvtc["ours_kl"] == pytest.approx(sum(halfway) / 3)
    assert kvtc["kl_diff"] == pytest.approx(sum(halfway) / 3 - 0.012) and kvtc["peer_plan"] == "KVTC +sink bits=2"


def test_gain_and_tuning_rows(store):
    sides = [(r["side"], r["plan"]) for r in e2e_tables.gain_rows(store, "smoke", "tiny", "sotu", "ours-5x")]
    assert sides == [("peer + part", "TurboQuant +sink bits=4"), ("ours", "ours-5x"), ("ours − part", "ours-5x -sink")]
    # the removal (5.1x, KL 0.02 on every passage) against ours read at 5.1x: 0.006 -> 0.015 in log
    # over 5x-6x, 0.1 of the way: 0.006 * 2.5**0.1 on the middle passage
    minus = e2e_tables.gain_rows(store, "smoke", "tiny", "sotu", "ours-5x")[-1]
    ref = [a * (b / a) ** 0.1 for a, b in ((0.005, 0.014), (0.006, 0.015), (0.007, 0.016))]
    assert minus["kl_vs_ours"] == pytest.approx(0.02 - sum(ref) / 3) and minus["kl_vs_ours_lo"] > 0
    tuning = e2e_tables.tuning_rows(store, "smoke")
    assert [r["selected"] for r in tuning] == ["KL<=0.005", "KL<=0.01", ""] and tuning[0]["split"] == "calib"
    assert e2e_tables.exact_tokens_text({"protect_tokens": 4, "hot_tokens": 128}) == "sink 4 + recent 128"


def test_series_per_passage_stacks_every_point_of_a_setting(store):
    rows, kl = e2e_tables.series_per_passage(store, "smoke", "tiny", "sotu")
    assert [r["series"] for r in rows] == ["ours", "ours", "TurboQuant +sink", "TurboQuant +sink"]
    assert kl.shape == (4, 3) and kl[0].tolist() == [0.005, 0.006, 0.007]


def test_coded_series_points_only_where_some_layers_stay_uncoded(store):
    # the fixture's results hold no per-layer tallies: no coded-layers reading
    assert e2e_tables.coded_series_points(store, "smoke", "tiny", "sotu") is None

    def layer(compressed, coded_bytes):
        return {"compressed": compressed, "k_bytes": coded_bytes, "v_bytes": 0, "hot_bytes": 0,
                "protected_bytes": 0, "bf16_bytes": 1000}

    tmp = Store(store.root / "coded")
    partial = {"per_passage": [{"kl_mean": 0.01, "delta_ppl_pct": 1.0}] * 3,
               "per_layer": [layer(False, 0), layer(True, 100)]}  # 2000 bf16 bytes over 1100 stored
    save(tmp, "e2e/frontier", "ours-x", {"series": "ours"}, [row("ours (as given)", 2000 / 1100, 0.01)], [partial])
    (r,) = e2e_tables.coded_series_points(tmp, "smoke", "tiny", "sotu")["ours"]
    assert r["ratio_vs_bf16"] == pytest.approx(10.0) and r["plan"] == "ours (as given)"
    whole = {"per_passage": partial["per_passage"], "per_layer": [layer(True, 100), layer(True, 100)]}
    save(tmp, "e2e/frontier", "ours-x", {"series": "ours"}, [row("ours (as given)", 10.0, 0.01)], [whole])
    assert e2e_tables.coded_series_points(tmp, "smoke", "tiny", "sotu") is None  # every layer coded
