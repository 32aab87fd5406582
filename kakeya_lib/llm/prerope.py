"""Pre-RoPE KV cache: the cache holds keys *before* rotary position embedding (spec §4.2).

A codec must never see RoPE phase, so :func:`patch_model` swaps each attention module's
``forward`` for one that stores un-rotated keys in a :class:`PreRopeCache` and applies RoPE to
all cached keys when they are read (a cache with ``update_rotated`` applies it itself, to what it
does not already hold rotated). The arithmetic is the stock model's, op for op (same
``cos``/``sin`` tables, same ``x*cos + rotate_half(x)*sin``), so with nothing compressed the
logits equal the stock model's exactly (tested for every supported family).

Positions of cached keys are taken as contiguous and ending at the current query position
(batch 1, no left padding, sliding-window layers keep a contiguous tail); the patched forward
checks this against the model's own position tables and raises if it does not hold.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import torch
from transformers import DynamicCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..errors import KakeyaError
from .models import family_of

_PATCH_ATTR = "_kakeya_prerope"


class PreRopeError(KakeyaError, RuntimeError):
    """The pre-RoPE attention path was used in a way it cannot support."""


class PreRopeCache(DynamicCache):
    """A ``DynamicCache`` whose layers hold pre-RoPE keys (values are unchanged).

    It also keeps, per RoPE kind (layer type), the ``cos``/``sin`` rows the model computed for
    every position it has seen, so cached keys are rotated with exactly the numbers the stock
    model used when it stored them (recomputing the table can differ in the last ulp, because
    vectorised ``cos`` rounds differently in different positions of a batch).

    Use it only with a model patched by :func:`patch_model`; a stock model would attend with
    un-rotated keys.
    """

    holds_pre_rope_keys = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rope_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # layer -> pre-RoPE queries [B, H, T, D] of every forward, when capture is switched on
        self.captured_queries: dict[int, list[torch.Tensor]] | None = None

    def record_rope(self, kind: str, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the tables [1, q_len, D] of a new chunk; return the tables of all positions."""
        if kind in self.rope_tables:
            old_cos, old_sin = self.rope_tables[kind]
            cos, sin = torch.cat([old_cos, cos], dim=1), torch.cat([old_sin, sin], dim=1)
        self.rope_tables[kind] = (cos, sin)
        return cos, sin

    def crop(self, max_length: int) -> None:
        super().crop(max_length)
        keep = max_length if max_length >= 0 else None
        for kind, (cos, sin) in list(self.rope_tables.items()):
            end = keep if keep is not None else cos.shape[1] + max_length
            self.rope_tables[kind] = (cos[:, :end], sin[:, :end])


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Half-split rotation used by Llama-style RoPE: [x1, x2] -> [-x2, x1]."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on x [B, H, T, D] with tables cos/sin [B, T, D] (same ops as transformers)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (x * cos) + (rotate_half(x) * sin)


def latest_tables(cos_all: torch.Tensor, sin_all: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The RoPE tables [1, n, D] of the latest ``n`` positions of ``cos_all``/``sin_all`` [1, seen, D]
    (cached keys are the latest positions: sliding layers keep a contiguous tail)."""
    if n > cos_all.shape[1]:
        raise PreRopeError(f"cached key positions are not contiguous with the queries ({n} cached keys, "
                           f"RoPE tables for {cos_all.shape[1]} positions; left padding or batched ragged "
                           "inputs are not supported)")
    return cos_all[:, cos_all.shape[1] - n :], sin_all[:, sin_all.shape[1] - n :]


def _project(self: Any, hidden_states: torch.Tensor, family: str) -> tuple[torch.Tensor, ...]:
    """q, k, v [B, H, T, D] before RoPE, in each family's own op order (for bitwise equality)."""
    shape = (*hidden_states.shape[:-1], -1, self.head_dim)
    v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
    if family == "qwen3":  # RMS-norm on [B, T, H, D], then transpose
        q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)
    else:
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        if family == "gemma3":  # transpose, then RMS-norm
            q, k = self.q_norm(q), self.k_norm(k)
    return q, k, v


