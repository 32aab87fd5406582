"""Storage float formats: exact round trips of representable values, bf16 round-to-nearest-even
(checked against torch), range errors that name the format, and corrupt-byte detection."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakeya_lib import floats
from kakeya_lib.errors import CorruptBlobError, InputError

from .conftest import to_np

try:
    import torch
except ModuleNotFoundError:  # the bf16 reference comparisons skip; everything else still runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (bf16 reference) is not installed")

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _all_finite_f16() -> np.ndarray:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    vals = bits.view(np.float16)
    return vals[np.isfinite(vals)].astype(np.float32)


def _bf16_reference(x: np.ndarray) -> np.ndarray:
    return torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).float().numpy()


def test_every_finite_f16_value_round_trips_exactly(xp):
    vals = _all_finite_f16()  # 63 490 values incl. subnormals and +-0
    x = xp.asarray(vals)
    np.testing.assert_array_equal(to_np(floats.round_to(x, "f16", xp)), vals)
    buf = floats.to_bytes(x, "f16", xp)
    assert buf == vals.astype("<f2").tobytes()
    back = floats.from_bytes(buf, "f16", vals.size, xp)
    np.testing.assert_array_equal(to_np(back), vals)
    # signed zeros survive
    assert np.array_equal(np.signbit(to_np(back)), np.signbit(vals))


def test_f32_round_trip_is_bit_exact(xp, rng):
    vals = np.concatenate([rng.standard_normal(100).astype(np.float32) * 1e3, [0.0, -0.0, 1e-45, 3.4e38, -3.4e38]])
    vals = vals.astype(np.float32)
    buf = floats.to_bytes(xp.asarray(vals), "f32", xp)
    assert len(buf) == 4 * vals.size
    back = to_np(floats.from_bytes(buf, "f32", vals.size, xp))
    assert back.tobytes() == vals.tobytes()


@needs_torch
def test_bf16_rounding_matches_torch_on_random_values(xp, rng):
    vals = np.concatenate(
        [
            rng.standard_normal(4000) * 10.0 ** rng.integers(-30, 30, size=4000),
            rng.standard_normal(1000) * 1e-40,  # float32 subnormals
        ]
    ).astype(np.float32)
    got = to_np(floats.round_to(xp.asarray(vals), "bf16", xp))
    np.testing.assert_array_equal(got, _bf16_reference(vals))


@needs_torch
def test_bf16_ties_round_to_even(xp):
    # f32 patterns exactly halfway between two bf16 values: low 16 bits = 0x8000
    hi = np.array([0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x4049, 0x404A, 0x0001, 0x7F7E], dtype=np.uint32)
    vals = ((hi << 16) | 0x8000).view(np.float32)
    got = to_np(floats.round_to(xp.asarray(vals), "bf16", xp))
    expected_hi = np.where(hi & 1, hi + 1, hi)  # odd mantissa rounds up to even, even stays
    np.testing.assert_array_equal(got, (expected_hi << 16).view(np.float32))
    np.testing.assert_array_equal(got, _bf16_reference(vals))
    # one ulp above/below the tie goes to the nearest neighbour
    above = ((hi << 16) | 0x8001).view(np.float32)
    below = ((hi << 16) | 0x7FFF).view(np.float32)
    up, down = ((hi + 1) << 16).view(np.float32), (hi << 16).view(np.float32)
    np.testing.assert_array_equal(to_np(floats.round_to(xp.asarray(above), "bf16", xp)), up)
    np.testing.assert_array_equal(to_np(floats.round_to(xp.asarray(below), "bf16", xp)), down)


@needs_torch
def test_bf16_bytes_are_the_upper_half_of_the_rounded_f32(xp):
    vals = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    buf = floats.to_bytes(xp.asarray(vals), "bf16", xp)
    assert len(buf) == 2 * vals.size
    rounded = _bf16_reference(vals)
    assert buf == (rounded.view(np.uint32) >> 16).astype("<u2").tobytes()
    np.testing.assert_array_equal(to_np(floats.from_bytes(buf, "bf16", vals.size, xp)), rounded)


def test_rounding_is_idempotent(xp, rng):
    x = xp.asarray(rng.standard_normal(200).astype(np.float32) * 100)
    for fmt in floats.FLOAT_FORMATS:
        once = floats.round_to(x, fmt, xp)
        np.testing.assert_array_equal(to_np(floats.round_to(once, fmt, xp)), to_np(once))


def test_f16_rounding_error_is_within_half_an_ulp(xp, rng):
    vals = (rng.standard_normal(1000) * 50).astype(np.float32)
    got = to_np(floats.round_to(xp.asarray(vals), "f16", xp))
    rel = np.abs(got - vals) / np.abs(vals)
    assert rel.max() <= 2.0**-11 * (1 + 1e-6)


def test_largest_f16_is_accepted_and_anything_beyond_is_an_error_naming_the_format(xp):
    ok = xp.asarray(np.array([65504.0, -65504.0], dtype=np.float32))
    np.testing.assert_array_equal(to_np(floats.round_to(ok, "f16", xp)), [65504.0, -65504.0])
    for bad in (65520.0, -1e5, 79111.0):  # 79 111 = the seed's whitened layer-0 K peak (spec §10.5)
        x = xp.asarray(np.array([1.0, bad], dtype=np.float32))
        with pytest.raises(InputError, match=r"f16.*max 65504"):
            floats.round_to(x, "f16", xp, "PCA mean")
        with pytest.raises(InputError, match="f16"):
            floats.to_bytes(x, "f16", xp)
    # the same value is fine in bf16 and f32
    big = xp.asarray(np.array([79111.0], dtype=np.float32))
    assert float(to_np(floats.round_to(big, "bf16", xp))[0]) == pytest.approx(79111.0, rel=2**-8)
    assert float(to_np(floats.round_to(big, "f32", xp))[0]) == 79111.0


def test_error_message_names_what_was_stored(xp):
    with pytest.raises(InputError, match="PCA mean reaches"):
        floats.round_to(xp.asarray([1e6]), "f16", xp, "PCA mean")


def test_bf16_and_f32_overflow_and_infinities_are_errors(xp):
    with pytest.raises(InputError, match="bf16"):
        floats.round_to(xp.asarray(np.array([3.4e38], dtype=np.float32)), "bf16", xp)
    with pytest.raises(InputError, match="f32"):
        floats.round_to(xp.asarray(np.array([np.inf], dtype=np.float32)), "f32", xp)
    with pytest.raises(InputError, match="f16"):
        floats.to_bytes(xp.asarray(np.array([-np.inf], dtype=np.float32)), "f16", xp)


def test_unknown_format_is_rejected(xp):
    with pytest.raises(InputError, match="unknown float storage format"):
        floats.round_to(xp.asarray([1.0]), "f8", xp)
    with pytest.raises(InputError, match="unknown float storage format"):
        floats.from_bytes(b"\x00\x00", "fp16", 1, xp)


@pytest.mark.parametrize("fmt", floats.FLOAT_FORMATS)
def test_from_bytes_with_the_wrong_length_is_corrupt(xp, fmt):
    buf = floats.to_bytes(xp.asarray([1.0, 2.0, 3.0]), fmt, xp)
    assert len(buf) == 3 * floats.NBYTES[fmt]
    for wrong in (buf[:-1], buf + b"\x00", b""):
        with pytest.raises(CorruptBlobError, match=f"expected {3 * floats.NBYTES[fmt]} bytes"):
            floats.from_bytes(wrong, fmt, 3, xp)


@pytest.mark.parametrize(
    ("fmt", "payload"),
    [
        ("f16", struct.pack("<HH", 0x3C00, 0x7C00)),  # 1.0, +inf
        ("f16", struct.pack("<HH", 0xFE00, 0x3C00)),  # nan, 1.0
        ("bf16", struct.pack("<HH", 0x3F80, 0xFF80)),  # 1.0, -inf
        ("bf16", struct.pack("<HH", 0x7FC0, 0x3F80)),  # nan, 1.0
        ("f32", struct.pack("<ff", 1.0, float("inf"))),
        ("f32", struct.pack("<ff", float("nan"), 1.0)),
    ],
)
def test_non_finite_stored_values_are_corrupt(xp, fmt, payload):
    with pytest.raises(CorruptBlobError, match="not finite"):
        floats.from_bytes(payload, fmt, 2, xp)


def test_from_bytes_accepts_memoryview_and_returns_float32_on_xp(xp):
    buf = memoryview(floats.to_bytes(xp.asarray([0.5, -4.0]), "f16", xp))
    out = floats.from_bytes(buf, "f16", 2, xp)
    assert type(out) is type(xp.zeros(1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(to_np(out), [0.5, -4.0])


def test_serialisation_is_row_major_little_endian(xp):
    x = xp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    assert floats.to_bytes(x, "f32", xp) == struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


@PROPERTY
@given(bits16=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))
def test_property_f16_and_bf16_patterns_round_trip(xp, bits16):
    pats = np.asarray(bits16, dtype=np.uint16)
    for fmt, vals in (
        ("f16", pats.view(np.float16).astype(np.float32)),
        ("bf16", (pats.astype(np.uint32) << 16).view(np.float32)),
    ):
        vals = vals[np.isfinite(vals)]
        buf = floats.to_bytes(xp.asarray(vals), fmt, xp)
        back = to_np(floats.from_bytes(buf, fmt, vals.size, xp))
        assert back.tobytes() == vals.tobytes()


@PROPERTY
@given(values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=0, max_size=40))
def test_property_f32_round_trip(xp, values):
    vals = np.asarray(values, dtype=np.float32)
    back = to_np(floats.from_bytes(floats.to_bytes(xp.asarray(vals), "f32", xp), "f32", vals.size, xp))
    assert back.tobytes() == vals.tobytes()
