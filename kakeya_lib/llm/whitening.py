"""The query metric's linear algebra: second moments, regularisation, Cholesky whitening, RoPE averaging.

A key error ``e = k − k̂`` (rows) changes the logit of query ``q`` by ``q eᵀ``, so the error that
matters is ``E_q[(q eᵀ)²] = e M eᵀ`` with ``M = E[qᵀ q]``, the queries' uncentred second moment
(written ``Σ_q`` in the seed's notation). With ``M_reg = L Lᵀ`` (Cholesky, ``L`` lower), keys are
whitened as ``K̃ = K L`` and restored as ``K = K̃ L⁻¹``, and ``‖(k − k̂) L‖² = e M_reg eᵀ``.
This module holds the array-level pieces; :mod:`.qprecond` calibrates ``M`` on a model and
stores it as an artifact.

* :func:`pooled_gram`: ``Σ_tokens Σ_{q-heads of h} qᵀ q`` per KV head (GQA heads pooled);
* :func:`regularise`: ``M + ridge · mean(diag M) · I``, then the Tikhonov shift
  ``λ = max(0, (λ_max − C²λ_min)/(C² − 1))`` that caps ``cond(L)`` at ``C``;
* :func:`rope_average`: ``Σ_Δ w_Δ R_Δ M R_Δᵀ`` over relative offsets (``R_Δ`` rotates a column
  vector by ``Δ`` positions), in closed form per pair of RoPE frequencies;
* :func:`apply_transform`: rows or tensors times a per-head matrix;
* :func:`check_codec`: codecs that renormalise every vector cannot take whitened keys.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

DEFAULT_RIDGE = 1e-3


# --------------------------------------------------------------------------------------------
# Refusal for codecs that renormalise every vector


def check_codec(codec: Any) -> None:
    """Raise :class:`InputError` if ``codec`` (a codec or spec) renormalises each vector.

    Such codecs (TurboQuant; Besicovitch with a per-vector-scale magnitude) quantise the
    direction of every row and restore its norm, which the whitening metric does not survive:
    the seed measured +1 284 000 % Δppl for TurboQuant-3 with Q-preconditioning (spec §3.3).
    """
    if isinstance(codec, str):
        from .. import codecs  # noqa: PLC0415

        codec = codecs.get(codec)
    if getattr(codec, "renormalises_per_vector", False):
        raise InputError(
            f"query preconditioning (Σ_q whitening of K) cannot be used with {codec.spec!r}: that codec "
            "renormalises every vector, which breaks the whitened metric (spec §3.3: TurboQuant-3 with "
            "Σ_q gave +1 284 000 % Δppl); drop qprecond or use a codec that codes K̃ in its own scale"
        )


# --------------------------------------------------------------------------------------------
# Linear algebra


def pooled_gram(q: Any, n_kv: int) -> np.ndarray:
    """Σ_tokens Σ_{q-heads of h} q qᵀ per KV head: q [n_q, T, D] → float64 [n_kv, D, D].

    Query heads are grouped contiguously: KV head ``h`` serves ``h·g … (h+1)·g − 1``.
    """
    import torch  # noqa: PLC0415

    if isinstance(q, np.ndarray):
        q = torch.from_numpy(q)
    if q.dim() != 3:
        raise InputError(f"queries must be [n_q, T, D], got {tuple(q.shape)}")
    n_q, t, d = (int(s) for s in q.shape)
    if n_kv < 1 or n_q % n_kv:
        raise InputError(f"{n_q} query heads do not split into {n_kv} KV heads")
    x = q.detach().to(torch.float64).reshape(n_kv, (n_q // n_kv) * t, d)
    return torch.matmul(x.transpose(1, 2), x).cpu().numpy()


def regularise(sigma: np.ndarray, ridge: float = DEFAULT_RIDGE) -> tuple[np.ndarray, dict[str, float]]:
    """``Σ + ridge · mean(diag Σ) · I``: the regularised matrix (float64, symmetric) and the shift added."""
    s = np.asarray(sigma, dtype=np.float64)
    s = (s + s.T) / 2
    d = s.shape[0]
    scale = float(np.mean(np.diag(s)))
    if not np.isfinite(s).all() or not scale > 0:
        raise InputError(f"Σ is not usable (mean diagonal {scale}, finite: {bool(np.isfinite(s).all())}); "
                         "were queries recorded for this layer?")
    ridge_add = float(ridge) * scale
    return s + ridge_add * np.eye(d), {"ridge_add": ridge_add}


def cholesky_pair(sigma_reg: np.ndarray, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Lower Cholesky factor ``L`` of a symmetric positive definite matrix and ``L⁻¹`` (float64)."""
    from scipy.linalg import solve_triangular  # noqa: PLC0415

    try:
        chol = np.linalg.cholesky(sigma_reg)
    except np.linalg.LinAlgError as exc:
        raise InputError(f"Σ_reg{where} is not positive definite ({exc}); raise ridge or set a condition cap") from exc
    inv = solve_triangular(chol, np.eye(chol.shape[0]), lower=True)
    return chol, inv


