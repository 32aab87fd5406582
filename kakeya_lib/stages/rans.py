"""Static-model ANS coding of quantiser indices: our stream format around the ``constriction`` coder.

One *stream* codes ``n`` symbols of an ``alphabet``-symbol source with a frequency table built
from the data's own histogram and stored in the stream. The arithmetic is ``constriction``'s
stack ANS coder (Bamler 2022; a Rust library: 64-bit state, 32-bit words, 24-bit probabilities),
driven with a categorical model over the symbols present in the stream whose probabilities are
the stored table's ``freq / 2**prob_bits`` (``perfect=False``: constriction's deterministic
"leaky" quantisation to 24 bits; encoder and decoder build the same model from the same table).
The table, the header and every word are ours to validate; constriction only turns a model and
symbols into words and back.

Stream layout (little-endian, fixed-width fields; self-delimiting, so streams concatenate)::

    offset  size          field
    0       1             format version (FORMAT_VERSION = 2)
    1       1             prob_bits (1..16)
    2       4             W, number of 32-bit words, uint32
    6       ceil(A/8)     presence bitmap of the A symbols, LSB-first
    ...     ceil(P*b/8)   freq - 1 of the P present symbols (ascending), b = prob_bits bits each,
                          LSB-first (:mod:`kakeya_lib.bitpack`); they sum to 2**prob_bits
    ...     4*W           the coder's words, uint32, as constriction's ``get_compressed`` gives them

Size: ``6 + ceil(A/8) + ceil(P*b/8) + 4W`` bytes; beyond the entropy of the table's model, the
coder flushes its 64-bit state (at most two words) and rounds up to a whole word. A stream in
which one symbol occurs has W = 0 and codes nothing. Decoding checks the header, the table
(no bits beyond the alphabet, no padding bits, frequencies summing to ``2**prob_bits``), a word
count no larger than ``n`` symbols can need, and that the decoder consumes every word exactly
(the container's CRC catches what remains).

Format version 1 (a numpy interleaved rANS with 16-bit words, this library before the switch)
is refused with an error naming both versions. Measured when switching (the klt codec's index
streams of one SmolLM2 passage, 11.8 M symbols in 1,440 streams, one thread): 1.983 -> 1.921
bit/symbol, encode 32 -> 62 M symbols/s, decode 23 -> 50 M symbols/s; the remaining time is our
per-stream table work, not the coder. The GPU path codes on the host as well (indices are moved
to numpy first), so CPU and GPU blobs are the same bytes. A symbol count larger than the one
encoded is not detected by a stream itself (an emptied ANS stack keeps decoding); every caller
takes ``n`` from a CRC-checked header.

Supported: alphabets of 2..:data:`MAX_ALPHABET` symbols, ``prob_bits`` 1..16 (raised to
``ceil(log2(P))`` when a stream has more distinct symbols than ``2**prob_bits``), streams of
1 .. 2**32-1 symbols. Output is a deterministic function of the input and the pinned
constriction version (a golden-bytes test catches a change of either).
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..errors import CorruptBlobError, InputError, MissingDependencyError

FORMAT_VERSION = 2
DEFAULT_PROB_BITS = 12
MAX_PROB_BITS = 16
MAX_ALPHABET = 1 << 16
_HEADER = struct.Struct("<BBI")  # version, prob_bits, words
_MAX_BITS_PER_SYMBOL = 24  # constriction's probability precision: no symbol costs more
_FLUSH_WORDS = 2  # the coder's 64-bit state


def _constriction() -> Any:
    try:
        import constriction  # noqa: PLC0415
    except ImportError as exc:  # a hard requirement: no other coder would give the same bytes
        raise MissingDependencyError(
            "the entropy coder needs the 'constriction' package (pip install -r requirements.txt)") from exc
    return constriction


# --------------------------------------------------------------------------------------------
# Helpers: entropy, frequency normalisation
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
    # Python ints and floats: the tables are short, so per-element numpy calls would dominate.
    # Every float is the same IEEE operation on the same values as a numpy formulation would be.
    counts_present = c[present].tolist()
    cp = [float(x) for x in counts_present]
    total = int(c.sum())
    f = [max(1, x * m // total) for x in counts_present]  # exact: counts * 2**16 stays far below 2**63
    log2 = math.log2

    def gain(i: int) -> float:  # bits saved by f[i] += 1
        return cp[i] * (log2(f[i] + 1) - log2(f[i]))

    def loss(i: int) -> float:  # bits added by f[i] -= 1 (inf when it would reach 0)
        return cp[i] * (log2(f[i]) - log2(f[i] - 1)) if f[i] > 1 else math.inf

    # |delta| <= number of present symbols (floor loses < 1 each, max(1, .) adds <= 1 each).
    delta = m - sum(f)
    step, key = (1, lambda i: (-gain(i), i)) if delta > 0 else (-1, lambda i: (loss(i), i))
    heap = [key(i) for i in range(len(f))] if delta else []
    heapq.heapify(heap)
    for _ in range(abs(delta)):
        i = heapq.heappop(heap)[1]
        f[i] += step
        heapq.heappush(heap, key(i))

    # Single-unit moves from the cheapest donor to the best taker while that strictly helps
    # (usually none; bounded so a pathological table cannot loop for long). Ties: lowest index
    # (max/min return the first extreme element).
    if len(f) > 1:
        gains = [gain(i) for i in range(len(f))]
        losses = [loss(i) for i in range(len(f))]
        order = range(len(f))
        for _ in range(len(f) + 64):
            taker = max(order, key=gains.__getitem__)
            donor = min((i for i in order if i != taker), key=losses.__getitem__)
            if not gains[taker] > losses[donor] * (1 + 1e-12):
                break
            f[taker] += 1
            f[donor] -= 1
            for i in (taker, donor):
                gains[i], losses[i] = gain(i), loss(i)
    out = np.zeros(c.size, dtype=np.int64)
    out[present] = np.asarray(f, dtype=np.int64)
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def encode(symbols: Any, alphabet: int, *, prob_bits: int = DEFAULT_PROB_BITS) -> bytes:
    """Code one stream of symbols (see the module docstring for the layout).

    Parameters
    ----------
    symbols : np.ndarray [n] integer dtype, values in ``[0, alphabet)``, n >= 1
    alphabet : int in 2..MAX_ALPHABET
    prob_bits : int in 1..16, precision of the stored frequency table (default 12)

    Returns
    -------
    bytes, self-delimiting: :func:`decode` needs only ``n`` and ``alphabet``.
    """
    return encode_many([symbols], alphabet, prob_bits=prob_bits)[0]


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


def encode_many(streams: Sequence[Any], alphabet: int | Sequence[int], *,
                prob_bits: int = DEFAULT_PROB_BITS) -> list[bytes]:
    """Code several streams, each with its own table.

    Parameters
    ----------
    streams : sequence of np.ndarray [n_j] integer, values in ``[0, alphabet_j)``, n_j >= 1
    alphabet : int in 2..MAX_ALPHABET for all streams, or one per stream
    prob_bits : int in 1..16 (per stream raised to fit its distinct-symbol count)

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
    c = _constriction()
    out = []
    for s, a in zip(syms, alphabets):
        counts = np.bincount(s, minlength=a)
        present = np.flatnonzero(counts)
        b = max(int(prob_bits), (present.size - 1).bit_length())  # every present symbol needs a slot
        freq = normalize_frequencies(counts, b)
        words = np.zeros(0, dtype=np.uint32)
        if present.size > 1:
            rank = np.zeros(a, dtype=np.int32)
            rank[present] = np.arange(present.size, dtype=np.int32)
            coder = c.stream.stack.AnsCoder()
            coder.encode_reverse(rank[s], _model(c, freq[present], b))
            words = coder.get_compressed()
        out.append(b"".join((_HEADER.pack(FORMAT_VERSION, b, words.size), _table_bytes(freq, b),
                             words.astype("<u4").tobytes())))
    return out


