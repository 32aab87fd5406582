"""Row layout shared by the harness and the compressed cache.

A cache tensor ``[1, n_kv, T, D]`` is coded as rows ``[T·n_kv, D]`` in token-major order with
the heads interleaved (row ``t·n_kv + h``), as the seed's pre-RoPE harness did, so a block of
rows holds whole tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import codecs
from ..errors import InputError


def to_rows(t: torch.Tensor) -> np.ndarray:
    """[1, H, T, D] tensor -> float32 rows [T*H, D] (numpy, host)."""
    if t.dim() != 4 or t.shape[0] != 1:
        raise InputError(f"expected a cache tensor [1, heads, tokens, dim], got {tuple(t.shape)} (batch 1 only)")
    _, h, n, d = t.shape
    return t[0].permute(1, 0, 2).reshape(n * h, d).to(torch.float32).cpu().numpy()


def from_rows(rows: np.ndarray, heads: int, like: torch.Tensor) -> torch.Tensor:
    """Rows [T*H, D] -> tensor [1, H, T, D] with the dtype and device of ``like``."""
    n_rows, d = rows.shape
    if n_rows % heads:
        raise InputError(f"{n_rows} rows do not split into {heads} heads")
    out = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).reshape(n_rows // heads, heads, d)
    return out.permute(1, 0, 2)[None].to(dtype=like.dtype, device=like.device).contiguous()


def spec_for_heads(spec: str, heads: int) -> str:
    """Fill in ``heads`` for codecs that group rows by head (``kivi``, ``fp8``) when the spec
    leaves it at its default, so rows of one cache tensor are grouped per head.

    The returned canonical spec (e.g. ``kivi:heads=3``) is what results are labelled with.
    """
    codec = codecs.get(spec)
    if not codec.groups_by_head or codec.params.heads != 1 or heads == 1:
        return codec.spec
    name, _, rest = spec.partition(":")
    if "heads=" in rest:  # heads=1 given explicitly: keep it
        return codec.spec
    return codecs.get(f"{name}:{rest + ',' if rest else ''}heads={heads}").spec
