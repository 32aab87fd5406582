"""What a compressed KV cache stores, layer by layer: :class:`KVPlan`.

A plan names the K and V codecs of the compressed layers, how many first/last of those layers
are boundary layers (kept uncompressed, or coded with their own K/V specs), and how many leading
tokens are protected (kept exact: the attention sink at position 0 draws far more attention
than its share of the bytes). The evaluation harness and :class:`~.cache.CompressedCache` both
read plans, so a recipe means the same thing in both.

Plans may also precondition keys with a calibrated query metric (``qprecond``, spec §3; see
:mod:`.qprecond`) and fit the kakeya codec's Lloyd–Max tables on calibration data
(``calibrated_codebook``, spec §5.3; see :mod:`.codebooks`). Both need the model and the corpus's
calib split, so a plan is turned into a :class:`ResolvedPlan` by :func:`resolve_plan` once, before
any evaluation passage is touched; the harness and the compressed cache read resolved plans.

One concept (over 400 lines): the plan, and its resolution into the codecs of every layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import codecs
from ..errors import InputError
from . import codebooks, corpora, kvtc_calib
from . import qprecond as qpm
from .codebooks import eligible
from .models import family_of, full_attention_layers
from .whitening import check_codec

QPRECOND_VARIANTS = ("plain", "rope")


@dataclass(frozen=True)
class KVPlan:
    """Per-layer storage plan (see the module docstring).

    Attributes
    ----------
    k, v : codec specs of the compressed layers (``v=None``: same as ``k``)
    boundary : the first and last ``boundary`` compressible layers are boundary layers
    boundary_k, boundary_v : their codec specs; ``None`` keeps them uncompressed
    protect_tokens : leading tokens of every compressed layer kept exact
    hot_tokens : most recent tokens of the prefix kept exact (KVTC keeps 128; the streaming cache's
        hot window plays this role in cache mode, where the window is at least this long)
    layers : compressible layers (default: every full-attention layer)
    name : a label for tables (default: the K|V specs)
    qprecond : whiten K of the main compressed layers with a Σ_q calibration: an artifact name
        (in ``.cache/calib``) or path, or ``"calib"`` = calibrate on the corpus's calib split with
        default settings (cached by name); None = off
    qprecond_variant : ``"plain"`` (Σ_q) or ``"rope"`` (Σ_q averaged over relative RoPE offsets)
    qprecond_skip : layers whose keys are not whitened (negative: counted from the end); layers
        whose whitened keys would overflow float16 are skipped as well
    calibrated_codebook : fit a Lloyd–Max table per stream for the main K/V kakeya specs (at their
        bits, on calib-split data, whitened K when preconditioned) and use ``codebook=calib:NAME``
    k_step_scale, v_step_scale : one factor per model layer multiplying the main K (V) spec's
        ``step`` on that layer (rate allocation across layers: a coarser grid where the model is
        less sensitive); None = the same step everywhere. The spec needs a ``step`` key.
    layer_steps : ``"auto"``: the factors are allocated from each layer's measured sensitivity on
        calib passages (:mod:`.layer_steps`; the harness resolves it); None = as given
    saliency_queries : M > 0: the harness weights every compressed layer's rows by the attention
        the prefix's last M queries give each token (:mod:`.saliency`) and passes the weights to
        the codecs' ``encode`` (``klt saliency=`` turns them into per-token steps); 0 = no weights
    """

    k: str
    v: str | None = None
    boundary: int = 0
    boundary_k: str | None = None
    boundary_v: str | None = None
    protect_tokens: int = 0
    hot_tokens: int = 0
    layers: tuple[int, ...] | None = None
    name: str | None = field(default=None, compare=False)
    qprecond: str | None = None
    qprecond_variant: str = "plain"
    qprecond_skip: tuple[int, ...] = (0,)
    calibrated_codebook: bool = False
    k_step_scale: tuple[float, ...] | None = None
    v_step_scale: tuple[float, ...] | None = None
    layer_steps: str | None = None
    saliency_queries: int = 0

    def __post_init__(self) -> None:
        if self.boundary < 0 or self.protect_tokens < 0 or self.hot_tokens < 0:
            raise InputError("boundary, protect_tokens and hot_tokens must be >= 0")
        if self.boundary_v is not None and self.boundary_k is None:
            raise InputError("boundary_v needs boundary_k (or neither, for uncompressed boundary layers)")
        for spec in (self.k, self.v, self.boundary_k, self.boundary_v):
            if spec is not None:
                codecs.get(spec)  # unknown codecs or keys fail here, before any model work
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        skip = self.qprecond_skip
        if isinstance(skip, (int, np.integer)):
            skip = (int(skip),)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in skip):
            raise InputError(f"qprecond_skip must be layer indices, got {self.qprecond_skip!r}")
        object.__setattr__(self, "qprecond_skip", tuple(int(i) for i in skip))
        if self.qprecond_variant not in QPRECOND_VARIANTS:
            raise InputError(f"qprecond_variant must be one of {', '.join(QPRECOND_VARIANTS)}, got {self.qprecond_variant!r}")
        if self.qprecond is not None:
            if not isinstance(self.qprecond, str) or not self.qprecond.strip():
                raise InputError("qprecond must be an artifact name, a path, or 'calib'")
            check_codec(self.k)  # per-vector renormalising codecs cannot take whitened keys
        for stream, spec, scale in (("k", self.k, self.k_step_scale), ("v", self.v or self.k, self.v_step_scale)):
            if scale is None:
                continue
            values = tuple(float(x) for x in scale)
            if not values or not all(np.isfinite(x) and x > 0 for x in values):
                raise InputError(f"{stream}_step_scale must be positive finite factors, one per layer, got {scale!r}")
            if not getattr(codecs.get(spec).params, "step", 0):
                raise InputError(f"{stream}_step_scale needs a {stream.upper()} spec with a step > 0, got {spec!r}")
            object.__setattr__(self, f"{stream}_step_scale", values)
        if self.layer_steps not in (None, "auto"):
            raise InputError(f"layer_steps must be 'auto' or None, got {self.layer_steps!r}")
        if not isinstance(self.saliency_queries, (int, np.integer)) or isinstance(self.saliency_queries, bool) \
                or self.saliency_queries < 0:
            raise InputError(f"saliency_queries must be an integer >= 0 (queries), got {self.saliency_queries!r}")
        for stream, spec in (("K", self.k), ("V", self.v or self.k)):
            if getattr(codecs.get(spec).params, "saliency", 0) and not self.saliency_queries:
                raise InputError(f"the {stream} spec {spec!r} codes by token saliency but the plan computes none: "
                                 "set saliency_queries (the prefix queries that measure it, e.g. 64)")
        if self.calibrated_codebook:
            if not any(eligible(s) for s in {self.k, self.v or self.k}):
                raise InputError("calibrated_codebook needs a kakeya K or V spec with a Lloyd-Max quantiser and "
                                 f"the default Gaussian codebook; got K {self.k!r}, V {self.v or self.k!r}")

    @property
    def needs_calibration(self) -> bool:
        """Whether :func:`resolve_plan` has work to do (a Σ_q artifact or codebooks)."""
        return (self.qprecond is not None or self.calibrated_codebook or bool(self.kvtc_streams)
                or (self.layer_steps == "auto" and self.k_step_scale is None and self.v_step_scale is None))

    @property
    def kvtc_streams(self) -> list[str]:
        """Streams (``"k"``, ``"v"``) whose main spec is a calibrated codec (``kvtc``, ``klt``) asking for ``calib=auto``."""
        return [s for s, spec in (("k", self.k), ("v", self.v or self.k)) if kvtc_needs_calibration(spec)]

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        text = self.k if self.v in (None, self.k) else f"{self.k}|{self.v}"
        if self.boundary:
            text += f" +{self.boundary} bdry" + (f" {self.boundary_k}" if self.boundary_k else " exact")
        if self.protect_tokens:
            text += f" +{self.protect_tokens} tok exact"
        if self.hot_tokens:
            text += f" +{self.hot_tokens} recent exact"
        if self.qprecond:
            skip = ",".join(map(str, self.qprecond_skip)) or "none"
            source = "" if self.qprecond == "calib" else f" {self.qprecond}"
            text += f" +Σq {self.qprecond_variant}{source} skip {skip}"
        if self.calibrated_codebook:
            text += " +cal-cb"
        if self.layer_steps == "auto":
            text += " +layer steps auto"
        elif self.k_step_scale or self.v_step_scale:
            text += " +layer steps"
        if self.saliency_queries:
            text += f" +saliency {self.saliency_queries} queries"
        return text

    def layer_roles(self, config: Any) -> list[str | None]:
        """Per layer: ``"main"`` (the K/V codecs), ``"boundary"`` or None (kept uncompressed)."""
        n_layers = config.num_hidden_layers
        chosen = sorted(set(full_attention_layers(config) if self.layers is None else self.layers))
        if any(not 0 <= i < n_layers for i in chosen):
            raise InputError(f"layer indices must lie in 0..{n_layers - 1}, got {chosen}")
        edge = set(chosen[: self.boundary]) | set(chosen[len(chosen) - self.boundary :]) if self.boundary else set()
        roles: list[str | None] = [None] * n_layers
        for i in chosen:
            roles[i] = "boundary" if i in edge else "main"
        return roles

    def layer_codecs(self, config: Any) -> list[tuple[codecs.Codec, codecs.Codec] | None]:
        """(K codec, V codec) per layer, or None for a layer kept uncompressed."""
        roles = self.layer_roles(config)
        heads = config.num_key_value_heads
        if self.layer_steps == "auto" and self.k_step_scale is None and self.v_step_scale is None:
            raise InputError("layer_steps=auto is not resolved yet: evaluate the plan with the harness, or resolve it "
                             "with kakeya_lib.llm.evaluate.resolve_for_model(plan, model, ...) before building a cache")
        for stream, scale in (("k", self.k_step_scale), ("v", self.v_step_scale)):
            if scale is not None and len(scale) != len(roles):
                raise InputError(f"{stream}_step_scale has {len(scale)} factors for a model of {len(roles)} layers")

        def pair(k: str, v: str | None, layer: int) -> tuple[codecs.Codec, codecs.Codec]:
            return (codecs.get(spec_for_layer(codecs.for_heads(k, heads), layer, "k")),
                    codecs.get(spec_for_layer(codecs.for_heads(v or k, heads), layer, "v")))

        def scaled(spec: str, scale: tuple[float, ...] | None, layer: int) -> str:
            if scale is None:
                return spec
            step = codecs.get(spec).params.step * scale[layer]
            return codecs.with_keys(spec, step=float(f"{step:.4g}"))  # 4 digits keep specs readable

        out: list[tuple[codecs.Codec, codecs.Codec] | None] = []
        for i, r in enumerate(roles):
            if r == "main":
                out.append(pair(scaled(self.k, self.k_step_scale, i), scaled(self.v or self.k, self.v_step_scale, i), i))
            elif r == "boundary" and self.boundary_k:
                out.append(pair(self.boundary_k, self.boundary_v, i))
            else:
                out.append(None)
        return out


def kvtc_needs_calibration(spec: str | None) -> bool:
    """Whether ``spec`` is a codec on a KVTC-style per-model calibration (``kvtc``, ``klt``) that is
    still to be made (``calib=auto``)."""
    if spec is None:
        return False
    codec = codecs.get(spec)
    return getattr(codec, "needs_calibration", False) and codec.params.calib == "auto"


def template_spec(spec: str) -> str:
    """The spec as a plan writes it, from the resolved one a result row records.

    A calibrated codec's artifact name goes back to ``calib=auto`` and the keys the harness fills
    in (``heads``, ``layer``, ``stream``) go; other specs come back canonical. Recipes are compared
    with stored rows through this (``kvtc:calib=NAME,heads=3,bits=2`` -> ``kvtc:bits=2,calib=auto``).
    """
    codec = codecs.get(spec)
    if not getattr(codec, "needs_calibration", False):
        return codec.spec
    name, raw = codecs.split_spec(spec)
    keys = {k: v for k, v in raw.items() if k not in ("heads", "layer", "stream")}
    keys["calib"] = "auto"
    return codecs.get(f"{name}:" + ",".join(f"{k}={v}" for k, v in keys.items())).spec


def spec_for_layer(spec: str, layer: int, stream: str) -> str:
    """Fill in ``layer`` and ``stream`` for codecs calibrated per layer and stream (``kvtc``, ``klt``).

    Such a codec's parameters have ``layer`` and ``stream`` fields; other specs are returned as
    they are. The canonical spec (e.g. ``kvtc:calib=NAME,layer=3,stream=v``) labels the blob.
    """
    codec = codecs.get(spec)
    fields = {f.name for f in dataclasses.fields(codec.params)}
    if not {"layer", "stream"} <= fields:
        return codec.spec
    return codecs.with_keys(codec.spec, layer=layer, stream=stream)


def as_plan(item: "KVPlan | ResolvedPlan | tuple[str, str | None] | str") -> "KVPlan | ResolvedPlan":
    """Accept a plan (resolved or not), a (k, v) pair or a single spec."""
    if isinstance(item, (KVPlan, ResolvedPlan)):
        return item
    if isinstance(item, str):
        return KVPlan(item)
    k, v = item
    return KVPlan(k, v)


def as_plans(items: Sequence[KVPlan | tuple[str, str | None] | str]) -> list[KVPlan]:
    return [as_plan(i) for i in items]


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


@dataclass(eq=False)
class ResolvedPlan:
    """A :class:`KVPlan` with its calibrations in hand (from :func:`resolve_plan`).

    Attributes
    ----------
    plan : the plan as given (its label names results)
    codec_plan : the same plan with the codec specs actually used (``codebook=calib:NAME`` where
        codebooks were calibrated); it carries no calibration requests itself
    qprecond : the :class:`~.qprecond.QPrecond` with the plan's skip list applied, or None
    info : what was calibrated (artifact and table names, skipped layers, fit errors), for results
    """

    plan: KVPlan
    codec_plan: KVPlan
    qprecond: Any | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.plan.label

    @property
    def name(self) -> str | None:
        return self.plan.name

    @property
    def k(self) -> str:
        return self.codec_plan.k

    @property
    def v(self) -> str | None:
        return self.codec_plan.v

    @property
    def boundary(self) -> int:
        return self.plan.boundary

    @property
    def boundary_k(self) -> str | None:
        return self.plan.boundary_k

    @property
    def boundary_v(self) -> str | None:
        return self.plan.boundary_v

    @property
    def protect_tokens(self) -> int:
        return self.plan.protect_tokens

    @property
    def hot_tokens(self) -> int:
        return self.plan.hot_tokens

    @property
    def saliency_queries(self) -> int:
        return self.plan.saliency_queries

    def layer_roles(self, config: Any) -> list[str | None]:
        return self.plan.layer_roles(config)

    def layer_codecs(self, config: Any) -> list[tuple[codecs.Codec, codecs.Codec] | None]:
        return self.codec_plan.layer_codecs(config)

    def key_factors(self, config: Any) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per layer (L, L⁻¹) [n_kv, D, D] when its keys are whitened (main compressed layers that
        the calibration covers and does not skip), else None. Boundary layers are never whitened."""
        roles = self.layer_roles(config)
        if self.qprecond is None:
            return [None] * len(roles)
        return [self.qprecond.factors(i) if r == "main" else None for i, r in enumerate(roles)]


