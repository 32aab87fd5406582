"""Weighted spherical k-means with sign-invariant assignment (spec §1.6, §9 kmeans.rs): unit-norm
centres, k_eff, ignored rows, determinism, cluster recovery, and the (seg, t) assignment rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakeya_lib.errors import InputError
from kakeya_lib.stages import kmeans

from .conftest import to_np


def _f32(xp, a):
    return xp.asarray(np.asarray(a, dtype=np.float32))


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _two_line_clusters(rng, n_per=30, d=8):
    a, b = _unit(rng.standard_normal(d)), _unit(rng.standard_normal(d))
    b = _unit(b - (b @ a) * a)  # orthogonal lines
    signs = rng.choice([-1.0, 1.0], size=(n_per, 1))
    mags = rng.uniform(0.5, 3.0, size=(n_per, 1))
    rows_a = signs * mags * (a + 0.03 * rng.standard_normal((n_per, d)))
    rows_b = -signs * mags * (b + 0.03 * rng.standard_normal((n_per, d)))
    return np.concatenate([rows_a, rows_b]).astype(np.float32), a, b


def test_k_equal_to_n_gives_every_row_its_own_centre(xp, rng):
    c = rng.standard_normal((6, 4)).astype(np.float32) * 2
    centres = kmeans.fit(_f32(xp, c), 6, xp, seed=1)
    assert centres.shape == (6, 4)
    seg, t = kmeans.assign(_f32(xp, c), centres, xp)
    assert sorted(to_np(seg).tolist()) == list(range(6))
    np.testing.assert_allclose(np.abs(to_np(t)), np.linalg.norm(c, axis=1), rtol=1e-2)


@pytest.mark.parametrize(("storage", "tol"), [("f16", 1e-2), ("bf16", 1e-2), ("f32", 1e-5)])
def test_centres_are_unit_norm(xp, rng, storage, tol):
    c = _f32(xp, rng.standard_normal((100, 7)))
    centres = to_np(kmeans.fit(c, 8, xp, seed=3, storage=storage))
    # observed max |norm - 1|: f16 1.2e-4, bf16 1.7e-3
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=tol)


def test_centres_are_rounded_to_the_storage_format(xp, rng):
    centres = to_np(kmeans.fit(_f32(xp, rng.standard_normal((40, 5))), 4, xp, storage="f16"))
    np.testing.assert_array_equal(centres, centres.astype(np.float16).astype(np.float32))


def test_deterministic_per_seed(xp, rng):
    c = _f32(xp, rng.standard_normal((80, 6)))
    a = to_np(kmeans.fit(c, 5, xp, seed=99))
    b = to_np(kmeans.fit(c, 5, xp, seed=99))
    np.testing.assert_array_equal(a, b)


def test_recovers_two_well_separated_line_clusters(xp, rng):
    rows, a, b = _two_line_clusters(rng)
    centres = to_np(kmeans.fit(_f32(xp, rows), 2, xp, seed=5))
    cos = np.abs(centres.astype(np.float64) @ np.stack([a, b]).T)  # [2 centres, 2 lines]
    assert sorted(cos.max(axis=1)) == pytest.approx([1.0, 1.0], abs=1e-2)  # observed 0.9998, 0.9999
    assert {int(i) for i in cos.argmax(axis=1)} == {0, 1}
    seg, t = kmeans.assign(_f32(xp, rows), _f32(xp, centres), xp)
    seg = to_np(seg)
    assert len(set(seg[:30])) == 1 and len(set(seg[30:])) == 1 and seg[0] != seg[30]
    # both signs of a line share its centre: t carries the sign
    assert (to_np(t)[:30] < 0).any() and (to_np(t)[:30] > 0).any()


def test_a_row_and_its_negation_get_the_same_centre_with_opposite_t(xp, rng):
    c = rng.standard_normal((10, 5)).astype(np.float32)
    both = np.concatenate([c, -c])
    centres = kmeans.fit(_f32(xp, both), 3, xp, seed=2)
    seg, t = kmeans.assign(_f32(xp, both), centres, xp)
    seg, t = to_np(seg), to_np(t)
    np.testing.assert_array_equal(seg[:10], seg[10:])
    np.testing.assert_array_equal(t[:10], -t[10:])


def test_zero_rows_are_ignored_and_k_eff_is_the_valid_row_count(xp, rng):
    c = np.zeros((7, 4), dtype=np.float32)
    c[[1, 4, 6]] = rng.standard_normal((3, 4))
    centres = to_np(kmeans.fit(_f32(xp, c), 8, xp))
    assert centres.shape == (3, 4)
    for row in c[[1, 4, 6]]:
        assert np.max(np.abs(centres @ _unit(row))) > 0.999


def test_zero_weight_rows_are_ignored(xp, rng):
    main = np.concatenate([np.tile([1.0, 0.0, 0.0], (5, 1)), np.tile([0.0, 1.0, 0.0], (5, 1))])
    decoys = np.tile([0.0, 0.0, 50.0], (4, 1))
    c = _f32(xp, np.concatenate([main, decoys]))
    w = _f32(xp, [1.0] * 10 + [0.0] * 4)
    centres = to_np(kmeans.fit(c, 3, xp, weights=w, seed=0))
    assert centres.shape == (3, 3)  # 10 valid rows >= k: k_eff = 3
    assert np.abs(centres[:, 2]).max() < 1e-3  # no centre points at the decoys
    assert to_np(kmeans.fit(c, 8, xp, weights=_f32(xp, [1.0, 1.0] + [0.0] * 12))).shape == (2, 3)


@pytest.mark.parametrize(("k", "valid", "k_eff"), [(1, 5, 1), (4, 5, 4), (5, 5, 5), (9, 5, 5), (16, 1, 1)])
def test_k_eff_is_min_of_k_and_valid_rows(xp, rng, k, valid, k_eff):
    c = np.zeros((8, 3), dtype=np.float32)
    c[:valid] = rng.standard_normal((valid, 3))
    assert kmeans.fit(_f32(xp, c), k, xp).shape == (k_eff, 3)


def test_no_valid_rows_gives_the_first_axis(xp):
    for c, w in ((np.zeros((4, 3)), None), (np.ones((4, 3)), np.zeros(4))):
        centres = kmeans.fit(_f32(xp, c), 5, xp, weights=None if w is None else _f32(xp, w))
        np.testing.assert_array_equal(to_np(centres), [[1.0, 0.0, 0.0]])


def test_heavy_weight_pulls_the_centre(xp):
    rows = np.array([[1.0, 0.0], [np.cos(0.3), np.sin(0.3)]], dtype=np.float32)
    light = to_np(kmeans.fit(_f32(xp, rows), 1, xp, weights=_f32(xp, [1.0, 1.0]), storage="f32"))[0]
    heavy = to_np(kmeans.fit(_f32(xp, rows), 1, xp, weights=_f32(xp, [1.0, 1000.0]), storage="f32"))[0]
    assert np.arctan2(light[1], light[0]) == pytest.approx(0.15, abs=1e-3)
    assert np.arctan2(heavy[1], heavy[0]) == pytest.approx(0.3, abs=1e-3)


def test_single_iteration_still_gives_unit_centres(xp, rng):
    centres = to_np(kmeans.fit(_f32(xp, rng.standard_normal((30, 4))), 3, xp, max_iter=1, storage="f32"))
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("k", [0, -2])
def test_k_below_one_is_rejected(xp, rng, k):
    with pytest.raises(InputError, match="k >= 1"):
        kmeans.fit(_f32(xp, rng.standard_normal((5, 3))), k, xp)


def test_zero_dimensional_coefficients_are_rejected(xp):
    with pytest.raises(InputError, match="at least one coefficient dimension"):
        kmeans.fit(xp.zeros((5, 0), dtype=xp.float32), 2, xp)


def test_batched_fit_equals_separate_fits(xp, rng):
    c = rng.standard_normal((4, 20, 5)).astype(np.float32)
    c[1, 3:] = 0.0  # a block with only 3 valid rows (smaller k_eff)
    c[2] = 0.0  # a block with none
    w = rng.uniform(0.0, 2.0, size=(4, 20)).astype(np.float32)
    w[3, ::2] = 0.0
    batched = kmeans.fit_batched(_f32(xp, c), 6, xp, weights=_f32(xp, w), seed=4)
    for i, centres in enumerate(batched):
        alone = kmeans.fit(_f32(xp, c[i]), 6, xp, weights=_f32(xp, w[i]), seed=4)
        np.testing.assert_array_equal(to_np(centres), to_np(alone))
    assert [b.shape[0] for b in batched] == [6, 3, 1, 6]


# -- assign ------------------------------------------------------------------------------------


def test_assign_on_a_zero_row_gives_seg_0_and_t_0(xp):
    centres = _f32(xp, [[0.0, 1.0], [1.0, 0.0]])
    seg, t = kmeans.assign(_f32(xp, [[0.0, 0.0], [0.0, 5.0]]), centres, xp)
    np.testing.assert_array_equal(to_np(seg), [0, 0])
    np.testing.assert_array_equal(to_np(t), [0.0, 5.0])


def test_assign_picks_max_abs_cosine_with_signed_t(xp):
    centres = _f32(xp, [[1.0, 0.0], [0.0, 1.0]])
    seg, t = kmeans.assign(_f32(xp, [[3.0, 0.0], [0.0, -2.0], [-1.0, 0.5], [0.2, 4.0]]), centres, xp)
    np.testing.assert_array_equal(to_np(seg), [0, 1, 0, 1])
    np.testing.assert_allclose(to_np(t), [3.0, -2.0, -1.0, 4.0])
    assert to_np(seg).dtype == np.int64 and to_np(t).dtype == np.float32


def test_assign_ties_go_to_the_lower_centre(xp):
    centres = _f32(xp, [[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    seg, t = kmeans.assign(_f32(xp, [[1.0, 1.0], [0.0, 2.0]]), centres, xp)
    np.testing.assert_array_equal(to_np(seg), [0, 1])
    np.testing.assert_allclose(to_np(t), [1.0, 2.0])


def test_assign_minimises_the_rank_one_residual(xp, rng):
    c = rng.standard_normal((50, 6)).astype(np.float32)
    centres = kmeans.fit(_f32(xp, c), 4, xp, seed=8)
    seg, t = kmeans.assign(_f32(xp, c), centres, xp)
    cen = to_np(centres)
    best = to_np(seg)
    res = np.linalg.norm(c - to_np(t)[:, None] * cen[best], axis=1)
    for j in range(cen.shape[0]):  # no other centre (with its own optimal t) does better
        tj = c @ cen[j]
        other = np.linalg.norm(c - tj[:, None] * cen[j], axis=1)
        assert np.all(res <= other + 1e-5)


def test_assign_with_more_than_32767_centres(xp):
    k = 32768  # beyond int16: the tie-break weights must not overflow
    centres = np.random.default_rng(0).standard_normal((k, 64))
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    seg, t = kmeans.assign(_f32(xp, 2.0 * centres[[32767, 7]]), _f32(xp, centres), xp)
    np.testing.assert_array_equal(to_np(seg), [32767, 7])
    np.testing.assert_allclose(to_np(t), [2.0, 2.0], rtol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 8),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    zero_rows=st.integers(0, 5),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_property_assign_shapes_ranges_and_finiteness(xp, n, d, k, seed, zero_rows, scale):
    g = np.random.default_rng(seed)
    c = (g.standard_normal((n, d)) * scale).astype(np.float32)
    c[: min(zero_rows, n)] = 0.0
    centres = kmeans.fit(_f32(xp, c), k, xp, seed=seed)
    k_eff = int(centres.shape[0])
    assert 1 <= k_eff <= k and centres.shape[1] == d
    assert np.all(np.isfinite(to_np(centres)))
    seg, t = kmeans.assign(_f32(xp, c), centres, xp)
    seg, t = to_np(seg), to_np(t)
    assert seg.shape == (n,) and t.shape == (n,)
    assert np.all((0 <= seg) & (seg < k_eff))
    assert np.all(np.isfinite(t))
    norms = np.linalg.norm(c, axis=1)
    assert np.all(np.abs(t) <= norms * (1 + 1e-2) + 1e-6)  # |t| = |<c, unit centre>| <= ||c||
    assert np.all(t[norms == 0] == 0) and np.all(seg[norms == 0] == 0)
