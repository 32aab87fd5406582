"""Rate allocation across layers from measured sensitivity: ``layer_steps=auto``.

Layers differ by two orders of magnitude in how much the model's output moves when their cache
is coarsened (SmolLM2-135M: coding one layer's keys at the same step costs 0.00003 to 0.0033
KL). Under the high-rate model, coding layer ``l`` with step ``Δ_l`` adds ``KL_l ≈ a_l Δ_l²``
and costs ``n (h - log2 Δ_l)`` bits, so at a fixed total rate the sum of ``a_l Δ_l²`` is
smallest for ``Δ_l ∝ a_l^{-1/2}`` (equal marginal KL per bit, reverse water-filling over
layers). The allocation here:

1. **measure** ``a_l`` per layer and stream: the KL when only that layer's K (or V) is coded, at
   step :data:`PROBE_STEP` whatever the plan's step (coarse enough to rise above noise; one
   measurement serves every step of a tuning grid; ``a_l ∝ KL_l / Δ²`` at high rate), on the
   calibration passages of the calib split (the windows the KLT basis is fitted on, their last
   :data:`PROBE_TOKENS` tokens scored, at most half a window), the plan's exact tokens kept;
2. **allocate** ``scale_l = a_l^{-1/2}``, normalised to geometric mean 1 over the coded layers (the
   total rate stays about where the plan's steps put it), clipped to :data:`CLIP` and normalised
   again, rounded to 3 digits; the plan's K and V steps are multiplied by these factors.

The measurement is cached as a JSON artifact in ``.cache/calib`` (``steps-*.json``) named by
everything it depends on. The KL measurement itself is the harness's (:mod:`.evaluate`), passed
in as a function, so this module stays below the harness.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import codecs
from ..atomic import write_text_atomic
from ..errors import InputError
from . import calibration_inputs as cal
from .models import family_of
from .plan import KVPlan, ResolvedPlan

PROBE_STEP = 1.2  # the probe's step (codecs with steps code unit-scaled coordinates; ~2x our recipes' steps)
PROBE_TOKENS = 64  # scored tokens at the end of each calibration window
CLIP = (0.4, 3.0)  # bounds of a layer's step factor (the high-rate model fails far from the plan's rate)
FLOOR = 1e-3  # a layer's sensitivity is at least this fraction of the largest (noise-level KLs)
FORMAT = "kakeya-layer-steps"

# (passages [n][ctx] ids, prefix length, plans) -> KL per plan
Measure = Callable[[Sequence[Sequence[int]], int, Sequence[KVPlan]], list[float]]


def pending(plan: Any) -> bool:
    """Whether ``plan`` asks for ``layer_steps=auto`` and has no factors yet."""
    p = plan.codec_plan if isinstance(plan, ResolvedPlan) else plan
    return p.layer_steps == "auto" and p.k_step_scale is None and p.v_step_scale is None


def probe_plans(codec_plan: KVPlan, main_layers: Sequence[int]) -> list[tuple[str, int, KVPlan]]:
    """(stream, layer, plan) of the single-layer, single-stream probes (the other stream exact)."""
    out = []
    for stream, spec in (("k", codec_plan.k), ("v", codec_plan.v or codec_plan.k)):
        if not getattr(codecs.get(spec).params, "step", 0):
            raise InputError(f"layer_steps=auto needs a {stream.upper()} spec with a step > 0, got {spec!r}")
        probe = codecs.with_keys(spec, step=PROBE_STEP)
        for layer in main_layers:
            k, v = (probe, "identity") if stream == "k" else ("identity", probe)
            out.append((stream, layer, KVPlan(k, v, protect_tokens=codec_plan.protect_tokens,
                                              hot_tokens=codec_plan.hot_tokens, layers=(layer,),
                                              saliency_queries=codec_plan.saliency_queries,
                                              name=f"probe {stream.upper()} L{layer}")))
    return out


def scales(kl: Sequence[float], main_layers: Sequence[int], n_layers: int) -> tuple[float, ...]:
    """Step factors per model layer from the coded layers' probe KLs (rule in the module docstring)."""
    a = np.asarray(kl, dtype=np.float64)
    if a.size != len(main_layers) or a.size == 0 or not np.isfinite(a).all():
        raise InputError(f"need one finite probe KL per coded layer, got {list(kl)} for layers {list(main_layers)}")
    a = np.maximum(a, FLOOR * max(float(a.max()), 1e-12))
    s = a ** -0.5
    s /= np.exp(np.log(s).mean())
    s = np.clip(s, *CLIP)
    s /= np.exp(np.log(s).mean())
    out = [1.0] * n_layers
    for layer, factor in zip(main_layers, s):
        out[layer] = float(f"{factor:.3g}")
    return tuple(out)


