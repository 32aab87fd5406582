"""KV plans: boundary layers at their own codec or uncompressed, protected leading tokens, in the
round-trip harness and in the compressed cache alike."""

from __future__ import annotations

import pytest
import torch

from kakeya_lib.errors import InputError, SpecError
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.evaluate import evaluate
from kakeya_lib.llm.models import tiny_config, tiny_model
from kakeya_lib.llm.plan import KVPlan
from kakeya_lib.llm.prerope import make_cache, patch_model

G = torch.Generator().manual_seed(3)
PASSAGES = [torch.randint(0, 96, (72,), generator=G).tolist() for _ in range(2)]


def test_layer_codecs_resolve_boundaries():
    cfg = tiny_config("llama", num_hidden_layers=6)
    plan = KVPlan("kakeya:bits=2", "int:bits=4", boundary=2, boundary_k="int:bits=8")
    per_layer = plan.layer_codecs(cfg)
    assert [c[0].spec for c in per_layer] == ["int:bits=8", "int:bits=8", "kakeya:bits=2", "kakeya:bits=2",
                                              "int:bits=8", "int:bits=8"]
    assert [c[1].spec for c in per_layer][2] == "int"
    assert KVPlan("identity", boundary=1).layer_codecs(cfg)[0] is None
    gemma = KVPlan("identity").layer_codecs(tiny_config("gemma3"))
    assert [c is None for c in gemma] == [True, True, False]  # sliding layers stay float


def test_bad_plans_fail_early():
    with pytest.raises(SpecError):
        KVPlan("kakeya:nope=1")
    with pytest.raises(InputError, match="boundary_v"):
        KVPlan("identity", boundary=1, boundary_v="int")
    with pytest.raises(InputError, match="layer indices"):
        KVPlan("identity", layers=(9,)).layer_codecs(tiny_config("llama"))


def test_protected_tokens_are_exact_and_counted_in_roundtrip():
    model = tiny_model("llama")
    plain = evaluate(model, PASSAGES, 64, KVPlan("kakeya:bits=1,block=64"), progress=False)
    kept = evaluate(model, PASSAGES, 64, KVPlan("kakeya:bits=1,block=64", protect_tokens=4), progress=False)
    cfg = model.config
    per_layer = 2 * 4 * 2 * cfg.num_key_value_heads * cfg.head_dim  # bf16, K and V, 4 tokens
    assert kept["per_layer"][0]["protected_bytes"] == len(PASSAGES) * per_layer
    assert kept["kl_mean"] != plain["kl_mean"]
    whole = evaluate(model, PASSAGES, 64, KVPlan("kakeya:bits=1", protect_tokens=64), progress=False)
    assert whole["kl_mean"] == 0.0  # every prefix token protected: nothing is lossy


def test_boundary_layers_at_their_own_codec():
    model = tiny_model("llama")  # 2 layers: boundary=1 makes both boundary layers
    r = evaluate(model, PASSAGES, 64, KVPlan("kakeya:bits=1", boundary=1, boundary_k="identity"), progress=False)
    assert r["layer_codecs"] == [["identity", "identity"], ["identity", "identity"]]
    assert r["kl_mean"] == 0.0


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_cache_honours_protect_and_boundary(family):
    model = tiny_model(family)
    patch_model(model)
    prompt = torch.randint(0, 96, (1, 40), generator=torch.Generator().manual_seed(4))
    plan = KVPlan("kakeya:bits=2,block=32", protect_tokens=3)
    cache = CompressedCache.from_plan(model.config, plan, block_tokens=8, hot_tokens=4)
    with torch.no_grad():
        model(prompt, cache=cache)
        for t in range(5):
            model(prompt[:, t : t + 1], cache=cache)
    layer = cache.layers[cache.compressed_layers[0]]
    assert layer.protected == 3 and layer.sink_k.shape[-2] == 3
    assert layer.get_seq_length() == 45
    exact = make_cache(model)
    with torch.no_grad():
        model(prompt, cache=exact)  # the same prefill, uncompressed
    idx = cache.compressed_layers[0]
    # kept exact at the cache's storage dtype (bf16), never encoded
    assert torch.equal(layer.sink_k, exact.layers[idx].keys[..., :3, :].to(torch.bfloat16))
    assert torch.equal(layer.sink_v, exact.layers[idx].values[..., :3, :].to(torch.bfloat16))
    held = layer.bytes_held()
    assert held["protected_bytes"] == 2 * 3 * model.config.num_key_value_heads * model.config.head_dim * 2  # bf16
    r = evaluate(tiny_model(family).to(torch.bfloat16), PASSAGES, 64, KVPlan("identity", protect_tokens=2), mode="cache",
                 block_tokens=16, hot_tokens=8, progress=False)
    assert r["kl_mean"] == 0.0 and r["delta_ppl_pct"] == 0.0


def test_layer_step_scales_set_each_layers_step_and_are_checked():
    cfg = tiny_config("llama")  # 2 layers
    plan = KVPlan("kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1", "kakeya:pca=none,k=0,bits=5,quant=uniform,step=0.8,entropy=1",
                  k_step_scale=[1.0, 0.5], v_step_scale=(2, 1))
    specs = [(k.params.step, v.params.step) for k, v in plan.layer_codecs(cfg)]
    assert specs == [(0.6, 1.6), (0.3, 0.8)] and plan.label.endswith("+layer steps")
    assert plan.k_step_scale == (1.0, 0.5)  # stored as a tuple of floats (hashable, comparable)
    with pytest.raises(InputError, match="3 factors for a model of 2 layers"):
        KVPlan(plan.k, k_step_scale=(1, 1, 1)).layer_codecs(cfg)
    with pytest.raises(InputError, match="positive finite"):
        KVPlan(plan.k, k_step_scale=(1, 0))
    with pytest.raises(InputError, match="step > 0"):
        KVPlan("kakeya:bits=3", k_step_scale=(1, 1))


def test_recipes_carry_layer_step_scales(tmp_path):
    from kakeya_lib.llm import recipes

    path = tmp_path / "r.yaml"
    path.write_text("name: r\nk: kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1\nk_step_scale: [1, 0.5]\n")
    assert recipes.load(str(path)).plan().k_step_scale == (1.0, 0.5)
    path.write_text("name: r\nk: kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1\nk_step_scale: one\n")
    with pytest.raises(InputError, match="list of numbers"):
        recipes.load(str(path))
