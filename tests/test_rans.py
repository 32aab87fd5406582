"""Entropy-coder stage (our stream format around constriction's ANS): round trips (sizes, alphabets,
single-symbol and tiny streams, batches of mixed streams), size within 0.05 bits/symbol of the
empirical entropy at n = 65536, optimal frequency tables, golden bytes (the pinned coder), the
refusal of format-1 streams, every input error and every corruption the decoder must catch."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakeya_lib.errors import CorruptBlobError, InputError, MissingDependencyError
from kakeya_lib.stages import rans
from kakeya_lib.stages.lloyd_max import gaussian_codebook, quantize

HEADER = struct.Struct("<BBI")  # version, prob_bits, words (the documented layout)
GOLDEN = (1943, "79779099e7239c10")  # constriction==0.5.0


def gaussian_symbols(rng: np.random.Generator, n: int, alphabet: int, spread: float = 0.25) -> np.ndarray:
    """Indices of a Gaussian quantised to ``alphabet`` uniform cells (±1/spread sigma)."""
    z = rng.standard_normal(n) * spread * alphabet / 2 + alphabet / 2
    return np.clip(np.floor(z), 0, alphabet - 1).astype(np.int64)


def lloyd_max_symbols(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """What the kakeya codec codes: N(0,1) coordinates through the Lloyd–Max quantiser."""
    z = rng.standard_normal(n).astype(np.float32)
    return quantize(z, gaussian_codebook(bits), np).astype(np.uint8)


def round_trip(symbols: np.ndarray, alphabet: int, **kw) -> bytes:
    blob = rans.encode(symbols, alphabet, **kw)
    out, used = rans.decode(blob, symbols.size, alphabet)
    assert used == len(blob)
    assert out.dtype == (np.uint8 if alphabet <= 256 else np.uint16)
    np.testing.assert_array_equal(out, symbols)
    return blob


def parse_layout(blob: bytes, alphabet: int) -> dict[str, int]:
    """Byte offsets of the stream's parts, from the documented layout."""
    _, prob_bits, words = HEADER.unpack_from(blob, 0)
    bitmap = HEADER.size
    present = np.unpackbits(np.frombuffer(blob[bitmap : bitmap + (alphabet + 7) // 8], np.uint8), bitorder="little")
    freqs = bitmap + (alphabet + 7) // 8
    words_at = freqs + (int(present.sum()) * prob_bits + 7) // 8
    assert words_at + 4 * words == len(blob)
    return {"prob_bits": prob_bits, "words": words, "bitmap": bitmap, "freqs": freqs, "words_at": words_at}


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100, 1000, 4097, 65536])
@pytest.mark.parametrize("alphabet", [2, 5, 8, 16])
def test_round_trip_gaussian(n, alphabet):
    rng = np.random.default_rng(n * 31 + alphabet)
    round_trip(gaussian_symbols(rng, n, alphabet), alphabet)


@pytest.mark.parametrize("alphabet", [256, 300, 4096, 65536])
def test_round_trip_large_alphabets(alphabet):
    rng = np.random.default_rng(alphabet)
    sym = gaussian_symbols(rng, 20000, alphabet, spread=0.05)
    round_trip(sym, alphabet)
    round_trip(rng.integers(0, alphabet, size=3000), alphabet)  # near-uniform, many distinct


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_round_trip_lloyd_max_indices(bits):
    round_trip(lloyd_max_symbols(np.random.default_rng(bits), 30000, bits), 1 << bits)


@pytest.mark.parametrize("prob_bits", [1, 2, 4, 8, 11, 12, 14, 16])
def test_round_trip_every_precision(prob_bits):
    rng = np.random.default_rng(prob_bits)
    sym = np.minimum(gaussian_symbols(rng, 5000, 8), (1 << prob_bits) - 1)  # fits 2**prob_bits slots
    blob = round_trip(sym, 8, prob_bits=prob_bits)
    assert blob[1] == prob_bits


def test_prob_bits_raised_to_fit_distinct_symbols():
    sym = np.arange(300) % 300
    blob = round_trip(sym, 300, prob_bits=4)
    assert blob[1] == 9  # 300 distinct symbols need 2**9 slots


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 65536])
@pytest.mark.parametrize("symbol", [0, 3, 7])
def test_single_symbol_stream(n, symbol):
    sym = np.full(n, symbol, dtype=np.uint8)
    blob = round_trip(sym, 8)
    lay = parse_layout(blob, 8)
    assert lay["words"] == 0  # one symbol: nothing to code
    assert len(blob) == 6 + 1 + 2  # header, bitmap, one 12-bit frequency


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_tiny_streams(n):
    rng = np.random.default_rng(n)
    round_trip(rng.integers(0, 5, size=n), 5)


