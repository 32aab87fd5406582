"""Plans for a fair comparison: exact recent tokens billed at bf16, KVTC calibrated through the
plan on calib passages, comparison entries with their exact tokens, the tuning rule."""

from __future__ import annotations


import pytest
import torch

from kakeya_lib.codecs import kakeya as kakeya_codec
from kakeya_lib.errors import InputError
from kakeya_lib.experiments import e2e
from kakeya_lib.llm import corpora
from kakeya_lib.llm.evaluate import evaluate_many
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.plan import KVPlan, resolve_plan

from .conftest import TinyTokenizer

G = torch.Generator().manual_seed(3)
EVAL = [torch.randint(3, 96, (72,), generator=G).tolist() for _ in range(2)]
CTX = 64


@pytest.fixture(autouse=True)
def _calib_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(kakeya_codec, "CALIB_DIR", tmp_path / "calib")


def test_recent_tokens_stay_exact_and_are_billed_at_bf16():
    model = tiny_model("llama")
    plain, recent = evaluate_many(model, EVAL, CTX, [KVPlan("kakeya:bits=2,block=64", protect_tokens=1),
                                                      KVPlan("kakeya:bits=2,block=64", protect_tokens=1, hot_tokens=16)],
                                  progress=False)
    cfg = model.config
    per_token = 2 * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)  # K and V at bf16
    layers = [p for p in recent["per_layer"] if p["compressed"]]
    assert all(p["hot_bytes"] == 16 * per_token * len(EVAL) for p in layers)
    assert all(p["protected_bytes"] == 1 * per_token * len(EVAL) for p in layers)
    assert recent["hot_tokens"] == 16 and plain["hot_tokens"] == 0
    assert recent["bytes_exact"] == sum(p["hot_bytes"] + p["protected_bytes"] for p in recent["per_layer"])
    assert recent["kl_mean"] < plain["kl_mean"]  # fewer coded tokens, less error
    assert recent["ratio_vs_bf16"] < plain["ratio_vs_bf16"]
    with pytest.raises(InputError):
        KVPlan("identity", hot_tokens=-1)


def test_kvtc_plan_calibrates_on_the_calib_split_and_fills_layer_and_stream(tiny_corpus):
    model = tiny_model("llama")
    plan = KVPlan("kvtc:calib=auto,bits=4", protect_tokens=1, hot_tokens=4, name="kvtc")
    assert plan.needs_calibration and plan.kvtc_streams == ["k", "v"]
    resolved = resolve_plan(plan, model, corpus=tiny_corpus, tokenizer=TinyTokenizer(), ctx=CTX, n_passages=2)
    info = resolved.info["kvtc"]
    assert info["artifact"].startswith("kvtc-") and info["artifact_bytes"] > 0
    assert info["calibration"]["split"] == "calib"
    assert all(corpora.split_of(d) == "calib" for d in info["calibration"]["doc_ids"])
    pairs = [p for p in resolved.layer_codecs(model.config) if p is not None]
    assert [(k.params.layer, k.params.stream, v.params.stream) for k, v in pairs] == [(0, "k", "v"), (1, "k", "v")]
    assert all(k.params.calib == info["artifact"] for k, _ in pairs)
    res, = evaluate_many(model, EVAL, CTX, [resolved], progress=False)
    assert res["kvtc"]["artifact"] == info["artifact"] and 0 < res["kl_mean"] < 0.5
    assert res["protect_tokens"] == 1 and res["hot_tokens"] == 4


def test_entries_carry_their_exact_tokens_and_reject_bad_keys():
    plans = e2e.entry_plans(["turboquant:bits=4", "ours-5x",
                             {"name": "TQ +sink", "k": "turboquant:bits=4", "protect_tokens": 1},
                             {"name": "ours -sink", "recipe": "ours-5x", "protect_tokens": 0},
                             {"name": "ours -ent", "recipe": "ours-5x", "keys": {"entropy": 0}, "k_keys": {"k": 0}}])
    (_, tq), (ours_cols, ours), (_, tq_sink), (_, ours_nosink), (_, ours_noent) = plans
    assert (tq.protect_tokens, tq_sink.protect_tokens, ours.protect_tokens, ours_nosink.protect_tokens) == (0, 1, 1, 0)
    assert ours_cols["family"] == "ours" and ours_nosink.k == ours.k
    assert "entropy" not in ours_noent.k and ",k=0" in ours_noent.k and "entropy" not in ours_noent.v
    for bad in ({"k": "identity"}, {"name": "x"}, {"name": "x", "k": "identity", "recipe": "ours-5x"},
                {"name": "x", "k": "identity", "colour": 1}, 3):
        with pytest.raises(InputError):
            e2e.entry_plans([bad])


def test_series_points_and_the_tuning_rule():
    pts = e2e.series_plans("KIVI", {"name": "KIVI", "k": "kivi:bits=2", "v": "kivi:bits=2,mode=value"},
                           [{"bits": 4}, {"k": {"group": 64}}, {}])
    assert [p.label for _, p in pts] == ["KIVI bits=4", "KIVI K group=64", "KIVI (as given)"]
    assert pts[0][1].v == "kivi:bits=4,mode=value" and pts[1][1].k == "kivi:group=64"
    rows = [{"plan": "a", "ratio_vs_bf16": 4.0, "kl_mean": 0.004}, {"plan": "b", "ratio_vs_bf16": 5.0, "kl_mean": 0.009},
            {"plan": "c", "ratio_vs_bf16": 6.0, "kl_mean": 0.02}]
    assert e2e.select_by_kl(rows, 0.005)["plan"] == "a" and e2e.select_by_kl(rows, 0.01)["plan"] == "b"
    assert e2e.select_by_kl(rows, 0.001) is None
    marked = e2e.mark_selected(rows, [0.005, 0.01])
    assert [r["selected_for_kl"] for r in marked] == [[0.005], [0.01], []]
