"""Sweep generators and the tidy runner, smoke-sized on a tiny model."""

from __future__ import annotations

import torch

from kakeya_lib.experiments import sweeps
from kakeya_lib.llm.models import tiny_config, tiny_model

G = torch.Generator().manual_seed(5)
PASSAGES = [torch.randint(0, 96, (72,), generator=G).tolist() for _ in range(2)]


def test_generators_build_the_expected_plans():
    cfg = tiny_config("llama")
    depth = sweeps.depth_compounding(cfg, "kakeya:bits=2")
    assert [c["depth"] for c, _ in depth] == [1, 2] and depth[0][1].layers == (0,)
    single = sweeps.single_layer_attribution(cfg, "kakeya:bits=2")
    assert [p.layers for _, p in single] == [(0,), (1,)]
    g = sweeps.grid("kakeya:pca=none", "kakeya:pca=none,k=0", bits=[2, 3], block=[512, 1024])
    assert len(g) == 4
    cols, plan = g[-1]
    assert cols == {"bits": 3, "block": 1024}
    assert plan.k == "kakeya:pca=none,bits=3,block=1024" and "k=0" in plan.v


def test_run_gives_tidy_rows_and_compounding_grows_with_depth():
    model = tiny_model("llama")
    rows = sweeps.run(model, PASSAGES, 64, sweeps.depth_compounding(model.config, "kakeya:bits=1,block=64"),
                      progress=False)
    assert [r["depth"] for r in rows] == [1, 2]
    assert {"plan", "ratio_vs_bf16", "delta_ppl_pct", "kl_mean", "top1_pct"} <= set(rows[0])
    assert rows[1]["ratio_vs_bf16"] > rows[0]["ratio_vs_bf16"]  # more layers compressed, fewer bytes
    assert rows[1]["k_rel_mse"] > 0