def test_two_symbol_extremes():
    # a very skewed binary source: one rare symbol at freq 1
    sym = np.zeros(50000, dtype=np.uint8)
    sym[[0, 777, 49999]] = 1
    round_trip(sym, 2)
    round_trip(1 - sym, 2)


def test_input_dtypes_give_identical_bytes():
    rng = np.random.default_rng(5)
    sym = gaussian_symbols(rng, 3000, 8)
    blobs = {rans.encode(sym.astype(dt), 8) for dt in (np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64)}
    assert len(blobs) == 1


def test_decode_accepts_bytes_like_and_leaves_trailing_bytes():
    rng = np.random.default_rng(6)
    sym = gaussian_symbols(rng, 1234, 8)
    blob = rans.encode(sym, 8)
    padded = b"\xAA\xBB" + blob + b"trailing garbage"
    for buf in (bytearray(padded), memoryview(padded), np.frombuffer(padded, np.uint8)):
        out, used = rans.decode(memoryview(buf)[2:], sym.size, 8)
        assert used == len(blob)
        np.testing.assert_array_equal(out, sym)


# --- batched API -------------------------------------------------------------------------------


def test_batch_mixed_lengths_and_alphabets_matches_single_streams():
    rng = np.random.default_rng(7)
    specs = [(65536, 8), (1, 2), (1000, 16), (3, 5), (20000, 300), (4097, 8), (500, 4), (65536, 9)]
    streams = [gaussian_symbols(rng, n, a) for n, a in specs]
    streams.insert(3, np.full(777, 2, dtype=np.uint8))  # a single-symbol stream in the batch
    alphabets = [a for _, a in specs]
    alphabets.insert(3, 4)
    blobs = rans.encode_many(streams, alphabets)
    # batching changes nothing: each stream's bytes equal the single-stream encoding
    assert blobs == [rans.encode(s, a) for s, a in zip(streams, alphabets)]
    buf = b"".join(blobs) + b"\x00tail"
    out, used = rans.decode_many(buf, [s.size for s in streams], alphabets)
    assert used == len(buf) - 5
    for got, want, a in zip(out, streams, alphabets):
        assert got.dtype == (np.uint8 if a <= 256 else np.uint16)
        np.testing.assert_array_equal(got, want)


def test_batch_shared_alphabet_and_mixed_precisions():
    rng = np.random.default_rng(8)
    streams = [gaussian_symbols(rng, n, 8) for n in (100, 65536, 7, 30000)]
    # streams written at different prob_bits still decode in one batch
    blobs = [rans.encode(s, 8, prob_bits=b) for s, b in zip(streams, (9, 12, 14, 16))]
    out, used = rans.decode_many(b"".join(blobs), [s.size for s in streams], 8)
    assert used == sum(map(len, blobs))
    for got, want in zip(out, streams):
        np.testing.assert_array_equal(got, want)


def test_batch_empty():
    assert rans.encode_many([], 8) == []
    assert rans.decode_many(b"", [], 8) == ([], 0)


def test_batch_of_single_symbol_streams_codes_nothing():
    streams = [np.full(65536, 3, np.uint8), np.full(7, 0, np.uint8), np.full(10**6, 1, np.uint8)]
    blobs = rans.encode_many(streams, 4)
    assert all(len(b) == 6 + 1 + 2 for b in blobs)
    out, used = rans.decode_many(b"".join(blobs), [s.size for s in streams], 4)
    assert used == 3 * 9
    for got, want in zip(out, streams):
        np.testing.assert_array_equal(got, want)


