"""Weighted exact PCA skeleton (spec §1.2, §1.5, §9 pca.rs): weighted mean, variance-ratio truncation,
rank cap, weights steering the basis, storage rounding, and the projection round trip."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib.errors import InputError
from kakeya_lib.stages import pca

from .conftest import to_np


def _f32(xp, a):
    return xp.asarray(np.asarray(a, dtype=np.float32))


def _ellipse(rng, n, sx, sy, angle):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    pts = rng.standard_normal((n, 2)) * [sx, sy]
    return (pts @ rot.T + [3.0, -2.0]).astype(np.float32), np.array([c, s])


# -- weighted mean ----------------------------------------------------------------------------


def test_weighted_mean_uniform_equals_plain_mean(xp, rng):
    x = _f32(xp, rng.standard_normal((10, 3)))
    for w in (None, xp.ones(10, dtype=xp.float32), xp.full(10, 2.5, dtype=xp.float32)):
        mean, _ = pca.weighted_mean(x, w, xp)
        np.testing.assert_allclose(to_np(mean), to_np(x).mean(axis=0), atol=1e-6)
    assert pca.weighted_mean(x, None, xp)[1] == 10.0


def test_weighted_mean_ignores_zero_weight_rows(xp):
    x = _f32(xp, [[1.0, 2.0], [3.0, 4.0], [1e4, -1e4]])
    mean, total = pca.weighted_mean(x, _f32(xp, [1.0, 1.0, 0.0]), xp)
    np.testing.assert_allclose(to_np(mean), [2.0, 3.0])
    assert total == 2.0


def test_weighted_mean_non_uniform(xp):
    mean, total = pca.weighted_mean(_f32(xp, [[0.0, 0.0], [4.0, 8.0]]), _f32(xp, [3.0, 1.0]), xp)
    np.testing.assert_allclose(to_np(mean), [1.0, 2.0])
    assert total == 4.0


def test_all_zero_weights_are_rejected(xp, rng):
    x = _f32(xp, rng.standard_normal((4, 3)))
    w = xp.zeros(4, dtype=xp.float32)
    with pytest.raises(InputError, match="weights sum to zero"):
        pca.weighted_mean(x, w, xp)
    with pytest.raises(InputError, match="sum to zero"):
        pca.fit_exact(x, w, xp)


@pytest.mark.parametrize("shape", [(0, 4), (5, 0)])
def test_empty_blocks_are_rejected(xp, shape):
    with pytest.raises(InputError, match="non-empty"):
        pca.fit_exact(xp.zeros(shape, dtype=xp.float32), None, xp)


def test_weights_of_the_wrong_length_are_rejected(xp, rng):
    x = _f32(xp, rng.standard_normal((6, 3)))
    for w in (xp.ones(1, dtype=xp.float32), xp.ones(5, dtype=xp.float32)):
        with pytest.raises(InputError):
            pca.fit_exact(x, w, xp)


# -- rank selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eigvals", "vr", "k"),
    [
        ([4, 3, 2, 1], 0.7, 2),
        ([4, 3, 2, 1], 0.71, 3),
        ([4, 3, 2, 1], 1.0, 4),
        ([4, 3, 2, 1], 0.0, 1),
        ([4, 3, 2, 1], -5.0, 1),
        ([4, 3, 2, 1], 7.0, 4),
        ([4, 3, 2, -1e-3], 1.0, 3),  # negative (round-off) eigenvalues are clipped to 0
        ([0, 0, 0], 0.9, 1),  # no variance at all
    ],
)
def test_rank_for_variance(eigvals, vr, k):
    assert pca.rank_for_variance(eigvals, vr) == k


def test_rank_for_variance_against_an_external_total():
    assert pca.rank_for_variance([4, 3], 0.5, total=20.0) == 2  # 7/20 < 0.5: fall back to all
    assert pca.rank_for_variance([4, 3], 0.2, total=20.0) == 1


# -- fits -------------------------------------------------------------------------------------


def test_recovers_the_major_axis_of_a_rotated_ellipse(xp, rng):
    x, axis = _ellipse(rng, 400, 5.0, 1.0, 0.6)
    fit = pca.fit_exact(_f32(xp, x), None, xp, variance_ratio=1.0)
    assert fit.d_eff == 2
    assert abs(float(to_np(fit.basis)[0] @ axis)) > 0.98  # observed 0.99990
    np.testing.assert_allclose(to_np(fit.mean), x.mean(axis=0), atol=2e-3)
    lam = to_np(fit.eigenvalues)
    assert lam[0] == pytest.approx(25.0, rel=0.2) and lam[1] == pytest.approx(1.0, rel=0.2)


def test_truncates_to_one_component_on_a_skinny_ellipse(xp, rng):
    x, axis = _ellipse(rng, 300, 10.0, 0.1, -1.1)
    fit = pca.fit_exact(_f32(xp, x), None, xp, variance_ratio=0.5)
    assert fit.d_eff == 1
    assert fit.captured_variance > 0.99  # observed 0.99989
    assert abs(float(to_np(fit.basis)[0] @ axis)) > 0.999


@pytest.mark.parametrize("storage", ["f16", "bf16", "f32"])
def test_full_rank_round_trip_is_near_identity(xp, rng, storage):
    x = (rng.standard_normal((64, 8)) * [5, 4, 3, 2, 1, 1, 0.5, 0.5] + 2.0).astype(np.float32)
    fit = pca.fit_exact(_f32(xp, x), None, xp, variance_ratio=1.0, storage=storage)
    assert fit.d_eff == 8
    back = to_np(pca.unproject(fit, pca.project(fit, _f32(xp, x))))
    scale = float(np.abs(x).max())
    tol = {"f16": 2e-2, "bf16": 4e-2, "f32": 1e-5}[storage]  # observed max err / scale: f16 3.9e-4, bf16 2.7e-3
    assert np.abs(back - x).max() <= tol * scale


def test_captured_variance_is_monotone_in_the_variance_ratio(xp, rng):
    x = _f32(xp, rng.standard_normal((80, 12)) * np.linspace(4, 0.2, 12))
    ranks, captured = [], []
    for vr in (0.0, 0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
        fit = pca.fit_exact(x, None, xp, variance_ratio=vr)
        ranks.append(fit.d_eff)
        captured.append(fit.captured_variance)
        assert fit.captured_variance >= min(vr, 1.0) - 1e-6
    assert ranks == sorted(ranks) and captured == sorted(captured)
    assert ranks[0] == 1 and ranks[-1] == 12


def test_out_of_range_variance_ratios_are_clamped(xp, rng):
    x = _f32(xp, rng.standard_normal((40, 6)))
    assert pca.fit_exact(x, None, xp, variance_ratio=1.5).d_eff == 6
    assert pca.fit_exact(x, None, xp, variance_ratio=-0.5).d_eff == 1


def test_nan_variance_ratio_is_rejected(xp, rng):
    x = _f32(xp, rng.standard_normal((40, 6)))
    with pytest.raises(InputError):
        pca.fit_exact(x, None, xp, variance_ratio=float("nan"))


def test_heavy_weight_dominates_the_basis(xp, rng):
    t = np.linspace(-1, 1, 20)
    along_x = np.stack([3 * t, np.zeros_like(t)], axis=1)
    along_y = np.stack([np.zeros_like(t), t], axis=1)  # smaller spread but 1000x the weight
    x = _f32(xp, np.concatenate([along_x, along_y]))
    w = _f32(xp, np.concatenate([np.ones(20), np.full(20, 1000.0)]))
    unweighted = pca.fit_exact(x, None, xp, variance_ratio=1.0)
    weighted = pca.fit_exact(x, w, xp, variance_ratio=1.0)
    assert abs(float(to_np(unweighted.basis)[0, 0])) > 0.99
    assert abs(float(to_np(weighted.basis)[0, 1])) > 0.99
    assert pca.fit_exact(x, w, xp, variance_ratio=0.9).captured_variance >= 0.9


def test_zero_weight_decoys_are_excluded(xp, rng):
    main = np.stack([rng.standard_normal(50), 0.01 * rng.standard_normal(50), np.zeros(50)], axis=1)
    decoys = np.tile([0.0, 0.0, 1e3], (5, 1)) * rng.standard_normal((5, 1))
    x = _f32(xp, np.concatenate([main, decoys]))
    w = _f32(xp, np.concatenate([np.ones(50), np.zeros(5)]))
    fit = pca.fit_exact(x, w, xp, variance_ratio=1.0, storage="f32")
    clean = pca.fit_exact(_f32(xp, main), None, xp, variance_ratio=1.0, storage="f32")
    np.testing.assert_allclose(to_np(fit.mean), to_np(clean.mean), atol=1e-5)
    np.testing.assert_allclose(to_np(fit.eigenvalues), to_np(clean.eigenvalues), rtol=1e-3, atol=1e-6)
    assert abs(float(to_np(fit.basis)[0, 0])) > 0.999
    assert float(to_np(fit.eigenvalues)[0]) < 10.0  # decoys would contribute ~1e5


@pytest.mark.parametrize(("cap", "d_eff"), [(1, 1), (3, 3), (0, 1), (100, 10)])
def test_rank_cap_is_respected(xp, rng, cap, d_eff):
    x = _f32(xp, rng.standard_normal((60, 10)))
    fit = pca.fit_exact(x, None, xp, variance_ratio=1.0, rank_cap=cap)
    assert fit.d_eff == d_eff
    assert fit.basis.shape == (d_eff, 10)


def test_rank_cap_never_raises_the_rank(xp, rng):
    x = _f32(xp, rng.standard_normal((60, 10)) * np.geomspace(10, 0.01, 10))
    free = pca.fit_exact(x, None, xp, variance_ratio=0.5).d_eff
    assert pca.fit_exact(x, None, xp, variance_ratio=0.5, rank_cap=free + 3).d_eff == free


def test_basis_rows_are_orthonormal_with_f32_storage(xp, rng):
    fit = pca.fit_exact(_f32(xp, rng.standard_normal((50, 16))), None, xp, variance_ratio=1.0, storage="f32")
    b = to_np(fit.basis)
    np.testing.assert_allclose(b @ b.T, np.eye(fit.d_eff), atol=1e-5)


def test_basis_rows_are_nearly_orthonormal_with_f16_storage(xp, rng):
    fit = pca.fit_exact(_f32(xp, rng.standard_normal((50, 16))), None, xp, variance_ratio=1.0, storage="f16")
    b = to_np(fit.basis)
    np.testing.assert_allclose(b @ b.T, np.eye(fit.d_eff), atol=1e-2)


def test_storage_rounding_is_applied_to_mean_and_basis(xp, rng):
    x = _f32(xp, rng.standard_normal((40, 8)) * 3 + 1.234567)
    f16 = pca.fit_exact(x, None, xp, storage="f16")
    for arr in (to_np(f16.mean), to_np(f16.basis)):
        assert arr.dtype == np.float32
        np.testing.assert_array_equal(arr, arr.astype(np.float16).astype(np.float32))
    bf16 = pca.fit_exact(x, None, xp, storage="bf16")
    for arr in (to_np(bf16.mean), to_np(bf16.basis)):
        assert not np.any(arr.view(np.uint32) & 0xFFFF)  # only the upper 16 bits are used
    f32 = pca.fit_exact(x, None, xp, storage="f32")
    # f32 keeps precision the 16-bit formats drop
    assert not np.array_equal(to_np(f32.mean), to_np(f32.mean).astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(to_np(f16.mean), to_np(f32.mean), rtol=1e-3)


def test_mean_beyond_the_f16_range_is_an_error_naming_the_format(xp, rng):
    x = _f32(xp, rng.standard_normal((10, 3)) + 1e5)
    with pytest.raises(InputError, match="PCA mean .*f16"):
        pca.fit_exact(x, None, xp, storage="f16")
    assert pca.fit_exact(x, None, xp, storage="bf16").d_eff >= 1


def test_basis_signs_are_deterministic(xp, rng):
    fit = pca.fit_exact(_f32(xp, rng.standard_normal((30, 6))), None, xp, variance_ratio=1.0)
    b = to_np(fit.basis)
    assert np.all(b[np.arange(b.shape[0]), np.abs(b).argmax(axis=1)] > 0)


def test_eigenvalues_are_descending_and_sum_to_the_total_variance(xp, rng):
    x = rng.standard_normal((200, 5)).astype(np.float32) * [3, 1, 2, 0.5, 1]
    fit = pca.fit_exact(_f32(xp, x), None, xp)
    lam = to_np(fit.eigenvalues)
    assert lam.shape == (5,)
    assert np.all(np.diff(lam) <= 1e-6)
    assert lam.sum() == pytest.approx(x.var(axis=0).sum(), rel=1e-4)


def test_constant_block_keeps_one_component_and_reconstructs_exactly(xp):
    x = _f32(xp, np.tile([1.5, -2.0, 0.25], (8, 1)))
    fit = pca.fit_exact(x, None, xp, variance_ratio=0.95)
    assert fit.d_eff == 1 and fit.captured_variance == 1.0
    np.testing.assert_allclose(to_np(pca.unproject(fit, pca.project(fit, x))), to_np(x), atol=1e-6)


def test_project_and_unproject_check_dimensions(xp, rng):
    fit = pca.fit_exact(_f32(xp, rng.standard_normal((20, 5))), None, xp, variance_ratio=1.0, rank_cap=3)
    assert pca.project(fit, _f32(xp, rng.standard_normal((4, 5)))).shape == (4, 3)
    with pytest.raises(InputError, match="cannot project width 6 onto a basis of width 5"):
        pca.project(fit, xp.zeros((2, 6), dtype=xp.float32))
    with pytest.raises(InputError, match="got 2 coefficients for a basis of rank 3"):
        pca.unproject(fit, xp.zeros((2, 2), dtype=xp.float32))


def test_batched_fit_equals_separate_fits(xp, rng):
    x = rng.standard_normal((3, 30, 6)).astype(np.float32) * [[[4, 2, 1, 1, 0.5, 0.1]]]
    w = rng.uniform(0, 2, size=(3, 30)).astype(np.float32)
    batched = pca.fit_exact_batched(_f32(xp, x), _f32(xp, w), xp, variance_ratio=0.9, storage="f32")
    for i, fit in enumerate(batched):
        alone = pca.fit_exact(_f32(xp, x[i]), _f32(xp, w[i]), xp, variance_ratio=0.9, storage="f32")
        assert fit.d_eff == alone.d_eff
        np.testing.assert_allclose(to_np(fit.mean), to_np(alone.mean), atol=1e-5)
        np.testing.assert_allclose(to_np(fit.basis), to_np(alone.basis), atol=1e-4)
