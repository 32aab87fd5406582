"""Query preconditioning of keys: Σ_q calibration and whitening (spec §3); the array-level
algebra (second moments, regularisation, Cholesky factors, RoPE averaging, applying the
transform) is :mod:`.whitening`.

The attention score of query ``q`` and key ``k`` is ``qᵀk``; a key error ``e = k − k̂`` changes
it by ``qᵀe``, so the error that matters is ``E_q[(qᵀe)²] = e Σ_q eᵀ`` with ``Σ_q = E[q qᵀ]``,
not ``‖e‖²``. With ``Σ_reg = L Lᵀ`` (Cholesky, ``L`` lower) and keys as row vectors,

    K̃ = K L          (whiten, before the codec)
    K̂ = K̂̃ L⁻¹       (unwhiten, after decode)

and ``‖(k − k̂) L‖² = (k − k̂) Σ_reg (k − k̂)ᵀ``: a codec minimising plain MSE on ``K̃`` minimises
the query-weighted error on ``K`` (spec §3.2). ``V`` is never whitened.

Calibration (:func:`calibrate`)
-------------------------------
* Pre-RoPE queries (after ``q_proj`` (+bias) and any ``q_norm``) are recorded by the patched
  model (:attr:`PreRopeCache.captured_queries`) on passages of the corpus's **calib** split
  (:func:`calibrate_on_corpus`), never the evaluation split.
* GQA: KV head ``h`` serves the contiguous query heads ``h·g … (h+1)·g − 1`` (``g = n_q/n_kv``,
  as ``repeat_kv``); ``Σ[l, h] = Σ_tokens Σ_{q-heads of h} q qᵀ / (g · tokens)``, accumulated in
  float64 and symmetrised.
* Variant ``"plain"`` (the seed's) uses that Σ. Variant ``"rope"`` accounts for the rotation the
  cache applies at read time: the score is ``q_mᵀ R(n − m) k_n``, so a key seen at relative
  offset ``Δ = m − n`` is weighted by ``R_Δ Σ R_Δᵀ`` (``R_Δ`` rotates a column vector by ``Δ``
  positions); :func:`rope_average` returns ``Σ_Δ w_Δ R_Δ Σ R_Δᵀ`` over ``Δ = 0 … ctx−1``
  (uniform weights by default) in closed form, per pair of RoPE frequencies.
* Regularisation (:func:`regularise`): ``Σ + ridge · mean(diag Σ) · I`` (ridge 1e-3).
* Skipped layers are identity transforms: an explicit list (default ``[0]``, as the seed: the
  attention-sink layer whose whitened keys overflowed float16 on DeepSeek, spec §3.3) plus every
  layer whose whitened calibration keys would overflow float16. The test is
  ``max_row ‖k̃‖₂ · OVERFLOW_MARGIN > 65504`` with ``OVERFLOW_MARGIN = 4``: the codec stores
  row-level scalars (``‖r‖``, ``t``, skeleton means) in float16; ``max|k̃| ≤ ‖k̃‖₂``, a residual
  after mean subtraction is at most ``2 · max ‖k̃‖``, and another factor 2 leaves room for
  evaluation keys beyond the calibration peak.

Artifacts (:meth:`QPrecond.save`, :func:`load`): a safetensors file with float32 tensors
``layer_{l}_chol``, ``layer_{l}_inv_chol``, ``layer_{l}_sigma`` (``[n_kv, D, D]``; ``sigma`` is the
un-regularised metric: Σ_q, or its RoPE average) and a same-stem JSON sidecar (model, head_dim,
n_q, n_kv, layers, ctx, passages, corpus, ridge, variant, skipped layers with reasons,
diagnostics, provenance). Saved under ``CALIB_DIR`` (``.cache/calib``) by a name derived from
(model, corpus, ctx, passages, variant, ridge) plus a fingerprint of the model weights and
the passages. No pickle.

One concept (over 400 lines): the query-whitening artifact, from calibration to the saved file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import provenance
from ..atomic import tmp_sibling, write_text_atomic
from ..errors import CorruptBlobError, InputError
from .calibration_inputs import (
    DEFAULT_PASSAGES,
    calib_dir,
    calib_passages,
    ensure_patched,
    model_fingerprint,
    model_label,
    passages_fingerprint,
    prefill,
    slug,
    token_lists,
)
from .models import full_attention_layers
from .whitening import (
    DEFAULT_RIDGE,
    apply_transform,
    cholesky_pair,
    diagnostics,
    pooled_gram,
    regularise,
    rope_average,
    rope_frequencies,
)

F16_MAX = 65504.0
OVERFLOW_MARGIN = 4.0
DEFAULT_SKIP: tuple[int, ...] = (0,)
VARIANTS = ("plain", "rope")
FORMAT = "kakeya-qcal"
FORMAT_VERSION = 1
_KINDS = ("chol", "inv_chol", "sigma")


# --------------------------------------------------------------------------------------------
# The calibration object


@dataclass
class QPrecond:
    """Per-layer Cholesky factors of the (regularised) query metric, and which layers are skipped.

    Attributes
    ----------
    chol, inv_chol : layer → float64 [n_kv, D, D] (``L`` lower, ``L⁻¹``)
    sigma : layer → float64 [n_kv, D, D], the un-regularised metric (Σ_q or its RoPE average)
    meta : the sidecar fields (see the module docstring)
    skip : layer → reason; whitening is the identity there
    name : the artifact name (file stem), when saved or loaded
    """

    chol: dict[int, np.ndarray]
    inv_chol: dict[int, np.ndarray]
    sigma: dict[int, np.ndarray]
    meta: dict[str, Any]
    skip: dict[int, str] = field(default_factory=dict)
    name: str | None = None

    # -- shape ---------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return sorted(self.chol)

    @property
    def head_dim(self) -> int:
        return int(self.meta["head_dim"])

    @property
    def n_kv(self) -> int:
        return int(self.meta["n_kv"])

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant", "plain"))

    @property
    def overflow_layers(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta.get("overflow_layers", {}).items()}

    def active(self, layer: int) -> bool:
        """Whether keys of ``layer`` are whitened (calibrated and not skipped)."""
        return layer in self.chol and layer not in self.skip

    def active_layers(self) -> list[int]:
        return [layer for layer in self.layers if self.active(layer)]

    def with_skip(self, explicit: Sequence[int], n_layers: int | None = None) -> "QPrecond":
        """A copy whose skip list is ``explicit`` (negative = from the end, needs ``n_layers``)
        plus every float16-overflow layer of the calibration."""
        skip: dict[int, str] = {}
        for layer in explicit:
            layer = int(layer)
            if layer < 0:
                if n_layers is None:
                    raise InputError(f"skip layer {layer} counts from the end; the layer count is needed")
                layer += n_layers
            skip[layer] = "explicit"
        for layer, reason in self.overflow_layers.items():
            skip.setdefault(layer, reason)
        return QPrecond(self.chol, self.inv_chol, self.sigma, self.meta, dict(sorted(skip.items())), self.name)

    # -- transforms ----------------------------------------------------------------------------
    def factors(self, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(L, L⁻¹) [n_kv, D, D] float64 for an active layer, else None."""
        if not self.active(layer):
            return None
        return self.chol[layer], self.inv_chol[layer]

    def whiten(self, x: Any, layer: int) -> Any:
        """``K̃ = K @ L[h]`` per head (rows [T·n_kv, D] or a tensor [B, n_kv, T, D]); identity for
        skipped or uncalibrated layers."""
        f = self.factors(layer)
        return x if f is None else apply_transform(x, f[0])

    def unwhiten(self, x: Any, layer: int) -> Any:
        """``K = K̃ @ L[h]⁻¹`` per head; identity for skipped or uncalibrated layers."""
        f = self.factors(layer)
        return x if f is None else apply_transform(x, f[1])

    # -- reporting -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Condition numbers over (layer, head) (min / median / max), skipped layers, shape."""
        diag = self.meta.get("diagnostics", [])

        def stats(key: str) -> dict[str, float | None]:
            vals = [d[key] for d in diag if d.get(key) is not None]
            if not vals:
                return {"min": None, "median": None, "max": None}
            return {"min": float(np.min(vals)), "median": float(np.median(vals)), "max": float(np.max(vals))}

        return {
            "name": self.name,
            "variant": self.variant,
            "layers": len(self.chol),
            "n_kv": self.n_kv,
            "head_dim": self.head_dim,
            "condition": stats("condition"),
            "condition_chol": stats("condition_chol"),
            "singular_heads": sum(1 for d in diag if d.get("condition") is None),
            "skip": {str(k): v for k, v in self.skip.items()},
            "overflow_layers": {str(k): v for k, v in self.overflow_layers.items()},
        }

    def describe(self) -> str:
        """One paragraph for logs."""
        s = self.summary()
        c, cl = s["condition"], s["condition_chol"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
        per_layer = self.meta.get("layer_stats", {})
        peak = max((v.get("k_whitened_max_row_norm", 0.0) for v in per_layer.values()), default=0.0)
        return (
            f"Σ_q {s['variant']} ({s['name'] or 'unsaved'}): {s['layers']} layers × {s['n_kv']} KV heads, D={s['head_dim']}; "
            f"cond(Σ) min/median/max {fmt(c['min'])} / {fmt(c['median'])} / {fmt(c['max'])}"
            f" ({s['singular_heads']} singular); cond(L) after regularisation {fmt(cl['min'])} / {fmt(cl['median'])} / "
            f"{fmt(cl['max'])}; max ‖K̃ row‖ {peak:.4g}; skipped layers "
            + (", ".join(f"{k} ({v})" for k, v in s["skip"].items()) or "none")
        )

    # -- files ---------------------------------------------------------------------------------
    def save(self, where: str | Path | None = None) -> Path:
        """Write ``NAME.safetensors`` + ``NAME.json`` (``where``: a name in :func:`calib_dir`, or a path)."""
        from safetensors.numpy import save_file  # noqa: PLC0415

        path = _artifact_path(where or self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for layer in self.layers:
            for kind, src in zip(_KINDS, (self.chol, self.inv_chol, self.sigma)):
                tensors[f"layer_{layer}_{kind}"] = np.ascontiguousarray(src[layer], dtype=np.float32)
        tmp = tmp_sibling(path)
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        sidecar = {**self.meta, "skip_layers": {str(k): v for k, v in self.skip.items()}}
        write_text_atomic(path.with_suffix(".json"), json.dumps(sidecar, indent=2))
        tmp.replace(path)
        self.name = path.stem
        return path


def _artifact_path(where: str | Path | None) -> Path:
    if where is None:
        raise InputError("give the artifact a name or a path")
    p = Path(where)
    if p.suffix == ".safetensors":
        return p
    if p.parent != Path("."):
        return p.with_name(p.name + ".safetensors")
    return calib_dir() / f"{p.name}.safetensors"


def available() -> list[str]:
    """Names of the Σ_q artifacts in :func:`calib_dir`."""
    return sorted(p.stem for p in calib_dir().glob("*.safetensors"))


def exists(name_or_path: str | Path) -> bool:
    try:
        return _artifact_path(name_or_path).is_file()
    except InputError:
        return False


def load(name_or_path: str | Path) -> QPrecond:
    """Load an artifact by name (in :func:`calib_dir`) or by path, validating every tensor.

    Raises :class:`InputError` for a missing file and :class:`CorruptBlobError` for unreadable or
    inconsistent contents (missing tensor, wrong dtype or shape, non-finite values, ``L`` not lower
    triangular, ``L @ L⁻¹ ≠ I``), naming the problem.
    """
    from safetensors.numpy import load_file  # noqa: PLC0415

    path = _artifact_path(name_or_path)
    if not path.is_file():
        names = available()
        raise InputError(f"no Σ_q calibration {str(name_or_path)!r} (looked for {path}); "
                         f"available in {calib_dir()}: {', '.join(names) or 'none'}")
    side = path.with_suffix(".json")
    if not side.is_file():
        raise InputError(f"{path.name}: its JSON sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptBlobError(f"{side.name}: not valid JSON ({exc})") from exc
    for key in ("head_dim", "n_kv", "layers", "variant"):
        if key not in meta:
            raise CorruptBlobError(f"{side.name}: field {key!r} is missing")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
        raise CorruptBlobError(f"{path.name}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    d, h = int(meta["head_dim"]), int(meta["n_kv"])
    layers = [int(v) for v in meta["layers"]]
    expected = {f"layer_{l}_{k}" for l in layers for k in _KINDS}
    extra = sorted(set(tensors) - expected)
    if extra:
        raise CorruptBlobError(f"{path.name}: unexpected tensor(s) {', '.join(extra[:5])} not listed in the sidecar")
    out: dict[str, dict[int, np.ndarray]] = {k: {} for k in _KINDS}
    for layer in layers:
        for kind in _KINDS:
            key = f"layer_{layer}_{kind}"
            if key not in tensors:
                raise CorruptBlobError(f"{path.name}: tensor {key!r} is missing")
            t = tensors[key]
            if t.dtype != np.float32:
                raise CorruptBlobError(f"{path.name}: tensor {key!r} has dtype {t.dtype}, expected float32")
            if t.shape != (h, d, d):
                raise CorruptBlobError(f"{path.name}: tensor {key!r} has shape {t.shape}, expected {(h, d, d)}")
            if not np.isfinite(t).all():
                raise CorruptBlobError(f"{path.name}: tensor {key!r} holds NaN/Inf")
            out[kind][layer] = t.astype(np.float64)
        chol, inv = out["chol"][layer], out["inv_chol"][layer]
        if np.abs(np.triu(chol, 1)).max() != 0 or not (np.diagonal(chol, axis1=1, axis2=2) > 0).all():
            raise CorruptBlobError(f"{path.name}: layer_{layer}_chol is not lower triangular with a positive diagonal")
        err = float(np.abs(chol @ inv - np.eye(d)).max())
        if err > 1e-2:
            raise CorruptBlobError(f"{path.name}: layer_{layer}_chol @ layer_{layer}_inv_chol is not the identity "
                                   f"(max error {err:.3g})")
    skip = {int(k): str(v) for k, v in meta.get("skip_layers", {}).items()}
    return QPrecond(out["chol"], out["inv_chol"], out["sigma"], meta, skip, path.stem)


# --------------------------------------------------------------------------------------------
# Calibration


def artifact_name(model: str, corpus: str, ctx: int, n_passages: int, variant: str, ridge: float,
                  fingerprint: str = "") -> str:
    """``qcal-{model}-{corpus}-ctx{ctx}-n{n}-{variant}-r{ridge}[-{fingerprint}]``."""
    corpus_part = slug(Path(corpus).name if ("/" in str(corpus) or "\\" in str(corpus)) else corpus, 24)
    name = f"qcal-{slug(model, 32)}-{corpus_part}-ctx{ctx}-n{n_passages}-{variant}-r{ridge:g}"
    return f"{name}-{fingerprint[:10]}" if fingerprint else name


def collect(model: Any, passages: Sequence[Any], layers: Sequence[int] | None = None,
            keep_keys: bool = True, progress: bool = False) -> tuple[dict[int, np.ndarray], int, dict[int, list[Any]]]:
    """Run the calibration passages through the pre-RoPE-patched model.

    Returns the pooled query Gram matrices per layer (float64 [n_kv, D, D], not yet divided by
    the count), the number of tokens, and (``keep_keys``) each layer's pre-RoPE keys per passage
    as bfloat16 tensors [n_kv, T, D] (for the float16 overflow check).
    """
    import torch  # noqa: PLC0415

    from .prerope import make_cache  # noqa: PLC0415

    ids_list = token_lists(passages)
    ensure_patched(model)
    cfg = model.config
    layers = list(full_attention_layers(cfg) if layers is None else layers)
    n_kv = cfg.num_key_value_heads
    grams: dict[int, np.ndarray] = {}
    keys: dict[int, list[Any]] = {layer: [] for layer in layers}
    n_tokens = 0
    iterator: Any = ids_list
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        iterator = tqdm(ids_list, desc="calibration passages", unit="passage")
    for ids in iterator:
        cache = make_cache(model)
        cache.captured_queries = {}
        prefill(model, ids, cache)
        for layer in layers:
            q = torch.cat(cache.captured_queries[layer], dim=2)[0]
            g = pooled_gram(q, n_kv)
            grams[layer] = g if layer not in grams else grams[layer] + g
            if keep_keys:
                keys[layer].append(cache.layers[layer].keys[0].to(torch.bfloat16))
        n_tokens += len(ids)
        del cache
    return grams, n_tokens, keys


def calibrate(
    model: Any,
    passages: Sequence[Any],
    *,
    variant: str = "plain",
    ridge: float = DEFAULT_RIDGE,
    rope_ctx: int | None = None,
    layers: Sequence[int] | None = None,
    skip: Sequence[int] = DEFAULT_SKIP,
    overflow_margin: float = OVERFLOW_MARGIN,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> QPrecond:
    """Calibrate Σ_q per (layer, KV head) on ``passages`` and factor it (see the module docstring).

    Parameters
    ----------
    model : a float causal LM of a supported family (patched for pre-RoPE caching here if needed)
    passages : token-id lists from the corpus's calib split, or calib-split
        :class:`~.corpora.Passage` records (eval-split records are refused)
    variant : ``"plain"`` (Σ_q) or ``"rope"`` (Σ_q averaged over relative RoPE offsets)
    ridge : ``Σ + ridge · mean(diag Σ) · I``
    rope_ctx : offsets ``0 … rope_ctx−1`` for the rope variant (default: the longest passage)
    layers : layers to calibrate (default: every full-attention layer)
    skip : layers kept as identity (negative: from the end); float16-overflow layers are added
    overflow_margin : a layer is skipped when ``max ‖k̃‖₂ · margin > 65504``
    meta : extra sidecar fields (model, corpus, passage ids ...)
    """
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not ridge >= 0:
        raise InputError(f"ridge must be >= 0, got {ridge}")
    import torch  # noqa: PLC0415

    ids_list = token_lists(passages)
    cfg = model.config
    grams, n_tokens, keys = collect(model, ids_list, layers, progress=progress)
    n_q, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_q)
    g = n_q // n_kv
    ctx = rope_ctx or max(len(ids) for ids in ids_list)
    chol, inv, sig = {}, {}, {}
    diag_rows: list[dict[str, Any]] = []
    layer_stats: dict[str, dict[str, float]] = {}
    overflow: dict[str, str] = {}
    for layer in sorted(grams):
        sigma = grams[layer] / (g * n_tokens)
        sigma = (sigma + np.swapaxes(sigma, 1, 2)) / 2
        if variant == "rope":
            sigma = rope_average(sigma, rope_frequencies(model, layer), ctx, None, "half")
        c_l, i_l = np.empty_like(sigma), np.empty_like(sigma)
        for h in range(n_kv):
            reg, shifts = regularise(sigma[h], ridge)
            c_l[h], i_l[h] = cholesky_pair(reg, f" of layer {layer}, KV head {h}")
            diag_rows.append({"layer": layer, "kv_head": h, **diagnostics(sigma[h], reg), **shifts})
        chol[layer], inv[layer], sig[layer] = c_l, i_l, sigma
        # float16 overflow check on the whitened calibration keys
        lc = torch.from_numpy(c_l.astype(np.float32))
        peak_abs = peak_norm = raw_abs = 0.0
        for k in keys[layer]:
            kf = k.to(torch.float32)
            kw = torch.einsum("htd,hde->hte", kf, lc)
            peak_abs = max(peak_abs, float(kw.abs().max()))
            peak_norm = max(peak_norm, float(kw.norm(dim=-1).max()))
            raw_abs = max(raw_abs, float(kf.abs().max()))
        layer_stats[str(layer)] = {"k_max_abs": raw_abs, "k_whitened_max_abs": peak_abs,
                                   "k_whitened_max_row_norm": peak_norm}
        if peak_norm * overflow_margin > F16_MAX:
            overflow[str(layer)] = (f"float16 overflow: whitened keys reach row norm {peak_norm:.4g} "
                                    f"(max |k̃| {peak_abs:.4g}); limit {F16_MAX:g}/{overflow_margin:g}")
        keys[layer] = []
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "head_dim": d,
        "n_q": n_q,
        "n_kv": n_kv,
        "n_layers": cfg.num_hidden_layers,
        "layer_types": list(getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers),
        "layers": sorted(chol),
        "n_passages": len(ids_list),
        "n_tokens": n_tokens,
        "ctx": max(len(ids) for ids in ids_list),
        "variant": variant,
        "rope_ctx": ctx if variant == "rope" else None,
        "rope_convention": "half" if variant == "rope" else None,
        "ridge": float(ridge),
        "overflow_margin": float(overflow_margin),
        "overflow_layers": overflow,
        "diagnostics": diag_rows,
        "layer_stats": layer_stats,
        "model_fingerprint": model_fingerprint(model),
        "passages_fingerprint": passages_fingerprint(ids_list),
        "provenance": provenance.collect(command="qprecond.calibrate"),
        **(meta or {}),
    }
    qp = QPrecond(chol, inv, sig, info)
    return qp.with_skip(skip, cfg.num_hidden_layers)


def calibrate_on_corpus(
    model: Any,
    tokenizer: Any,
    corpus: Any,
    ctx: int,
    *,
    n_passages: int = DEFAULT_PASSAGES,
    seed: int = 0,
    bos: bool | None = None,
    variant: str = "plain",
    ridge: float = DEFAULT_RIDGE,
    model_name: str | None = None,
    save: bool = True,
    refresh: bool = False,
    progress: bool = False,
    passages: Sequence[Any] | None = None,
) -> QPrecond:
    """Calibrate on ``n_passages`` calib-split passages of ``ctx`` tokens, cached by name.

    The name (:func:`artifact_name`) carries model, corpus, ctx, passages, variant and ridge
    plus a fingerprint of the model weights and the passage tokens; an artifact of that name in
    :func:`calib_dir` is loaded instead of recomputed (``refresh=True`` recomputes). ``bos``
    defaults to True for Gemma3 (as the harness's passages). ``passages`` may be given to skip
    cutting them again (they must be those calib passages).
    """
    from . import corpora  # noqa: PLC0415
    from .models import family_of  # noqa: PLC0415

    if bos is None:
        bos = family_of(model.config) == "gemma3"
    corp = corpus if isinstance(corpus, corpora.Corpus) else corpora.load_corpus(corpus)
    chosen = list(passages) if passages is not None else calib_passages(corp, tokenizer, ctx, n_passages, seed, bos)
    ids_list = token_lists(chosen)
    fp = hashlib.sha256((model_fingerprint(model) + passages_fingerprint(ids_list)).encode()).hexdigest()
    name = artifact_name(model_name or model_label(model), corp.name, ctx, len(ids_list), variant, ridge, fp)
    if save and not refresh and exists(name):
        return load(name)
    qp = calibrate(
        model, chosen, variant=variant, ridge=ridge, progress=progress,
        meta={
            "model": model_name or model_label(model),
            "corpus": corp.name,
            "split": "calib",
            "seed": int(seed),
            "bos": bool(bos),
            "passage_ids": [getattr(p, "passage_id", None) for p in chosen],
            "doc_ids": sorted({d for p in chosen for d in getattr(p, "doc_ids", ())}),
        },
    )
    qp.name = name
    if save:
        qp.save(name)
        # The artifact holds float32 factors: hand back what a later run will load, so a result
        # does not depend on whether the calibration cache was warm.
        return load(name)
    return qp
