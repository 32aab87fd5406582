"""End-to-end quality of a KV codec on a language model (spec §7.3, with the fixes of §10).

Per passage of ``ctx_len + n_eval`` tokens:

1. prefill the ``ctx_len`` prefix once into a pre-RoPE cache (:mod:`.prerope`);
2. reference: teacher-force the ``n_eval`` continuation tokens through a copy of that cache;
3. codec: replace the prefix's K and V of every compressed layer by
   ``decode(encode(·))`` of its rows ``[T·n_kv, D]`` (token-major, heads interleaved, as the
   seed's harness) and teacher-force the same continuation;
4. score the ``n_eval − 1`` next-token predictions of both runs on the same tokens.

Reported (pooled over passages): ``ppl_ref``, ``ppl_codec``, ``delta_ppl_pct`` with a bootstrap
95 % CI over passages, ``kl_mean`` = KL(ref ‖ codec) per token, ``top1_pct`` agreement, K/V
relative MSE, and bytes: real codec bytes for compressed layers plus bf16 bytes for layers
left uncompressed, against bf16 bytes of everything.

Plans with query preconditioning (``KVPlan.qprecond``) or calibrated codebooks are resolved once
per plan before the passages loop (:func:`~.plan.resolve_plan`, on the corpus's calib split).
Keys of whitened layers are coded as ``K̃ = K L`` and unwhitened after decode, in both modes; the
reported ``k_rel_mse`` stays in the original key space (comparable across plans), and
``k_rel_mse_whitened`` adds the error in the whitened space, i.e. the query-weighted error
``E_q[(qᵀ(k − k̂))²]`` relative to ``E_q[(qᵀk)²]`` (up to the ridge; for the ``rope`` variant the
query covariance averaged over RoPE offsets), over the whitened layers.

One concept (over 400 lines): the evaluation harness, from passages to the scored result of every plan.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import codecs
from ..errors import InputError
from ..layout import rows_to_tensor, tensor_to_rows
from .models import full_attention_layers
from . import layer_steps, saliency
from .plan import KVPlan, ResolvedPlan, as_plans, resolve_plan
from .prerope import PreRopeCache, make_cache, patch_model, rope_kinds
from .whitening import apply_transform

__all__ = ["KVPlan", "ResolvedPlan", "evaluate", "evaluate_many", "full_attention_layers", "resolve_for_model",
           "resolve_plan"]


@dataclass
class LayerTally:
    """Sums over passages for one layer."""

    k_err: float = 0.0
    k_energy: float = 0.0
    v_err: float = 0.0
    v_energy: float = 0.0
    k_bytes: int = 0
    v_bytes: int = 0
    hot_bytes: int = 0  # recent tokens kept exact (the streaming cache's hot window), at bf16
    protected_bytes: int = 0  # leading tokens kept exact (counted at bf16, like uncompressed layers)
    bf16_bytes: int = 0
    compressed: bool = True
    whitened: bool = False  # keys coded in the Σ_q-whitened space
    kw_err: float = 0.0  # K error and energy in the whitened space (query-weighted)
    kw_energy: float = 0.0
    km_err: float = 0.0  # K error and energy under the common query metric (``k_metric``)
    km_energy: float = 0.0

    def add_metric(self, exact: np.ndarray, decoded: np.ndarray, chol: np.ndarray) -> None:
        """Account the K error of one passage under a query metric ``‖(k − k̂) L‖²`` (original space)."""
        diff = apply_transform(exact.astype(np.float64) - decoded, chol)
        self.km_err += float((diff**2).sum())
        self.km_energy += float((apply_transform(exact.astype(np.float64), chol) ** 2).sum())

    def add_whitened(self, exact: np.ndarray, decoded: np.ndarray) -> None:
        """Account the K error of one passage in the whitened space."""
        self.kw_err += float(((exact.astype(np.float64) - decoded) ** 2).sum())
        self.kw_energy += float((exact.astype(np.float64) ** 2).sum())

    def add(self, stream: str, exact: np.ndarray, decoded: np.ndarray, nbytes: int) -> None:
        """Account one stream ("k" or "v") of one passage: squared error, energy, bytes."""
        err = float(((exact.astype(np.float64) - decoded) ** 2).sum())
        energy = float((exact.astype(np.float64) ** 2).sum())
        setattr(self, f"{stream}_err", getattr(self, f"{stream}_err") + err)
        setattr(self, f"{stream}_energy", getattr(self, f"{stream}_energy") + energy)
        setattr(self, f"{stream}_bytes", getattr(self, f"{stream}_bytes") + nbytes)

    @property
    def stored_bytes(self) -> int:
        if not self.compressed:
            return self.bf16_bytes
        return self.k_bytes + self.v_bytes + self.hot_bytes + self.protected_bytes

    def as_dict(self, layer: int) -> dict[str, Any]:
        return {
            "layer": layer,
            "compressed": self.compressed,
            "k_rel_mse": self.k_err / self.k_energy if self.k_energy else 0.0,
            "v_rel_mse": self.v_err / self.v_energy if self.v_energy else 0.0,
            "k_whitened": self.whitened,
            "k_rel_mse_whitened": (self.kw_err / self.kw_energy if self.kw_energy else 0.0) if self.whitened else None,
            "k_bytes": self.k_bytes,
            "v_bytes": self.v_bytes,
            "hot_bytes": self.hot_bytes,
            "protected_bytes": self.protected_bytes,
            "bf16_bytes": self.bf16_bytes,
        }


@dataclass
class PassageScore:
    nll_ref: list[float] = field(default_factory=list)
    nll_codec: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)


def _score(logits_ref: torch.Tensor, logits_codec: torch.Tensor, targets: torch.Tensor) -> PassageScore:
    lr = torch.log_softmax(logits_ref.double(), dim=-1)
    lc = torch.log_softmax(logits_codec.double(), dim=-1)
    score = PassageScore()
    score.nll_ref = (-lr.gather(-1, targets[:, None])[:, 0]).tolist()
    score.nll_codec = (-lc.gather(-1, targets[:, None])[:, 0]).tolist()
    score.kl = (lr.exp() * (lr - lc)).sum(-1).clamp_min(0).tolist()
    score.top1 = (lr.argmax(-1) == lc.argmax(-1)).tolist()
    return score


def bootstrap_delta_ppl(scores: Sequence[PassageScore], n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % CI of the pooled Δppl (%) by resampling passages with replacement."""
    if len(scores) < 2:
        return [float("nan"), float("nan")]
    ref = np.array([sum(s.nll_ref) for s in scores])
    cod = np.array([sum(s.nll_codec) for s in scores])
    cnt = np.array([len(s.nll_ref) for s in scores])
    idx = np.random.default_rng(seed).integers(0, len(scores), size=(n_boot, len(scores)))
    deltas = (np.exp((cod[idx].sum(1) - ref[idx].sum(1)) / cnt[idx].sum(1)) - 1) * 100
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return [float(lo), float(hi)]


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap CI of the mean of per-passage values (passages resampled)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
    return [float(lo), float(hi)]