def test_batch_big_with_many_small_round_trips():
    rng = np.random.default_rng(9)
    streams = [gaussian_symbols(rng, 200_000, 8)] + [gaussian_symbols(rng, 300, 8) for _ in range(12)]
    blobs = rans.encode_many(streams, 8)
    out, used = rans.decode_many(b"".join(blobs), [s.size for s in streams], 8)
    assert used == sum(map(len, blobs))
    for got, want in zip(out, streams):
        np.testing.assert_array_equal(got, want)


# --- size and model ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["lloyd_max_3bit", "gauss7", "gauss9"])
def test_size_within_005_bits_of_entropy_at_65536(source):
    rng = np.random.default_rng(11)
    n = 65536
    if source == "lloyd_max_3bit":
        sym, alphabet = lloyd_max_symbols(rng, n, 3), 8
    else:
        alphabet = int(source[-1])
        sym = gaussian_symbols(rng, n, alphabet, spread=0.22)
    blob = round_trip(sym, alphabet)
    overhead = 8 * len(blob) / n - rans.entropy_bits(sym, alphabet)
    assert 0 < overhead < 0.05, overhead


def test_entropy_bits():
    assert rans.entropy_bits(np.arange(16) % 8, 8) == pytest.approx(3.0)
    assert rans.entropy_bits(np.zeros(5, np.uint8), 2) == 0.0
    assert rans.entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def _coded_bits(counts, freq) -> float:
    m = int(np.sum(freq))
    return sum(c * math.log2(m / f) for c, f in zip(counts, freq) if c)


def test_normalize_frequencies_is_optimal_on_small_cases():
    rng = np.random.default_rng(12)
    for _ in range(150):
        alphabet, prob_bits = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        counts = rng.integers(0, 60, size=alphabet) * (rng.random(alphabet) < 0.8)
        if counts.sum() == 0 or np.count_nonzero(counts) > 1 << prob_bits:
            continue
        freq = rans.normalize_frequencies(counts, prob_bits)
        assert freq.sum() == 1 << prob_bits
        assert ((freq > 0) == (counts > 0)).all()
        present = np.flatnonzero(counts)
        best = min(
            _coded_bits(counts[present], combo)
            for combo in itertools.product(range(1, (1 << prob_bits) + 1), repeat=present.size)
            if sum(combo) == 1 << prob_bits
        )
        assert _coded_bits(counts[present], freq[present]) == pytest.approx(best, abs=1e-9)


def test_normalize_frequencies_rare_symbols_and_errors():
    counts = np.array([10**6, 1, 1, 0, 1, 5])
    freq = rans.normalize_frequencies(counts, 12)
    assert freq.sum() == 4096 and freq[3] == 0 and freq[[1, 2, 4]].tolist() == [1, 1, 1]
    assert rans.normalize_frequencies([0, 9, 0], 12).tolist() == [0, 4096, 0]
    for bad in ([0, 0], [[1, 2]], [1, -1]):
        with pytest.raises(InputError):
            rans.normalize_frequencies(bad, 12)
    with pytest.raises(InputError):
        rans.normalize_frequencies(np.ones(5), 2)  # 5 symbols, 4 slots


def test_deterministic():
    rng = np.random.default_rng(13)
    streams = [gaussian_symbols(rng, n, 8) for n in (65536, 999)]
    assert rans.encode_many(streams, 8) == rans.encode_many([s.copy() for s in streams], 8)
    assert rans.encode(streams[1], 8) == rans.encode(streams[1], 8)


def test_golden_bytes():
    # The bytes depend on the pinned constriction version (its model quantisation and word
    # layout); a change there would silently change every published byte count.
    sym = gaussian_symbols(np.random.default_rng(14), 5000, 16)
    blob = rans.encode(sym, 16)
    assert (len(blob), hashlib.sha256(blob).hexdigest()[:16]) == GOLDEN


def test_format_1_streams_are_refused_by_name():
    legacy = struct.pack("<BBHI", 1, 12, 1, 0) + b"\x01" + b"\xff\x0f" + struct.pack("<I", 1 << 16)
    with pytest.raises(CorruptBlobError, match="format version 1.*reads 2.*re-encode"):
        rans.decode(legacy, 10, 8)


