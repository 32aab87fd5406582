"""``klt``: calibrated KLT + per-vector scale + one uniform step + grouped rANS tables.

A transform coder that spends nothing per prompt on its transform: the mean ``μ`` and orthonormal
KLT (PCA) basis ``U`` come from the per-model calibration artifact that KVTC uses
(:mod:`kakeya_lib.llm.kvtc_calib`, named by ``calib``, one per ``layer`` and ``stream``):
``pca=head`` takes its per-head bases (vectors are one head of one token, width ``D``),
``pca=concat`` its basis over a token's heads concatenated (vectors are tokens, width
``W = heads · D``; it also captures correlation between heads). Rows ``[T·heads, D]``
(token-major, heads interleaved) are coded as:

1. ``r = x − μ`` (``mean=calib``; ``mean=prompt``: the prompt's own per-coordinate mean,
   stored as float16) and ``y = r U``, the KLT coordinates (descending calibration variance);
2. each vector's RMS ``s = ‖r‖ / √width`` coded on a log grid: code 0 = a zero vector, codes
   1 .. 2**scale_bits − 1 cover
   ``[log2 s_min, log2 s_max]`` of the blob uniformly; ``ŝ`` is the decoded value. Why: a single
   absolute step ruins low-norm rows (sink-like tokens that attract attention), so every row is
   quantised *relative to its own scale* (``rowscale=0``: one RMS for the whole blob instead);
3. ``q = sign(y)·floor(|y| / (ŝ · step) + rounding)``: one uniform step for every coordinate
   (``rounding`` 0.5 rounds to nearest; a smaller one widens the zero bin, trading a little
   error for fewer nonzero indices; ``recent=N``: the blob's last N tokens use ``step ·
   recent_step``, a finer grid where the next tokens attend most). With entropy coding a
   uniform step is the high-rate MSE optimum (reverse water-filling gives every coordinate the
   same distortion); coordinates whose spread is below the step quantise to 0 almost always and
   cost almost nothing, which is the "0 bits" branch of the allocation, learnt from the data;
4. the indices, shifted by ``qmax = max |q|`` (stored), coded by static rANS
   (:mod:`kakeya_lib.stages.rans`) in ``ceil(width / group)`` streams: stream ``g`` holds KLT
   coordinates ``g·group … (g+1)·group − 1`` of every vector (adjacent KLT coordinates
   have similar variance, so they share a table; one table per coordinate would cost ~50 bytes
   per coordinate per blob). The row codes form one more rANS stream (alphabet 256).

5. ``saliency=a`` (rate by attention): a token's step is multiplied by ``(w / geomean w)^-a``,
   clipped to ``[1/saliency_clip, saliency_clip]``, where ``w`` sums the :meth:`encode` weights of
   its rows (a plan's ``saliency_queries``: the attention the prefix's last queries give it,
   :mod:`kakeya_lib.llm.saliency`); the factor rides in the coded scale (``ŝ`` is coded for
   ``s · factor``), so the blob and the decoder are unchanged. Reverse water-filling with
   weighted distortion gives step² ∝ 1/w (``a = 0.5``); a smaller ``a`` hedges against the next
   queries attending elsewhere than the last ones did.

Decode: ``x̂ = μ + ŝ · step · q U_hᵀ``. Without ``saliency``, ``weights`` of :meth:`encode` are ignored.

Byte layout (container sections, in order)::

    blocks   19 bytes: format version (uint8), artifact digest (8 bytes, the (layer, stream,
             pca) arrays' SHA-256 prefix), qmax (uint16), log2 s_min and log2 s_max (float32;
             rowscale=0: both the blob's RMS exponent)
    skeleton mean=prompt only: float16 prompt mean [heads · D]
    scales   rowscale=1 only: one rANS stream of the vectors' scale codes (alphabet 2**scale_bits)
    codebook centroid=1 only: float16 [groups, 2], the mean of |v| − |q| for |q| = 1 and |q| >= 2
             (v = y / (ŝ · step)); decoded indices sit at sign(q)·(|q| + offset)
    entropy  ceil(width / group) rANS streams (alphabet 2·qmax + 1), stream g in vector,
             coordinate order

Everything per prompt is in the blob; the per-model artifact is not (its size is reported by
:func:`kakeya_lib.llm.kvtc_calib.artifact_nbytes`).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import to_device, to_host
from ..container import Container
from ..errors import CorruptBlobError, InputError
from ..stages import rans
from .base import Codec

FORMAT_VERSION = 1
_HEADER = struct.Struct("<B8sHff")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class KLTParams:
    """Parameters of the ``klt`` codec (keys of its spec string)."""

    calib: str = ""  # calibration artifact (kvtc_calib, head mode); "" = unset, refused; "auto" in plans
    layer: int = -1  # model layer whose transform to use (-1 = unset, refused)
    stream: Literal["k", "v"] = "k"  # keys (pre-RoPE) or values
    heads: int = 1  # KV heads interleaved in the rows (the harness fills it in)
    step: float = 0.25  # uniform step on KLT coordinates of a unit-RMS row (sets the rate)
    rowscale: bool = True  # each row relative to its own RMS (8-bit log code); off = one RMS per blob
    mean: Literal["calib", "prompt"] = "calib"  # subtract the calibration mean, or the prompt's (float16)
    group: int = 8  # KLT coordinates per rANS table
    pca: Literal["head", "concat"] = "head"  # the artifact's per-head KLT, or one over a token's heads concatenated
    rounding: float = 0.5  # q = sign(y)·floor(|y|/step + rounding): 0.5 rounds, less widens the zero bin
    scale_bits: int = 8  # scale codes 1 .. 2**scale_bits - 1 on the blob's log range (0 marks a zero vector)
    centroid: bool = False  # decode nonzero indices at their bin's mean (per group, |q| = 1 and |q| >= 2), stored
    recent: int = 0  # the blob's last `recent` tokens are coded at step * recent_step (rate by recency)
    recent_step: float = 0.5  # step factor of those tokens
    saliency: float = 0.0  # > 0: a token's step times (w / geomean w)^-saliency, w = its rows' encode weights
    saliency_clip: float = 4.0  # those factors clipped to [1/clip, clip]

    def __post_init__(self) -> None:
        checks = [
            (self.calib == "" or bool(_NAME_RE.match(self.calib)),
             f"calib={self.calib!r} is not an artifact name (letters, digits, '.', '_', '-')"),
            (self.layer >= -1, f"layer must be >= 0 (or -1 = unset), got {self.layer}"),
            (self.heads >= 1, f"heads must be >= 1, got {self.heads}"),
            (math.isfinite(self.step) and self.step > 0, f"step must be a positive number, got {self.step}"),
            (self.group >= 1, f"group must be >= 1, got {self.group}"),
            (0 < self.rounding <= 0.5, f"rounding must be in (0, 0.5], got {self.rounding}"),
            (2 <= self.scale_bits <= 8, f"scale_bits must be in 2..8, got {self.scale_bits}"),
            (self.recent >= 0, f"recent must be >= 0 tokens, got {self.recent}"),
            (math.isfinite(self.recent_step) and 0 < self.recent_step <= 16,
             f"recent_step must be in (0, 16], got {self.recent_step}"),
            (math.isfinite(self.saliency) and 0 <= self.saliency <= 2, f"saliency must be in [0, 2], got {self.saliency}"),
            (math.isfinite(self.saliency_clip) and 1 <= self.saliency_clip <= 64,
             f"saliency_clip must be in [1, 64], got {self.saliency_clip}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class KLTCodec(Codec):
    name = "klt"
    Params = KLTParams
    max_cols = 4096
    needs_calibration = True  # encode/decode need a per-model artifact (calib=NAME, layer=N)

    @property
    def groups_by_head(self) -> bool:
        return True

    def calibration(self) -> Any:
        """The artifact's :class:`~kakeya_lib.llm.kvtc_calib.StreamCalib` (head mode) this spec names.

        Raises :class:`InputError` when ``calib`` or ``layer`` is unset, the artifact is unknown or
        lacks the layer, stream or head mode, or was fitted with other ``heads``.
        """
        p = self.params
        if not p.calib or p.calib == "auto":
            raise InputError("klt needs a calibration artifact: set calib=NAME (plans resolve calib=auto on the "
                             "corpus's calib split)")
        from ..llm import kvtc_calib  # noqa: PLC0415

        art = kvtc_calib.load_for_codec("klt", p.calib, p.layer, p.heads)
        return art.get(p.layer, p.stream, p.pca)

    # -- helpers ----------------------------------------------------------------------------
    def _check_rows(self, n: int, d: int, cal: Any, error: type[Exception]) -> int:
        if d != cal.head_dim:
            raise error(f"klt: rows have D={d} but calibration {self.params.calib!r} has head_dim {cal.head_dim}")
        if n % self.params.heads:
            raise error(f"klt: {n} rows do not split into heads={self.params.heads} (rows are [T·heads, D])")
        return n // self.params.heads

    def _units(self, t: int, cal: Any) -> tuple[int, int]:
        """(vectors, width) the transform and the row scales act on: per head or per token."""
        return (t * self.params.heads, cal.head_dim) if self.params.pca == "head" else (t, cal.width)

    def _project(self, r: Any, cal: Any, xp: ModuleType) -> Any:
        """Centred token vectors [T, W] -> KLT coordinates [vectors, width]."""
        u = to_device(cal.basis, xp)
        if self.params.pca == "concat":
            return r @ u
        t = r.shape[0]
        return xp.einsum("thd,hde->the", r.reshape(t, self.params.heads, cal.head_dim), u).reshape(-1, cal.head_dim)

    def _unproject(self, y: Any, cal: Any, t: int, xp: ModuleType) -> Any:
        """KLT coordinates [vectors, width] -> centred token vectors [T, W]."""
        u = to_device(cal.basis, xp)
        if self.params.pca == "concat":
            return y @ u.T
        y = y.reshape(t, self.params.heads, cal.head_dim)
        return xp.einsum("the,hde->thd", y, u).reshape(t, cal.width)

    def _groups(self, d: int) -> list[slice]:
        g = self.params.group
        return [slice(i, min(i + g, d)) for i in range(0, d, g)]

    @property
    def _levels(self) -> int:
        """Scale codes for positive scales: 1 .. levels."""
        return (1 << self.params.scale_bits) - 1

    def _steps(self, t: int, rows: int) -> float | np.ndarray:
        """Each vector's step [rows] (float32): ``step``, times ``recent_step`` on the last ``recent``
        tokens of the blob (with ``recent=0``, the scalar ``step``, so such blobs are unchanged)."""
        p = self.params
        if not p.recent:
            return p.step
        per_token = np.full(t, np.float32(p.step), np.float32)
        per_token[max(0, t - p.recent):] = np.float32(p.step * p.recent_step)
        return np.repeat(per_token, rows // t)  # head mode: a token's heads are consecutive vectors

    def _scale_values(self, codes: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Decoded vector scales ``ŝ`` [vectors] (float32) from codes 0..levels and the log range."""
        width = (hi - lo) / max(self._levels - 1, 1)
        s = np.exp2(lo + (codes.astype(np.float64) - 1) * width)
        return np.where(codes > 0, s, 0.0).astype(np.float32)

    # -- hooks ------------------------------------------------------------------------------
    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        cal = self.calibration()
        n, d = (int(s) for s in x.shape)
        t = self._check_rows(n, d, cal, InputError)
        tokens = x.astype(xp.float32).reshape(t, cal.width)
        sections: list[tuple[str, bytes]] = []
        if p.mean == "prompt":
            mu_host = floats.round_to(to_host(tokens.mean(axis=0)), "f16", np, "prompt mean")
            sections.append(("skeleton", floats.to_bytes(mu_host, "f16", np, "prompt mean")))
            mu = to_device(mu_host.astype(np.float32), xp)
        else:
            mu = to_device(cal.mean, xp)
        r = tokens - mu
        y = self._project(r, cal, xp)  # [vectors, width]
        rms = to_host(xp.sqrt(xp.mean(y * y, axis=-1))).astype(np.float64)  # U orthonormal: the residual's RMS
        if p.saliency > 0:
            if weights is None:
                raise InputError(f"klt saliency={p.saliency} needs the rows' weights (token saliency, e.g. a plan's "
                                 "saliency_queries); none were given")
            # the coded scale carries the token's step factor, so the decoder needs nothing new
            rms = rms * self._saliency_factors(to_host(weights).astype(np.float64), t, rms.size)
        codes, lo, hi, s_hat = self._row_scales(rms)
        steps = self._steps(t, s_hat.size)
        inv = np.where(s_hat > 0, 1.0 / (np.where(s_hat > 0, s_hat, 1.0) * steps), 0.0).astype(np.float32)
        v = y * to_device(inv[:, None], xp)
        q = xp.sign(v) * xp.floor(xp.abs(v) + xp.float32(p.rounding))
        q_host = to_host(q).astype(np.int64)
        qmax = int(np.abs(q_host).max()) if q_host.size else 0
        if 2 * qmax + 1 > rans.MAX_ALPHABET:
            raise InputError(f"klt: step={p.step} gives indices up to ±{qmax}, beyond the coder's alphabet of "
                             f"{rans.MAX_ALPHABET}; use a larger step")
        sections.insert(0, ("blocks", _HEADER.pack(FORMAT_VERSION, cal.digest, qmax, lo, hi)))
        if p.rowscale:
            sections.append(("scales", rans.encode(codes, self._levels + 1)))
        groups = self._groups(q_host.shape[1])
        if p.centroid:
            offsets = self._centroid_offsets(to_host(v).astype(np.float64), q_host, groups)
            sections.append(("codebook", floats.to_bytes(offsets, "f16", np, "centroid offsets")))
        sym = q_host + qmax
        alphabet = max(2 * qmax + 1, 2)
        if q_host.shape[1] % p.group == 0:  # one transposed copy instead of a copy per group
            rows = q_host.shape[0]
            streams = list(sym.reshape(rows, len(groups), p.group).transpose(1, 0, 2).reshape(len(groups), -1))
        else:
            streams = [np.ascontiguousarray(sym[:, g]).reshape(-1) for g in groups]
        sections.append(("entropy", b"".join(rans.encode_many(streams, alphabet))))
        return sections

    def _saliency_factors(self, weights: np.ndarray, t: int, vectors: int) -> np.ndarray:
        """Per-vector step factors [vectors] from row weights [T·heads]: a token's weight is the sum
        over its heads; factor ``(w / geomean w)^-saliency`` clipped to ``[1/clip, clip]`` (weights
        are floored at 1e-3 of their mean, so a token nobody attends to is not coded at 0 bits)."""
        p = self.params
        w = weights.reshape(t, p.heads).sum(axis=1)
        w = w + 1e-3 * max(float(w.mean()), np.finfo(np.float64).tiny)
        log_w = np.log(w)
        f = np.exp(-p.saliency * (log_w - log_w.mean()))
        f = np.clip(f, 1.0 / p.saliency_clip, p.saliency_clip)
        return np.repeat(f, vectors // t)  # head mode: a token's heads are consecutive vectors

    @staticmethod
    def _centroid_offsets(v: np.ndarray, q: np.ndarray, groups: list[slice]) -> np.ndarray:
        """Mean of ``|v| − |q|`` over the indices with ``|q| = 1`` and with ``|q| >= 2``, per group:
        float16 [groups, 2] (0 where a class is empty), the shift that puts ``ŷ`` at the bin's mean."""
        out = np.zeros((len(groups), 2))
        for i, g in enumerate(groups):
            a, m = np.abs(v[:, g]), np.abs(q[:, g])
            for j, mask in enumerate((m == 1, m >= 2)):
                if mask.any():
                    out[i, j] = float(np.mean(a[mask] - m[mask]))
        return floats.round_to(np.clip(out, -0.5, 0.5), "f16", np, "centroid offsets")

    def _row_scales(self, rms: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
        """Row codes (uint8 [rows]), the log2 range, and the decoded scales ``ŝ`` [rows]."""
        positive = rms > 0
        if not positive.any():
            return np.zeros(rms.size, np.uint8), 0.0, 0.0, np.zeros(rms.size, np.float32)
        logs = np.log2(np.where(positive, rms, 1.0))
        if not self.params.rowscale:  # one scale for the blob: its overall RMS
            whole = float(np.float32(0.5 * np.log2(np.mean(rms * rms))))
            codes = np.where(positive, 1, 0).astype(np.uint8)
            return codes, whole, whole, self._scale_values(codes, whole, whole)
        lo, hi = float(np.float32(logs[positive].min())), float(np.float32(logs[positive].max()))
        if hi > lo:
            codes = 1 + np.rint((logs - lo) / (hi - lo) * (self._levels - 1))
            codes = np.where(positive, np.clip(codes, 1, self._levels), 0).astype(np.uint8)
        else:
            codes = positive.astype(np.uint8)
        return codes, lo, hi, self._scale_values(codes, lo, hi)

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        cal = self.calibration()
        n, d = box.n_rows, box.n_cols
        t = self._check_rows(n, d, cal, CorruptBlobError)
        expected = (["blocks"] + (["skeleton"] if p.mean == "prompt" else []) + (["scales"] if p.rowscale else [])
                    + (["codebook"] if p.centroid else []) + ["entropy"])
        if list(box.sections) != expected:
            raise CorruptBlobError(f"klt: blob sections {list(box.sections)}, expected {expected}")
        head = box.section("blocks")
        if len(head) != _HEADER.size:
            raise CorruptBlobError(f"klt: blocks section holds {len(head)} bytes, expected {_HEADER.size}")
        version, digest, qmax, lo, hi = _HEADER.unpack(head)
        if version != FORMAT_VERSION:
            raise CorruptBlobError(f"klt: payload format version {version}, this library reads {FORMAT_VERSION}")
        if digest != cal.digest:
            raise CorruptBlobError(f"klt: the blob was encoded with another transform than calibration {p.calib!r} "
                                   f"layer {p.layer} {p.stream} now holds (digest {digest.hex()} != {cal.digest.hex()})")
        if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo) or 2 * qmax + 1 > rans.MAX_ALPHABET:
            raise CorruptBlobError(f"klt: header holds an invalid scale range [{lo}, {hi}] or qmax {qmax}")
        rows, width = self._units(t, cal)
        if p.mean == "prompt":
            mu_host = floats.from_bytes(box.section("skeleton"), "f16", cal.width, np, "prompt mean")
        else:
            mu_host = cal.mean
        if p.rowscale:
            raw = box.section("scales")
            (codes,), used = rans.decode_many(raw, [rows], self._levels + 1)
            if used != len(raw):
                raise CorruptBlobError(f"klt: scales section holds {len(raw)} bytes, its rANS stream uses {used}")
        else:
            codes = np.ones(rows, np.uint8)  # the blob's one scale (a zero blob decodes as its mean)
        steps = self._steps(t, rows)
        s_hat = self._scale_values(codes, lo, hi) * (np.float32(steps) if np.isscalar(steps) else steps)
        groups = self._groups(width)
        raw = box.section("entropy")
        lengths = [rows * (g.stop - g.start) for g in groups]
        streams, used = rans.decode_many(raw, lengths, max(2 * qmax + 1, 2))
        if used != len(raw):
            raise CorruptBlobError(f"klt: entropy section holds {len(raw)} bytes, its rANS streams use {used}")
        q = np.empty((rows, width), np.float32)
        value = np.arange(-qmax, qmax + 2, dtype=np.float32)  # symbol -> integer level (one lookup pass)
        if width % p.group == 0:  # one transposed copy instead of a copy per group
            stacked = np.stack(streams).reshape(len(groups), rows, p.group)
            q.reshape(rows, len(groups), p.group)[...] = value[stacked.transpose(1, 0, 2)]
        else:
            for g, sym in zip(groups, streams):
                q[:, g] = value[sym].reshape(rows, g.stop - g.start)
        if p.centroid:
            offsets = floats.from_bytes(box.section("codebook"), "f16", 2 * len(groups), np, "centroid offsets")
            if not (np.abs(offsets) <= 0.5).all():
                raise CorruptBlobError("klt: a centroid offset lies outside [-0.5, 0.5]")
            offsets = offsets.reshape(len(groups), 2)
            for i, g in enumerate(groups):
                m = np.abs(q[:, g])
                shift = np.where(m == 1, offsets[i, 0], np.where(m >= 2, offsets[i, 1], 0.0))
                q[:, g] = np.sign(q[:, g]) * (m + shift)
        y = to_device(q * s_hat[:, None], xp)
        r = self._unproject(y, cal, t, xp)
        return (r + to_device(np.asarray(mu_host, np.float32), xp)).reshape(n, d)
