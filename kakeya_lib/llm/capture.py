"""Capture pre-RoPE K, V and Q of a model on corpus passages, to disk (spec §4.2, App. B).

One safetensors file per passage holds, for every layer ``L``, ``layer{L}.k`` and
``layer{L}.v`` [n_kv, T, D] and ``layer{L}.q`` [n_heads, T, D] (float32, before RoPE, after
any q/k-norm); a JSON sidecar of the same stem records model, corpus, passage, positions and
provenance. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import provenance
from ..errors import InputError
from .prerope import make_cache, patch_model


def capture_passage(model: Any, input_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """Pre-RoPE K, V, Q of every layer for one passage (batch 1), as float32 tensors."""
    if not input_ids:
        raise InputError("cannot capture an empty passage")
    if not any(getattr(layer.self_attn, "_kakeya_prerope", False) for layer in model.model.layers):
        patch_model(model)
    cache = make_cache(model)
    cache.captured_queries = {}
    with torch.no_grad():
        model(torch.tensor([list(input_ids)], dtype=torch.long), cache=cache)
    tensors: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(cache.layers):
        tensors[f"layer{i}.k"] = layer.keys[0].to(torch.float32).contiguous()
        tensors[f"layer{i}.v"] = layer.values[0].to(torch.float32).contiguous()
        tensors[f"layer{i}.q"] = torch.cat(cache.captured_queries[i], dim=2)[0].to(torch.float32).contiguous()
    return tensors


def capture_to_disk(model: Any, passages: Sequence[Any], out_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """Write one ``.safetensors`` + ``.json`` pair per passage into ``out_dir``; returns the files.

    ``passages`` are :class:`~kakeya_lib.llm.corpora.Passage` records (their ``prefix_ids`` are
    captured) or plain token-id lists.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, passage in enumerate(passages):
        ids = list(getattr(passage, "prefix_ids", passage))
        tensors = capture_passage(model, ids)
        stem = out_dir / f"passage{index:03d}"
        save_file(tensors, str(stem.with_suffix(".safetensors")))
        sidecar = {
            **meta,
            "passage_index": index,
            "passage_id": getattr(passage, "passage_id", None),
            "doc_id": getattr(passage, "doc_id", None),
            "positions": [0, len(ids)],
            "dtype": "float32",
            "layout": "layer{L}.k/v: [n_kv, T, D]; layer{L}.q: [n_heads, T, D]; pre-RoPE",
            "n_layers": len(model.model.layers),
            "provenance": provenance.collect(),
        }
        stem.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
        written.append(stem.with_suffix(".safetensors"))
    return written