def decode_many(
    buf: bytes | bytearray | memoryview, ns: Sequence[int], alphabet: int | Sequence[int]
) -> tuple[list[np.ndarray], int]:
    """Decode consecutive streams (as ``b"".join(encode_many(...))`` wrote them).

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
        Truncated buffer, bad header field or format version, bad table (bits beyond the
        alphabet, padding bits, frequencies not summing to ``2**prob_bits``), more words than
        ``n`` symbols can need, or words the decoder does not consume exactly.
    """
    ns = [_check_count(n, j) for j, n in enumerate(ns)]
    alphabets = _alphabets(alphabet, len(ns))
    raw = np.frombuffer(buf, dtype=np.uint8)
    c = _constriction() if ns else None
    pos = 0
    result = []
    for j, (n, a) in enumerate(zip(ns, alphabets)):
        where = f"entropy stream {j} (at byte {pos})"
        prob_bits, freq, words, pos = _parse_stream(raw, pos, n, a, where)
        present = np.flatnonzero(freq)
        dtype = np.uint8 if a <= 256 else np.uint16
        if present.size == 1:
            result.append(np.full(n, present[0], dtype=dtype))
            continue
        try:
            coder = c.stream.stack.AnsCoder(words)
            rank = coder.decode(_model(c, freq[present], prob_bits), n)
            consumed = coder.is_empty()
        except (ValueError, RuntimeError, AssertionError) as exc:  # constriction's report of bad words
            raise CorruptBlobError(f"{where}: the coder rejected its words ({exc})") from None
        if not consumed:
            raise CorruptBlobError(f"{where}: {n} symbols decoded but words remain (corrupt or mislabelled stream)")
        result.append(present.astype(dtype)[rank])
    return result, pos


def _model(c: Any, freq_present: np.ndarray, prob_bits: int) -> Any:
    """The categorical model both sides build from a stream's table (present symbols only)."""
    return c.stream.model.Categorical(freq_present.astype(np.float64) / (1 << prob_bits), perfect=False)