def _roundtrip(cache: PreRopeCache, tallies: list[LayerTally], layer_codecs: list[Any], protect: int,
               key_factors: Sequence[Any] | None = None, k_metric: Any | None = None, recent: int = 0,
               row_weights: Sequence[np.ndarray | None] | None = None) -> None:
    """Replace K and V of every compressed layer of ``cache`` by decode(encode(·)), in place;
    the first ``protect`` and the last ``recent`` tokens stay exact (billed at bf16).
    ``key_factors[i]`` = (L, L⁻¹): code layer i's keys whitened (``K L``) and unwhiten the decoded
    rows (``· L⁻¹``). ``row_weights[i]`` [T·n_kv] (token saliency, :mod:`.saliency`) goes to
    both codecs' ``encode`` as the coded rows' weights."""
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys, layer.values
        tallies[i].bf16_bytes += 2 * (keys.numel() + values.numel())
        if layer_codecs[i] is None:
            continue
        n_tok = keys.shape[2]
        keep = min(protect, n_tok)
        end = max(keep, n_tok - recent)
        per_token = 2 * (keys.shape[1] * keys.shape[3] + values.shape[1] * values.shape[3])
        tallies[i].protected_bytes += keep * per_token
        tallies[i].hot_bytes += (n_tok - end) * per_token
        weights = None if row_weights is None or row_weights[i] is None else \
            row_weights[i][keep * keys.shape[1] : end * keys.shape[1]]
        for stream, tensor, codec in (("k", keys, layer_codecs[i][0]), ("v", values, layer_codecs[i][1])):
            if end == keep:
                continue
            rows = tensor_to_rows(tensor[:, :, keep:end])
            factors = key_factors[i] if key_factors is not None and stream == "k" else None
            if factors is None:
                blob = codec.encode(rows, weights)
                decoded = codec.decode(blob, device="cpu")
            else:
                white = apply_transform(rows, factors[0])
                blob = codec.encode(white, weights)
                decoded_white = codec.decode(blob, device="cpu")
                tallies[i].add_whitened(white, decoded_white)
                decoded = apply_transform(decoded_white, factors[1])
            tallies[i].add(stream, rows, decoded, len(blob))
            if stream == "k" and k_metric is not None and i in k_metric.chol:
                tallies[i].add_metric(rows, decoded, k_metric.chol[i])
            rebuilt = torch.cat([tensor[:, :, :keep], rows_to_tensor(decoded, tensor.shape[1], tensor), tensor[:, :, end:]],
                                dim=2)
            setattr(layer, "keys" if stream == "k" else "values", rebuilt)


