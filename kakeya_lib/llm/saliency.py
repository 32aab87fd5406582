"""Token saliency from the prefix's own last queries: how much attention each cached token gets.

Attention does not look at cached tokens equally: a few (recent tokens, heavy hitters) take most
of the probability mass, most take almost none. A token's coding error reaches the output in
proportion to the attention it receives, so a rate allocation over tokens should spend bits where
that attention goes. The queries that will read the cache are not known when it is coded; the
last ``M`` queries of the prefix are, and they predict the next queries' attention well (the
prefill computed them anyway; here they are recomputed from the captured pre-RoPE queries and
keys with the model's own RoPE tables and scaling).

Per layer and KV head, the weight of cached token ``j`` is

    w[j] = sum over the last M queries i and over the query heads h of the head's group of p_hij²,

with ``p_hij`` the softmax attention probability of query ``i`` (head ``h``) on token ``j``,
causal (and windowed on sliding-window layers). The square is the value-error weight: an error
``e_j`` in value ``j`` moves the output by ``sum_j p_ij e_j``, whose expected energy is
``sum_j p_ij² ‖e_j‖²`` for independent errors; keys get the same weights (their error moves the
logits, whose effect on the output scales with the same probabilities). Codecs turn the weights
into step factors (``klt`` ``saliency=``); nothing about them is stored, since the decoder reads
each token's step from its coded scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .prerope import apply_rope


def token_weights(queries: torch.Tensor, keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scaling: float,
                  n_queries: int, sliding_window: int | None = None) -> np.ndarray:
    """Attention weights of the last ``n_queries`` queries on every cached token of one layer.

    Parameters
    ----------
    queries : tensor [1, Hq, T, D], pre-RoPE queries of positions 0..T-1
    keys : tensor [1, Hkv, T, D], pre-RoPE keys of the same positions (Hq a multiple of Hkv)
    cos, sin : tensors [1, >= T, D], the RoPE tables the model used for those positions
    scaling : the layer's attention scaling (``self_attn.scaling``)
    n_queries : M >= 1 (at most T): the last M positions' queries are used
    sliding_window : the layer's window, or None for full attention

    Returns
    -------
    array [T · Hkv] float64, token-major with heads interleaved (the codecs' row order): the
    summed squared probabilities each (token, KV head) receives.
    """
    if queries.ndim != 4 or keys.ndim != 4 or queries.shape[0] != 1 or keys.shape[0] != 1:
        raise InputError(f"saliency needs queries [1, Hq, T, D] and keys [1, Hkv, T, D], got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    _, n_q_heads, t, d = queries.shape
    n_kv = keys.shape[1]
    if keys.shape[2] != t or keys.shape[3] != d or n_q_heads % n_kv:
        raise InputError(f"saliency: queries {tuple(queries.shape)} and keys {tuple(keys.shape)} do not match")
    if not 1 <= n_queries <= t:
        raise InputError(f"saliency: n_queries must be in 1..{t} (the cached tokens), got {n_queries}")
    first = t - n_queries
    q = apply_rope(queries[:, :, first:].double(), cos[:, first:t].double(), sin[:, first:t].double())
    k = apply_rope(keys.double(), cos[:, :t].double(), sin[:, :t].double())
    k = k.repeat_interleave(n_q_heads // n_kv, dim=1)  # query head h reads KV head h // group
    scores = (q @ k.transpose(-1, -2)) * scaling  # [1, Hq, M, T]
    pos_q = torch.arange(first, t)[:, None]
    pos_k = torch.arange(t)[None, :]
    hidden = pos_k > pos_q
    if sliding_window is not None:
        hidden |= pos_k <= pos_q - sliding_window
    probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    w = (probs**2).sum(dim=2)[0]  # [Hq, T]
    w = w.reshape(n_kv, n_q_heads // n_kv, t).sum(dim=1)  # [Hkv, T]
    return w.T.reshape(-1).numpy()


def layer_weights(model: Any, cache: Any, n_queries: int, kinds: Sequence[str],
                  layers: Sequence[int] | None = None) -> list[np.ndarray | None]:
    """:func:`token_weights` of every layer in ``layers`` (default all; None for the others) of a
    prefilled :class:`~.prerope.PreRopeCache` whose ``captured_queries`` were switched on for the
    prefill (one chunk or several); ``kinds`` are the layers' RoPE table names
    (:func:`~.prerope.rope_kinds`)."""
    if cache.captured_queries is None:
        raise InputError("token saliency needs the prefill's queries: set cache.captured_queries = {} before it")
    wanted = set(range(len(cache.layers)) if layers is None else layers)
    out: list[np.ndarray | None] = []
    for i, layer in enumerate(cache.layers):
        if i not in wanted:
            out.append(None)
            continue
        q = torch.cat(cache.captured_queries[i], dim=2)
        if q.shape[2] != layer.keys.shape[2]:
            raise InputError(f"layer {i}: {q.shape[2]} captured queries for {layer.keys.shape[2]} cached tokens "
                             "(token saliency needs the whole prefix in the cache, no sliding eviction)")
        cos, sin = cache.rope_tables[kinds[i]]
        attn = model.model.layers[i].self_attn
        out.append(token_weights(q, layer.keys, cos, sin, attn.scaling, min(n_queries, q.shape[2]),
                                 getattr(attn, "sliding_window", None)))
    return out
