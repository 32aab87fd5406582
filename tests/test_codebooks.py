"""Calibrated Lloyd–Max codebooks: the 1-D Lloyd fit, the codec's own residuals as samples, and
plans with ``calibrated_codebook`` in the harness (tiny model, tiny corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import codecs
from kakeya_lib.errors import InputError
from kakeya_lib.llm import codebooks, corpora
from kakeya_lib.llm.evaluate import evaluate_many
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.plan import KVPlan, resolve_plan
from kakeya_lib.stages import lloyd_max
from tests.conftest import TinyTokenizer
from tests.test_qprecond import CTX, EVAL, calib_dir_fixture  # noqa: F401  (fixture)


def _laplace(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(scale=1 / np.sqrt(2), size=n)  # unit variance


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_iteration_beats_the_gaussian_table_on_non_gaussian_samples(bits):
    x = _laplace(200_000)
    fit = codebooks.fit_lloyd_max(x, bits)
    assert fit.converged or fit.iterations == codebooks.MAX_ITER  # the spec's budget: 200 steps, tol 1e-6
    assert fit.mse < fit.mse_init
    assert fit.mse_init == pytest.approx(codebooks.quantisation_mse(x, lloyd_max.gaussian_codebook(bits)), rel=1e-9)
    assert fit.mse == pytest.approx(codebooks.quantisation_mse(x, fit.levels), rel=1e-6)
    assert fit.levels.dtype == np.float32 and (np.diff(fit.levels) > 0).all()
    # (nearly) a fixed point: every level is close to the mean of its cell
    mids = (fit.levels[1:] + fit.levels[:-1]) / 2
    idx = np.searchsorted(mids, x, side="left")
    means = np.array([x[idx == j].mean() for j in range(1 << bits)])
    np.testing.assert_allclose(fit.levels, means, atol=1e-2)


def test_gaussian_samples_give_back_the_gaussian_table():
    x = np.random.default_rng(1).normal(size=400_000)
    fit = codebooks.fit_lloyd_max(x, 3)
    np.testing.assert_allclose(fit.levels, lloyd_max.gaussian_codebook(3), atol=0.02)
    assert fit.mse == pytest.approx(fit.mse_init, rel=0.01)


def test_subsampling_is_capped_and_seeded():
    x = _laplace(50_000)
    a = codebooks.fit_lloyd_max(x, 2, max_samples=10_000, seed=3)
    b = codebooks.fit_lloyd_max(x, 2, max_samples=10_000, seed=3)
    c = codebooks.fit_lloyd_max(x, 2, max_samples=10_000, seed=4)
    assert a.n_samples == 10_000 and a.n_total == 50_000
    assert np.array_equal(a.levels, b.levels) and not np.array_equal(a.levels, c.levels)
    with pytest.raises(InputError, match="too few"):
        codebooks.fit_lloyd_max(x[:10], 3)
    with pytest.raises(InputError, match="NaN"):
        codebooks.fit_lloyd_max(np.r_[x, np.nan], 2)
    two = codebooks.fit_lloyd_max(np.repeat([0.0, 1.0], 100), 3)  # empty cells keep their level: still valid
    assert (np.diff(two.levels) > 0).all() and two.mse == 0.0


def test_samples_are_the_codecs_residuals_without_its_outliers():
    rows = np.random.default_rng(2).standard_t(3, size=(512, 16)).astype(np.float32)
    codec = codecs.get("kakeya:pca=none,bits=2,block=128,outlier=1.5")
    z = codebooks.unit_residuals(codec, rows)
    full = codec.unit_residuals(rows).reshape(-1)
    assert np.abs(z).max() <= 1.5 and z.size == int((np.abs(full) <= 1.5).sum()) < full.size
    np.testing.assert_allclose(np.mean(codec.unit_residuals(rows) ** 2, axis=1), 1.0, rtol=1e-4)  # unit-scaled


def test_spec_substitution_and_eligibility(calib_dir):
    spec = codebooks.with_codebook("kakeya:bits=3,pca=none", "cb-x")
    assert "codebook=calib:cb-x" in spec and codecs.get(spec).params.bits == 3
    assert codebooks.eligible("kakeya:bits=3") and not codebooks.eligible("int:bits=4")
    assert not codebooks.eligible(spec)  # already has a table
    table = codebooks.fit_lloyd_max(_laplace(10_000), 3).levels
    codebooks.save_codebook(table, "cb-x", {"note": "test"})
    rows = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    blob = codecs.get(spec).encode(rows)  # the codec finds calib:cb-x in the calibration folder
    np.testing.assert_array_equal(codecs.get(spec)._codebook(), table)
    assert codecs.decode(blob).shape == rows.shape


def test_evaluate_with_calibrated_codebooks_and_whitening(tiny_corpus, calib_dir):
    model = tiny_model("llama")
    k, v = "kakeya:pca=none,bits=2,block=64", "kakeya:pca=none,k=0,bits=2,block=64,outlier=2.0"
    plans = [KVPlan(k, v, protect_tokens=1), KVPlan(k, v, protect_tokens=1, calibrated_codebook=True),
             KVPlan(k, v, protect_tokens=1, calibrated_codebook=True, qprecond="calib", qprecond_variant="rope")]
    tok = TinyTokenizer()
    base, cal, both = evaluate_many(model, EVAL, CTX, plans, progress=False, corpus=tiny_corpus, tokenizer=tok,
                                    calib_passages=2)
    for r in (cal, both):
        books = r["codebooks"]
        assert set(books) == {"k", "v"}
        assert all(b["mse"] < b["mse_gaussian"] for b in books.values())
        assert f"codebook=calib:{books['k']['name']}" in r["k_codec"]
        assert f"codebook=calib:{books['v']['name']}" in r["v_codec"]
        assert (calib_dir / f"{books['k']['name']}.npy").is_file()
        assert r["plan"].endswith("+cal-cb")
    assert cal["codebooks"]["v"]["name"] == both["codebooks"]["v"]["name"]  # V does not depend on Σ_q ...
    assert both["codebooks"]["v"]["cached"] and not cal["codebooks"]["v"]["cached"]  # ... so it is fitted once
    assert cal["codebooks"]["k"]["name"] != both["codebooks"]["k"]["name"]  # K was whitened for `both`
    assert both["qprecond"]["variant"] == "rope"
    assert all(corpora.split_of(d) == "calib" for d in both["calibration"]["doc_ids"])
    assert cal["ratio_vs_bf16"] < base["ratio_vs_bf16"]  # the 4 levels travel in every blob
    again = resolve_plan(plans[1], model, corpus=tiny_corpus, tokenizer=tok, ctx=CTX, n_passages=2)
    assert again.info["codebooks"]["k"]["cached"] and again.k == cal["k_codec"]
    with pytest.raises(InputError, match="corpus, tokenizer"):
        evaluate_many(model, EVAL, CTX, [plans[1]], progress=False)


def test_seed_v13_ppl_recipe_runs_on_a_tiny_model(tiny_corpus, calib_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from kakeya_lib.llm import recipes
    from kakeya_lib.llm.models import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config("llama", num_hidden_layers=8)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    r = evaluate_many(model, EVAL, CTX, [recipes.load("seed-v13-ppl").plan()], progress=False,
                      corpus=tiny_corpus, tokenizer=TinyTokenizer(), calib_passages=2)[0]
    assert r["plan"] == "seed-v13-ppl" and r["compressed_layers"] == [3, 4]  # 3 + 3 boundary layers in bf16
    assert r["qprecond"]["whitened_layers"] == [3, 4] and set(r["codebooks"]) == {"k", "v"}
    assert "codebook=calib:" in r["k_codec"] and "share_basis=1" in r["v_codec"]
    assert r["kl_mean"] > 0 and r["ratio_vs_bf16"] > 1
