"""Σ_q calibration and key whitening: the covariance, GQA pooling, regularisation, the RoPE-averaged
metric, float16 overflow skipping, artifacts, refusal, calib/eval disjointness, and whitening in
the evaluation harness and the compressed cache (tiny random models, a tiny corpus on disk)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kakeya_lib import rope
from kakeya_lib.codecs import kakeya as kakeya_codec
from kakeya_lib.errors import CorruptBlobError, InputError
from kakeya_lib.layout import tensor_to_rows
from kakeya_lib.llm import corpora, qprecond, whitening
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.capture import capture_passage
from kakeya_lib.llm.evaluate import evaluate_many
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.plan import KVPlan, resolve_plan
from kakeya_lib.llm.prerope import make_cache, patch_model

from .conftest import TinyTokenizer

G = torch.Generator().manual_seed(11)
IDS = [torch.randint(3, 96, (40,), generator=G).tolist() for _ in range(3)]
EVAL = [torch.randint(3, 96, (72,), generator=G).tolist() for _ in range(2)]
CTX = 64


@pytest.fixture(autouse=True, name="calib_dir")
def calib_dir_fixture(tmp_path, monkeypatch):
    """Calibration artifacts and codebooks go to a temporary folder, never .cache/calib."""
    folder = tmp_path / "calib"
    monkeypatch.setattr(kakeya_codec, "CALIB_DIR", folder)
    return folder


# --------------------------------------------------------------------------------------------
# Σ_q itself


def test_sigma_equals_the_hand_computed_pooled_covariance():
    model = tiny_model("llama")
    qp = qprecond.calibrate(model, IDS[:2], ridge=0.0, skip=())
    cfg = model.config
    g = cfg.num_attention_heads // cfg.num_key_value_heads
    for layer in (0, 1):
        qs = [capture_passage(model, ids)[f"layer{layer}.q"].double().numpy() for ids in IDS[:2]]  # [n_q, T, D]
        for h in range(cfg.num_key_value_heads):
            rows = np.concatenate([q[h * g + i] for q in qs for i in range(g)])  # contiguous query heads
            expect = rows.T @ rows / rows.shape[0]
            np.testing.assert_allclose(qp.sigma[layer][h], expect, rtol=1e-10, atol=1e-12)
    assert qp.meta["n_tokens"] == 80 and qp.meta["layers"] == [0, 1]


def test_gqa_pools_contiguous_query_heads():
    q = torch.randn(6, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gram = whitening.pooled_gram(q, 2)  # 3 query heads per KV head
    expect0 = sum(q[i].T @ q[i] for i in (0, 1, 2)).numpy()
    strided0 = sum(q[i].T @ q[i] for i in (0, 2, 4)).numpy()
    np.testing.assert_allclose(gram[0], expect0)
    assert not np.allclose(gram[0], strided0)
    with pytest.raises(InputError, match="split"):
        whitening.pooled_gram(q, 4)


def test_ridge():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    sigma = u @ np.diag(np.logspace(-6, 2, 8)) @ u.T
    reg, shifts = whitening.regularise(sigma, ridge=1e-3)
    np.testing.assert_allclose(reg - sigma, shifts["ridge_add"] * np.eye(8), atol=1e-12)
    assert shifts["ridge_add"] == pytest.approx(1e-3 * np.mean(np.diag(sigma)))
    loose, s = whitening.regularise(np.diag([1.0, 2.0, 3.0]), ridge=0.0)
    assert s["ridge_add"] == 0.0 and np.allclose(loose, np.diag([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="not positive definite"):
        whitening.cholesky_pair(np.diag([1.0, 0.0]))
    with pytest.raises(InputError, match="usable"):
        whitening.regularise(np.zeros((3, 3)))


def test_cholesky_inverse_and_whiten_roundtrip_on_rows_and_tensors():
    model = tiny_model("qwen2")
    qp = qprecond.calibrate(model, IDS, skip=())
    for layer in qp.layers:
        chol, inv = qp.chol[layer], qp.inv_chol[layer]
        np.testing.assert_allclose(chol @ inv, np.broadcast_to(np.eye(16), chol.shape), atol=1e-9)
        assert np.allclose(np.triu(chol, 1), 0)
    keys = torch.randn(1, 2, 7, 16, generator=torch.Generator().manual_seed(1))
    white = qp.whiten(keys, 1)
    rows = tensor_to_rows(keys)
    np.testing.assert_allclose(tensor_to_rows(white), qp.whiten(rows, 1), rtol=1e-5, atol=1e-5)  # same per-head layout
    np.testing.assert_allclose(tensor_to_rows(white)[1], rows[1] @ qp.chol[1][1], rtol=1e-5, atol=1e-5)  # row 1 = head 1
    back = qp.unwhiten(white, 1)
    assert torch.allclose(back, keys, atol=1e-5)
    np.testing.assert_allclose(qp.unwhiten(qp.whiten(rows, 1), 1), rows, atol=1e-5)


def test_whitened_mse_is_the_query_weighted_error():
    model = tiny_model("llama")
    qp = qprecond.calibrate(model, IDS, skip=(), ridge=0.0)
    rng = np.random.default_rng(2)
    e = rng.normal(size=16)  # a key error of head 1 in layer 1
    sigma_reg, _ = whitening.regularise(qp.sigma[1][1], 0.0)
    lhs = float(np.sum((e @ qp.chol[1][1]) ** 2))
    assert lhs == pytest.approx(float(e @ sigma_reg @ e), rel=1e-9)
    # ... and that is the mean squared score error over the calibration queries of KV head 1
    qs = [capture_passage(model, ids)["layer1.q"].double().numpy() for ids in IDS]
    q1 = np.concatenate([q[h] for q in qs for h in (2, 3)])
    assert lhs == pytest.approx(float(np.mean((q1 @ e) ** 2)), rel=1e-9)


# --------------------------------------------------------------------------------------------
# RoPE-averaged metric


def _rotation(delta: int, d: int, theta: float, convention: str) -> np.ndarray:
    """R_Δ as a matrix acting on column vectors, built from kakeya_lib.rope."""
    rows = rope.apply_rope(np.eye(d, dtype=np.float32), [delta] * d, theta, convention)  # row i = R e_i
    return rows.T.astype(np.float64)


@pytest.mark.parametrize("convention", ["half", "pairs"])
@pytest.mark.parametrize("weighted", [False, True])
def test_rope_average_equals_the_brute_force_average(convention, weighted):
    d, ctx, theta = 8, 9, 10.0
    rng = np.random.default_rng(3)
    a = rng.normal(size=(d, d))
    sigma = a @ a.T
    inv_freq = theta ** (-np.arange(0, d, 2) / d)
    weights = rng.random(ctx) if weighted else None
    w = np.full(ctx, 1 / ctx) if weights is None else weights / weights.sum()
    brute = sum(w[k] * _rotation(k, d, theta, convention) @ sigma @ _rotation(k, d, theta, convention).T
                for k in range(ctx))
    fast = whitening.rope_average(sigma, inv_freq, ctx, weights, convention)
    np.testing.assert_allclose(fast, brute, rtol=1e-5, atol=1e-5 * np.abs(sigma).max())
    batched = whitening.rope_average(np.stack([sigma, 2 * sigma]), inv_freq, ctx, weights, convention)
    np.testing.assert_allclose(batched[1], 2 * fast, rtol=1e-12)


@pytest.mark.parametrize("convention", ["half", "pairs"])
def test_rope_metric_is_the_score_error_at_that_offset(convention):
    """(RoPE_m(q) · RoPE_n(e))² = e (R_Δ q qᵀ R_Δᵀ) eᵀ with Δ = m − n: the direction is right."""
    d, theta = 8, 100.0
    rng = np.random.default_rng(4)
    q, e = rng.normal(size=d), rng.normal(size=d)
    m, n = 7, 3
    qr = rope.apply_rope(q[None].astype(np.float32), [m], theta, convention)[0]
    er = rope.apply_rope(e[None].astype(np.float32), [n], theta, convention)[0]
    inv_freq = theta ** (-np.arange(0, d, 2) / d)
    metric = whitening.rope_average(np.outer(q, q), inv_freq, weights=np.eye(m - n + 1)[m - n], convention=convention)
    assert float(qr @ er) ** 2 == pytest.approx(float(e @ metric @ e), rel=1e-4)


def test_rope_variant_calibration_averages_the_plain_sigma():
    model = tiny_model("llama")
    plain = qprecond.calibrate(model, IDS, skip=())
    roped = qprecond.calibrate(model, IDS, skip=(), variant="rope", rope_ctx=32)
    inv_freq = whitening.rope_frequencies(model, 1)
    np.testing.assert_allclose(roped.sigma[1], whitening.rope_average(plain.sigma[1], inv_freq, 32), rtol=1e-10)
    assert roped.meta["variant"] == "rope" and roped.meta["rope_ctx"] == 32
    gemma = tiny_model("gemma3")
    assert qprecond.calibrate(gemma, IDS[:1], variant="rope").layers == [2]  # only the full-attention layer


# --------------------------------------------------------------------------------------------
# Skips, artifacts, refusal


def test_layers_whose_whitened_keys_overflow_float16_are_skipped():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight.mul_(1e6)
    qp = qprecond.calibrate(model, IDS[:1], skip=(0,))
    assert qp.skip[0] == "explicit"
    assert qp.skip[1].startswith("float16 overflow")
    assert qp.active_layers() == []
    rows = np.ones((4, 16), dtype=np.float32)
    assert qp.whiten(rows, 1) is rows and qp.unwhiten(rows, 0) is rows  # identity
    assert qp.with_skip(()).skip == {1: qp.skip[1]}  # the overflow skip survives a new explicit list
    assert "1 (float16 overflow" in qp.describe()


def test_artifact_save_load_roundtrip_and_corruption(calib_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    model = tiny_model("llama")
    qp = qprecond.calibrate(model, IDS[:2], ridge=1e-2, meta={"model": "tiny"})
    path = qp.save("tiny-art")
    assert path == calib_dir / "tiny-art.safetensors" and path.with_suffix(".json").is_file()
    for loaded in (qprecond.load("tiny-art"), qprecond.load(path)):
        assert loaded.name == "tiny-art" and loaded.skip == {0: "explicit"}
        for layer in qp.layers:
            np.testing.assert_allclose(loaded.chol[layer], qp.chol[layer], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(loaded.sigma[layer], qp.sigma[layer], rtol=1e-6, atol=1e-6)
        assert loaded.meta["ridge"] == 1e-2 and loaded.meta["diagnostics"] == json.loads(json.dumps(qp.meta["diagnostics"]))
    side = json.loads(path.with_suffix(".json").read_text())
    assert {"head_dim", "n_q", "n_kv", "layers", "ctx", "n_passages", "ridge", "variant",
            "skip_layers", "diagnostics", "provenance", "model"} <= set(side)
    assert {"trace", "eig_min", "eig_max", "condition", "diag_mean", "off_diag_max_abs"} <= set(side["diagnostics"][0])

    tensors = load_file(str(path))

    def broken(name, change):
        bad = dict(tensors)
        change(bad)
        target = tmp_path / f"{name}.safetensors"
        save_file(bad, str(target))
        target.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
        return target

    with pytest.raises(CorruptBlobError, match="layer_1_inv_chol.*missing"):
        qprecond.load(broken("missing", lambda t: t.pop("layer_1_inv_chol")))
    with pytest.raises(CorruptBlobError, match="dtype float64"):
        qprecond.load(broken("dtype", lambda t: t.update(layer_0_chol=t["layer_0_chol"].astype(np.float64))))
    with pytest.raises(CorruptBlobError, match="shape"):
        qprecond.load(broken("shape", lambda t: t.update(layer_0_sigma=t["layer_0_sigma"][:1])))
    with pytest.raises(CorruptBlobError, match="identity"):
        qprecond.load(broken("swap", lambda t: t.update(layer_0_inv_chol=t["layer_1_inv_chol"])))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 40)
    garbage.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CorruptBlobError, match="safetensors"):
        qprecond.load(garbage)
    with pytest.raises(InputError, match="tiny-art"):
        qprecond.load("no-such-artifact")
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="sidecar"):
        qprecond.load("tiny-art")


class _Renormaliser:
    """A stand-in codec that renormalises every vector (TurboQuant-like)."""

    renormalises_per_vector = True
    spec = "stub:renorm"


def test_renormalising_codecs_are_refused(monkeypatch):
    with pytest.raises(InputError, match="renormalises every vector"):
        whitening.check_codec(_Renormaliser())
    whitening.check_codec("kakeya:bits=3")  # fine
    from kakeya_lib.codecs.turboquant import TurboQuantCodec

    monkeypatch.setattr(TurboQuantCodec, "renormalises_per_vector", True, raising=False)
    with pytest.raises(InputError, match="renormalises"):
        KVPlan("turboquant:bits=3", "kakeya:bits=2", qprecond="calib")
    KVPlan("turboquant:bits=3")  # without preconditioning it is fine
    KVPlan("kakeya:bits=3", "turboquant:bits=3", qprecond="calib")  # V is never whitened


def test_plan_fields_are_validated_and_labelled():
    plan = KVPlan("kakeya:bits=3", qprecond="calib", qprecond_variant="rope", qprecond_skip=[0, -1],
                  calibrated_codebook=True)
    assert plan.qprecond_skip == (0, -1) and hash(plan) == hash(KVPlan("kakeya:bits=3", qprecond="calib",
                                                                     qprecond_variant="rope", qprecond_skip=(0, -1),
                                                                     calibrated_codebook=True))
    assert plan.label == "kakeya:bits=3 +Σq rope skip 0,-1 +cal-cb"
    assert KVPlan("identity").qprecond is None and KVPlan("identity").qprecond_skip == (0,)
    with pytest.raises(InputError, match="qprecond_variant"):
        KVPlan("kakeya", qprecond="calib", qprecond_variant="fancy")
    with pytest.raises(InputError, match="calibrated_codebook"):
        KVPlan("int:bits=4", calibrated_codebook=True)


# --------------------------------------------------------------------------------------------
# Calibration data: calib split only, cached by name


def test_calibration_reads_only_the_calib_split_and_is_cached(tiny_corpus, calib_dir, monkeypatch):
    model = tiny_model("llama")
    tok = TinyTokenizer()
    qp = qprecond.calibrate_on_corpus(model, tok, tiny_corpus, 48, n_passages=3)
    assert qp.name.startswith("qcal-llama-unnamed-docs.jsonl-ctx48-n3-plain-r0.001-")
    assert (calib_dir / f"{qp.name}.safetensors").is_file()
    calib_docs = set(qp.meta["doc_ids"])
    assert calib_docs and all(corpora.split_of(d) == "calib" for d in calib_docs)
    evals = corpora.passages(tiny_corpus, tok, 48, 16, 6, seed=0)
    assert calib_docs.isdisjoint({d for p in evals for d in p.doc_ids})
    with pytest.raises(InputError, match="'eval' split"):
        qprecond.calibrate(model, evals[:1])
    monkeypatch.setattr(qprecond, "calibrate", lambda *a, **k: pytest.fail("should load the cached artifact"))
    again = qprecond.calibrate_on_corpus(model, tok, tiny_corpus, 48, n_passages=3)
    assert again.name == qp.name
    # a cold and a warm cache give the same factors bit for bit (the first call returns what it saved)
    for layer in qp.chol:
        np.testing.assert_array_equal(again.chol[layer], qp.chol[layer])
        np.testing.assert_array_equal(again.inv_chol[layer], qp.inv_chol[layer])


# --------------------------------------------------------------------------------------------
# In the harness and the cache


def test_identity_codec_with_whitening_is_lossless_up_to_rounding(tiny_corpus):
    model = tiny_model("llama")
    plans = [KVPlan("identity"), KVPlan("identity", qprecond="calib", qprecond_skip=())]
    plain, white = evaluate_many(model, EVAL, CTX, plans, progress=False, corpus=tiny_corpus,
                                 tokenizer=TinyTokenizer(), calib_passages=2)
    assert plain["kl_mean"] == 0.0
    assert abs(white["delta_ppl_pct"]) < 1e-4 and white["kl_mean"] < 1e-9 and white["top1_pct"] == 100.0
    assert white["k_rel_mse"] < 1e-10 and white["k_rel_mse_whitened"] < 1e-10
    assert white["qprecond"]["whitened_layers"] == [0, 1] and white["plan"].endswith("+Σq plain skip none")
    assert all(corpora.split_of(d) == "calib" for d in white["calibration"]["doc_ids"])
    assert "k_rel_mse_whitened" not in plain


@pytest.mark.parametrize("mode", ["roundtrip", "cache"])
def test_lossy_codec_with_whitening_reports_both_errors(tiny_corpus, mode):
    model = tiny_model("llama")
    spec = "kakeya:pca=none,k=0,bits=2,block=64"
    base, white = evaluate_many(model, EVAL, CTX, [KVPlan(spec), KVPlan(spec, qprecond="calib")], progress=False,
                                mode=mode, block_tokens=16, hot_tokens=8, corpus=tiny_corpus,
                                tokenizer=TinyTokenizer(), calib_passages=2)
    layers = white["per_layer"]
    assert [layer["k_whitened"] for layer in layers] == [False, True]  # layer 0 skipped by default
    assert layers[0]["k_rel_mse_whitened"] is None and layers[1]["k_rel_mse_whitened"] > 0
    assert white["k_rel_mse_whitened"] == pytest.approx(layers[1]["k_rel_mse_whitened"])
    assert layers[0]["k_rel_mse"] == pytest.approx(base["per_layer"][0]["k_rel_mse"])  # untouched layer
    assert layers[1]["k_rel_mse"] != pytest.approx(base["per_layer"][1]["k_rel_mse"])  # whitened: another error
    assert white["v_rel_mse"] == pytest.approx(base["v_rel_mse"])  # V never whitened
    assert white["qprecond"]["skip"] == {"0": "explicit"}


def test_compressed_cache_whitens_blocks_and_unwhitens_on_read(tiny_corpus):
    model = tiny_model("llama")
    patch_model(model)
    plan = resolve_plan(KVPlan("identity", qprecond="calib", qprecond_skip=()), model, corpus=tiny_corpus,
                        tokenizer=TinyTokenizer(), ctx=CTX, n_passages=2)
    prompt = torch.tensor([EVAL[0][:40]])
    cache = CompressedCache.from_plan(model.config, plan, block_tokens=16, hot_tokens=8)
    exact = make_cache(model)
    with torch.no_grad():
        model(prompt, cache=cache)
        model(prompt, cache=exact)
        nxt = model(prompt[:, :1], cache=cache).logits
        ref = model(prompt[:, :1], cache=exact).logits
    layer = cache.layers[1]
    # The cache holds tokens as bf16 before they are coded (it bills them so): compare with the same rounding.
    keys = exact.layers[1].keys.to(torch.bfloat16).to(torch.float32)
    values = exact.layers[1].values.to(torch.bfloat16).to(torch.float32)
    stored = layer.k_codec.decode(layer.k_blobs[0], device="cpu")  # identity: the rows it was given
    np.testing.assert_allclose(stored, plan.qprecond.whiten(tensor_to_rows(keys[..., :16, :]), 1), rtol=1e-5, atol=1e-5)
    assert not np.allclose(stored, tensor_to_rows(keys[..., :16, :]))
    assert torch.allclose(layer._decoded(layer.k_blobs, layer.k_codec, exact.layers[1].keys), keys[..., :32, :],
                          atol=1e-5)
    assert torch.allclose(nxt, ref, atol=1e-2)
    assert layer.v_codec.decode(layer.v_blobs[0], device="cpu").tolist() == tensor_to_rows(values[..., :16, :]).tolist()
    with pytest.raises(InputError, match="corpus"):
        CompressedCache.from_plan(model.config, KVPlan("identity", qprecond="calib"))
    saved = plan.qprecond.save("cache-art")
    by_name = CompressedCache.from_plan(model.config, KVPlan("identity", qprecond=saved.stem, qprecond_skip=()))
    assert by_name.layers[1].k_factors is not None


def test_a_common_query_metric_scores_every_plan(tiny_corpus):
    model = tiny_model("llama")
    metric = qprecond.calibrate_on_corpus(model, TinyTokenizer(), tiny_corpus, 48, n_passages=2, variant="rope")
    plans = [KVPlan("identity"), KVPlan("kakeya:bits=2,block=64"), KVPlan("kakeya:bits=4,block=64")]
    exact, two, four = evaluate_many(model, EVAL, CTX, plans, progress=False, k_metric=metric)
    assert exact["k_rel_mse_qmetric"] == 0.0
    assert two["k_rel_mse_qmetric"] > four["k_rel_mse_qmetric"] > 0
    # the metric weighs errors differently from plain MSE, but both vanish together
    assert two["k_rel_mse_qmetric"] != two["k_rel_mse"]
    no_metric = evaluate_many(model, EVAL, CTX, plans[:1], progress=False)[0]
    assert "k_rel_mse_qmetric" not in no_metric