def diagnostics(sigma: np.ndarray, sigma_reg: np.ndarray) -> dict[str, Any]:
    """Trace, eigenvalue range, condition numbers, diagonal mean and largest off-diagonal of one Σ."""
    ev = np.linalg.eigvalsh((sigma + sigma.T) / 2)
    ev_reg = np.linalg.eigvalsh(sigma_reg)
    off = sigma - np.diag(np.diag(sigma))
    cond = float(ev[-1] / ev[0]) if ev[0] > 0 else None  # None: singular (or negative by rounding)
    cond_reg = float(ev_reg[-1] / ev_reg[0])
    return {
        "trace": float(np.trace(sigma)),
        "eig_min": float(ev[0]),
        "eig_max": float(ev[-1]),
        "condition": cond,
        "condition_reg": cond_reg,
        "condition_chol": math.sqrt(cond_reg),
        "diag_mean": float(np.mean(np.diag(sigma))),
        "off_diag_max_abs": float(np.abs(off).max()),
    }


def _pair_index(d: int, convention: str) -> tuple[np.ndarray, np.ndarray]:
    if d < 2 or d % 2:
        raise InputError(f"RoPE needs an even head dimension, got {d}")
    p = np.arange(d // 2)
    if convention == "half":
        return p, p + d // 2
    if convention == "pairs":
        return 2 * p, 2 * p + 1
    raise InputError(f"unknown RoPE convention {convention!r}; use 'half' or 'pairs'")


def _phase_means(phi: np.ndarray, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``Σ_Δ w_Δ e^{iφΔ}`` for every entry of ``phi`` (complex128, same shape)."""
    flat = phi.reshape(-1)
    out = np.zeros(flat.shape, dtype=np.complex128)
    for start in range(0, weights.size, chunk):
        deltas = np.arange(start, min(start + chunk, weights.size), dtype=np.float64)
        out += np.exp(1j * np.multiply.outer(flat, deltas)) @ weights[start : start + deltas.size]
    return out.reshape(phi.shape)


def rope_average(sigma: np.ndarray, inv_freq: Sequence[float], ctx: int | None = None,
                 weights: Sequence[float] | None = None, convention: str = "half") -> np.ndarray:
    """``Σ_Δ w_Δ R_Δ Σ R_Δᵀ`` over offsets ``Δ = 0 … ctx−1`` (``R_Δ x`` = RoPE of ``x`` at position Δ).

    Closed form per pair of frequencies: write each 2×2 block ``B_pq`` of Σ (pair ``p`` =
    dimensions ``(p, p + D/2)`` for ``half``, ``(2p, 2p+1)`` for ``pairs``) as a rotation-commuting
    part (the complex number ``u = α + iβ``) plus a conjugating part (``v = γ + iδ``); then
    ``r(a) B r(b)ᵀ`` has parts ``u·e^{i(a−b)}`` and ``v·e^{i(a+b)}``, so only the weighted means
    ``E[e^{i(θ_p ∓ θ_q)Δ}]`` are needed (O(D² · ctx) work, no rotation matrices).

    Parameters
    ----------
    sigma : [..., D, D] symmetric (a batch of heads is fine)
    inv_freq : [D/2] RoPE frequencies θ_p (radians per position)
    ctx : offsets 0 … ctx−1 with uniform weights (ignored when ``weights`` is given)
    weights : [n] non-negative weights of offsets 0 … n−1 (normalised here)
    convention : ``"half"`` (rotate_half: Llama, Qwen, Gemma) or ``"pairs"`` (GPT-J / GLM)
    """
    s = np.asarray(sigma, dtype=np.float64)
    d = int(s.shape[-1])
    i, j = _pair_index(d, convention)
    theta = np.asarray(inv_freq, dtype=np.float64).reshape(-1)
    if theta.size != d // 2:
        raise InputError(f"{theta.size} RoPE frequencies for head_dim {d} (need {d // 2}; partial rotary is not supported)")
    if weights is None:
        if ctx is None or ctx < 1:
            raise InputError("rope_average needs ctx >= 1 or explicit weights")
        w = np.full(int(ctx), 1.0 / int(ctx))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InputError("offset weights must be finite, non-negative and not all zero")
        w = w / w.sum()
    b11 = s[..., i[:, None], i[None, :]]
    b12 = s[..., i[:, None], j[None, :]]
    b21 = s[..., j[:, None], i[None, :]]
    b22 = s[..., j[:, None], j[None, :]]
    u = (b11 + b22) / 2 + 1j * (b21 - b12) / 2
    v = (b11 - b22) / 2 + 1j * (b12 + b21) / 2
    e_minus = _phase_means(theta[:, None] - theta[None, :], w)
    e_plus = _phase_means(theta[:, None] + theta[None, :], w)
    a, c = u * e_minus, v * e_plus
    out = np.empty_like(s)
    out[..., i[:, None], i[None, :]] = a.real + c.real
    out[..., i[:, None], j[None, :]] = -a.imag + c.imag
    out[..., j[:, None], i[None, :]] = a.imag + c.imag
    out[..., j[:, None], j[None, :]] = a.real - c.real
    return (out + np.swapaxes(out, -1, -2)) / 2


def rope_frequencies(model: Any, layer: int) -> np.ndarray:
    """The RoPE frequencies [D/2] a model uses at ``layer`` (its own ``inv_freq`` buffer)."""
    inner = getattr(model, "model", model)
    rot = getattr(inner, "rotary_emb", None)
    if rot is None:
        raise InputError(f"{type(model).__name__} has no rotary embedding where expected")
    if hasattr(rot, "inv_freq"):
        inv = rot.inv_freq
    else:  # Gemma3: one table per layer type
        kind = model.config.layer_types[layer]
        inv = getattr(rot, f"{kind}_inv_freq")
    return inv.detach().to("cpu").double().numpy()


# --------------------------------------------------------------------------------------------
# Whitening on rows and tensors


def _apply_rows(rows: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """Rows [T·H, D] (token-major, heads interleaved) times per-head matrices [H, D, D]."""
    h, d = mats.shape[0], mats.shape[-1]
    n = rows.shape[0]
    if rows.ndim != 2 or rows.shape[1] != d or n % h:
        raise InputError(f"rows of shape {rows.shape} do not match {h} heads of dim {d}")
    x = rows.astype(np.float64, copy=False).reshape(n // h, h, d)
    return np.einsum("thd,hde->the", x, mats).reshape(n, d).astype(rows.dtype, copy=False)


def _apply_tensor(x: Any, mats: np.ndarray) -> Any:
    import torch  # noqa: PLC0415

    m = torch.from_numpy(mats).to(device=x.device)
    if x.dim() == 4:  # [B, H, T, D]
        out = torch.einsum("bhtd,hde->bhte", x.to(torch.float64), m)
    elif x.dim() == 3:  # [H, T, D]
        out = torch.einsum("htd,hde->hte", x.to(torch.float64), m)
    else:
        raise InputError(f"expected a key tensor [B, H, T, D] or [H, T, D], got {tuple(x.shape)}")
    if out.shape[-3] != mats.shape[0]:
        raise InputError(f"tensor has {out.shape[-3]} heads, the calibration {mats.shape[0]}")
    return out.to(x.dtype)


def apply_transform(x: Any, mats: np.ndarray | None) -> Any:
    """``x @ mats[h]`` per KV head for rows [T·H, D] (numpy) or a tensor [B, H, T, D] / [H, T, D];
    ``mats=None`` returns ``x`` unchanged. Computed in float64, returned in ``x``'s dtype."""
    if mats is None:
        return x
    if isinstance(x, np.ndarray):
        return _apply_rows(x, mats)
    return _apply_tensor(x, mats)
