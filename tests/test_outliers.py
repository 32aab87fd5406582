"""Outlier compensation (spec §1.11): sparse (flat position, value) pairs for |z| > T, written back
exactly at decode; malformed position lists are CorruptBlobError."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib.errors import CorruptBlobError
from kakeya_lib.stages import outliers

from .conftest import to_np


def _f32(xp, a):
    return xp.asarray(np.asarray(a, dtype=np.float32))


def test_find_returns_ascending_flat_positions_above_the_threshold(xp):
    z = _f32(xp, [[0.1, -2.5, 2.0], [3.0, -0.2, -2.01]])
    pos, vals = outliers.find(z, 2.0, xp)
    np.testing.assert_array_equal(to_np(pos), [1, 3, 5])  # |2.0| is not > 2.0
    assert to_np(pos).dtype == np.int64
    np.testing.assert_array_equal(to_np(vals), np.float32([-2.5, 3.0, -2.01]))


def test_find_matches_a_brute_force_scan(xp, rng):
    z = rng.standard_normal((40, 16)).astype(np.float32)
    pos, vals = outliers.find(_f32(xp, z), 1.5, xp)
    expected = [i for i, v in enumerate(z.reshape(-1)) if abs(v) > 1.5]
    np.testing.assert_array_equal(to_np(pos), expected)
    np.testing.assert_array_equal(to_np(vals), z.reshape(-1)[expected])


def test_outlier_rate_on_gaussian_data_matches_the_spec(xp, rng):
    z = _f32(xp, rng.standard_normal((2000, 64)))
    # spec §1.11 rates = 2(1 - Phi(T)); observed 0.1352, 0.0460, 0.0122 (sampling sd ~3 % at T=2.5)
    for threshold, rate in ((1.5, 0.134), (2.0, 0.0455), (2.5, 0.0124)):
        pos, _ = outliers.find(z, threshold, xp)
        assert int(pos.size) / z.size == pytest.approx(rate, rel=0.12)


def test_threshold_zero_keeps_every_non_zero_entry_and_high_threshold_none(xp, rng):
    z = rng.standard_normal((5, 8)).astype(np.float32)
    z[2, 3] = 0.0
    pos, _ = outliers.find(_f32(xp, z), 0.0, xp)
    assert int(pos.size) == z.size - 1
    pos, vals = outliers.find(_f32(xp, z), 100.0, xp)
    assert int(pos.size) == 0 and int(vals.size) == 0


def test_apply_overwrites_exactly_those_positions(xp, rng):
    z = rng.standard_normal((6, 8)).astype(np.float32) * 3
    zhat = np.round(z).astype(np.float32)
    pos, vals = outliers.find(_f32(xp, z), 2.0, xp)
    out = to_np(outliers.apply(_f32(xp, zhat), pos, vals, xp))
    flat_pos = to_np(pos)
    assert out.shape == z.shape
    np.testing.assert_array_equal(out.reshape(-1)[flat_pos], z.reshape(-1)[flat_pos])
    untouched = np.setdiff1d(np.arange(z.size), flat_pos)
    np.testing.assert_array_equal(out.reshape(-1)[untouched], zhat.reshape(-1)[untouched])


def test_apply_round_trip_through_f16_values(xp):
    zhat = xp.zeros((2, 4), dtype=xp.float32)
    vals = np.float16([2.7, -3.1]).astype(np.float32)
    out = to_np(outliers.apply(zhat, xp.asarray(np.int64([0, 7])), _f32(xp, vals), xp))
    assert out[0, 0] == vals[0] and out[1, 3] == vals[1]
    assert np.count_nonzero(out) == 2


def test_apply_with_no_outliers_is_the_identity(xp):
    zhat = _f32(xp, [[1.0, 2.0]])
    out = outliers.apply(zhat, xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float32), xp)
    np.testing.assert_array_equal(to_np(out), [[1.0, 2.0]])


@pytest.mark.parametrize("positions", [[8], [3, 8], [0, 100]])
def test_apply_rejects_positions_outside_the_block(xp, positions):
    zhat = xp.zeros((2, 4), dtype=xp.float32)
    with pytest.raises(CorruptBlobError, match="outside the block"):
        outliers.apply(zhat, xp.asarray(np.int64(positions)), xp.ones(len(positions), dtype=xp.float32), xp)


@pytest.mark.parametrize("positions", [[3, 1], [2, 2], [0, 5, 4]])
def test_apply_rejects_positions_that_are_not_strictly_ascending(xp, positions):
    zhat = xp.zeros((2, 4), dtype=xp.float32)
    with pytest.raises(CorruptBlobError, match="not strictly ascending"):
        outliers.apply(zhat, xp.asarray(np.int64(positions)), xp.ones(len(positions), dtype=xp.float32), xp)


def test_apply_rejects_negative_positions(xp):
    zhat = xp.zeros((2, 4), dtype=xp.float32)
    with pytest.raises(CorruptBlobError):
        outliers.apply(zhat, xp.asarray(np.int64([-1])), xp.ones(1, dtype=xp.float32), xp)