def test_missing_constriction_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_constriction(name, *args, **kwargs):
        if name == "constriction":
            raise ImportError("No module named 'constriction'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_constriction)
    with pytest.raises(MissingDependencyError, match="constriction"):
        rans.encode(np.array([0, 1, 2]), 8)


# --- input errors ------------------------------------------------------------------------------


class _FakeGpuArray:
    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": (3,), "typestr": "<i8", "data": (0, False), "version": 3}


@pytest.mark.parametrize(
    "symbols, alphabet, match",
    [
        (np.zeros(0, np.int64), 8, "empty"),
        (np.zeros((2, 3), np.int64), 8, "1-D"),
        (np.zeros(4, np.float32), 8, "integer dtype"),
        (np.zeros(4, bool), 8, "integer dtype"),
        (np.array([0, 8]), 8, r"\[0, 8\)"),
        (np.array([-1, 2]), 8, r"\[0, 8\)"),
        (np.array([0, 1]), 1, "alphabet"),
        (np.array([0, 1]), rans.MAX_ALPHABET + 1, "alphabet"),
        (np.array([0, 1]), True, "alphabet"),
        (np.array([0, 1]), 2.0, "alphabet"),
        (_FakeGpuArray(), 8, "host"),
    ],
)
def test_encode_input_errors(symbols, alphabet, match):
    with pytest.raises(InputError, match=match):
        rans.encode(symbols, alphabet)


@pytest.mark.parametrize("kw", [{"prob_bits": 0}, {"prob_bits": 17}, {"prob_bits": 12.0}])
def test_encode_parameter_errors(kw):
    with pytest.raises(InputError):
        rans.encode(np.array([0, 1, 2]), 8, **kw)


def test_batch_input_errors():
    with pytest.raises(InputError, match="2 alphabets for 3 streams"):
        rans.encode_many([np.array([0, 1])] * 3, [4, 4])
    with pytest.raises(InputError, match="stream 1"):
        rans.encode_many([np.array([0, 1]), np.array([0, 9])], 8)
    with pytest.raises(InputError):
        rans.decode_many(b"", [0], 8)
    with pytest.raises(InputError):
        rans.decode(b"", 5, 1)


# --- corruption --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_blob() -> tuple[np.ndarray, bytes]:
    sym = gaussian_symbols(np.random.default_rng(21), 600, 8)
    return sym, rans.encode(sym, 8)


def _patched(blob: bytes, at: int, data: bytes) -> bytes:
    return blob[:at] + data + blob[at + len(data) :]


def test_every_truncation_raises(small_blob):
    sym, blob = small_blob
    for cut in range(len(blob)):
        with pytest.raises(CorruptBlobError, match="truncated|words remain|rejected"):
            rans.decode(blob[:cut], sym.size, 8)


def test_truncation_of_a_large_stream_raises():
    sym = gaussian_symbols(np.random.default_rng(22), 65536, 8)
    blob = rans.encode(sym, 8)
    for cut in (0, 3, 6, 7, 20, 100, len(blob) // 2, len(blob) - 2, len(blob) - 1):
        with pytest.raises(CorruptBlobError, match="truncated"):
            rans.decode(blob[:cut], sym.size, 8)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("version", 0, "format version"),
        ("version", 1, "format version 1"),
        ("version", 3, "format version"),
        ("prob_bits", 0, "prob_bits"),
        ("prob_bits", 17, "prob_bits"),
        ("words", 453, "453 words for 600 symbols"),
        ("words", 0, "0 words for a table"),
    ],
)
def test_bad_header_fields(small_blob, field, value, match):
    sym, blob = small_blob
    fields = dict(zip(("version", "prob_bits", "words"), HEADER.unpack_from(blob)))
    fields[field] = value
    with pytest.raises(CorruptBlobError, match=match):
        rans.decode(_patched(blob, 0, HEADER.pack(*fields.values())), sym.size, 8)


