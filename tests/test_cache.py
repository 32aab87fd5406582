"""The compressed cache holds real codec bytes, streams blocks as they fill, keeps a bf16 hot
window and bf16 protected tokens billed at what they hold, and with the identity codec (on a
bf16 model, the dtype it stores) decodes greedily to exactly the stock tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from kakeya_lib.errors import InputError
from kakeya_lib.llm.cache import STORE_BYTES, STORE_DTYPE, CompressedCache, CompressedLayer
from kakeya_lib.llm.plan import KVPlan
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.prerope import patch_model

PROMPT = torch.randint(0, 96, (1, 50), generator=torch.Generator().manual_seed(1))
GEN = dict(max_new_tokens=24, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_identity_codec_generates_the_stock_tokens(family):
    # bf16 model: the hot window's bf16 storage is then lossless, so the tokens must match exactly.
    model = tiny_model(family).to(torch.bfloat16)
    with torch.no_grad():
        stock = model.generate(PROMPT, past_key_values=DynamicCache(config=model.config), **GEN)
        patch_model(model)
        cache = CompressedCache(model.config, "identity", block_tokens=16, hot_tokens=8)
        ours = model.generate(PROMPT, past_key_values=cache, **GEN)
    assert torch.equal(stock, ours)
    assert any(row.get("compressed_tokens", 0) > 0 for row in cache.bytes_held())


def test_blocks_stream_in_as_they_age_past_the_hot_window():
    model = tiny_model("llama")
    patch_model(model)
    cache = CompressedCache(model.config, "kakeya:bits=2,block=32", block_tokens=16, hot_tokens=8)
    with torch.no_grad():
        model(PROMPT[:, :30], cache=cache)  # 30 tokens: one block of 16 (30 - 8 >= 16), 14 hot
        layer = cache.layers[0]
        assert isinstance(layer, CompressedLayer)
        assert (layer.compressed_tokens, layer.keys.shape[-2]) == (16, 14)
        assert all(isinstance(b, bytes) for b in layer.k_blobs + layer.v_blobs)
        for t in range(30, 40):  # the second block closes once 24 + 8 tokens exist
            model(PROMPT[:, t : t + 1], cache=cache)
        assert (layer.compressed_tokens, layer.keys.shape[-2]) == (32, 8)
        assert cache.get_seq_length() == 40
    held = layer.bytes_held()
    assert held["k_bytes"] == sum(len(b) for b in layer.k_blobs)
    assert held["hot_bytes"] == 2 * 8 * model.config.num_key_value_heads * model.config.head_dim * 2  # bf16


def test_exact_tokens_are_held_and_billed_as_bf16():
    model = tiny_model("llama")  # float32: the cache must still store, and bill, bf16
    patch_model(model)
    cfg = model.config
    cache = CompressedCache.from_plan(cfg, KVPlan("kakeya:bits=2,block=32", protect_tokens=3),
                                      block_tokens=16, hot_tokens=8)
    with torch.no_grad():
        model(PROMPT[:, :30], cache=cache)
        model(PROMPT[:, 30:31], cache=cache)
    per_token = 2 * cfg.num_key_value_heads * cfg.head_dim  # K and V elements of one token
    for i in cache.compressed_layers:
        layer = cache.layers[i]
        held, tensors = layer.bytes_held(), layer.held_tensors()
        assert (layer.protected, layer.compressed_tokens, held["hot_tokens"]) == (3, 16, 12)
        for key, n_tok in (("protected_bytes", 3), ("hot_bytes", 12)):
            assert tensors[key] and all(t.dtype == STORE_DTYPE for t in tensors[key])
            assert held[key] == sum(t.numel() * t.element_size() for t in tensors[key])  # billed = held
            assert held[key] == STORE_BYTES * n_tok * per_token == 2 * n_tok * per_token
        # Reads come back in the model's dtype.
        k, v = layer.update(torch.zeros(1, cfg.num_key_value_heads, 1, cfg.head_dim),
                            torch.zeros(1, cfg.num_key_value_heads, 1, cfg.head_dim))
        assert k.dtype == v.dtype == torch.float32 and k.shape[-2] == 3 + 16 + 12 + 1


def test_the_tokens_of_a_step_attend_to_their_exact_values():
    model = tiny_model("qwen2")
    with torch.no_grad():
        stock = model(PROMPT, cache=DynamicCache(config=model.config)).logits
        patch_model(model)
        cache = CompressedCache(model.config, "kakeya:bits=1,block=32", block_tokens=16, hot_tokens=0)
        ours = model(PROMPT, cache=cache).logits
        assert torch.equal(stock, ours)  # prefill is exact; the blocks are stored compressed
        nxt = model(PROMPT[:, :1], cache=cache).logits
    assert cache.layers[0].compressed_tokens == 48
    assert nxt.shape == (1, 1, 96)


def test_compressed_cache_holds_fewer_bytes_than_a_float_cache():
    model = tiny_model("llama")
    patch_model(model)
    long = torch.randint(0, 96, (1, 200), generator=torch.Generator().manual_seed(2))
    cache = CompressedCache(model.config, "kakeya:bits=2,pca=rsvd,rank=8,block=256", block_tokens=64, hot_tokens=16)
    with torch.no_grad():
        model(long, cache=cache)
    float_bytes = 200 * 2 * model.config.num_key_value_heads * model.config.head_dim * 4 * model.config.num_hidden_layers
    assert cache.total_bytes() < 0.5 * float_bytes


def test_boundary_layers_stay_float_and_bad_uses_are_rejected():
    model = tiny_model("llama")
    cfg = model.config
    cfg.num_hidden_layers = 2
    cache = CompressedCache(cfg, "identity", boundary=1)
    assert cache.compressed_layers == []
    with pytest.raises(InputError, match="layer indices"):
        CompressedCache(cfg, "identity", layers=[5])
    patch_model(model)
    cache = CompressedCache(model.config, "identity", block_tokens=8, hot_tokens=0)
    with torch.no_grad():
        with pytest.raises(InputError, match="batch size 1"):
            model(torch.zeros((2, 4), dtype=torch.long), cache=cache)
        cache = CompressedCache(model.config, "identity", block_tokens=8, hot_tokens=0)
        model(PROMPT[:, :20], cache=cache)
    with pytest.raises(InputError, match="crop"):
        cache.layers[0].crop(-10)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_keeping_decoded_blocks_changes_speed_and_memory_not_tokens(family):
    model = tiny_model(family)
    patch_model(model)
    spec = "kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1,block=64"
    runs = {}
    for keep in (0, 1, None):
        cache = CompressedCache(model.config, spec, block_tokens=8, hot_tokens=4, keep_decoded=keep)
        with torch.no_grad():
            runs[keep] = (model.generate(PROMPT, cache=cache, **GEN), cache)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][0], runs[None][0])
    layer = next(lay for lay in runs[None][1].layers if isinstance(lay, CompressedLayer))
    per_block = 2 * layer.block_tokens * model.config.num_key_value_heads * model.config.head_dim * 4  # K+V, f32
    decoded = {keep: sum(r.get("decoded_floats", 0) for r in c.bytes_held()) for keep, (_, c) in runs.items()}
    n_layers = len(runs[None][1].compressed_layers)
    assert decoded[0] == 0 and decoded[1] == n_layers * per_block
    assert decoded[None] == n_layers * per_block * len(layer.k_blobs) > decoded[1]
    cache = runs[None][1]
    assert cache.memory_bytes() == cache.total_bytes() + decoded[None]
    with pytest.raises(InputError, match="keep_decoded"):
        CompressedCache(model.config, spec, keep_decoded=-1)


def test_rotated_reads_equal_rotating_the_whole_read():
    # update(rope=...) holds kept key blocks rotated; every step's keys must equal RoPE applied to
    # the pre-RoPE read of an identical cache, bit for bit (sink, kept and fresh blocks, hot tokens).
    from kakeya_lib.llm.prerope import apply_rope

    spec = "kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1,block=64"
    config = tiny_model("llama").config
    gen = torch.Generator().manual_seed(3)
    heads, dim, steps = config.num_key_value_heads, config.head_dim, [21, 1, 1, 9, 1, 1]
    total = sum(steps)
    angles = torch.rand(1, total, dim, generator=gen) * 6.0
    cos, sin = angles.cos(), angles.sin()
    for keep in (None, 1):
        plain = CompressedCache(config, spec, block_tokens=8, hot_tokens=4, protect_tokens=1, keep_decoded=keep)
        rot = CompressedCache(config, spec, block_tokens=8, hot_tokens=4, protect_tokens=1, keep_decoded=keep)
        seen = 0
        for n in steps:
            k, v = torch.randn(1, heads, n, dim, generator=gen), torch.randn(1, heads, n, dim, generator=gen)
            seen += n
            k_plain, v_plain = plain.update(k, v, 0)
            k_rot, v_rot = rot.update_rotated(k, v, 0, cos[:, :seen], sin[:, :seen])
            assert torch.equal(k_rot, apply_rope(k_plain, cos[:, :seen], sin[:, :seen])) and torch.equal(v_rot, v_plain)
        layer = rot.layers[0]
        assert layer.compressed_tokens >= 16 and layer.protected == 1  # blocks and the sink were exercised
