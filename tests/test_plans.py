"""Plan generators and the tidy runner (smoke-sized on a tiny model), the Pareto front and the
error-vs-KL rank correlations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kakeya_lib import codecs
from kakeya_lib.experiments import error_vs_kl, frontier, plans
from kakeya_lib.llm import recipes
from kakeya_lib.llm.models import tiny_config, tiny_model

from .test_qprecond import calib_dir_fixture  # noqa: F401  (fixture)

G = torch.Generator().manual_seed(5)
PASSAGES = [torch.randint(0, 96, (72,), generator=G).tolist() for _ in range(2)]


def test_generators_build_the_expected_plans():
    cfg = tiny_config("llama")
    depth = plans.depth_compounding(cfg, "kakeya:bits=2")
    assert [c["depth"] for c, _ in depth] == [1, 2] and depth[0][1].layers == (0,)
    single = plans.single_layer_attribution(cfg, "kakeya:bits=2")
    assert [p.layers for _, p in single] == [(0,), (1,)]
    g = plans.grid("kakeya:pca=none", "kakeya:pca=none,k=0", bits=[2, 3], block=[512, 1024])
    assert len(g) == 4
    cols, plan = g[-1]
    assert cols == {"bits": 3, "block": 1024}
    assert plan.k == codecs.get("kakeya:pca=none,bits=3,block=1024").spec and "k=0" in plan.v


def test_run_gives_tidy_rows_and_compounding_grows_with_depth():
    model = tiny_model("llama")
    rows = plans.run(model, PASSAGES, 64, plans.depth_compounding(model.config, "kakeya:bits=1,block=64"),
                      progress=False)
    assert [r["depth"] for r in rows] == [1, 2]
    assert {"plan", "ratio_vs_bf16", "delta_ppl_pct", "kl_mean", "top1_pct"} <= set(rows[0])
    assert rows[1]["ratio_vs_bf16"] > rows[0]["ratio_vs_bf16"]  # more layers compressed, fewer bytes
    assert rows[1]["k_rel_mse"] > 0


def test_pareto_front_keeps_the_undominated_rows():
    rows = [
        {"plan": "a", "ratio_vs_bf16": 3.0, "delta_ppl_pct": 0.5, "top1_pct": 96, "delta_ppl_ci_hi": 0.9},
        {"plan": "b", "ratio_vs_bf16": 4.0, "delta_ppl_pct": 0.4, "top1_pct": 95, "delta_ppl_ci_hi": 1.2},
        {"plan": "c", "ratio_vs_bf16": 5.0, "delta_ppl_pct": 2.0, "top1_pct": 93, "delta_ppl_ci_hi": 3.0},
        {"plan": "d", "ratio_vs_bf16": 4.5, "delta_ppl_pct": 2.5, "top1_pct": 94, "delta_ppl_ci_hi": 3.1},
    ]
    assert [r["plan"] for r in frontier.pareto_front(rows)] == ["b", "c"]  # a and d are dominated


def test_rank_correlation_is_spearman():
    rows = [{"x": float(i), "kl_mean": float(i * i)} for i in range(5)] + [{"x": None, "kl_mean": 1.0}]
    assert abs(error_vs_kl.rank_correlation(rows, "x") - 1.0) < 1e-12
    rev = [{"x": -r["x"], "kl_mean": r["kl_mean"]} for r in rows[:5]]
    assert abs(error_vs_kl.rank_correlation(rev, "x") + 1.0) < 1e-12
    import pytest

    with pytest.raises(ValueError, match="at least 3"):
        error_vs_kl.rank_correlation(rows[:2], "x")


def test_the_ablation_ladder_ends_at_the_tuned_recipe():
    (_, last), want = plans.ablation_ladder()[-1], recipes.load("ours-5x").plan()
    assert codecs.get(last.k).spec == codecs.get(want.k).spec and codecs.get(last.v).spec == codecs.get(want.v).spec
    assert (last.protect_tokens, last.hot_tokens, last.boundary) == (want.protect_tokens, want.hot_tokens, want.boundary)


def test_ablation_ladder_runs_every_rung_on_a_tiny_model(tiny_corpus, calib_dir):
    from .conftest import TinyTokenizer

    labelled = plans.ablation_ladder(block=32)
    stages = [c["stage"] for c, _ in labelled]
    assert stages[0] == "skeleton + uniform" and stages[-1] == "+ entropy-coded uniform grid (= ours-5x)"
    assert labelled[5][1].qprecond == "calib" and labelled[6][1].calibrated_codebook
    assert all("block=32" in p.k for _, p in labelled)
    model = tiny_model("llama")
    rows = plans.run(model, PASSAGES, 64, labelled, progress=False, corpus=tiny_corpus, tokenizer=TinyTokenizer(),
                      calib_passages=2)
    assert [r["rung"] for r in rows] == list(range(len(labelled)))
    assert all(r["ratio_vs_bf16"] > 0 and r["kl_mean"] >= 0 for r in rows)  # tiny blocks: bases may cost > bf16
    by_stage = {r["stage"]: r for r in rows}
    # scalars coded in 8 bits: fewer bytes at the same codes (entropy coding only pays on real-sized blocks,
    # see tests/test_kakeya_options.py)
    assert by_stage["+ 8-bit row scalars"]["ratio_vs_bf16"] > by_stage["+ sink token exact"]["ratio_vs_bf16"]
    assert by_stage["+ boundary layers (2+2 exact)"]["kl_mean"] == 0  # 2 layers: both are boundary layers


def test_rank_correlation_ci_brackets_the_estimate_and_widens_with_noise():
    rng = np.random.default_rng(0)
    x = np.linspace(0.01, 0.1, 12)
    tight = x[:, None] * (1 + 0.01 * rng.standard_normal((12, 48)))
    rho, lo, hi = error_vs_kl.rank_correlation_ci(x, tight, n_boot=300)
    assert rho == pytest.approx(1.0) and lo > 0.9 and lo <= rho <= hi
    noisy = x[:, None] + 0.2 * rng.standard_normal((12, 48))
    rho2, lo2, hi2 = error_vs_kl.rank_correlation_ci(x, noisy, n_boot=300)
    assert hi2 - lo2 > hi - lo and lo2 <= rho2 <= hi2
    with pytest.raises(ValueError, match="must be"):
        error_vs_kl.rank_correlation_ci(x[:5], tight)