def _streamed(model: Any, prefix: torch.Tensor, cache_ref: PreRopeCache, tallies: list[LayerTally],
              plan: KVPlan | ResolvedPlan, block_tokens: int, hot_tokens: int) -> PreRopeCache:
    """Prefill ``prefix`` into a :class:`CompressedCache` and account what it stores."""
    from .cache import CompressedCache, CompressedLayer  # noqa: PLC0415  (cache imports this module)

    cache = CompressedCache.from_plan(model.config, plan, block_tokens=block_tokens, hot_tokens=hot_tokens)
    model(prefix, cache=cache)
    for i, (layer, ref) in enumerate(zip(cache.layers, cache_ref.layers)):
        tallies[i].bf16_bytes += 2 * (ref.keys.numel() + ref.values.numel())
        if not isinstance(layer, CompressedLayer):
            continue
        start, end = layer.protected, layer.protected + layer.compressed_tokens
        for stream, blobs, codec, exact in (("k", layer.k_blobs, layer.k_codec, ref.keys),
                                            ("v", layer.v_blobs, layer.v_codec, ref.values)):
            if end > start:
                decoded = layer._decoded(blobs, codec, exact, unwhiten=True)
                tallies[i].add(stream, tensor_to_rows(exact[..., start:end, :]), tensor_to_rows(decoded), sum(map(len, blobs)))
                if stream == "k" and layer.k_factors is not None:
                    white = apply_transform(tensor_to_rows(exact[..., start:end, :]), layer.k_factors[0])
                    tallies[i].add_whitened(white, tensor_to_rows(layer._decoded(blobs, codec, exact, unwhiten=False)))
        held = layer.bytes_held()
        tallies[i].hot_bytes += held["hot_bytes"]
        tallies[i].protected_bytes += held["protected_bytes"]
    return cache