def resolve_plan(
    plan: KVPlan | ResolvedPlan | tuple[str, str | None] | str,
    model: Any | None = None,
    *,
    config: Any | None = None,
    corpus: Any | None = None,
    tokenizer: Any | None = None,
    ctx: int | None = None,
    n_passages: int = 8,
    seed: int = 0,
    bos: bool | None = None,
    model_name: str | None = None,
    refresh: bool = False,
    progress: bool = False,
) -> ResolvedPlan:
    """Load or compute what a plan's ``qprecond`` / ``calibrated_codebook`` need.

    Calibration data are ``n_passages`` windows of ``ctx`` tokens from the corpus's **calib**
    split (:func:`~.qprecond.calib_passages`, ``seed``; ``bos`` defaults to True for Gemma3), never
    the evaluation split. Σ_q artifacts and codebooks are cached in ``.cache/calib`` by names
    derived from everything they depend on, so a second run loads them (``refresh`` recomputes).

    A plan with neither feature resolves without any work. A plan whose ``qprecond`` names an
    existing artifact and asks for no codebooks needs only ``config`` (or the model). Otherwise the
    model, corpus, tokenizer and ctx are required; what is missing is named in the error.
    """

    plan = as_plan(plan)
    if isinstance(plan, ResolvedPlan):
        return plan
    if not plan.needs_calibration:
        return ResolvedPlan(plan, plan)
    config = model.config if model is not None else config
    if config is None:
        raise InputError(f"plan {plan.label!r} needs calibration data; pass the model (or at least its config)")
    roles = plan.layer_roles(config)
    main = [i for i, r in enumerate(roles) if r == "main"]
    info: dict[str, Any] = {}
    passages = corp = None
    if plan.qprecond == "calib" or plan.calibrated_codebook or plan.kvtc_streams:
        missing = [n for n, v in (("model", model), ("corpus", corpus), ("tokenizer", tokenizer), ("ctx", ctx)) if v is None]
        if missing:
            raise InputError(
                f"plan {plan.label!r} calibrates on the corpus's calib split and needs {', '.join(missing)}: "
                "pass them to evaluate_many(..., corpus=, tokenizer=) or call resolve_plan(plan, model, corpus=, "
                "tokenizer=, ctx=) first"
            )

        corp = corpus if isinstance(corpus, corpora.Corpus) else corpora.load_corpus(corpus)
        if bos is None:
            bos = family_of(config) == "gemma3"
        passages = qpm.calib_passages(corp, tokenizer, ctx, n_passages, seed, bos)
        info["calibration"] = {
            "corpus": corp.name, "split": "calib", "ctx": ctx, "n_passages": n_passages, "seed": seed, "bos": bos,
            "passage_ids": [p.passage_id for p in passages],
            "doc_ids": sorted({d for p in passages for d in p.doc_ids}),
        }
    name = model_name or (qpm.model_label(model) if model is not None else None)

    qp = None
    if plan.qprecond is not None:
        if plan.qprecond == "calib":
            qp = qpm.calibrate_on_corpus(model, tokenizer, corp, ctx, n_passages=n_passages, seed=seed, bos=bos,
                                         variant=plan.qprecond_variant, model_name=name, refresh=refresh,
                                         progress=progress, passages=passages)
        else:
            qp = qpm.load(plan.qprecond)
            if qp.variant != plan.qprecond_variant:
                raise InputError(f"Σ_q artifact {qp.name!r} is the {qp.variant!r} variant but the plan asks for "
                                 f"{plan.qprecond_variant!r}")
        if qp.head_dim != _head_dim(config) or qp.n_kv != config.num_key_value_heads:
            raise InputError(f"Σ_q artifact {qp.name!r} is for head_dim {qp.head_dim} × {qp.n_kv} KV heads; the model "
                             f"has {_head_dim(config)} × {config.num_key_value_heads}")
        uncovered = [i for i in main if i not in qp.chol]
        if uncovered:
            raise InputError(f"Σ_q artifact {qp.name!r} has no calibration for layer(s) {uncovered}")
        qp = qp.with_skip(plan.qprecond_skip, config.num_hidden_layers)
        matches = None if model is None else qp.meta.get("model_fingerprint") == qpm.model_fingerprint(model)
        info["qprecond"] = {
            "artifact": qp.name,
            "variant": qp.variant,
            "skip": {str(i): reason for i, reason in qp.skip.items()},
            "whitened_layers": [i for i in main if qp.active(i)],
            "model_matches": matches,
            "summary": qp.summary(),
        }

    k_spec, v_spec = plan.k, plan.v or plan.k
    if plan.calibrated_codebook:
        model_fp = qpm.model_fingerprint(model)
        passages_fp = qpm.passages_fingerprint([p.input_ids for p in passages])
        jobs = []
        for stream, spec in (("k", k_spec), ("v", v_spec)):
            if not codebooks.eligible(spec) or not main:  # no main layers: nothing would use the table
                continue
            whitened = [] if stream != "k" or qp is None else [i for i in main if qp.active(i)]
            key = repr((model_fp, passages_fp, codecs.get(spec).spec, stream, tuple(main), plan.protect_tokens,
                        None if not whitened else qp.name, tuple(whitened)))
            bits = int(codecs.get(spec).params.bits)
            jobs.append(codebooks.CodebookJob(stream, spec, tuple(main), codebooks.codebook_name(name, corp.name, stream, bits, key)))
        todo = [j for j in jobs if refresh or codebooks.load_codebook_meta(j.name) is None]
        fitted = codebooks.fit_codebooks(model, passages, todo, qprecond=qp, protect_tokens=plan.protect_tokens,
                                  progress=progress, meta={"model": name, "corpus": corp.name}) if todo else {}
        info["codebooks"] = {}
        for job in jobs:
            meta = fitted.get(job.name) or codebooks.load_codebook_meta(job.name) or {}
            new = codebooks.with_codebook(job.spec, job.name)
            if job.stream == "k":
                k_spec = new
            else:
                v_spec = new
            info["codebooks"][job.stream] = {
                "name": job.name, "cached": job not in todo, "levels": meta.get("levels"),
                "mse_gaussian": meta.get("mse_gaussian"), "mse": meta.get("mse"),
                "n_samples": meta.get("n_samples"), "iterations": meta.get("iterations"),
            }
    if plan.kvtc_streams:
        # KVTC's per-model PCA bases and tables, fitted once on calib passages (the sink tokens the
        # plan keeps exact are left out of the fit, as the codec never sees them).

        artifact = kvtc_calib.calibrate_kvtc_on_corpus(model, tokenizer, corp, ctx, n_passages=n_passages, seed=seed,
                                                       bos=bos, protect_tokens=plan.protect_tokens, model_name=name,
                                                       refresh=refresh)
        if "k" in plan.kvtc_streams:
            k_spec = codecs.with_keys(k_spec, calib=artifact)
        if "v" in plan.kvtc_streams:
            v_spec = codecs.with_keys(v_spec, calib=artifact)
        info["kvtc"] = {"artifact": artifact, "artifact_bytes": kvtc_calib.artifact_nbytes(artifact),
                        "calibration": info.get("calibration")}
    codec_plan = dataclasses.replace(plan, k=k_spec, v=v_spec, qprecond=None, calibrated_codebook=False)
    return ResolvedPlan(plan, codec_plan, qp, info)
