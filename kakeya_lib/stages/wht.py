"""Randomised Walsh–Hadamard rotation (orthonormal), after TurboQuant / QuIP#.

``R = H_W · diag(s) / sqrt(W)`` with ``H_W`` the natural-order (Sylvester) Hadamard matrix and
``s`` seeded Rademacher signs, so ``R`` is orthogonal: ``rotate`` preserves norms and
``inverse_rotate(rotate(x)) == x``. (The seed normalised by ``1/W`` on the way back and scaled
residuals by ``1/‖r‖``; the spec's §1.8–1.9 formulas map onto this one exactly, see
``codecs/kakeya.py``.) Vectors shorter than a power of two are zero-padded (:func:`pad_to`).

For W <= DENSE_MAX_W the rotation is one matrix product (BLAS/cuBLAS); above it a vectorised
butterfly (:func:`fwht`) avoids the W×W matrix. Both agree to float rounding (tested).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import host_rng, to_device
from ..errors import InputError

DENSE_MAX_W = 512


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _check_pow2(w: int) -> None:
    if w < 1 or (w & (w - 1)) != 0:
        raise InputError(f"Walsh–Hadamard length must be a power of two >= 1, got {w}")


def rademacher_signs(w: int, seed: int) -> np.ndarray:
    """Seeded ±1 signs [w] (float32, host). Same seed and length -> same signs."""
    _check_pow2(w)
    return (host_rng(seed).integers(0, 2, size=w) * 2 - 1).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _hadamard_host(w: int) -> np.ndarray:
    h = np.ones((1, 1), dtype=np.float32)
    while h.shape[0] < w:
        h = np.block([[h, h], [h, -h]])
    h.setflags(write=False)
    return h


def hadamard(w: int) -> np.ndarray:
    """Unnormalised natural-order Hadamard matrix [w, w] of ±1 (host, float32)."""
    _check_pow2(w)
    return _hadamard_host(w).copy()


@functools.lru_cache(maxsize=64)
def _rotation_host(w: int, seed: int) -> np.ndarray:
    r = (_hadamard_host(w) * rademacher_signs(w, seed)[None, :] / np.sqrt(np.float32(w))).astype(np.float32)
    r.setflags(write=False)  # shared by every caller: mutating it would corrupt later rotations
    return r


_device_cache: dict[tuple[int, int, int], Any] = {}


def rotation_matrix(w: int, seed: int, xp: ModuleType) -> Any:
    """The orthogonal matrix ``R = H diag(s) / sqrt(w)`` [w, w] on ``xp`` (cached; read-only on numpy)."""
    _check_pow2(w)
    if xp is np:
        return _rotation_host(w, seed)
    key = (w, seed, int(xp.cuda.Device().id))
    if key not in _device_cache:
        _device_cache[key] = to_device(_rotation_host(w, seed), xp)
    return _device_cache[key]


def fwht(x: Any, xp: ModuleType) -> Any:
    """Unnormalised Walsh–Hadamard transform of each row, ``x @ H`` (x: [n, w], w a power of 2)."""
    n, w = x.shape
    _check_pow2(w)
    y = xp.array(x, dtype=xp.float32, copy=True)
    h = 1
    while h < w:
        y = y.reshape(n, w // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = xp.stack((a + b, a - b), axis=2)
        h *= 2
    return y.reshape(n, w)


def rotate(x: Any, seed: int, xp: ModuleType) -> Any:
    """Rotate each row: ``y = R x`` for x [n, w] -> y [n, w] (norm preserving)."""
    w = int(x.shape[1])
    _check_pow2(w)
    if w <= DENSE_MAX_W:
        return x @ rotation_matrix(w, seed, xp).T
    signs = to_device(rademacher_signs(w, seed), xp)
    return fwht(x * signs[None, :], xp) / np.float32(np.sqrt(w))


def inverse_rotate(y: Any, seed: int, xp: ModuleType) -> Any:
    """Inverse of :func:`rotate`: ``x = Rᵀ y`` for y [n, w]."""
    w = int(y.shape[1])
    _check_pow2(w)
    if w <= DENSE_MAX_W:
        return y @ rotation_matrix(w, seed, xp)
    signs = to_device(rademacher_signs(w, seed), xp)
    return fwht(y, xp) * signs[None, :] / np.float32(np.sqrt(w))


def pad_to(x: Any, w: int, xp: ModuleType) -> Any:
    """Zero-pad rows of x [n, d] to [n, w] (w >= d)."""
    n, d = x.shape
    if w < d:
        raise InputError(f"cannot pad width {d} down to {w}")
    if w == d:
        return x
    out = xp.zeros((n, w), dtype=x.dtype)
    out[:, :d] = x
    return out