def resolve_for_model(plan: Any, model: Any, *, corpus: Any | None = None, tokenizer: Any | None = None,
                      ctx: int = 1024, n_passages: int = 8, seed: int = 0, bos: bool | None = None,
                      model_name: str | None = None, progress: bool = False) -> ResolvedPlan:
    """Everything a plan calibrates, for ``model``: :func:`~.plan.resolve_plan`, then the step
    factors of ``layer_steps=auto`` (:mod:`.layer_steps`, measured with this harness)."""
    resolved = resolve_plan(plan, model, corpus=corpus, tokenizer=tokenizer, ctx=ctx, n_passages=n_passages, seed=seed,
                            bos=bos, model_name=model_name, progress=progress)
    if not layer_steps.pending(resolved):
        return resolved
    if corpus is None or tokenizer is None:
        raise InputError(f"plan {resolved.label!r} allocates steps on the corpus's calib split and needs corpus= and "
                         "tokenizer=")

    def measure(passages: Sequence[Sequence[int]], prefix: int, plans: Sequence[KVPlan]) -> list[float]:
        return [r["kl_mean"] for r in evaluate_many(model, passages, prefix, plans, progress=progress)]

    return layer_steps.resolve(resolved, model, corpus=corpus, tokenizer=tokenizer, ctx=ctx, n_passages=n_passages,
                               seed=seed, bos=bos, measure=measure, model_name=model_name)


def evaluate(
    model: Any,
    passages: Sequence[Sequence[int]],
    ctx_len: int,
    k_codec: str | KVPlan,
    v_codec: str | None = None,
    layers: Sequence[int] | None = None,
    progress: bool = True,
    seed: int = 0,
    mode: str = "roundtrip",
    block_tokens: int = 512,
    hot_tokens: int = 128,
    **calibration: Any,
) -> dict[str, Any]:
    """Run the protocol for one K/V codec pair (or one plan); see :func:`evaluate_many` (its
    keyword-only calibration arguments pass through)."""
    plan = k_codec if isinstance(k_codec, (KVPlan, ResolvedPlan)) else KVPlan(
        k_codec, v_codec, layers=None if layers is None else tuple(layers))
    return evaluate_many(model, passages, ctx_len, [plan], progress=progress, seed=seed, mode=mode,
                         block_tokens=block_tokens, hot_tokens=hot_tokens, **calibration)[0]


