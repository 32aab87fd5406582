"""A ``transformers`` cache that really holds compressed bytes.

:class:`CompressedCache` is a pre-RoPE ``DynamicCache`` (use it with a model patched by
:func:`~kakeya_lib.llm.prerope.patch_model`) whose compressed layers keep:

* the codec's **packed bytes** for every full block of ``block_tokens`` tokens (``bytes``
  objects, not round-tripped floats), encoded as soon as the block is older than the hot window;
* a **hot window** of the most recent tokens (at least ``hot_tokens``) and, with
  ``protect_tokens``, the leading (sink) tokens kept out of the codec, both as **bfloat16**
  tensors (:data:`STORE_DTYPE`).

Reading a layer decodes its blocks on the fly (the decoded floats live only for that attention
call, unless ``keep_decoded`` keeps them), casts the bf16 sink and hot tokens back to the model's
dtype and appends them. The patched attention reads through :meth:`CompressedCache.update_rotated`,
so keys come back with RoPE applied and kept decoded key blocks are held rotated: a generation
step rotates only what it did not hold rotated, not the whole cache. Tokens
that arrive in one update attend to their own exact values in that step, as a serving engine
computes attention before storing; from the next step on they are read back from what the cache
stores (bf16, or the compressed blocks). Blocks are encoded from the stored bf16 values, i.e.
from what a bf16 cache would hand the codec. Layers not chosen for compression (boundary layers,
sliding-window layers) stay ordinary layers in the model's dtype.

Byte accounting: every compression ratio here is taken against bf16 (2 bytes per element), so
the exact tokens a compressed layer keeps are stored in bf16 whatever the model's dtype (a
float32 CPU model included), and :meth:`CompressedLayer.bytes_held` bills them at 2 bytes per
element, which is exactly ``numel() * element_size()`` of the tensors it holds: what is billed is
what is stored, in the denominator's unit. :meth:`CompressedCache.bytes_held` reports the bytes
each layer actually holds (plain, uncompressed layers at their own dtype's size).

:meth:`CompressedCache.save` writes a prefilled cache to one file and :meth:`CompressedCache.load`
reads it back (layout and checks in :mod:`.cache_file`): the stored prompt cache use, where
generation from the loaded cache equals generation from the saved one, token for token.

With query preconditioning (a :class:`~.plan.ResolvedPlan` whose Σ_q calibration covers a layer),
that layer's key blocks are whitened (``K L``) before they are encoded and unwhitened
(``· L⁻¹``) when decoded; values, protected tokens and the hot window are never transformed.
With token saliency (a plan's ``saliency_queries``), a prefill's tokens are weighed by the
attention its last queries give them before their blocks are coded (:meth:`CompressedCache.observe_chunk`).

One concept: the compressed KV cache as ``transformers`` drives it (its layers, their blocks and
exact tokens, what they hold in bytes, and the same cache written to and read from a file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers.cache_utils import DynamicLayer

import numpy as np

from .. import codecs
from ..errors import CorruptBlobError, InputError
from ..layout import rows_to_tensor, tensor_to_rows
from . import cache_file, saliency
from .plan import KVPlan, ResolvedPlan, resolve_plan
from .prerope import PreRopeCache, apply_rope, latest_tables, rope_tables_for
from .whitening import apply_transform

# What a compressed layer stores its exact (sink and hot) tokens in: the ratio's denominator is
# bf16 everywhere, so these tokens are held, and billed, at bf16's 2 bytes per element.
STORE_DTYPE = torch.bfloat16
STORE_BYTES = 2


class CompressedLayer(DynamicLayer):
    """One cache layer: packed K/V blocks plus a bf16 hot window (``self.keys/values``) and
    bf16 protected tokens (``sink_k/sink_v``); reads return the model's dtype."""

    def __init__(self, k_codec: codecs.Codec, v_codec: codecs.Codec, block_tokens: int, hot_tokens: int,
                 protect_tokens: int = 0, k_factors: tuple[Any, Any] | None = None,
                 keep_decoded: int | None = 0, weighted: bool = False) -> None:
        super().__init__()
        # Token weights (saliency) of the hot tokens, [H, n] float64, when the codecs take them:
        # measured for a prefill's tokens (set in ``pending_weights`` before its update), NaN for
        # tokens that arrive later; a block's NaN weights become its measured tokens' geometric
        # mean (the base step), or 1 when it has none.
        self.weighted = weighted
        self.weights: np.ndarray | None = None
        self.pending_weights: np.ndarray | None = None  # [T·H] rows of the next update's tokens
        if keep_decoded is not None and keep_decoded < 0:
            raise InputError(f"keep_decoded must be >= 0 or None (all), got {keep_decoded}")
        # The first ``keep_decoded`` blocks stay decoded (model dtype) after their first read, as
        # one tensor per stream that grows by a block at a time (a read then costs one
        # concatenation, as a float cache's does); the others are decoded on every read. None
        # keeps every block: each is decoded once.
        self.keep_decoded = keep_decoded
        self._kept: dict[str, torch.Tensor | None] = {"k": None, "v": None}
        self._n_kept: dict[str, int] = {"k": 0, "v": 0}
        self._kept_rotated = False  # kept key blocks hold RoPE already (reads through update(rope=...))
        self.k_codec, self.v_codec = k_codec, v_codec
        self.k_factors = k_factors  # (L, L⁻¹) [n_kv, D, D]: keys are coded whitened
        self.block_tokens, self.hot_tokens = block_tokens, hot_tokens
        self.protect_tokens = protect_tokens
        self.k_blobs: list[bytes] = []
        self.v_blobs: list[bytes] = []
        self.compressed_tokens = 0
        self.protected = 0  # leading tokens moved out of the hot window and kept exact
        self.sink_k: torch.Tensor | None = None  # [1, H, protected, D], STORE_DTYPE
        self.sink_v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        # The hot window starts empty in the storage dtype, not the model's.
        self.keys = self.keys.to(STORE_DTYPE)
        self.values = self.values.to(STORE_DTYPE)

    def _decoded(self, blobs: list[bytes], codec: codecs.Codec, like: torch.Tensor, unwhiten: bool = True) -> torch.Tensor:
        """Decoded blocks [1, H, n, D]; K blocks of a whitened layer are unwhitened unless told not to.

        With ``unwhiten`` (what attention reads), the first ``keep_decoded`` blocks come from the
        kept floats once decoded; what is returned is the same either way.
        """
        parts = self._decoded_parts(blobs, codec, like, unwhiten)
        return torch.cat(parts, dim=-2) if parts else like[..., :0, :]

    def _decoded_parts(self, blobs: list[bytes], codec: codecs.Codec, like: torch.Tensor,
                       unwhiten: bool = True, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> list[torch.Tensor]:
        """:meth:`_decoded` before its concatenation: the kept blocks (one tensor), then each other block.

        ``rope`` (key blocks only): the tables [1, n_blocks·block_tokens, D] of the blocks'
        positions; the blocks come back rotated, and kept blocks are stored rotated (rotated once).
        """
        heads = like.shape[1]
        back = self.k_factors[1] if unwhiten and blobs is self.k_blobs and self.k_factors is not None else None

        def one(blob: bytes) -> torch.Tensor:
            return rows_to_tensor(apply_transform(codec.decode(blob, device="cpu"), back), heads, like)

        def rotated(x: torch.Tensor, first_block: int) -> torch.Tensor:
            if rope is None:
                return x
            start = first_block * self.block_tokens
            return apply_rope(x, rope[0][:, start : start + x.shape[-2]], rope[1][:, start : start + x.shape[-2]])

        if not (unwhiten and (blobs is self.k_blobs or blobs is self.v_blobs)):
            return [rotated(one(b), j) for j, b in enumerate(blobs)]
        which = "k" if blobs is self.k_blobs else "v"
        kept, n = self._kept[which], self._n_kept[which]
        if kept is not None and (kept.dtype != like.dtype  # the model's dtype changed: decode afresh
                                 or (which == "k" and self._kept_rotated != (rope is not None))):  # or the read mode
            kept, n = None, 0
        if which == "k":
            self._kept_rotated = rope is not None
        budget = len(blobs) if self.keep_decoded is None else min(self.keep_decoded, len(blobs))
        if n < budget:
            kept = torch.cat(([] if kept is None else [kept]) + [rotated(one(b), n + j) for j, b in enumerate(blobs[n:budget])],
                             dim=-2)
            n = budget
        self._kept[which], self._n_kept[which] = kept, n
        return ([] if kept is None else [kept]) + [rotated(one(b), n + j) for j, b in enumerate(blobs[n:])]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               rope: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any):
        """Store this step's tokens; return every token's keys and values [1, H, n, D].

        With ``rope`` (the tables [1, seen, D] of every position the model has seen), the keys
        come back rotated: kept decoded blocks were rotated once when first decoded, so a step
        rotates only the sink, the blocks it decodes afresh and the hot tokens. RoPE acts on each
        position alone, so the keys equal those of rotating the whole concatenation.
        """
        if key_states.shape[0] != 1:
            raise InputError("CompressedCache supports batch size 1")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        # Stored tokens are read back in the model's dtype; this step's tokens attend to their
        # exact values (not yet rounded to the storage dtype). One concatenation per stream.
        k_tail = [self.keys.to(key_states.dtype), key_states]
        if rope is None:
            k_parts = (self._sink_parts(self.sink_k, key_states)
                       + self._decoded_parts(self.k_blobs, self.k_codec, key_states) + k_tail)
        else:
            hot = self.keys.shape[-2] if self.keys.dim() == 4 else 0  # a fresh layer's window is a 1-D empty tensor
            cos, sin = latest_tables(*rope, self.protected + self.compressed_tokens + hot + key_states.shape[-2])
            p, c = self.protected, self.protected + self.compressed_tokens
            k_parts = ([apply_rope(x, cos[:, :p], sin[:, :p]) for x in self._sink_parts(self.sink_k, key_states)]
                       + self._decoded_parts(self.k_blobs, self.k_codec, key_states, rope=(cos[:, p:c], sin[:, p:c]))
                       + [apply_rope(torch.cat(k_tail, dim=-2), cos[:, c:], sin[:, c:])])
        full_k = torch.cat(k_parts, dim=-2)
        full_v = torch.cat(self._sink_parts(self.sink_v, value_states)
                           + self._decoded_parts(self.v_blobs, self.v_codec, value_states)
                           + [self.values.to(value_states.dtype), value_states], dim=-2)
        self.keys = torch.cat([self.keys, key_states.to(STORE_DTYPE)], dim=-2)
        self.values = torch.cat([self.values, value_states.to(STORE_DTYPE)], dim=-2)
        if self.weighted:
            heads, n_new = key_states.shape[1], key_states.shape[2]
            new = np.full((heads, n_new), np.nan)
            if self.pending_weights is not None:
                if self.pending_weights.size != heads * n_new:
                    raise InputError(f"token weights for {self.pending_weights.size} rows, the update brings "
                                     f"{heads * n_new}")
                new = self.pending_weights.reshape(n_new, heads).T
            self.weights = new if self.weights is None else np.concatenate([self.weights, new], axis=1)
            self.pending_weights = None
        self._flush()
        return full_k, full_v

    @staticmethod
    def _sink_parts(sink: torch.Tensor | None, like: torch.Tensor) -> list[torch.Tensor]:
        """The protected tokens in ``like``'s dtype, as a list to concatenate (empty without any)."""
        return [] if sink is None else [sink.to(like.dtype)]

    def _flush(self) -> None:
        """Set the protected leading tokens aside, then encode every full block older than the hot window."""
        if self.protected < self.protect_tokens and self.compressed_tokens == 0:
            take = min(self.protect_tokens - self.protected, self.keys.shape[-2])
            if take:
                head_k, head_v = self.keys[..., :take, :], self.values[..., :take, :]
                self.sink_k = head_k.clone() if self.sink_k is None else torch.cat([self.sink_k, head_k], dim=-2)
                self.sink_v = head_v.clone() if self.sink_v is None else torch.cat([self.sink_v, head_v], dim=-2)
                self.keys = self.keys[..., take:, :].contiguous()
                self.values = self.values[..., take:, :].contiguous()
                if self.weights is not None:
                    self.weights = self.weights[:, take:]
                self.protected += take
        while self.keys.shape[-2] - self.hot_tokens >= self.block_tokens:
            n = self.block_tokens
            k_rows = tensor_to_rows(self.keys[..., :n, :])
            if self.k_factors is not None:
                k_rows = apply_transform(k_rows, self.k_factors[0])
            weights = None
            if self.weights is not None:
                weights = self._block_weights(self.weights[:, :n])
                self.weights = self.weights[:, n:]
            self.k_blobs.append(self.k_codec.encode(k_rows, weights))
            self.v_blobs.append(self.v_codec.encode(tensor_to_rows(self.values[..., :n, :]), weights))
            self.keys = self.keys[..., n:, :].contiguous()
            self.values = self.values[..., n:, :].contiguous()
            self.compressed_tokens += n

    @staticmethod
    def _block_weights(w: np.ndarray) -> np.ndarray:
        """Row weights [n·H] (token-major) of a block's tokens [H, n]; unmeasured ones get the
        geometric mean of the measured ones (1 when none is)."""
        measured = np.isfinite(w) & (w > 0)
        fill = float(np.exp(np.log(w[measured]).mean())) if measured.any() else 1.0
        return np.where(np.isfinite(w), w, fill).T.reshape(-1)

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            return 0
        return self.protected + self.compressed_tokens + self.keys.shape[-2]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and abs(tokens_to_remove) > self.keys.shape[-2]:
            raise InputError("cannot crop into compressed blocks; only hot-window tokens can be removed")
        super().crop(tokens_to_remove)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise InputError("CompressedCache does not support beam search (batch size 1 only)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if repeats != 1:
            raise InputError("CompressedCache supports batch size 1")

    def held_tensors(self) -> dict[str, list[torch.Tensor]]:
        """The exact tokens this layer stores, by what they are billed as (for audits and tests)."""
        hot = [self.keys, self.values] if self.is_initialized else []
        sink = [t for t in (self.sink_k, self.sink_v) if t is not None]
        return {"hot_bytes": hot, "protected_bytes": sink}

    def bytes_held(self) -> dict[str, int]:
        """Bytes this layer stores: codec blobs, and the bf16 protected and hot tokens at
        :data:`STORE_BYTES` per element (equal to the held tensors' ``numel()*element_size()``);
        ``decoded_floats`` is the memory of decoded blocks kept for speed (``keep_decoded``),
        memory the cache uses but not part of what it stores."""
        held = self.held_tensors()
        hot = STORE_BYTES * sum(t.numel() for t in held["hot_bytes"])
        sink = STORE_BYTES * sum(t.numel() for t in held["protected_bytes"])
        return {
            "decoded_floats": sum(t.numel() * t.element_size() for t in self._kept.values() if t is not None),
            "protected_bytes": sink,
            "protected_tokens": self.protected,
            "k_bytes": sum(map(len, self.k_blobs)),
            "v_bytes": sum(map(len, self.v_blobs)),
            "hot_bytes": hot,
            "compressed_tokens": self.compressed_tokens,
            "hot_tokens": 0 if not self.is_initialized else self.keys.shape[-2],
        }


    def to_entry(self, payload: cache_file.Payload) -> dict[str, Any]:
        """This layer's header entry; its blobs and bf16 tensors go to ``payload``."""
        return {
            "kind": "compressed", "protected": self.protected, "compressed_tokens": self.compressed_tokens,
            "block_tokens": self.block_tokens, "hot_tokens": self.hot_tokens,
            "k_codec": self.k_codec.spec, "v_codec": self.v_codec.spec,
            "k_blobs": [payload.add(b) for b in self.k_blobs], "v_blobs": [payload.add(b) for b in self.v_blobs],
            "sink_k": payload.tensor(self.sink_k), "sink_v": payload.tensor(self.sink_v),
            "hot_k": payload.tensor(self.keys), "hot_v": payload.tensor(self.values),
        }

    def restore(self, e: dict[str, Any], payload: memoryview, at: str, heads: int, dim: int, tokens: int) -> None:
        """Fill this (fresh) layer from its header entry, checking it against the plan and the token count."""
        if e.get("kind") != "compressed":
            raise CorruptBlobError(f"{at}: stored as {e.get('kind')!r}, the plan compresses it")
        if (e.get("k_codec"), e.get("v_codec")) != (self.k_codec.spec, self.v_codec.spec):
            raise CorruptBlobError(f"{at}: codecs {e.get('k_codec')!r} / {e.get('v_codec')!r} differ from the plan's "
                                   f"{self.k_codec.spec!r} / {self.v_codec.spec!r}")
        if (e.get("block_tokens"), e.get("hot_tokens")) != (self.block_tokens, self.hot_tokens):
            raise CorruptBlobError(f"{at}: block/hot sizes differ between layers")
        k_blobs, v_blobs = e.get("k_blobs"), e.get("v_blobs")
        protected, compressed = e.get("protected"), e.get("compressed_tokens")
        if not (isinstance(k_blobs, list) and isinstance(v_blobs, list) and len(k_blobs) == len(v_blobs)
                and isinstance(protected, int) and isinstance(compressed, int)
                and compressed == len(k_blobs) * self.block_tokens and 0 <= protected <= self.protect_tokens):
            raise CorruptBlobError(f"{at}: inconsistent block table")
        hot = tokens - protected - compressed
        if hot < 0:
            raise CorruptBlobError(f"{at}: {protected} protected + {compressed} compressed tokens exceed {tokens}")
        self.k_blobs = [bytes(payload[o : o + n]) for o, n, _ in k_blobs]
        self.v_blobs = [bytes(payload[o : o + n]) for o, n, _ in v_blobs]
        self.protected, self.compressed_tokens = protected, compressed
        sink_shape = (1, heads, protected, dim)
        self.sink_k = cache_file.read_tensor(e.get("sink_k"), payload, at, sink_shape)
        self.sink_v = cache_file.read_tensor(e.get("sink_v"), payload, at, sink_shape)
        if (self.sink_k is None or self.sink_v is None) != (protected == 0):
            raise CorruptBlobError(f"{at}: {protected} protected tokens but sink tensors "
                                   f"{'missing' if protected else 'present'}")
        keys = cache_file.read_tensor(e.get("hot_k"), payload, at, (1, heads, hot, dim))
        values = cache_file.read_tensor(e.get("hot_v"), payload, at, (1, heads, hot, dim))
        if keys is None or values is None or keys.dtype != STORE_DTYPE or values.dtype != STORE_DTYPE:
            raise CorruptBlobError(f"{at}: the hot window must be stored as bfloat16")
        self.keys, self.values = keys, values
        self.device, self.is_initialized = torch.device("cpu"), True


def _plain_entry(layer: Any, payload: cache_file.Payload, i: int) -> dict[str, Any]:
    """Header entry of a layer kept uncompressed (its own dtype, exact)."""
    if not layer.is_initialized:
        raise InputError(f"layer {i} of the cache was never filled; prefill the whole model before saving")
    entry = {"kind": "plain", "keys": payload.tensor(layer.keys), "values": payload.tensor(layer.values)}
    if hasattr(layer, "cumulative_length"):  # sliding-window layers keep only the newest tokens
        entry["cumulative_length"] = int(layer.cumulative_length)
    return entry


def _restore_plain(layer: Any, e: dict[str, Any], payload: memoryview, at: str) -> None:
    if e.get("kind") != "plain":
        raise CorruptBlobError(f"{at}: stored as {e.get('kind')!r}, the plan keeps it uncompressed")
    keys = cache_file.read_tensor(e.get("keys"), payload, at)
    values = cache_file.read_tensor(e.get("values"), payload, at)
    if keys is None or values is None or keys.shape != values.shape:
        raise CorruptBlobError(f"{at}: keys and values missing or of different shapes")
    if hasattr(layer, "cumulative_length"):
        if not isinstance(e.get("cumulative_length"), int):
            raise CorruptBlobError(f"{at}: a sliding-window layer needs its cumulative length")
        layer.cumulative_length = e["cumulative_length"]
    layer.keys, layer.values = keys, values
    layer.dtype, layer.device, layer.is_initialized = keys.dtype, torch.device("cpu"), True


@dataclass
class LoadedCache:
    """A prompt cache read from a file: the cache, the prompt's token ids and the file's header."""

    cache: "CompressedCache"
    token_ids: list[int]
    header: dict[str, Any]

    @property
    def model(self) -> str:
        return self.header["model"]


class CompressedCache(PreRopeCache):
    """Pre-RoPE cache whose chosen layers hold codec bytes (see the module docstring).

    Parameters
    ----------
    config : the model config (layer types, layer count)
    k_codec, v_codec : codec specs for keys and values (``v_codec`` defaults to ``k_codec``)
    layers : layers to compress (default: every full-attention layer)
    boundary : keep this many first and last of those layers uncompressed (seed §5.2)
    block_tokens : tokens per encoded block
    hot_tokens : most recent tokens always kept in float
    protect_tokens : leading tokens kept exact (the attention sink)
    plan : a :class:`~.plan.KVPlan` or :class:`~.plan.ResolvedPlan` (overrides the codec arguments)
    keep_decoded : per layer, how many blocks (oldest first) stay decoded as floats after their
        first read: 0 decodes every block on every step (least memory), None keeps all (each block
        is decoded once; generation runs near a float cache's speed, holding floats again)

    :meth:`from_plan` builds one from a plan (boundary layers at their own codecs included). A
    plan that calibrates (``qprecond``, ``calibrated_codebook``) must be resolved first with
    :func:`~.plan.resolve_plan` (it needs the model and the corpus), unless its ``qprecond``
    names an existing artifact and it asks for no codebooks.
    """

    def __init__(
        self,
        config: Any,
        k_codec: str,
        v_codec: str | None = None,
        layers: Sequence[int] | None = None,
        boundary: int = 0,
        block_tokens: int = 512,
        hot_tokens: int = 128,
        protect_tokens: int = 0,
        plan: KVPlan | ResolvedPlan | None = None,
        keep_decoded: int | None = 0,
    ) -> None:
        super().__init__(config=config)
        if block_tokens < 1 or hot_tokens < 0:
            raise InputError("block_tokens must be >= 1 and hot_tokens >= 0")
        if plan is None:
            plan = KVPlan(k_codec, v_codec, boundary=boundary, protect_tokens=protect_tokens,
                          layers=None if layers is None else tuple(layers))
        plan = resolve_plan(plan, config=config)
        self.plan = plan
        self.config = config  # what a saved file is checked against
        per_layer = plan.layer_codecs(config)
        factors = plan.key_factors(config)
        self.compressed_layers = [i for i, c in enumerate(per_layer) if c is not None]
        for i, pair in enumerate(per_layer):
            if pair is not None:
                self.layers[i] = CompressedLayer(pair[0], pair[1], block_tokens, hot_tokens, plan.protect_tokens,
                                                 k_factors=factors[i], keep_decoded=keep_decoded,
                                                 weighted=bool(plan.saliency_queries))

    def observe_chunk(self, layer_idx: int, queries: torch.Tensor, keys: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor, attn: Any) -> None:
        """Called by the patched attention before each update: for a plan with
        ``saliency_queries``, a prefill's token weights (:mod:`.saliency`, from its last queries,
        exactly as the roundtrip protocol computes them) for the layer to code its blocks with.

        queries, keys : the chunk's pre-RoPE queries [1, Hq, T, D] and keys [1, Hkv, T, D];
        cos, sin : its RoPE tables; attn : the attention module (scaling, sliding window).
        Chunks after the first (generated tokens) are not weighed here (see :class:`CompressedLayer`).
        """
        m = self.plan.saliency_queries
        layer = self.layers[layer_idx]
        if m and isinstance(layer, CompressedLayer) and layer.get_seq_length() == 0:
            t = keys.shape[2]
            layer.pending_weights = saliency.token_weights(queries, keys, cos, sin, attn.scaling, min(m, t),
                                                           getattr(attn, "sliding_window", None))

    def update_rotated(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
                       cos_all: torch.Tensor, sin_all: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``update`` whose keys come back with RoPE applied (the patched attention calls it):
        ``cos_all``/``sin_all`` [1, seen, D] are the tables of every position seen, the returned
        keys the latest positions. Compressed layers keep their decoded key blocks rotated
        (:meth:`CompressedLayer.update`), so generation with kept blocks does not rotate the whole
        cache at every step; the numbers equal rotating the concatenation."""
        layer = self.layers[layer_idx]
        if isinstance(layer, CompressedLayer):
            return layer.update(key_states, value_states, rope=(cos_all, sin_all))
        k_all, v_all = self.update(key_states, value_states, layer_idx, **kwargs)
        return apply_rope(k_all, *latest_tables(cos_all, sin_all, k_all.shape[-2])), v_all

    @classmethod
    def from_plan(cls, config: Any, plan: KVPlan | ResolvedPlan, block_tokens: int = 512,
                  hot_tokens: int = 128, keep_decoded: int | None = 0) -> "CompressedCache":
        return cls(config, plan.k, block_tokens=block_tokens, hot_tokens=hot_tokens, plan=plan,
                   keep_decoded=keep_decoded)

    @classmethod
    def for_prompt(cls, config: Any, plan: KVPlan | ResolvedPlan, n_tokens: int, hot_tokens: int = 0,
                   block_tokens: int | None = None, keep_decoded: int | None = 0) -> "CompressedCache":
        """A cache for storing a prompt of ``n_tokens``: by default the whole prompt beyond the
        protected and hot tokens is one block, as the paper's protocol codes a prefix."""
        if block_tokens is None:
            block_tokens = max(1, n_tokens - hot_tokens - plan.protect_tokens)
        return cls.from_plan(config, plan, block_tokens=block_tokens, hot_tokens=hot_tokens, keep_decoded=keep_decoded)

    def bytes_held(self) -> list[dict[str, Any]]:
        """Bytes each layer holds right now (compressed blobs, hot window, plain float layers)."""
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, CompressedLayer):
                out.append({"layer": i, "compressed": True, **layer.bytes_held()})
            else:
                held = 0 if not layer.is_initialized else (layer.keys.numel() + layer.values.numel()) * layer.keys.element_size()
                out.append({"layer": i, "compressed": False, "float_bytes": held})
        return out

    def save(self, path: str | Path, *, model: str, token_ids: Sequence[int]) -> int:
        """Write this (prefilled) cache to one file (layout: :mod:`.cache_file`); returns its size.

        Parameters
        ----------
        path : the file to write (atomically: a temporary sibling, then renamed)
        model : the model's name or id, recorded for ``kakeya cache generate``
        token_ids : the prompt's token ids; the cache must hold ``T`` of them, ``T = len(token_ids)``
            or ``len(token_ids) - 1`` (the usual: the last prompt token starts ``generate``)
        """
        ids = [int(i) for i in token_ids]
        tokens = self.get_seq_length()
        if tokens < 1:
            raise InputError("the cache is empty: prefill it before saving")
        if len(ids) not in (tokens, tokens + 1):
            raise InputError(f"the cache holds {tokens} tokens but {len(ids)} token ids were given "
                             f"(expected {tokens} or {tokens + 1})")
        payload = cache_file.Payload()
        layers = [layer.to_entry(payload) if isinstance(layer, CompressedLayer) else _plain_entry(layer, payload, i)
                  for i, layer in enumerate(self.layers)]
        header = {"format": cache_file.FORMAT_NAME, "model": model, "model_shape": cache_file.model_shape(self.config),
                  "plan": cache_file.plan_header(self.plan), "tokens": tokens, "token_ids": ids, "layers": layers,
                  "payload_bytes": payload.size}
        return cache_file.write(path, header, payload)

    @classmethod
    def load(cls, path: str | Path, model: Any, keep_decoded: int | None = 0) -> LoadedCache:
        """Read a cache file for ``model`` (pre-RoPE-patched): the cache, the prompt's ids, the header.

        The file must match the model's shape (layers, KV heads, head dim, layer types), every codec
        spec must be the one the stored plan gives that layer, and token counts must add up; RoPE
        tables are recomputed for the cached positions. Raises :class:`CorruptBlobError` for a
        damaged file and :class:`InputError` for a mismatched model.
        """
        header, payload = cache_file.read_header(path)
        where = f"cache file {Path(path).name}"
        config = model.config
        cache_file.check_model(header, config, where)
        plan = cache_file.plan_from_header(header, where)
        first = next((e for e in header["layers"] if isinstance(e, dict) and e.get("kind") == "compressed"), {})
        cache = cls.from_plan(config, plan, block_tokens=first.get("block_tokens", 512),
                              hot_tokens=first.get("hot_tokens", 128), keep_decoded=keep_decoded)
        heads, dim, tokens = config.num_key_value_heads, header["model_shape"]["head_dim"], header["tokens"]
        for i, (entry, layer) in enumerate(zip(header["layers"], cache.layers)):
            if isinstance(layer, CompressedLayer):
                layer.restore(entry, payload, f"{where}, layer {i}", heads, dim, tokens)
            else:
                _restore_plain(layer, entry, payload, f"{where}, layer {i}")
        cache.rope_tables = rope_tables_for(model, tokens)
        return LoadedCache(cache, list(header["token_ids"]), header)

    def total_bytes(self) -> int:
        """All bytes held by the cache (blobs + hot windows + uncompressed layers)."""
        return sum(v for row in self.bytes_held() for k, v in row.items() if k.endswith("_bytes"))

    def memory_bytes(self) -> int:
        """What the cache occupies now: :meth:`total_bytes` plus the decoded blocks it keeps."""
        return self.total_bytes() + sum(row.get("decoded_floats", 0) for row in self.bytes_held())
