"""Static-model interleaved rANS (Duda 2013; Giesen 2014) for quantiser indices, vectorised over lanes.

One *stream* codes ``n`` symbols of an ``alphabet``-symbol source with a frequency table built
from the data's own histogram and stored in the stream. Symbol ``i`` is coded by *lane*
``i % K`` at *step* ``i // K``; the K lane states are independent 32-bit rANS coders that share
one stream of 16-bit renormalisation words, so a step is a handful of numpy operations over all
lanes of all streams of a batch (:func:`encode_many` / :func:`decode_many` run one shared step
loop; the Python cost is per step, not per symbol).

Coder (state ``x`` in ``[L, 2**32)``, ``L = 2**16``, ``M = 2**prob_bits``, symbol frequency
``f`` and cumulative start ``c``)::

    encode s:  if x >= f * 2**(32-prob_bits): emit x & 0xFFFF; x >>= 16     (at most one word)
               x = (x // f) * M + x % f + c
    decode:    slot = x % M; s = symbol owning slot; x = f * (x // M) + slot - c
               if x < L: x = (x << 16) | next word                        (at most one word)

The encoder runs the steps backwards, every lane starting at ``L``; the decoder runs them
forwards. At step ``t`` the decoder's renormalising lanes read consecutive words in lane order,
so a lane's word is found by a cumsum over the lanes renormalising at that step, and no per-lane
word counts are stored. Each decoded lane must end exactly at ``L`` and the word stream must be
consumed exactly, which catches most corruptions (the container's CRC catches the rest).

Stream layout (little-endian, fixed-width fields; self-delimiting, so streams concatenate)::

    offset  size          field
    0       1             format version (FORMAT_VERSION)
    1       1             prob_bits (1..16)
    2       2             K, lane count (1..min(n, MAX_LANES)), uint16
    4       4             W, number of 16-bit words (<= n), uint32
    8       ceil(A/8)     presence bitmap of the A symbols, LSB-first
    ...     ceil(P*b/8)   freq - 1 of the P present symbols (ascending), b = prob_bits bits each,
                          LSB-first (:mod:`kakeya_lib.bitpack`); they sum to 2**prob_bits
    ...     4*K           decoder's initial lane states (the encoder's final ones), uint32
    ...     2*W           renormalisation words, uint16, in decode order (step-major, lane-minor)

Size: ``8 + ceil(A/8) + ceil(P*b/8) + 4K + 2W`` bytes. Beyond the entropy, each lane costs about
three bytes (its 32-bit final state includes the 16 bits of its starting ``L``, which carry no
data), and the table about ``P*b/8`` bytes. Lanes are chosen by :func:`lanes_for`: ``K = isqrt(n) // 4`` balances
the per-lane bytes (∝ K) against the Python steps (∝ n/K); for ``n = 65536`` that is 64 lanes,
1024 steps and ~0.03 bits/symbol over the empirical entropy. Pass ``lanes=`` to trade
differently (more lanes: fewer steps, faster; fewer lanes: smaller).

Batches: :func:`encode_many` / :func:`decode_many` pad the streams of a batch to a common
[steps, streams, lanes] grid (entries that code nothing use an identity "dummy" symbol), with
streams sorted longest first so that the ones still running are a prefix. Streams whose padding
would exceed ~4x their symbols (one big stream with many small ones, an odd ``lanes=``) get a
separate loop (:func:`_groups`). A stream's bytes never depend on the batch it was coded in. A
stream in which one symbol occurs takes no steps: one lane, state ``L``, no words (15 bytes for
an 8-symbol alphabet at 12 bits).

Supported: alphabets of 2..:data:`MAX_ALPHABET` symbols, ``prob_bits`` 1..16 (raised to
``ceil(log2(P))`` when a stream has more distinct symbols than ``2**prob_bits``), at most
:data:`MAX_LANES` lanes, streams of 1 .. 2**32-1 symbols. Host numpy only: move CuPy arrays to the
host first. Output is a deterministic function of the input (byte-identical across runs).

One concept (over 400 lines): the rANS coder and its self-delimiting stream format.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..errors import CorruptBlobError, InputError

FORMAT_VERSION = 1
DEFAULT_PROB_BITS = 12
MAX_PROB_BITS = 16  # renormalising 16 bits at a time keeps x in [2**16, 2**32) only for prob_bits <= 16
MAX_ALPHABET = 1 << 16
MAX_LANES = 4096
STATE_LOW = 1 << 16  # L: lower end of the state interval, every lane's initial (encoder) state
_HEADER = struct.Struct("<BBHI")  # version, prob_bits, lanes, words
_PAD_FACTOR, _PAD_SLACK = 4, 1 << 16  # batch grouping: padded entries <= 4 * symbols + 65536


# --------------------------------------------------------------------------------------------
# Helpers: entropy, lane choice, frequency normalisation
# --------------------------------------------------------------------------------------------


def entropy_bits(symbols: Any, alphabet: int) -> float:
    """Empirical (zeroth-order) entropy of ``symbols`` in bits per symbol.

    Parameters
    ----------
    symbols : array [n] integer, values in ``[0, alphabet)``
    alphabet : int

    Returns
    -------
    float, ``-sum p log2 p`` over the histogram (0.0 when one symbol occurs).
    """
    s = _check_symbols(symbols, _check_alphabet(alphabet), 0)
    counts = np.bincount(s, minlength=alphabet)
    p = counts[counts > 0] / s.size
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" for a single symbol


def lanes_for(n: int) -> int:
    """Default lane count for a stream of ``n`` symbols: ``clip(isqrt(n) // 4, 1, MAX_LANES)``.

    Each lane costs ~3 bytes of final state and each step ~10-15 numpy calls, so the total cost
    ``a*K + b*n/K`` is smallest near ``K ∝ sqrt(n)``; the factor 1/4 keeps the state bytes of a
    65536-symbol stream at ~0.03 bits/symbol (64 lanes, 1024 steps).
    """
    if n < 1:
        raise InputError(f"a rANS stream needs at least one symbol, got n={n}")
    return max(1, min(MAX_LANES, math.isqrt(int(n)) // 4, int(n)))


def normalize_frequencies(counts: Any, prob_bits: int) -> np.ndarray:
    """Integer frequencies summing to ``2**prob_bits`` that minimise the coded size of ``counts``.

    Every symbol with a nonzero count gets a frequency >= 1, absent symbols get 0. Start from
    ``max(1, floor(count * M / total))`` (exact integer arithmetic), hand out or take back the
    remaining units one at a time to the symbol where it gains most / costs least in
    ``sum count * log2(M / freq)``, then move single units while that strictly lowers the cost
    (the cost is convex per symbol, so this reaches the optimum). Ties go to the lowest symbol
    index, and a move needs a relative gain above 1e-12, so rounding noise cannot flip it.

    Parameters
    ----------
    counts : array [alphabet] non-negative integers, at least one nonzero
    prob_bits : int in 1..MAX_PROB_BITS, with ``2**prob_bits >= number of nonzero counts``

    Returns
    -------
    array [alphabet] int64, sum ``2**prob_bits``.
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or not (c >= 0).all() or not c.any():
        raise InputError("frequency normalisation needs a 1-D array of non-negative counts, not all zero")
    m = 1 << int(prob_bits)
    present = np.flatnonzero(c)
    if present.size > m:
        raise InputError(f"{present.size} distinct symbols do not fit a table of 2**{prob_bits} slots")
    cp = c[present].astype(np.float64)
    total = int(c.sum())
    f = np.maximum(1, c[present] * m // total)  # exact: counts * 2**16 stays far below 2**63

    def gain(i: int) -> float:  # bits saved by f[i] += 1
        return float(cp[i] * (math.log2(f[i] + 1) - math.log2(f[i])))

    def loss(i: int) -> float:  # bits added by f[i] -= 1 (inf when it would reach 0)
        return float(cp[i] * (math.log2(f[i]) - math.log2(f[i] - 1))) if f[i] > 1 else math.inf

    # |delta| <= number of present symbols (floor loses < 1 each, max(1, .) adds <= 1 each).
    delta = m - int(f.sum())
    step, key = (1, lambda i: (-gain(i), i)) if delta > 0 else (-1, lambda i: (loss(i), i))
    heap = [key(i) for i in range(f.size)] if delta else []
    heapq.heapify(heap)
    for _ in range(abs(delta)):
        i = heapq.heappop(heap)[1]
        f[i] += step
        heapq.heappush(heap, key(i))

    # Single-unit moves from the cheapest donor to the best taker while that strictly helps
    # (usually none; bounded so a pathological table cannot loop for long).
    if f.size > 1:
        gains = cp * (np.log2(f + 1) - np.log2(f))
        losses = np.where(f > 1, cp * (np.log2(f) - np.log2(np.maximum(f - 1, 1))), np.inf)
        for _ in range(f.size + 64):
            taker = int(np.argmax(gains))
            masked = losses.copy()
            masked[taker] = np.inf
            donor = int(np.argmin(masked))
            if not gains[taker] > masked[donor] * (1 + 1e-12):
                break
            f[taker] += 1
            f[donor] -= 1
            for i in (taker, donor):
                gains[i], losses[i] = gain(i), loss(i)
    out = np.zeros(c.size, dtype=np.int64)
    out[present] = f
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def encode(symbols: Any, alphabet: int, *, prob_bits: int = DEFAULT_PROB_BITS, lanes: int | None = None) -> bytes:
    """rANS-code one stream of symbols (see the module docstring for the layout).

    Parameters
    ----------
    symbols : np.ndarray [n] integer dtype, values in ``[0, alphabet)``, n >= 1
    alphabet : int in 2..MAX_ALPHABET
    prob_bits : int in 1..16, precision of the frequency table (default 12)
    lanes : int in 1..min(n, MAX_LANES), or None for :func:`lanes_for`

    Returns
    -------
    bytes, self-delimiting: :func:`decode` needs only ``n`` and ``alphabet``.
    """
    return encode_many([symbols], alphabet, prob_bits=prob_bits, lanes=lanes)[0]


def decode(buf: bytes | bytearray | memoryview, n: int, alphabet: int) -> tuple[np.ndarray, int]:
    """Decode one stream of ``n`` symbols from the start of ``buf``.

    Returns
    -------
    symbols : np.ndarray [n], uint8 when ``alphabet <= 256`` else uint16
    consumed : int, bytes of ``buf`` the stream occupied (the next stream starts there)

    Raises :class:`CorruptBlobError` on truncated or inconsistent bytes.
    """
    out, used = decode_many(buf, [n], alphabet)
    return out[0], used


def encode_many(
    streams: Sequence[Any],
    alphabet: int | Sequence[int],
    *,
    prob_bits: int = DEFAULT_PROB_BITS,
    lanes: int | None = None,
) -> list[bytes]:
    """rANS-code several streams in one shared step loop; each stream gets its own table.

    Parameters
    ----------
    streams : sequence of np.ndarray [n_j] integer, values in ``[0, alphabet_j)``, n_j >= 1
    alphabet : int in 2..MAX_ALPHABET for all streams, or one per stream
    prob_bits : int in 1..16 (per stream raised to fit its distinct-symbol count)
    lanes : int, or None to choose per stream with :func:`lanes_for`. A stream in which a
        single symbol occurs always gets one lane (it costs no words at all).

    Returns
    -------
    list of bytes, one stream each; ``b"".join(...)`` decodes with :func:`decode_many`.
    """
    alphabets = _alphabets(alphabet, len(streams))
    if not _is_int(prob_bits) or not 1 <= prob_bits <= MAX_PROB_BITS:
        raise InputError(f"prob_bits must be an integer in 1..{MAX_PROB_BITS}, got {prob_bits!r}")
    syms = [_check_symbols(s, a, j) for j, (s, a) in enumerate(zip(streams, alphabets))]
    if not syms:
        return []
    plans = [_plan_stream(s, a, int(prob_bits), lanes) for s, a in zip(syms, alphabets)]
    out: list[bytes] = [b""] * len(syms)
    for order in _groups([(p.steps, p.lanes, s.size) for p, s in zip(plans, syms)]):
        x, renorm, low = _encode_group([syms[j] for j in order], [alphabets[j] for j in order],
                                       [plans[j] for j in order])
        for p, j in enumerate(order):
            pl = plans[j]
            sel = renorm[: pl.steps, p, : pl.lanes]
            words = low[: pl.steps, p, : pl.lanes][sel]  # step-major, lane-minor = decode order
            out[j] = b"".join(
                (
                    _HEADER.pack(FORMAT_VERSION, pl.prob_bits, pl.lanes, words.size),
                    _table_bytes(pl.freq, pl.prob_bits),
                    x[p, : pl.lanes].astype("<u4").tobytes(),
                    words.astype("<u2").tobytes(),
                )
            )
    return out


def _encode_group(
    syms: list[np.ndarray], alphabets: list[int], plans: list[_Plan]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared step loop over one group's streams, sorted by step count, longest first.

    Longest first: the streams still running at any step are a prefix of the group, so each
    step slices ``[:active]`` instead of masking. Returns the final states [S, k_max] uint32,
    and per entry [t_max, S, k_max] whether the lane renormalised before coding it and the
    low 16 bits it then emitted.
    """
    n_streams = len(plans)
    k_max = max(pl.lanes for pl in plans)
    t_max = plans[0].steps

    # Per-entry coder constants [t_max, S, k_max]. Entries that code nothing (padding lanes,
    # the tail of a partial last step) use a "dummy" symbol with f = M, c = 0, which leaves
    # the state unchanged and never renormalises: x = (x // M) * M + x % M.
    tab_at = np.cumsum([0] + [a + 1 for a in alphabets])  # per stream: its alphabet, then the dummy
    tab_f = np.zeros(tab_at[-1], dtype=np.uint32)
    tab_c = np.zeros(tab_at[-1], dtype=np.uint32)
    gidx = np.empty((t_max, n_streams, k_max), dtype=np.int64)
    m_col = np.empty((1, n_streams, 1), dtype=np.uint32)
    sh_col = np.empty((1, n_streams, 1), dtype=np.uint32)
    for p, pl in enumerate(plans):
        m = 1 << pl.prob_bits
        a, at = alphabets[p], int(tab_at[p])
        seg = slice(at, at + a + 1)
        tab_f[seg] = np.append(pl.freq, m)
        tab_c[seg] = np.append(np.cumsum(pl.freq) - pl.freq, 0)
        m_col[0, p, 0], sh_col[0, p, 0] = m, 32 - pl.prob_bits
        gidx[:, p, :] = at + a
        if pl.steps:
            padded = np.full(pl.steps * pl.lanes, a, dtype=np.int64)
            padded[: syms[p].size] = syms[p]
            gidx[: pl.steps, p, : pl.lanes] = padded.reshape(pl.steps, pl.lanes) + at
    f_all = tab_f.take(gidx, mode="clip")
    c_all = tab_c.take(gidx, mode="clip")
    del gidx
    # Renormalise when x > f * 2**(32-b) - 1; for f = M the product wraps to 0 in uint32 and
    # the bound to 2**32 - 1, i.e. never, as it should.
    xm_all = np.left_shift(f_all, sh_col) - np.uint32(1)
    d_all = m_col - f_all  # (x // f) * M + x % f = x + (x // f) * (M - f)

    x = np.full((n_streams, k_max), STATE_LOW, dtype=np.uint32)
    renorm = np.zeros((t_max, n_streams, k_max), dtype=bool)
    low = np.empty((t_max, n_streams, k_max), dtype=np.uint16)  # low 16 bits of x, kept where renorm
    q_buf = np.empty_like(x)
    sh16 = np.uint32(16)
    steps_desc = [pl.steps for pl in plans]
    for t_lo, t_hi, active in reversed(_phases(steps_desc)):
        xs, q = x[:active], q_buf[:active]
        rows = (a[t_lo:t_hi, :active][::-1] for a in (renorm, low, xm_all, f_all, d_all, c_all))
        for m_t, low_t, xm_t, f_t, d_t, c_t in zip(*rows):  # steps backwards
            np.greater(xs, xm_t, m_t)
            np.copyto(low_t, xs, casting="unsafe")  # keeps the low 16 bits
            np.right_shift(xs, sh16, q)
            np.copyto(xs, q, where=m_t)
            np.floor_divide(xs, f_t, q)
            np.multiply(q, d_t, q)
            np.add(xs, q, xs)
            np.add(xs, c_t, xs)
    return x, renorm, low


def decode_many(
    buf: bytes | bytearray | memoryview, ns: Sequence[int], alphabet: int | Sequence[int]
) -> tuple[list[np.ndarray], int]:
    """Decode consecutive streams (as ``b"".join(encode_many(...))`` wrote them) in one step loop.

    Parameters
    ----------
    buf : bytes-like, the streams from its start (trailing bytes are left alone)
    ns : symbol count of each stream, each >= 1
    alphabet : int in 2..MAX_ALPHABET for all streams, or one per stream

    Returns
    -------
    symbols : list of np.ndarray [n_j], uint8 when ``alphabet_j <= 256`` else uint16
    consumed : int, total bytes the streams occupied

    Raises
    ------
    CorruptBlobError
        Truncated buffer, bad header field, bad table (bits beyond the alphabet, padding bits,
        frequencies not summing to ``2**prob_bits``), a lane state out of range, the word stream
        over- or under-run, or a lane not ending at the encoder's initial state.
    """
    ns = [_check_count(n, j) for j, n in enumerate(ns)]
    alphabets = _alphabets(alphabet, len(ns))
    raw = np.frombuffer(buf, dtype=np.uint8)
    pos = 0
    heads = []
    for j, (n, a) in enumerate(zip(ns, alphabets)):
        head, pos = _parse_stream(raw, pos, n, a, j)
        heads.append(head)
    result: list[np.ndarray] = [np.empty(0, dtype=np.uint8)] * len(heads)
    for order in _groups([(h.steps, h.lanes, h.n) for h in heads]):
        decoded = _decode_group([heads[j] for j in order], [alphabets[j] for j in order], order)
        for j, sym in zip(order, decoded):
            result[j] = sym
    return result, pos


def _decode_group(heads: list[_Head], alphabets: list[int], ids: list[int]) -> list[np.ndarray]:
    """The shared step loop over one group's parsed streams, sorted by step count, longest first.

    ``ids`` are the streams' positions in the caller's batch, for error messages.
    """
    lut_dtype = np.uint8 if max(alphabets) <= 256 else np.uint16
    n_streams = len(heads)
    k_max = max(h.lanes for h in heads)
    t_max = heads[0].steps

    # Lookup tables, concatenated: per stream 2**b slots (symbol, f, slot - c), plus one
    # identity table per prob_bits in use (f = M, slot - c = slot) for entries that code nothing.
    # The decoder works in int64 throughout: mixed-width operands cost numpy a cast per call,
    # which at ~500 lanes is as much as the arithmetic (states stay < 2**32, so nothing overflows).
    luts_sym, luts_f, luts_b, offsets = [], [], [], []
    ident_at: dict[int, int] = {}
    size = 0
    for h in heads:
        m = 1 << h.prob_bits
        sym = np.repeat(np.arange(h.freq.size, dtype=np.int64), h.freq)
        start = np.cumsum(h.freq) - h.freq
        luts_sym.append(sym.astype(lut_dtype))
        luts_f.append(h.freq[sym])
        luts_b.append(np.arange(m, dtype=np.int64) - start[sym])
        offsets.append(size)
        size += m
    for b in sorted({h.prob_bits for h in heads}):
        m = 1 << b
        luts_sym.append(np.zeros(m, dtype=lut_dtype))
        luts_f.append(np.full(m, m, dtype=np.int64))
        luts_b.append(np.arange(m, dtype=np.int64))
        ident_at[b] = size
        size += m
    lut_sym, lut_f, lut_b = (np.concatenate(a) for a in (luts_sym, luts_f, luts_b))

    # Per-entry table offset [t_max, S, k_max]: the stream's table where entry t*K + k < n,
    # the identity table elsewhere.
    off_all = np.empty((t_max, n_streams, k_max), dtype=np.int64)
    shift = np.empty((n_streams, k_max), dtype=np.int64)
    x = np.full((n_streams, k_max), STATE_LOW, dtype=np.int64)
    # carry[:, 0] = index in `words` of the stream's last word read; carry[:, 1:] = renorm flags,
    # so one in-place cumsum gives every renormalising lane its word index and the next carry.
    carry = np.zeros((n_streams, k_max + 1), dtype=np.int64)
    words = np.zeros(sum(h.words.size for h in heads) + 1, dtype=np.int64)  # +1: never empty
    ends = np.empty(n_streams, dtype=np.int64)
    base = 0
    for p, h in enumerate(heads):
        entry = np.arange(t_max)[:, None] * h.lanes + np.arange(k_max)[None, :]
        real = (entry < h.n) & (np.arange(k_max) < h.lanes)[None, :]
        off_all[:, p, :] = np.where(real, offsets[p], ident_at[h.prob_bits])
        shift[p] = h.prob_bits
        x[p, : h.lanes] = h.states
        words[base : base + h.words.size] = h.words
        carry[p, 0] = base - 1
        base += h.words.size
        ends[p] = base - 1
    mask = (1 << shift) - 1
    uniform = bool((shift == shift[0, 0]).all())
    if uniform:  # a scalar shift is ~3x cheaper than a broadcast one
        shift_op: Any = np.int64(shift[0, 0])
        mask_op: Any = np.int64(mask[0, 0])
    low, sh16 = np.int64(STATE_LOW), np.int64(16)

    g_all = np.empty((t_max, n_streams, k_max), dtype=np.int64)  # global table slot per entry
    f_buf, b_buf, tmp_buf, w_buf = (np.empty((n_streams, k_max), dtype=np.int64) for _ in range(4))
    m_buf = np.empty((n_streams, k_max), dtype=bool)
    steps_desc = [h.steps for h in heads]
    for t_lo, t_hi, active in _phases(steps_desc):
        xs, fb, bb, tmp, wb, mb = (a[:active] for a in (x, f_buf, b_buf, tmp_buf, w_buf, m_buf))
        cr, flags, first, last = carry[:active], carry[:active, 1:], carry[:active, 0], carry[:active, -1]
        if not uniform:
            shift_op, mask_op = shift[:active], mask[:active]
        # Positional `out` arguments and bound methods: at this size the call overhead is the cost.
        for g, off in zip(g_all[t_lo:t_hi, :active], off_all[t_lo:t_hi, :active]):
            np.bitwise_and(xs, mask_op, g)  # slot = x % M
            np.add(g, off, g)
            lut_f.take(g, None, fb, "clip")
            lut_b.take(g, None, bb, "clip")
            np.right_shift(xs, shift_op, tmp)
            np.multiply(tmp, fb, xs)
            np.add(xs, bb, xs)  # x = f * (x // M) + slot - c
            np.less(xs, low, mb)
            np.copyto(flags, mb)
            cr.cumsum(1, None, cr)  # flags -> word index of each renormalising lane
            words.take(flags, None, wb, "clip")  # clip: a corrupt stream may run past its end
            np.left_shift(xs, sh16, tmp)
            np.bitwise_or(tmp, wb, tmp)
            np.copyto(xs, tmp, where=mb)
            np.copyto(first, last)

    result: list[np.ndarray] = []
    for p, j in enumerate(ids):
        h = heads[p]
        if carry[p, 0] != ends[p]:
            used = carry[p, 0] - (ends[p] - h.words.size)
            raise CorruptBlobError(
                f"rANS stream {j}: word stream {'overrun' if used > h.words.size else 'underrun'}: "
                f"decoding read {used} of its {h.words.size} words"
            )
        if not (x[p, : h.lanes] == STATE_LOW).all():
            bad = int(np.flatnonzero(x[p, : h.lanes] != STATE_LOW)[0])
            raise CorruptBlobError(
                f"rANS stream {j}: lane {bad} ended in state {int(x[p, bad])}, not the initial {STATE_LOW} "
                "(corrupt table, states or words)"
            )
        out_dtype = np.uint8 if alphabets[p] <= 256 else np.uint16
        if h.steps:
            sym = lut_sym.take(g_all[: h.steps, p, : h.lanes]).reshape(-1)[: h.n]  # entry t*K + k = symbol
            result.append(sym.astype(out_dtype, copy=False))
        else:  # one symbol present: the only one there is (its lane state was checked above)
            result.append(np.full(h.n, int(np.flatnonzero(h.freq)[0]), dtype=out_dtype))
    return result


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Encoder's per-stream choices."""

    freq: np.ndarray  # [alphabet] int64, sums to 2**prob_bits
    prob_bits: int
    lanes: int
    steps: int  # ceil(n / lanes); 0 when one symbol occurs (every step would be the identity)


@dataclass(frozen=True)
class _Head:
    """Decoder's parsed stream: header fields, table, initial states, words."""

    n: int
    prob_bits: int
    lanes: int
    freq: np.ndarray  # [alphabet] int64, validated: sums to 2**prob_bits
    states: np.ndarray  # [lanes] int64 in [L, 2**32)
    words: np.ndarray  # [W] int64 in [0, 2**16)

    @property
    def steps(self) -> int:
        # One present symbol (f = M): every step is the identity, so the stream takes no steps
        # at all (it must still hold exactly one state, L, and no words).
        return 0 if int(np.count_nonzero(self.freq)) == 1 else -(-self.n // self.lanes)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_alphabet(alphabet: int) -> int:
    if not _is_int(alphabet) or not 2 <= alphabet <= MAX_ALPHABET:
        raise InputError(f"rANS alphabet must be an integer in 2..{MAX_ALPHABET}, got {alphabet!r}")
    return int(alphabet)


def _alphabets(alphabet: int | Sequence[int], n_streams: int) -> list[int]:
    """One alphabet per stream, from a shared int or a per-stream sequence."""
    if _is_int(alphabet):
        return [_check_alphabet(alphabet)] * n_streams
    if isinstance(alphabet, (str, bytes)) or not isinstance(alphabet, Sequence | np.ndarray):
        raise InputError(f"rANS alphabet must be an int or a sequence of ints, got {alphabet!r}")
    if len(alphabet) != n_streams:
        raise InputError(f"got {len(alphabet)} alphabets for {n_streams} streams")
    return [_check_alphabet(a) for a in alphabet]


def _check_count(n: int, j: int) -> int:
    if not _is_int(n) or not 1 <= n < 1 << 32:
        raise InputError(f"rANS stream {j}: symbol count must be an integer in 1..2**32-1, got {n!r}")
    return int(n)


def _check_symbols(symbols: Any, alphabet: int, j: int) -> np.ndarray:
    if hasattr(symbols, "__cuda_array_interface__"):
        raise InputError(f"rANS stream {j}: symbols are a GPU array; move them to the host (numpy) first")
    s = np.asarray(symbols)
    if s.ndim != 1:
        raise InputError(f"rANS stream {j}: symbols must be a 1-D array, got shape {s.shape}")
    if s.dtype.kind not in "iu":
        raise InputError(f"rANS stream {j}: symbols must have an integer dtype, got {s.dtype}")
    if s.size == 0:
        raise InputError(f"rANS stream {j}: cannot code an empty stream")
    if s.size >= 1 << 32:
        raise InputError(f"rANS stream {j}: at most 2**32-1 symbols per stream, got {s.size}")
    lo, hi = int(s.min()), int(s.max())
    if lo < 0 or hi >= alphabet:
        raise InputError(f"rANS stream {j}: symbols must lie in [0, {alphabet}), found values in [{lo}, {hi}]")
    return s.astype(np.intp, copy=False)


def _plan_stream(s: np.ndarray, alphabet: int, prob_bits: int, lanes: int | None) -> _Plan:
    if lanes is not None and (not _is_int(lanes) or not 1 <= lanes <= MAX_LANES):
        raise InputError(f"lanes must be an integer in 1..{MAX_LANES}, got {lanes!r}")
    counts = np.bincount(s, minlength=alphabet)
    distinct = int(np.count_nonzero(counts))
    b = max(prob_bits, (distinct - 1).bit_length())  # every present symbol needs a slot
    freq = normalize_frequencies(counts, b)
    if distinct == 1:
        return _Plan(freq, b, 1, 0)  # f = M: every step is the identity; one lane, no words, no steps
    k = lanes_for(s.size) if lanes is None else min(int(lanes), s.size)
    return _Plan(freq, b, k, -(-s.size // k))


def _groups(shapes: list[tuple[int, int, int]]) -> list[list[int]]:
    """Partition a batch into groups that share one step loop, each sorted longest first.

    ``shapes`` holds each stream's (steps, lanes, n). A group pads every stream to its longest
    step count and widest lane count, so a stream joins the current group only while the padded
    entries stay within ``_PAD_FACTOR`` times the group's symbols (plus ``_PAD_SLACK``): one big
    stream with many small ones, or an odd ``lanes=``, then costs a second loop instead of
    memory. Streams of similar size (the usual batch) form one group.
    """
    order = sorted(range(len(shapes)), key=lambda j: (-shapes[j][0], -shapes[j][1], j))
    groups: list[list[int]] = []
    t_max = k_max = total = 0
    for j in order:
        steps, lanes, n = shapes[j]
        if groups and t_max * (len(groups[-1]) + 1) * max(k_max, lanes) <= _PAD_FACTOR * (total + n) + _PAD_SLACK:
            groups[-1].append(j)
            k_max, total = max(k_max, lanes), total + n
        else:
            groups.append([j])
            t_max, k_max, total = steps, lanes, n
    return groups


def _phases(steps_desc: list[int]) -> list[tuple[int, int, int]]:
    """Split ``range(max steps)`` into runs with a constant number of active streams.

    ``steps_desc`` is each stream's step count, longest first. Returns ``(t_lo, t_hi, active)``
    in ascending ``t``; during ``[t_lo, t_hi)`` streams ``[0, active)`` are running.
    """
    out = []
    t_lo = 0
    for active in range(len(steps_desc), 0, -1):
        t_hi = steps_desc[active - 1]
        if t_hi > t_lo:
            out.append((t_lo, t_hi, active))
            t_lo = t_hi
    return out


def _table_bytes(freq: np.ndarray, prob_bits: int) -> bytes:
    present = freq > 0
    bitmap = np.packbits(present, bitorder="little").tobytes()
    return bitmap + pack_bits(freq[present] - 1, prob_bits).tobytes()


def _parse_stream(raw: np.ndarray, pos: int, n: int, alphabet: int, j: int) -> tuple[_Head, int]:
    """Read and validate one stream's header, table and states; returns it and the next offset."""
    where = f"rANS stream {j} (at byte {pos})"

    def need(nbytes: int, what: str) -> None:
        if raw.size - pos < nbytes:
            raise CorruptBlobError(f"{where}: truncated: {what} needs {nbytes} bytes, {raw.size - pos} remain")

    need(_HEADER.size, "header")
    version, prob_bits, lanes, n_words = _HEADER.unpack_from(raw, pos)
    pos += _HEADER.size
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"{where}: format version {version}, this library reads {FORMAT_VERSION}")
    if not 1 <= prob_bits <= MAX_PROB_BITS:
        raise CorruptBlobError(f"{where}: prob_bits {prob_bits} outside 1..{MAX_PROB_BITS}")
    if not 1 <= lanes <= min(n, MAX_LANES):
        raise CorruptBlobError(f"{where}: lane count {lanes} outside 1..{min(n, MAX_LANES)} for {n} symbols")
    if n_words > n:  # each symbol renormalises at most once
        raise CorruptBlobError(f"{where}: {n_words} words for {n} symbols (at most one per symbol)")

    nb = (alphabet + 7) // 8
    need(nb, "presence bitmap")
    present = np.unpackbits(raw[pos : pos + nb], bitorder="little").astype(bool)
    pos += nb
    if present[alphabet:].any():
        raise CorruptBlobError(f"{where}: table marks a symbol >= alphabet {alphabet} as present")
    present = present[:alphabet]
    n_present = int(present.sum())
    if n_present == 0:
        raise CorruptBlobError(f"{where}: table has no symbol present")
    nf = packed_nbytes(n_present, prob_bits)
    need(nf, "frequency table")
    packed = raw[pos : pos + nf]
    pos += nf
    fvals = unpack_bits(packed, prob_bits, n_present) + 1
    if pack_bits(fvals - 1, prob_bits).tobytes() != packed.tobytes():
        raise CorruptBlobError(f"{where}: nonzero padding bits after the frequency table")
    if int(fvals.sum()) != 1 << prob_bits:
        raise CorruptBlobError(f"{where}: frequencies sum to {int(fvals.sum())}, not 2**{prob_bits}")
    freq = np.zeros(alphabet, dtype=np.int64)
    freq[present] = fvals

    need(4 * lanes, "lane states")
    states = np.frombuffer(raw[pos : pos + 4 * lanes].tobytes(), dtype="<u4").astype(np.int64)
    pos += 4 * lanes
    if (states < STATE_LOW).any():
        raise CorruptBlobError(f"{where}: a lane state is below {STATE_LOW} (out of the coder's range)")
    need(2 * n_words, "word stream")
    words = np.frombuffer(raw[pos : pos + 2 * n_words].tobytes(), dtype="<u2").astype(np.int64)
    pos += 2 * n_words
    return _Head(n, prob_bits, lanes, freq, states, words), pos
