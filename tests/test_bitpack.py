"""Bit packing (spec §1.12, §9 quantize.rs pack/unpack items): LSB-first layout, exact byte counts,
round trips for every width 1..16 against the bit-by-bit reference, and the error paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakeya_lib.bitpack import (MAX_BITS, bits_for, pack_bits, pack_bits_reference, pack_bits_wide, packed_nbytes,
                                packed_nbytes_wide, unpack_bits, unpack_bits_wide)
from kakeya_lib.errors import CorruptBlobError, InputError

from .conftest import to_np

ALL_WIDTHS = list(range(1, MAX_BITS + 1))


def _packed_bytes(xp, values, bits) -> bytes:
    return to_np(pack_bits(xp.asarray(np.asarray(values, dtype=np.int64)), bits)).tobytes()


def test_seed_layout_two_bits_lsb_first(xp):
    assert _packed_bytes(xp, [1, 2, 3, 0], 2) == bytes([0b00_11_10_01])


def test_seed_layout_four_bits_two_per_byte(xp):
    assert _packed_bytes(xp, [0x5, 0xA, 0xF, 0x3, 0x0, 0xC], 4) == bytes([0xA5, 0x3F, 0xC0])


def test_docstring_layout_three_bits_straddles_a_byte(xp):
    # v0=5, v1=3, v2=6 -> byte 0 = 0x9D, byte 1 = 0x01 (module docstring drawing)
    assert _packed_bytes(xp, [5, 3, 6], 3) == bytes([0x9D, 0x01])


def test_sixteen_bits_are_little_endian_words(xp):
    assert _packed_bytes(xp, [0x1234, 0xABCD], 16) == bytes([0x34, 0x12, 0xCD, 0xAB])


@pytest.mark.parametrize("bits", ALL_WIDTHS)
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 13, 31, 65])
def test_pack_matches_reference_and_round_trips(xp, rng, bits, n):
    values = rng.integers(0, 1 << bits, size=n)
    packed = pack_bits(xp.asarray(values), bits)
    assert to_np(packed).dtype == np.uint8
    assert to_np(packed).tobytes() == pack_bits_reference(values.tolist(), bits)
    back = unpack_bits(packed, bits, n)
    assert to_np(back).dtype == np.int64
    np.testing.assert_array_equal(to_np(back), values)


@pytest.mark.parametrize("bits", ALL_WIDTHS)
def test_extreme_values_round_trip(xp, bits):
    top = (1 << bits) - 1
    values = np.array([top, 0, top, top, 0, 1, top], dtype=np.int64)
    back = unpack_bits(pack_bits(xp.asarray(values), bits), bits, values.size)
    np.testing.assert_array_equal(to_np(back), values)


@pytest.mark.parametrize("bits", ALL_WIDTHS)
@pytest.mark.parametrize("n", [0, 1, 5, 8, 11, 100])
def test_byte_count_is_ceil_n_bits_over_8(xp, rng, bits, n):
    expected = -(-n * bits // 8)
    assert packed_nbytes(n, bits) == expected
    packed = pack_bits(xp.asarray(rng.integers(0, 1 << bits, size=n)), bits)
    assert int(packed.size) == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_any_integer_dtype_packs_the_same(xp, dtype):
    values = np.array([3, 0, 7, 5, 1], dtype=dtype)
    assert _packed_bytes(xp, values, 3) == pack_bits_reference([3, 0, 7, 5, 1], 3)


def test_unpack_ignores_trailing_bytes(xp):
    packed = np.frombuffer(pack_bits_reference([1, 2, 3], 2) + b"\xff\xff", dtype=np.uint8)
    back = unpack_bits(xp.asarray(packed), 2, 3)
    np.testing.assert_array_equal(to_np(back), [1, 2, 3])


def test_empty_input_packs_to_nothing(xp):
    assert int(pack_bits(xp.zeros(0, dtype=xp.int64), 5).size) == 0
    assert int(unpack_bits(xp.zeros(0, dtype=xp.uint8), 5, 0).size) == 0


@pytest.mark.parametrize("bad", [0, 17, -1, 2.5, "3", None])
def test_bad_widths_are_rejected(xp, bad):
    with pytest.raises(InputError, match="bit width"):
        pack_bits(xp.asarray([0, 1]), bad)
    with pytest.raises(InputError, match="bit width"):
        unpack_bits(xp.zeros(4, dtype=xp.uint8), bad, 2)
    with pytest.raises(InputError, match="bit width"):
        packed_nbytes(3, bad)


@pytest.mark.parametrize(("bits", "values"), [(1, [0, 2]), (3, [8]), (8, [256]), (16, [1 << 16]), (4, [-1, 3])])
def test_out_of_range_values_are_rejected(xp, bits, values):
    with pytest.raises(InputError, match=r"values must lie in \[0, "):
        pack_bits(xp.asarray(np.asarray(values, dtype=np.int64)), bits)


def test_non_integer_and_non_1d_inputs_are_rejected(xp):
    with pytest.raises(InputError, match="integers"):
        pack_bits(xp.asarray([0.0, 1.0]), 2)
    with pytest.raises(InputError, match="1-D"):
        pack_bits(xp.zeros((2, 2), dtype=xp.int64), 2)
    with pytest.raises(InputError, match="uint8"):
        unpack_bits(xp.zeros(4, dtype=xp.int32), 2, 4)


@pytest.mark.parametrize("bits", [1, 3, 8, 9, 16])
def test_truncated_stream_is_corrupt(xp, rng, bits):
    n = 13
    packed = pack_bits(xp.asarray(rng.integers(0, 1 << bits, size=n)), bits)
    for cut in range(int(packed.size)):
        with pytest.raises(CorruptBlobError, match="need"):
            unpack_bits(packed[:cut], bits, n)


def test_negative_count_is_rejected():
    with pytest.raises(InputError):
        packed_nbytes(-1, 3)


@pytest.mark.parametrize(
    ("n_symbols", "bits"), [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (256, 8), (257, 9)]
)
def test_bits_for_is_the_smallest_sufficient_width(n_symbols, bits):
    assert bits_for(n_symbols) == bits
    if bits:
        assert (1 << bits) >= n_symbols > (1 << (bits - 1))


def test_bits_for_rejects_no_symbols():
    with pytest.raises(InputError):
        bits_for(0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), bits=st.integers(1, MAX_BITS), n=st.integers(0, 70))
def test_property_round_trip_random_widths_and_lengths(xp, data, bits, n):
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    packed = pack_bits(xp.asarray(np.asarray(values, dtype=np.int64)), bits)
    assert to_np(packed).tobytes() == pack_bits_reference(values, bits)
    assert int(packed.size) == packed_nbytes(n, bits)
    np.testing.assert_array_equal(to_np(unpack_bits(packed, bits, n)), values)


@pytest.mark.parametrize("bits", [1, 9, 16, 17, 23, 32])
def test_wide_fields_round_trip_and_match_pack_bits_up_to_16(xp, rng, bits):
    values = rng.integers(0, 1 << bits, size=301, dtype=np.int64)
    values[:2] = [0, (1 << bits) - 1]
    packed = pack_bits_wide(xp.asarray(values), bits)
    assert packed.size == packed_nbytes_wide(301, bits)
    if bits <= MAX_BITS:
        assert to_np(packed).tobytes() == to_np(pack_bits(xp.asarray(values), bits)).tobytes()
    else:
        assert packed_nbytes_wide(301, bits) == packed_nbytes(301, 16) + packed_nbytes(301, bits - 16)
    np.testing.assert_array_equal(to_np(unpack_bits_wide(packed, bits, 301)), values)


def test_wide_fields_reject_short_input_and_bad_widths(xp):
    packed = pack_bits_wide(xp.asarray(np.arange(10)), 20)
    with pytest.raises(CorruptBlobError):
        unpack_bits_wide(packed[:-1], 20, 10)
    for bad in (0, 33):
        with pytest.raises(InputError):
            pack_bits_wide(xp.asarray(np.arange(3)), bad)
    with pytest.raises(InputError):
        pack_bits_wide(xp.asarray(np.array([1 << 20])), 20)