def test_bad_tables():
    sym = np.array([0, 1, 2, 1, 1, 0, 2, 1] * 10)  # alphabet 5: symbols 3, 4 absent
    blob = rans.encode(sym, 5)
    lay = parse_layout(blob, 5)
    with pytest.raises(CorruptBlobError, match="symbol >= alphabet"):
        rans.decode(_patched(blob, lay["bitmap"], bytes([blob[lay["bitmap"]] | 0x80])), sym.size, 5)
    with pytest.raises(CorruptBlobError, match="no symbol present"):
        rans.decode(_patched(blob, lay["bitmap"], b"\x00"), sym.size, 5)
    with pytest.raises(CorruptBlobError, match="sum to"):
        rans.decode(_patched(blob, lay["freqs"], bytes([blob[lay["freqs"]] ^ 0x01])), sym.size, 5)
    # 3 frequencies x 12 bits = 4.5 bytes: the last half byte is padding and must be zero
    last = lay["words_at"] - 1
    with pytest.raises(CorruptBlobError, match="padding"):
        rans.decode(_patched(blob, last, bytes([blob[last] | 0x80])), sym.size, 5)
    # a symbol marked present with no room in the table (bitmap grows, frequencies misread)
    with pytest.raises(CorruptBlobError):
        rans.decode(_patched(blob, lay["bitmap"], bytes([blob[lay["bitmap"]] | 0x08])), sym.size, 5)


def test_missing_and_extra_words(small_blob):
    sym, blob = small_blob
    version, prob_bits, words = HEADER.unpack_from(blob)
    short = HEADER.pack(version, prob_bits, words - 1) + blob[HEADER.size : -4]
    with pytest.raises(CorruptBlobError, match="words remain|rejected"):
        rans.decode(short, sym.size, 8)
    long = HEADER.pack(version, prob_bits, words + 1) + blob[HEADER.size :] + b"\x34\x12\x00\x01"
    with pytest.raises(CorruptBlobError, match="words remain|rejected"):
        rans.decode(long, sym.size, 8)


def test_too_few_symbols_is_caught(small_blob):
    # (too many is not: an emptied ANS stack keeps decoding; n comes from the CRC-checked
    # container and codec headers)
    sym, blob = small_blob
    for n in (1, sym.size // 2, sym.size - 1):
        with pytest.raises(CorruptBlobError, match="words remain|words for"):
            rans.decode(blob, n, 8)


def test_every_single_byte_flip_raises_or_decodes_cleanly(small_blob):
    sym, blob = small_blob
    caught = 0
    for at, mask in itertools.product(range(len(blob)), (0x01, 0xFF)):
        try:
            out, used = rans.decode(_patched(blob, at, bytes([blob[at] ^ mask])), sym.size, 8)
        except CorruptBlobError:
            caught += 1
        else:
            assert out.shape == sym.shape and used <= len(blob) + 3 * sym.size
    assert caught >= 0.99 * 2 * len(blob)


def test_corruption_in_one_stream_of_a_batch_names_it():
    rng = np.random.default_rng(23)
    streams = [gaussian_symbols(rng, n, 8) for n in (5000, 300, 5000)]
    blobs = rans.encode_many(streams, 8)
    bad = blobs[1][:-7] + bytes([blobs[1][-7] ^ 0x40]) + blobs[1][-6:]
    with pytest.raises(CorruptBlobError, match="stream 1"):
        rans.decode_many(blobs[0] + bad + blobs[2], [s.size for s in streams], 8)


# --- property test -----------------------------------------------------------------------------


@st.composite
def _streams(draw):
    alphabet = draw(st.integers(2, 300))
    n = draw(st.integers(1, 200))
    skew = draw(st.sampled_from(["uniform", "few", "one"]))
    if skew == "one":
        values = [draw(st.integers(0, alphabet - 1))] * n
    else:
        pool = draw(st.lists(st.integers(0, alphabet - 1), min_size=1, max_size=alphabet if skew == "uniform" else 3))
        values = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    return np.array(values, dtype=np.int64), alphabet


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(_streams(), min_size=1, max_size=4),
    prob_bits=st.integers(1, 16),
)
def test_round_trip_property(data, prob_bits):
    streams = [s for s, _ in data]
    alphabets = [a for _, a in data]
    blobs = rans.encode_many(streams, alphabets, prob_bits=prob_bits)
    out, used = rans.decode_many(b"".join(blobs) + b"\xff", [s.size for s in streams], alphabets)
    assert used == sum(map(len, blobs))
    for got, want in zip(out, streams):
        np.testing.assert_array_equal(got, want)