def evaluate_many(
    model: Any,
    passages: Sequence[Sequence[int]],
    ctx_len: int,
    plans: Sequence[KVPlan | ResolvedPlan | tuple[str, str | None] | str],
    progress: bool = True,
    seed: int = 0,
    mode: str = "roundtrip",
    block_tokens: int = 512,
    hot_tokens: int = 128,
    *,
    corpus: Any | None = None,
    tokenizer: Any | None = None,
    calib_passages: int = 8,
    calib_seed: int = 0,
    bos: bool | None = None,
    k_metric: Any | None = None,
) -> list[dict[str, Any]]:
    """Run the protocol for several plans side by side on the same passages.

    Each passage is prefilled once and its reference continuation run once; every plan then
    gets its own copy of the prefilled cache.

    Parameters
    ----------
    model : a float causal LM of a supported family (patched here if it is not yet)
    passages : token ids, each of length ctx_len + n_eval (n_eval >= 2)
    plans : :class:`KVPlan`\\ s, (k_codec, v_codec) pairs or single specs
    mode : "roundtrip" replaces the whole prefix of each compressed layer by its codec round
        trip (the seed's protocol); "cache" prefills through a :class:`CompressedCache`, which
        stores full blocks of ``block_tokens`` as bytes and keeps the newest tokens (at least
        ``hot_tokens``, or the plan's own ``hot_tokens``) as bf16, and counts those bytes too
    corpus, tokenizer : where plans with ``qprecond="calib"`` or ``calibrated_codebook`` calibrate:
        ``calib_passages`` passages of ``ctx_len`` tokens from the corpus's calib split (seed
        ``calib_seed``, BOS as ``bos``, default: Gemma3 only); see :func:`~.plan.resolve_plan`.
        Plans may also arrive resolved already.
    k_metric : a :class:`~.qprecond.QPrecond` (e.g. the RoPE-averaged calibration): every plan's
        key error is also measured under this one query metric, ``k_rel_mse_qmetric`` =
        Σ‖(k − k̂)L‖² / Σ‖kL‖² over the layers it covers (roundtrip mode), so plain and
        query-weighted distortion can be ranked against KL across configurations

    Returns
    -------
    one result dict per plan (see the module docstring for the fields)
    """
    if not passages:
        raise InputError("no passages to evaluate")
    if not plans:
        raise InputError("no codecs to evaluate")
    if mode not in ("roundtrip", "cache"):
        raise InputError(f"mode must be 'roundtrip' or 'cache', got {mode!r}")
    lengths = {len(p) for p in passages}
    if len(lengths) != 1 or next(iter(lengths)) < ctx_len + 2 or ctx_len < 1:
        raise InputError(f"every passage needs ctx_len + n_eval tokens with n_eval >= 2; got lengths {sorted(lengths)}")
    if not any(getattr(layer.self_attn, "_kakeya_prerope", False) for layer in model.model.layers):
        patch_model(model)
    plans = [resolve_for_model(p, model, corpus=corpus, tokenizer=tokenizer, ctx=ctx_len, n_passages=calib_passages,
                               seed=calib_seed, bos=bos, progress=progress) for p in as_plans(plans)]
    per_layer = [plan.layer_codecs(model.config) for plan in plans]
    factors = [plan.key_factors(model.config) for plan in plans]
    heads = model.config.num_key_value_heads
    labels = [(codecs.for_heads(p.k, heads), codecs.for_heads(p.v or p.k, heads)) for p in plans]

    n_layers = model.config.num_hidden_layers
    saliency_m = sorted({p.saliency_queries for p in plans if p.saliency_queries})
    saliency_layers = [i for i in range(n_layers) if any(codecs_j[i] is not None for codecs_j in per_layer)]
    kinds = rope_kinds(model)
    tallies = [[LayerTally(compressed=codecs_i[i] is not None, whitened=factors[j][i] is not None) for i in range(n_layers)]
               for j, codecs_i in enumerate(per_layer)]
    scores: list[list[PassageScore]] = [[] for _ in plans]
    codec_seconds = [0.0 for _ in plans]
    iterator = passages
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        iterator = tqdm(passages, desc="passages", unit="passage")
    for ids_list in iterator:
        ids = torch.tensor([list(ids_list)], dtype=torch.long)
        prefix, cont = ids[:, :ctx_len], ids[:, ctx_len:]
        with torch.no_grad():
            cache_ref = make_cache(model)
            if saliency_m and mode == "roundtrip":  # (a streamed cache weighs its prefill itself)
                cache_ref.captured_queries = {}
            model(prefix, cache=cache_ref)
            weights_by_m = {m: saliency.layer_weights(model, cache_ref, m, kinds, saliency_layers)
                            for m in saliency_m if mode == "roundtrip"}
            cache_ref.captured_queries = None  # the copies below need not carry the queries
            codec_logits = []
            for j, plan in enumerate(plans):
                t0 = time.perf_counter()
                if mode == "roundtrip":
                    cache_codec = copy.deepcopy(cache_ref)
                    _roundtrip(cache_codec, tallies[j], per_layer[j], plan.protect_tokens, factors[j], k_metric,
                               recent=plan.hot_tokens, row_weights=weights_by_m.get(plan.saliency_queries))
                else:
                    cache_codec = _streamed(model, prefix, cache_ref, tallies[j], plan, block_tokens,
                                            max(hot_tokens, plan.hot_tokens))
                codec_seconds[j] += time.perf_counter() - t0
                codec_logits.append(model(cont, cache=cache_codec).logits[0, :-1])
                del cache_codec
            logits_ref = model(cont, cache=cache_ref).logits[0, :-1]
        for j, logits in enumerate(codec_logits):
            scores[j].append(_score(logits_ref, logits, cont[0, 1:]))
    return [
        _summarise(scores[j], tallies[j], plan, labels[j], per_layer[j], mode, codec_seconds[j], seed,
                   plan.hot_tokens if mode == "roundtrip" else max(hot_tokens, plan.hot_tokens))
        for j, plan in enumerate(plans)
    ]


