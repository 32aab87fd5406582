"""End-to-end evaluation on tiny models: identity is exactly lossless, a real codec is not, and
the byte accounting covers every layer."""

from __future__ import annotations

import pytest
import torch

from kakeya_lib.errors import InputError
from kakeya_lib.llm.evaluate import evaluate
from kakeya_lib.llm.models import tiny_model

G = torch.Generator().manual_seed(0)
PASSAGES = [torch.randint(0, 96, (72,), generator=G).tolist() for _ in range(3)]
CTX = 64


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
def test_identity_codec_gives_exactly_zero_delta_and_kl(family):
    r = evaluate(tiny_model(family), PASSAGES, CTX, "identity", progress=False)
    assert r["delta_ppl_pct"] == 0.0 and r["kl_mean"] == 0.0 and r["top1_pct"] == 100.0
    assert r["ppl_ref"] == r["ppl_codec"]
    assert r["k_rel_mse"] == 0.0 and r["v_rel_mse"] == 0.0
    assert r["n_scored_tokens"] == len(PASSAGES) * (72 - CTX - 1)


def test_two_bit_codec_reports_nonzero_error_and_a_byte_ratio():
    model = tiny_model("llama")
    r = evaluate(model, PASSAGES, CTX, "kakeya:bits=2,block=64", progress=False)
    assert r["kl_mean"] > 0 and r["k_rel_mse"] > 0 and r["v_rel_mse"] > 0
    cfg = model.config
    bf16 = len(PASSAGES) * cfg.num_hidden_layers * 2 * 2 * cfg.num_key_value_heads * CTX * cfg.head_dim
    assert r["bytes_bf16"] == bf16
    assert r["ratio_vs_bf16"] == pytest.approx(bf16 / r["bytes_compressed"])
    per_layer = sum(layer["k_bytes"] + layer["v_bytes"] for layer in r["per_layer"])
    assert per_layer == r["bytes_compressed"]
    lo, hi = r["delta_ppl_ci95"]
    assert lo <= r["delta_ppl_pct"] <= hi
    assert len(r["per_passage"]) == len(PASSAGES)


def test_roundtrip_bytes_are_the_blobs_the_codecs_wrote_plus_the_exact_tokens(monkeypatch):
    from kakeya_lib.codecs.base import Codec
    from kakeya_lib.llm.plan import KVPlan

    lengths = []
    encode = Codec.encode

    def recording(self, x, weights=None):
        blob = encode(self, x, weights)
        lengths.append(len(blob))
        return blob

    monkeypatch.setattr(Codec, "encode", recording)
    model = tiny_model("llama")
    cfg = model.config
    r = evaluate(model, PASSAGES, CTX, KVPlan("kakeya:bits=2,block=64", protect_tokens=2), progress=False)
    n_blobs = len(PASSAGES) * cfg.num_hidden_layers * 2  # one K and one V blob per layer and passage
    assert len(lengths) == n_blobs
    exact = len(PASSAGES) * cfg.num_hidden_layers * 2 * 2 * cfg.num_key_value_heads * 2 * cfg.head_dim  # 2 tokens, bf16
    assert r["bytes_compressed"] == sum(lengths) + exact
    assert sum(layer["protected_bytes"] for layer in r["per_layer"]) == exact
    assert r["ratio_vs_bf16"] > 1


def test_uncompressed_layers_are_counted_as_bf16_and_asymmetric_codecs_apply():
    model = tiny_model("gemma3")  # layers 0, 1 slide: they pass through uncompressed
    r = evaluate(model, PASSAGES, CTX, "kakeya:bits=2,block=64", v_codec="identity", progress=False)
    assert r["compressed_layers"] == [2]
    sliding = [layer for layer in r["per_layer"] if not layer["compressed"]]
    assert [layer["layer"] for layer in sliding] == [0, 1]
    assert r["v_rel_mse"] == 0.0 and r["k_rel_mse"] > 0
    assert r["bytes_compressed"] == sum(layer["bf16_bytes"] for layer in sliding) + sum(
        layer["k_bytes"] + layer["v_bytes"] for layer in r["per_layer"] if layer["compressed"]
    )


def test_bad_arguments_are_rejected():
    model = tiny_model("llama")
    with pytest.raises(InputError, match="no passages"):
        evaluate(model, [], CTX, "identity", progress=False)
    with pytest.raises(InputError, match="n_eval"):
        evaluate(model, [[1] * 65], CTX, "identity", progress=False)
    with pytest.raises(InputError, match="layer indices"):
        evaluate(model, PASSAGES, CTX, "identity", layers=[7], progress=False)


def test_cache_mode_identity_is_exact_and_counts_hot_bytes():
    model = tiny_model("qwen3").to(torch.bfloat16)  # the cache stores bf16: lossless only for a bf16 model
    r = evaluate(model, PASSAGES, CTX, "identity", mode="cache", block_tokens=16, hot_tokens=8, progress=False)
    assert r["delta_ppl_pct"] == 0.0 and r["kl_mean"] == 0.0
    layer = r["per_layer"][0]
    cfg = model.config
    hot_tokens = 16  # 64 prefix tokens: 3 blocks of 16 stored, 16 newest stay float (>= 8)
    assert layer["hot_bytes"] == len(PASSAGES) * 2 * cfg.num_key_value_heads * hot_tokens * cfg.head_dim * 2  # bf16


def test_cache_mode_with_a_lossy_codec_stores_bytes_and_loses_information():
    model = tiny_model("llama")
    r = evaluate(model, PASSAGES, CTX, "kakeya:bits=2,block=64", mode="cache", block_tokens=16, hot_tokens=8,
                 progress=False)
    assert r["kl_mean"] > 0 and r["k_rel_mse"] > 0
    assert r["bytes_compressed"] == sum(layer["k_bytes"] + layer["v_bytes"] + layer["hot_bytes"] for layer in r["per_layer"])
    with pytest.raises(InputError, match="mode"):
        evaluate(model, PASSAGES, CTX, "identity", mode="stream", progress=False)
