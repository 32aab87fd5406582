"""Rotary position embedding on plain arrays (numpy or CuPy): forward and inverse, for both
conventions in use, so keys captured *after* RoPE can be brought back to pre-RoPE space (spec §4.1).

* ``half``: Llama/Qwen/Gemma in transformers: dimension ``i`` pairs with ``i + D/2``
  (``rotate_half``), frequency index ``i mod D/2``.
* ``pairs``: the original / GPT-J / GLM convention: dimensions ``2j`` and ``2j + 1`` form a pair.

Frequencies ``theta^(-2j/D)`` for ``j < D/2``; the tables are built in float64 and cast, and the
inverse rotation is the transpose (angle → −angle), exact up to float rounding.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from .backend import namespace_of
from .errors import InputError

Convention = Literal["half", "pairs"]


def rope_angles(positions: Any, dim: int, theta: float) -> np.ndarray:
    """Angles [T, D/2] = position · theta^(-2j/D) (float64, host)."""
    if dim < 2 or dim % 2:
        raise InputError(f"RoPE needs an even head dimension, got {dim}")
    inv_freq = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    return np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]


def _rotate(x: Any, positions: Any, theta: float, convention: str, sign: float, xp: ModuleType,
            inv_freq: Any | None = None) -> Any:
    if x.ndim < 2:
        raise InputError(f"expected [..., T, D], got shape {tuple(x.shape)}")
    t, d = int(x.shape[-2]), int(x.shape[-1])
    if len(positions) != t:
        raise InputError(f"{len(positions)} positions for {t} tokens")
    if inv_freq is None:
        ang = rope_angles(positions, d, theta) * sign
    else:
        freqs = np.asarray(inv_freq, dtype=np.float64).reshape(-1)
        if freqs.size != d // 2:
            raise InputError(f"{freqs.size} RoPE frequencies for head_dim {d} (need {d // 2})")
        ang = np.asarray(positions, dtype=np.float64)[:, None] * freqs[None, :] * sign
    cos = xp.asarray(np.cos(ang).astype(np.float32))
    sin = xp.asarray(np.sin(ang).astype(np.float32))
    half = d // 2
    if convention == "half":
        a, b = x[..., :half], x[..., half:]
        return xp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    if convention == "pairs":
        a, b = x[..., 0::2], x[..., 1::2]
        out = xp.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    raise InputError(f"unknown RoPE convention {convention!r}; use 'half' or 'pairs'")


def apply_rope(x: Any, positions: Any, theta: float = 10000.0, convention: Convention = "half") -> Any:
    """Rotate x [..., T, D] (float32) at the given positions [T]."""
    return _rotate(x, positions, theta, convention, 1.0, namespace_of(x))


def inverse_rope(x: Any, positions: Any, theta: float = 10000.0, convention: Convention = "half") -> Any:
    """Undo :func:`apply_rope`: post-RoPE keys [..., T, D] back to pre-RoPE."""
    return _rotate(x, positions, theta, convention, -1.0, namespace_of(x))


def apply_rope_freqs(x: Any, positions: Any, inv_freq: Any, convention: Convention = "half") -> Any:
    """Rotate x [..., T, D] with explicit frequencies [D/2] (a model's own ``inv_freq`` table)."""
    return _rotate(x, positions, 0.0, convention, 1.0, namespace_of(x), inv_freq)
