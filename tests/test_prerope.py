"""Pre-RoPE caching is exact: with nothing compressed, the patched model's logits equal the
stock model's bit for bit (fp32, max |Δlogit| = 0) for every supported attention family."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from kakeya_lib.llm.models import FAMILIES, tiny_model
from kakeya_lib.llm.prerope import PreRopeError, apply_rope, make_cache, patch_model

IDS = torch.randint(0, 96, (1, 40), generator=torch.Generator().manual_seed(0))


def _run(model, cache, ids=IDS, prefix=30, step=1):
    """Prefill ``prefix`` tokens, then feed the rest ``step`` tokens at a time; all logits."""
    with torch.no_grad():
        out = [model(ids[:, :prefix], cache=cache).logits]
        for s in range(prefix, ids.shape[1], step):
            out.append(model(ids[:, s : s + step], cache=cache).logits)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("step", [1, 10])
def test_patched_logits_equal_stock_logits_exactly(family, attn, step):
    model = tiny_model(family, attn_implementation=attn)
    stock = _run(model, DynamicCache(config=model.config), step=step)
    unpatch = patch_model(model)
    patched = _run(model, make_cache(model), step=step)
    unpatch()
    assert torch.equal(patched, stock), (patched - stock).abs().max()
    assert torch.equal(_run(model, DynamicCache(config=model.config), step=step), stock)  # unpatched again


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_holds_keys_before_rope(family):
    model = tiny_model(family)
    patch_model(model)
    cache = make_cache(model)
    with torch.no_grad():
        model(IDS[:, :12], cache=cache)
    attn = model.model.layers[-1].self_attn  # a full-attention layer in every tiny config
    captured = {}
    hook = attn.k_proj.register_forward_hook(lambda m, i, o: captured.setdefault("k", o))
    with torch.no_grad():
        cache2 = make_cache(model)
        model(IDS[:, :12], cache=cache2)
    hook.remove()
    k = captured["k"].view(1, 12, -1, attn.head_dim)
    if family == "qwen3":
        k = attn.k_norm(k)
    k = k.transpose(1, 2)
    if family == "gemma3":
        k = attn.k_norm(k)
    stored = cache2.layers[-1].keys
    assert torch.equal(stored, k)
    pos = torch.arange(12)[None]
    cos, sin = model.model.rotary_emb(k, pos, model.config.layer_types[-1]) if family == "gemma3" else model.model.rotary_emb(k, pos)
    assert not torch.allclose(apply_rope(stored, cos, sin), stored)  # RoPE really is not applied yet


def test_patched_model_refuses_a_stock_cache_and_double_patching():
    model = tiny_model("llama")
    patch_model(model)
    with pytest.raises(PreRopeError, match="PreRopeCache"):
        with torch.no_grad():
            model(IDS[:, :5], cache=DynamicCache())
    with pytest.raises(PreRopeError, match="already patched"):
        patch_model(model)


def test_no_cache_forward_is_exact():
    model = tiny_model("qwen3")
    with torch.no_grad():
        stock = model(IDS, use_cache=False).logits
        patch_model(model)
        patched = model(IDS, use_cache=False).logits
    assert torch.equal(stock, patched)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_a_pre_rope_cache_matches_stock_tokens(family):
    model = tiny_model(family)
    prompt = IDS[:, :9]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        stock = model.generate(prompt, past_key_values=DynamicCache(config=model.config), **kw)
        patch_model(model)
        patched = model.generate(prompt, past_key_values=make_cache(model), **kw)
    assert torch.equal(stock, patched)
