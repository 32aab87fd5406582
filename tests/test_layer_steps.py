"""Rate across layers from measured sensitivity (layer_steps=auto): the allocation rule, the probe
plans, and the harness resolving a plan end to end on a tiny model (calib split, cached)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kakeya_lib.errors import InputError
from kakeya_lib.llm import layer_steps
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.evaluate import evaluate_many, resolve_for_model
from kakeya_lib.llm.models import tiny_config, tiny_model
from kakeya_lib.llm.plan import KVPlan
from tests.conftest import TinyTokenizer
from tests.test_qprecond import CTX, EVAL, calib_dir_fixture  # noqa: F401  (fixture)

SPEC_K = "kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1,block=64"
SPEC_V = "kakeya:pca=none,k=0,bits=5,quant=uniform,step=0.8,entropy=1,block=64"


def test_scales_follow_the_inverse_square_root_rule_with_clipping():
    out = layer_steps.scales([0.04, 0.01, 0.0025], [1, 2, 4], 6)
    assert out[0] == out[3] == out[5] == 1.0  # layers not coded
    s = np.array([out[1], out[2], out[4]])
    assert s[1] / s[0] == pytest.approx(2, rel=1e-2) and s[2] / s[1] == pytest.approx(2, rel=1e-2)
    assert math.exp(np.log(s).mean()) == pytest.approx(1, rel=1e-2)  # geometric mean 1
    wide = layer_steps.scales([1.0, 1e-6], [0, 1], 2)  # 1e-6 is floored at 1e-3 of the largest, then clipped
    assert max(wide) / min(wide) <= layer_steps.CLIP[1] / layer_steps.CLIP[0] * 1.01  # (3-digit rounding)
    with pytest.raises(InputError, match="one finite probe KL"):
        layer_steps.scales([0.1], [0, 1], 2)


def test_probe_plans_code_one_stream_of_one_layer_at_the_probe_step():
    plan = KVPlan(SPEC_K, SPEC_V, protect_tokens=1, layer_steps="auto")
    probes = layer_steps.probe_plans(plan, [0, 1])
    assert [(s, layer) for s, layer, _ in probes] == [("k", 0), ("k", 1), ("v", 0), ("v", 1)]
    k_probe = probes[0][2]
    assert k_probe.layers == (0,) and k_probe.v == "identity" and k_probe.protect_tokens == 1
    assert "step=1.2" in k_probe.k and "step=1.2" in probes[2][2].v
    other = KVPlan(SPEC_K.replace("0.6", "0.9"), SPEC_V, protect_tokens=1)
    assert layer_steps.probe_plans(other, [0, 1]) == probes  # the same probes for any step
    with pytest.raises(InputError, match="step > 0"):
        layer_steps.probe_plans(KVPlan("kakeya:bits=3", layer_steps="auto"), [0])


def test_an_unresolved_plan_cannot_build_a_cache():
    with pytest.raises(InputError, match="layer_steps=auto is not resolved"):
        CompressedCache(tiny_config("llama"), SPEC_K, plan=KVPlan(SPEC_K, SPEC_V, layer_steps="auto"))
    with pytest.raises(InputError, match="'auto' or None"):
        KVPlan(SPEC_K, layer_steps="yes")


def test_the_harness_allocates_steps_on_calib_passages_and_caches_the_measurement(tiny_corpus, calib_dir):
    model = tiny_model("llama")
    tok = TinyTokenizer()
    plan = KVPlan(SPEC_K, SPEC_V, protect_tokens=1, layer_steps="auto")
    (res,) = evaluate_many(model, EVAL, CTX, [plan], progress=False, corpus=tiny_corpus, tokenizer=tok,
                           calib_passages=2)
    info = res["layer_steps"]
    assert len(info["k_kl"]) == len(info["v_kl"]) == 2 and all(kl >= 0 for kl in info["k_kl"] + info["v_kl"])
    assert (calib_dir / f"{info['artifact']}.json").is_file()
    steps = [codec.params.step for codec, _ in (pair for pair in _codecs(res))]
    assert steps == [pytest.approx(0.6 * f, rel=1e-3) for f in info["k_step_scale"]]
    assert res["plan"].endswith("+layer steps auto")
    again = resolve_for_model(plan, model, corpus=tiny_corpus, tokenizer=tok, ctx=CTX, n_passages=2)
    assert again.codec_plan.k_step_scale == tuple(info["k_step_scale"])  # read back from the artifact
    with pytest.raises(InputError, match="corpus= and tokenizer="):
        resolve_for_model(plan, model, ctx=CTX)
    other = KVPlan(SPEC_K.replace("bits=5", "bits=4"), SPEC_V, protect_tokens=1, layer_steps="auto")
    measured = resolve_for_model(other, model, corpus=tiny_corpus, tokenizer=tok, ctx=CTX, n_passages=2)
    assert measured.info["layer_steps"]["artifact"] != info["artifact"]  # another probe codec, another measurement


def _codecs(res):
    from kakeya_lib import codecs

    return [(codecs.get(k), codecs.get(v)) for k, v in res["layer_codecs"] if k]