def resolve(resolved: ResolvedPlan, model: Any, *, corpus: Any, tokenizer: Any, ctx: int, n_passages: int,
            seed: int, bos: bool | None, measure: Measure, model_name: str | None = None,
            refresh: bool = False) -> ResolvedPlan:
    """``resolved`` with its step factors: measured (or loaded from the cache) and allocated."""
    from . import corpora  # noqa: PLC0415

    scored = min(PROBE_TOKENS, ctx // 2)  # short windows (tests) score their second half
    if scored < 2:
        raise InputError(f"layer_steps=auto needs calibration windows of at least 4 tokens, got {ctx}")
    config = model.config
    codec_plan = resolved.codec_plan
    roles = codec_plan.layer_roles(config)
    main = [i for i, r in enumerate(roles) if r == "main"]
    corp = corpus if isinstance(corpus, corpora.Corpus) else corpora.load_corpus(corpus)
    if bos is None:
        bos = family_of(config) == "gemma3"
    passages = cal.calib_passages(corp, tokenizer, ctx, n_passages, seed, bos)
    ids = [list(p.input_ids) for p in passages]
    probes = probe_plans(codec_plan, main)
    # the probes' codecs and exact tokens, not just their names: another spec is another measurement
    key = repr((cal.model_fingerprint(model), cal.passages_fingerprint(ids),
                [(p.label, p.k, p.v, p.protect_tokens, p.hot_tokens, p.saliency_queries) for _, _, p in probes], scored))
    name = (f"steps-{model_name or cal.model_label(model)}-{corp.name}-ctx{ctx}-n{n_passages}-s{seed}-"
            f"{hashlib.sha256(key.encode()).hexdigest()[:10]}")
    path = cal.calib_dir() / f"{name}.json"
    if path.is_file() and not refresh:
        record = json.loads(path.read_text())
    else:
        kls = measure(ids, ctx - scored, [p for _, _, p in probes])
        record = {"format": FORMAT, "name": name, "main_layers": main, "probe_step": PROBE_STEP,
                  "probe_tokens": scored, "passage_ids": [p.passage_id for p in passages],
                  "probes": [{"stream": s, "layer": layer, "plan": p.label, "kl": kl}
                             for (s, layer, p), kl in zip(probes, kls)]}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record, indent=1))
    kl = {s: [r["kl"] for r in record["probes"] if r["stream"] == s] for s in ("k", "v")}
    k_scale = scales(kl["k"], main, len(roles))
    v_scale = scales(kl["v"], main, len(roles))
    info = {**resolved.info, "layer_steps": {"artifact": name, "k_kl": kl["k"], "v_kl": kl["v"],
                                             "k_step_scale": list(k_scale), "v_step_scale": list(v_scale),
                                             "main_layers": main, "clip": list(CLIP), "probe_step": PROBE_STEP}}
    new_codec_plan = dataclasses.replace(codec_plan, k_step_scale=k_scale, v_step_scale=v_scale)
    return ResolvedPlan(resolved.plan, new_codec_plan, resolved.qprecond, info)
