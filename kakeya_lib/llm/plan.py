"""What a compressed KV cache stores, layer by layer: :class:`KVPlan`.

A plan names the K and V codecs of the compressed layers, how many first/last of those layers
are boundary layers (kept uncompressed, or coded with their own K/V specs), and how many leading
tokens are protected (kept exact: the attention sink at position 0 draws far more attention
than its share of the bytes). The evaluation harness and :class:`~.cache.CompressedCache` both
read plans, so a recipe means the same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import codecs
from ..errors import InputError
from .kvrows import spec_for_heads


def full_attention_layers(config: Any) -> list[int]:
    """Layers a codec compresses by default: all but sliding-window layers."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return [i for i, t in enumerate(types) if t != "sliding_attention"]


@dataclass(frozen=True)
class KVPlan:
    """Per-layer storage plan (see the module docstring).

    Attributes
    ----------
    k, v : codec specs of the compressed layers (``v=None``: same as ``k``)
    boundary : the first and last ``boundary`` compressible layers are boundary layers
    boundary_k, boundary_v : their codec specs; ``None`` keeps them uncompressed
    protect_tokens : leading tokens of every compressed layer kept exact
    layers : compressible layers (default: every full-attention layer)
    name : a label for tables (default: the K|V specs)
    """

    k: str
    v: str | None = None
    boundary: int = 0
    boundary_k: str | None = None
    boundary_v: str | None = None
    protect_tokens: int = 0
    layers: tuple[int, ...] | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.boundary < 0 or self.protect_tokens < 0:
            raise InputError("boundary and protect_tokens must be >= 0")
        if self.boundary_v is not None and self.boundary_k is None:
            raise InputError("boundary_v needs boundary_k (or neither, for uncompressed boundary layers)")
        for spec in (self.k, self.v, self.boundary_k, self.boundary_v):
            if spec is not None:
                codecs.get(spec)  # unknown codecs or keys fail here, before any model work

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        text = self.k if self.v in (None, self.k) else f"{self.k}|{self.v}"
        if self.boundary:
            text += f" +{self.boundary} bdry" + (f" {self.boundary_k}" if self.boundary_k else " exact")
        if self.protect_tokens:
            text += f" +{self.protect_tokens} tok exact"
        return text

    def layer_codecs(self, config: Any) -> list[tuple[codecs.Codec, codecs.Codec] | None]:
        """(K codec, V codec) per layer, or None for a layer kept uncompressed."""
        n_layers = config.num_hidden_layers
        chosen = sorted(set(full_attention_layers(config) if self.layers is None else self.layers))
        if any(not 0 <= i < n_layers for i in chosen):
            raise InputError(f"layer indices must lie in 0..{n_layers - 1}, got {chosen}")
        edge = set(chosen[: self.boundary]) | set(chosen[len(chosen) - self.boundary :]) if self.boundary else set()
        heads = config.num_key_value_heads

        def pair(k: str, v: str | None) -> tuple[codecs.Codec, codecs.Codec]:
            return codecs.get(spec_for_heads(k, heads)), codecs.get(spec_for_heads(v or k, heads))

        main = pair(self.k, self.v)
        bdry = pair(self.boundary_k, self.boundary_v) if self.boundary_k else None
        return [(bdry if i in edge else main) if i in chosen else None for i in range(n_layers)]


def as_plan(item: KVPlan | tuple[str, str | None] | str) -> KVPlan:
    """Accept a plan, a (k, v) pair or a single spec."""
    if isinstance(item, KVPlan):
        return item
    if isinstance(item, str):
        return KVPlan(item)
    k, v = item
    return KVPlan(k, v)


def as_plans(items: Sequence[KVPlan | tuple[str, str | None] | str]) -> list[KVPlan]:
    return [as_plan(i) for i in items]