def _make_forward(family: str, kind: str, records_rope: bool):
    """The patched forward of one attention layer.

    ``kind`` names the layer's RoPE table; the first layer of each kind (``records_rope``)
    appends the chunk's tables to the cache, the others read them.
    """

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None,
                past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        q, k, v = _project(self, hidden_states, family)
        cos, sin = position_embeddings
        q_pre, q = q, apply_rope(q, cos, sin)
        if cache is None:
            k_rot, v_all = apply_rope(k, cos, sin), v
        else:
            if not getattr(cache, "holds_pre_rope_keys", False):
                raise PreRopeError(
                    f"a pre-RoPE-patched model needs a PreRopeCache (or a subclass), got {type(cache).__name__}; "
                    "pass cache=PreRopeCache() / past_key_values=PreRopeCache()"
                )
            if records_rope:
                cos_all, sin_all = cache.record_rope(kind, cos, sin)
            else:
                cos_all, sin_all = cache.rope_tables[kind]
            if cache.captured_queries is not None:
                cache.captured_queries.setdefault(self.layer_idx, []).append(q_pre.detach().clone())
            observe = getattr(cache, "observe_chunk", None)
            if observe is not None:  # a cache that weighs tokens by the attention they get, before coding them
                observe(self.layer_idx, q_pre, k, cos, sin, self)
            q_len, seen = q.shape[2], cos_all.shape[1]
            if not torch.equal(cos_all[:, seen - q_len :], cos):
                raise PreRopeError("cached key positions are not contiguous with the queries "
                                   "(left padding or batched ragged inputs are not supported)")
            rotating = getattr(cache, "update_rotated", None)
            if rotating is not None:  # the cache applies RoPE itself (keys it keeps decoded are held rotated)
                k_rot, v_all = rotating(k, v, self.layer_idx, cos_all, sin_all, kwargs=kwargs)
            else:
                k_all, v_all = cache.update(k, v, self.layer_idx, kwargs=kwargs)
                k_rot = apply_rope(k_all, *latest_tables(cos_all, sin_all, k_all.shape[2]))
        extra = {} if family == "llama" else {"sliding_window": self.sliding_window}
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, None)
        if attention is None:
            attention = _family_eager(family)
        out, weights = attention(self, q, k_rot, v_all, attention_mask,
                                 dropout=0.0 if not self.training else self.attention_dropout,
                                 scaling=self.scaling, **extra, **kwargs)
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return self.o_proj(out), weights

    return forward


def _family_eager(family: str) -> Callable[..., Any]:
    module = {
        "llama": "transformers.models.llama.modeling_llama",
        "qwen2": "transformers.models.qwen2.modeling_qwen2",
        "qwen3": "transformers.models.qwen3.modeling_qwen3",
        "gemma3": "transformers.models.gemma3.modeling_gemma3",
    }[family]
    import importlib  # noqa: PLC0415

    return importlib.import_module(module).eager_attention_forward


def _decoder(model: Any) -> Any:
    inner = getattr(model, "model", model)
    if not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        raise PreRopeError(f"{type(model).__name__} has no decoder layers / rotary embedding where expected")
    return inner


def patch_model(model: Any) -> Callable[[], None]:
    """Make every attention layer of ``model`` keep pre-RoPE keys in its cache.

    Returns a function that restores the stock forwards. Patching twice is an error.
    """
    family = family_of(model.config)
    decoder = _decoder(model)
    attns = [layer.self_attn for layer in decoder.layers]
    if any(hasattr(a, _PATCH_ATTR) for a in attns):
        raise PreRopeError("this model is already patched for pre-RoPE caching")
    kinds = rope_kinds(model)  # Gemma3 keeps one RoPE table per layer type; the others share one
    for i, attn in enumerate(attns):
        attn.forward = types.MethodType(_make_forward(family, kinds[i], kinds.index(kinds[i]) == i), attn)
        setattr(attn, _PATCH_ATTR, True)

    def unpatch() -> None:
        for attn in attns:
            if hasattr(attn, _PATCH_ATTR):
                del attn.forward
                delattr(attn, _PATCH_ATTR)

    return unpatch


def rope_kinds(model: Any) -> list[str]:
    """Each layer's RoPE table name: the layer type for Gemma3, one shared ``"rope"`` otherwise."""
    family = family_of(model.config)
    n = model.config.num_hidden_layers
    layer_types = getattr(model.config, "layer_types", None) or ["full_attention"] * n
    return [layer_types[i] if family == "gemma3" else "rope" for i in range(n)]


def rope_tables_for(model: Any, n_tokens: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The cos/sin tables [1, n_tokens, D] per RoPE kind for positions ``0..n_tokens-1``, computed
    in one call as a prefill of ``n_tokens`` computes them (so the bits match what a
    :class:`PreRopeCache` recorded during that prefill); a cache loaded from a file gets these."""
    decoder = _decoder(model)
    param = next(model.parameters())
    x = torch.zeros(1, n_tokens, 1, dtype=param.dtype, device=param.device)  # only dtype/device are read
    positions = torch.arange(n_tokens, device=param.device)[None]
    out = {}
    for kind in dict.fromkeys(rope_kinds(model)):
        with torch.no_grad():
            out[kind] = decoder.rotary_emb(x, positions) if kind == "rope" else decoder.rotary_emb(x, positions, kind)
    return out


def make_cache(model: Any, cache_cls: type[PreRopeCache] = PreRopeCache, **kwargs: Any) -> PreRopeCache:
    """A pre-RoPE cache laid out for ``model`` (sliding-window layers where the config has them)."""
    return cache_cls(config=model.config, **kwargs)
