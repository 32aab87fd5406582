"""The row layout every codec sees: a cache stream as rows ``[T·H, D]``.

A layer's keys (or values) for ``H`` KV heads and ``T`` tokens are coded as one matrix of rows in
token-major order with the heads interleaved: row ``t·H + h`` is head ``h`` of token ``t``, as the
seed's pre-RoPE harness laid them out, so a block of consecutive rows holds whole tokens. The
harness (:mod:`kakeya_lib.llm.evaluate`), the compressed cache, the MSE tables and the codecs
that group rows by head (``kivi`` keys, ``fp8``) all use the conversions here.

Torch is imported only inside the two tensor conversions, so the array codecs can use this module
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch


def tensor_to_rows(t: "torch.Tensor") -> np.ndarray:
    """A cache tensor ``[1, H, T, D]`` as float32 rows ``[T·H, D]`` (numpy, host)."""
    import torch  # noqa: PLC0415  (third-party, only for tensor inputs)

    if t.dim() != 4 or t.shape[0] != 1:
        raise InputError(f"expected a cache tensor [1, heads, tokens, dim], got {tuple(t.shape)} (batch 1 only)")
    _, h, n, d = t.shape
    return t[0].permute(1, 0, 2).reshape(n * h, d).to(torch.float32).cpu().numpy()


def rows_to_tensor(rows: np.ndarray, heads: int, like: "torch.Tensor") -> "torch.Tensor":
    """Rows ``[T·H, D]`` as a tensor ``[1, H, T, D]`` with the dtype and device of ``like``."""
    import torch  # noqa: PLC0415  (third-party, only for tensor outputs)

    n_rows, d = rows.shape
    if n_rows % heads:
        raise InputError(f"{n_rows} rows do not split into {heads} heads")
    out = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).reshape(n_rows // heads, heads, d)
    return out.permute(1, 0, 2)[None].to(dtype=like.dtype, device=like.device).contiguous()


def heads_to_rows(a: Any) -> np.ndarray:
    """A captured array ``[H, T, D]`` as float32 rows ``[T·H, D]``."""
    x = np.asarray(a, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"expected a captured array [heads, tokens, dim], got shape {x.shape}")
    h, n, d = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2).reshape(n * h, d))


def token_head_view(x: Any, heads: int) -> Any:
    """Rows ``[T·H, D]`` as ``[T, H, D]`` (numpy or CuPy, no copy); ``T·H`` must split by ``heads``."""
    n, d = x.shape
    if heads < 1 or n % heads:
        raise InputError(f"{n} rows do not split into heads={heads} (rows are token-major, heads interleaved)")
    return x.reshape(n // heads, heads, d)
