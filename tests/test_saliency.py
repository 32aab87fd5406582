"""Token saliency (the attention the prefix's last queries give each cached token) and the harness
passing it to the codecs as row weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kakeya_lib.errors import InputError
from kakeya_lib.llm import saliency
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.layout import tensor_to_rows
from kakeya_lib.llm.evaluate import evaluate_many, resolve_for_model
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.plan import KVPlan
from kakeya_lib.llm.prerope import make_cache, patch_model, rope_kinds
from tests.conftest import TinyTokenizer
from tests.test_qprecond import CTX, EVAL, calib_dir_fixture  # noqa: F401  (fixture)


def _naive(q: np.ndarray, k: np.ndarray, scaling: float, m: int, window: int | None = None) -> np.ndarray:
    """Loops over heads, queries and tokens (no RoPE): the definition the module states."""
    hq, t, _ = q.shape
    hkv = k.shape[0]
    w = np.zeros((hkv, t))
    for h in range(hq):
        g = h // (hq // hkv)
        for i in range(t - m, t):
            visible = [j for j in range(t) if j <= i and (window is None or i - j < window)]
            s = np.array([q[h, i] @ k[g, j] * scaling for j in visible])
            p = np.exp(s - s.max())
            p /= p.sum()
            for j, pj in zip(visible, p):
                w[g, j] += pj**2
    return w.T.reshape(-1)


@pytest.mark.parametrize("window", [None, 4])
def test_weights_match_the_definition(window):
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((4, 12, 8)), rng.standard_normal((2, 12, 8))
    ones, zeros = torch.ones(1, 12, 8), torch.zeros(1, 12, 8)  # identity RoPE
    got = saliency.token_weights(torch.tensor(q)[None], torch.tensor(k)[None], ones, zeros, 0.3, 5, window)
    assert got.shape == (12 * 2,)
    np.testing.assert_allclose(got, _naive(q, k, 0.3, 5, window), rtol=1e-10)
    if window is not None:  # tokens no query of the last 5 can see get nothing
        assert (got[: (12 - 5 - window + 1) * 2] == 0).all()


def test_weights_equal_the_stock_models_attention_probabilities():
    model = tiny_model("llama")
    ids = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions  # stock model, eager attention
        patch_model(model)
        cache = make_cache(model)
        cache.captured_queries = {}
        model(ids, cache=cache)
    got = saliency.layer_weights(model, cache, 6, rope_kinds(model))
    hkv, hq = model.config.num_key_value_heads, model.config.num_attention_heads
    for i, p in enumerate(probs):
        want = (p[0, :, -6:, :].double() ** 2).sum(1).reshape(hkv, hq // hkv, 20).sum(1).T.reshape(-1)
        np.testing.assert_allclose(got[i], want.numpy(), rtol=1e-5, atol=1e-9)


def test_refusals():
    q, k = torch.zeros(1, 4, 6, 8), torch.zeros(1, 2, 6, 8)
    ones, zeros = torch.ones(1, 6, 8), torch.zeros(1, 6, 8)
    with pytest.raises(InputError, match="n_queries"):
        saliency.token_weights(q, k, ones, zeros, 1.0, 7)
    with pytest.raises(InputError, match="do not match"):
        saliency.token_weights(torch.zeros(1, 3, 6, 8), k, ones, zeros, 1.0, 2)
    with pytest.raises(InputError, match="needs queries"):
        saliency.token_weights(q[0], k, ones, zeros, 1.0, 2)
    model = tiny_model("llama")
    patch_model(model)
    with pytest.raises(InputError, match="captured_queries"):
        saliency.layer_weights(model, make_cache(model), 4, rope_kinds(model))


SPEC = "klt:calib=auto,pca=concat,step=0.8"


def test_plans_ask_for_saliency_where_a_codec_uses_it():
    with pytest.raises(InputError, match="set saliency_queries"):
        KVPlan(SPEC + ",saliency=0.25")
    with pytest.raises(InputError, match="integer >= 0"):
        KVPlan(SPEC, saliency_queries=-1)
    plan = KVPlan(SPEC + ",saliency=0.25", saliency_queries=64)
    assert plan.label.endswith("+saliency 64 queries")
    from kakeya_lib.llm import layer_steps

    probes = layer_steps.probe_plans(plan, [0, 1])  # probes measure with the same token weights
    assert {p.saliency_queries for _, _, p in probes} == {64}


def test_the_harness_weights_rows_by_saliency(tiny_corpus, calib_dir, monkeypatch):
    from kakeya_lib.codecs.base import Codec

    model = tiny_model("llama")
    tok = TinyTokenizer()
    plain = KVPlan(SPEC, protect_tokens=1, name="plain")
    salient = KVPlan(SPEC + ",saliency=0.5", protect_tokens=1, saliency_queries=8, name="salient")
    resolved = [resolve_for_model(p, model, corpus=tiny_corpus, tokenizer=tok, ctx=CTX, n_passages=2)
                for p in (plain, salient)]
    received = []
    encode = Codec.encode

    def spy(self, x, weights=None):
        received.append(None if weights is None else np.array(weights))
        return encode(self, x, weights)

    monkeypatch.setattr(Codec, "encode", spy)
    rows = evaluate_many(model, EVAL[:1], CTX, resolved, progress=False)
    assert rows[1]["saliency_queries"] == 8 and "saliency_queries" not in rows[0]
    assert all(np.isfinite(r["kl_mean"]) for r in rows)
    # what the codecs received: nothing for the plain plan; for the salient one, every layer's
    # weights of the coded rows (after the sink), for K and for V alike
    n_layers, heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    assert len(received) == 2 * 2 * n_layers and all(w is None for w in received[: 2 * n_layers])
    ref = make_cache(model)
    ref.captured_queries = {}
    with torch.no_grad():
        model(torch.tensor([EVAL[0][:CTX]]), cache=ref)
    expected = saliency.layer_weights(model, ref, 8, rope_kinds(model))
    for i in range(n_layers):
        for w in received[2 * n_layers + 2 * i : 2 * n_layers + 2 * i + 2]:
            np.testing.assert_array_equal(w, expected[i][1 * heads : CTX * heads])


def test_the_streaming_cache_codes_a_prefill_with_the_roundtrip_weights(tiny_corpus, calib_dir, tmp_path):
    model = tiny_model("llama")
    tok = TinyTokenizer()
    plan = resolve_for_model(KVPlan(SPEC + ",saliency=0.5", protect_tokens=1, saliency_queries=8), model,
                             corpus=tiny_corpus, tokenizer=tok, ctx=CTX, n_passages=2)
    prompt = torch.tensor([EVAL[0][:CTX]])
    with torch.no_grad():
        cache = CompressedCache.for_prompt(model.config, plan, CTX, hot_tokens=4)
        if not getattr(model.model.layers[0].self_attn, "_kakeya_prerope", False):  # (calibration patched it)
            patch_model(model)
        model(prompt, cache=cache)
        ref = make_cache(model)
        ref.captured_queries = {}
        model(prompt, cache=ref)
    weights = saliency.layer_weights(model, ref, 8, rope_kinds(model))
    heads = model.config.num_key_value_heads
    for i, (layer, pair) in enumerate(zip(cache.layers, plan.layer_codecs(model.config))):
        (k_blob,), (v_blob,) = layer.k_blobs, layer.v_blobs
        w = weights[i][1 * heads : (CTX - 4) * heads]  # the block: after the sink, before the hot window
        stored = lambda t: tensor_to_rows(t[:, :, 1 : CTX - 4].to(torch.bfloat16))  # noqa: E731  (the cache's dtype)
        assert k_blob == pair[0].encode(stored(ref.layers[i].keys), w)
        assert v_blob == pair[1].encode(stored(ref.layers[i].values), w)
    path = tmp_path / "salient.kvz"  # a stored prompt keeps its plan (saliency_queries included)
    cache.save(path, model="tiny", token_ids=EVAL[0][:CTX])
    loaded = CompressedCache.load(path, model)
    assert loaded.cache.plan.saliency_queries == 8 and loaded.cache.layers[0].k_blobs == cache.layers[0].k_blobs
    # generated tokens have no measured weight: a block of them is coded at the base step
    gen = CompressedCache.from_plan(model.config, plan, block_tokens=8, hot_tokens=2)
    with torch.no_grad():
        out = model(prompt[:, :20], cache=gen)
        for t in range(12):
            out = model(out.logits[:, -1:].argmax(-1), cache=gen)
    layer = gen.layers[0]
    assert len(layer.k_blobs) == (20 + 12 - 1 - 2) // 8 and np.isnan(layer.weights).all()
    block = np.array([[1.0, np.nan], [4.0, np.nan]])
    np.testing.assert_allclose(layer._block_weights(block), [1.0, 4.0, 2.0, 2.0])