# --------------------------------------------------------------------------------------------
# Checks and table bytes
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_alphabet(alphabet: int) -> int:
    if not _is_int(alphabet) or not 2 <= alphabet <= MAX_ALPHABET:
        raise InputError(f"entropy-coder alphabet must be an integer in 2..{MAX_ALPHABET}, got {alphabet!r}")
    return int(alphabet)


def _alphabets(alphabet: int | Sequence[int], n_streams: int) -> list[int]:
    """One alphabet per stream, from a shared int or a per-stream sequence."""
    if _is_int(alphabet):
        return [_check_alphabet(alphabet)] * n_streams
    if isinstance(alphabet, (str, bytes)) or not isinstance(alphabet, Sequence | np.ndarray):
        raise InputError(f"entropy-coder alphabet must be an int or a sequence of ints, got {alphabet!r}")
    if len(alphabet) != n_streams:
        raise InputError(f"got {len(alphabet)} alphabets for {n_streams} streams")
    return [_check_alphabet(a) for a in alphabet]


def _check_count(n: int, j: int) -> int:
    if not _is_int(n) or not 1 <= n < 1 << 32:
        raise InputError(f"entropy stream {j}: symbol count must be an integer in 1..2**32-1, got {n!r}")
    return int(n)


def _check_symbols(symbols: Any, alphabet: int, j: int) -> np.ndarray:
    if hasattr(symbols, "__cuda_array_interface__"):
        raise InputError(f"entropy stream {j}: symbols are a GPU array; move them to the host (numpy) first")
    s = np.asarray(symbols)
    if s.ndim != 1:
        raise InputError(f"entropy stream {j}: symbols must be a 1-D array, got shape {s.shape}")
    if s.dtype.kind not in "iu":
        raise InputError(f"entropy stream {j}: symbols must have an integer dtype, got {s.dtype}")
    if s.size == 0:
        raise InputError(f"entropy stream {j}: cannot code an empty stream")
    if s.size >= 1 << 32:
        raise InputError(f"entropy stream {j}: at most 2**32-1 symbols per stream, got {s.size}")
    lo, hi = int(s.min()), int(s.max())
    if lo < 0 or hi >= alphabet:
        raise InputError(f"entropy stream {j}: symbols must lie in [0, {alphabet}), found values in [{lo}, {hi}]")
    return s.astype(np.intp, copy=False)


def _table_bytes(freq: np.ndarray, prob_bits: int) -> bytes:
    present = freq > 0
    bitmap = np.packbits(present, bitorder="little").tobytes()
    return bitmap + pack_bits(freq[present] - 1, prob_bits).tobytes()


def _parse_stream(raw: np.ndarray, pos: int, n: int, alphabet: int, where: str
                  ) -> tuple[int, np.ndarray, np.ndarray, int]:
    """Read and validate one stream: (prob_bits, freq [alphabet], words [W] uint32, next offset)."""

    def need(nbytes: int, what: str) -> None:
        if raw.size - pos < nbytes:
            raise CorruptBlobError(f"{where}: truncated: {what} needs {nbytes} bytes, {raw.size - pos} remain")

    need(1, "format version")
    if raw[pos] != FORMAT_VERSION:
        raise CorruptBlobError(f"{where}: format version {raw[pos]}, this library reads {FORMAT_VERSION} "
                               f"(version 1 blobs came from the numpy rANS coder before the switch; re-encode them)")
    need(_HEADER.size, "header")
    _, prob_bits, n_words = _HEADER.unpack_from(raw, pos)
    pos += _HEADER.size
    if not 1 <= prob_bits <= MAX_PROB_BITS:
        raise CorruptBlobError(f"{where}: prob_bits {prob_bits} outside 1..{MAX_PROB_BITS}")
    most = -(-_MAX_BITS_PER_SYMBOL * n // 32) + _FLUSH_WORDS
    if n_words > most:
        raise CorruptBlobError(f"{where}: {n_words} words for {n} symbols (at most {most})")

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
    pad = 8 * nf - n_present * prob_bits  # the last byte's unused high bits (LSB-first packing)
    if pad and int(packed[-1]) >> (8 - pad):
        raise CorruptBlobError(f"{where}: nonzero padding bits after the frequency table")
    if int(fvals.sum()) != 1 << prob_bits:
        raise CorruptBlobError(f"{where}: frequencies sum to {int(fvals.sum())}, not 2**{prob_bits}")
    if (n_present == 1) != (n_words == 0):
        raise CorruptBlobError(f"{where}: {n_words} words for a table of {n_present} present symbol(s)")
    freq = np.zeros(alphabet, dtype=np.int64)
    freq[present] = fvals

    need(4 * n_words, "word stream")
    words = np.frombuffer(raw[pos : pos + 4 * n_words].tobytes(), dtype="<u4").astype(np.uint32)
    pos += 4 * n_words
    return prob_bits, freq, words, pos