def _summarise(scores: list[PassageScore], tallies: list[LayerTally], plan: ResolvedPlan, labels: tuple[str, str],
               layer_codecs: list[Any], mode: str, codec_seconds: float, seed: int, hot_tokens: int = 0
               ) -> dict[str, Any]:
    """Pool one codec pair's per-passage scores and per-layer tallies into the result dict."""

    def pooled(attr: str) -> float:
        values = [v for s in scores for v in getattr(s, attr)]
        return float(np.mean(values))

    ppl_ref, ppl_codec = math.exp(pooled("nll_ref")), math.exp(pooled("nll_codec"))
    main_k, main_v = labels
    bytes_compressed = sum(t.stored_bytes for t in tallies)
    bytes_bf16 = sum(t.bf16_bytes for t in tallies)
    k_err = sum(t.k_err for t in tallies)
    k_en = sum(t.k_energy for t in tallies)
    v_err = sum(t.v_err for t in tallies)
    v_en = sum(t.v_energy for t in tallies)
    kw_err = sum(t.kw_err for t in tallies if t.whitened)
    kw_en = sum(t.kw_energy for t in tallies if t.whitened)
    extra: dict[str, Any] = {}
    km_en = sum(t.km_energy for t in tallies)
    if km_en:
        extra["k_rel_mse_qmetric"] = sum(t.km_err for t in tallies) / km_en
    if plan.plan.qprecond is not None:
        extra["k_rel_mse_whitened"] = kw_err / kw_en if kw_en else 0.0
        extra["qprecond"] = plan.info.get("qprecond")
    if plan.plan.calibrated_codebook:
        extra["codebooks"] = plan.info.get("codebooks")
    if "calibration" in plan.info:
        extra["calibration"] = plan.info["calibration"]
    if "kvtc" in plan.info:
        extra["kvtc"] = plan.info["kvtc"]
    if "layer_steps" in plan.info:
        extra["layer_steps"] = plan.info["layer_steps"]
    if plan.saliency_queries:
        extra["saliency_queries"] = plan.saliency_queries
    return {
        "ppl_ref": ppl_ref,
        "ppl_codec": ppl_codec,
        "delta_ppl_pct": (ppl_codec / ppl_ref - 1) * 100,
        "delta_ppl_ci95": bootstrap_delta_ppl(scores, seed=seed),
        "kl_mean": pooled("kl"),
        "kl_ci95": bootstrap_mean([float(np.mean(sc.kl)) for sc in scores], seed=seed),
        "top1_pct": 100 * pooled("top1"),
        "k_rel_mse": k_err / k_en if k_en else 0.0,
        "v_rel_mse": v_err / v_en if v_en else 0.0,
        **extra,
        "ratio_vs_bf16": bytes_bf16 / bytes_compressed,
        "bytes_compressed": bytes_compressed,
        "bytes_bf16": bytes_bf16,
        "codec_seconds": codec_seconds,
        "mode": mode,
        "plan": plan.label,
        "k_codec": main_k,
        "v_codec": main_v,
        "boundary": plan.boundary,
        "boundary_k_codec": plan.boundary_k,
        "boundary_v_codec": plan.boundary_v or plan.boundary_k,
        "protect_tokens": plan.protect_tokens,
        "hot_tokens": hot_tokens,
        "bytes_exact": sum(t.protected_bytes + t.hot_bytes for t in tallies),
        "compressed_layers": [i for i, c in enumerate(layer_codecs) if c is not None],
        "layer_codecs": [None if c is None else [c[0].spec, c[1].spec] for c in layer_codecs],
        "n_passages": len(scores),
        "n_scored_tokens": sum(len(s.nll_ref) for s in scores),
        "per_layer": [t.as_dict(i) for i, t in enumerate(tallies)],
        "per_passage": [
            {
                "ppl_ref": math.exp(float(np.mean(s.nll_ref))),
                "ppl_codec": math.exp(float(np.mean(s.nll_codec))),
                "delta_ppl_pct": (math.exp(float(np.mean(s.nll_codec)) - float(np.mean(s.nll_ref))) - 1) * 100,
                "kl_mean": float(np.mean(s.kl)),
                "top1_pct": 100 * float(np.mean(s.top1)),
            }
            for s in scores
        ],
    }
