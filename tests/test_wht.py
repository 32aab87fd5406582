"""Walsh–Hadamard transform and the seeded orthogonal rotation (spec §1.8, §9 wht.rs): small
golden transforms, H·H = W·I, orthogonality, dense vs butterfly agreement, seed behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakeya_lib.errors import InputError
from kakeya_lib.stages import wht

from .conftest import to_np

SEED = 0xCAFEBABE
POW2 = [1, 2, 4, 8, 16, 32, 64, 128]


def _rows(xp, rng, n, w):
    return xp.asarray(rng.standard_normal((n, w)).astype(np.float32))


def test_size_one_transform_is_identity(xp):
    np.testing.assert_array_equal(to_np(wht.fwht(xp.asarray([[2.5], [-1.0]]), xp)), [[2.5], [-1.0]])
    np.testing.assert_array_equal(wht.hadamard(1), [[1.0]])


def test_h2_of_1_2_is_3_minus_1(xp):
    np.testing.assert_array_equal(to_np(wht.fwht(xp.asarray([[1.0, 2.0]]), xp)), [[3.0, -1.0]])


def test_h4_of_1_2_3_4_is_10_minus2_minus4_0(xp):
    np.testing.assert_array_equal(to_np(wht.fwht(xp.asarray([[1.0, 2.0, 3.0, 4.0]]), xp)), [[10.0, -2.0, -4.0, 0.0]])


@pytest.mark.parametrize("w", POW2)
def test_hadamard_squared_is_w_times_identity(w):
    h = wht.hadamard(w)
    assert set(np.unique(h)) <= {-1.0, 1.0}
    np.testing.assert_allclose(h @ h, w * np.eye(w), atol=1e-4 * w)
    np.testing.assert_array_equal(h, h.T)


@pytest.mark.parametrize("w", POW2)
def test_fwht_equals_the_dense_hadamard_product(xp, rng, w):
    x = _rows(xp, rng, 5, w)
    np.testing.assert_allclose(to_np(wht.fwht(x, xp)), to_np(x) @ wht.hadamard(w), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(to_np(wht.fwht(xp.eye(w, dtype=xp.float32), xp)), wht.hadamard(w))


@pytest.mark.parametrize("w", POW2)
def test_fwht_twice_is_w_times_input(xp, rng, w):
    x = _rows(xp, rng, 3, w)
    np.testing.assert_allclose(to_np(wht.fwht(wht.fwht(x, xp), xp)), w * to_np(x), rtol=1e-5, atol=1e-4 * w)


def test_hadamard_returns_an_independent_copy():
    h = wht.hadamard(4)
    h[0, 0] = 99.0
    assert wht.hadamard(4)[0, 0] == 1.0


@pytest.mark.parametrize("w", [8, 64, 1024])
def test_rotation_preserves_norms_and_inverts(xp, rng, w):
    x = _rows(xp, rng, 6, w)
    y = wht.rotate(x, SEED, xp)
    np.testing.assert_allclose(
        np.linalg.norm(to_np(y), axis=1), np.linalg.norm(to_np(x), axis=1), rtol=1e-5
    )
    np.testing.assert_allclose(to_np(wht.inverse_rotate(y, SEED, xp)), to_np(x), atol=1e-5)


@pytest.mark.parametrize("w", [1, 4, 32])
def test_rotation_matrix_is_orthogonal_and_equals_h_diag_s_over_sqrt_w(xp, w):
    r = to_np(wht.rotation_matrix(w, SEED, xp))
    np.testing.assert_allclose(r @ r.T, np.eye(w), atol=1e-6)
    expected = wht.hadamard(w) * wht.rademacher_signs(w, SEED)[None, :] / np.sqrt(w)
    np.testing.assert_allclose(r, expected, rtol=1e-6)


def test_dense_and_butterfly_paths_agree(xp, rng):
    # rotate/inverse use the butterfly above DENSE_MAX_W; compare with the dense matrix there.
    w = 1024
    assert w > wht.DENSE_MAX_W
    x = _rows(xp, rng, 4, w)
    dense = to_np(x) @ to_np(wht.rotation_matrix(w, SEED, xp)).T
    np.testing.assert_allclose(to_np(wht.rotate(x, SEED, xp)), dense, atol=1e-5)
    dense_inv = to_np(x) @ to_np(wht.rotation_matrix(w, SEED, xp))
    np.testing.assert_allclose(to_np(wht.inverse_rotate(x, SEED, xp)), dense_inv, atol=1e-5)


def test_butterfly_matches_dense_at_the_threshold(xp, rng, monkeypatch):
    w = 64
    x = _rows(xp, rng, 3, w)
    dense = to_np(wht.rotate(x, SEED, xp))
    monkeypatch.setattr(wht, "DENSE_MAX_W", 32)  # force the butterfly for the same input
    np.testing.assert_allclose(to_np(wht.rotate(x, SEED, xp)), dense, atol=1e-5)
    np.testing.assert_allclose(to_np(wht.inverse_rotate(wht.rotate(x, SEED, xp), SEED, xp)), to_np(x), atol=1e-5)


def test_unnormalised_seed_convention_maps_onto_the_rotation(xp, rng):
    # spec §1.8: seed rotate(x) = H (s ⊙ x) with ‖·‖² = W‖x‖²; ours is that divided by sqrt(W).
    w = 16
    x = _rows(xp, rng, 3, w)
    s = wht.rademacher_signs(w, SEED)
    seed_style = (to_np(x) * s) @ wht.hadamard(w)
    np.testing.assert_allclose(to_np(wht.rotate(x, SEED, xp)) * np.sqrt(w), seed_style, rtol=1e-5, atol=1e-5)
    assert np.allclose(np.sum(seed_style**2, axis=1), w * np.sum(to_np(x) ** 2, axis=1), rtol=1e-5)


def test_signs_are_deterministic_plus_minus_one_and_seed_dependent():
    a = wht.rademacher_signs(64, 7)
    assert a.shape == (64,) and a.dtype == np.float32
    assert set(np.unique(a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(a, wht.rademacher_signs(64, 7))
    assert not np.array_equal(a, wht.rademacher_signs(64, 8))


def test_different_seeds_give_different_rotations(xp, rng):
    x = _rows(xp, rng, 4, 32)
    assert not np.allclose(to_np(wht.rotate(x, 1, xp)), to_np(wht.rotate(x, 2, xp)), atol=1e-3)


def test_wrong_seed_does_not_invert(xp, rng):
    x = _rows(xp, rng, 4, 32)
    back = to_np(wht.inverse_rotate(wht.rotate(x, 1, xp), 2, xp))
    assert np.abs(back - to_np(x)).max() > 0.1


@pytest.mark.parametrize("w", [4, 1024])
def test_rotating_zero_gives_zero(xp, w):
    z = xp.zeros((2, w), dtype=xp.float32)
    np.testing.assert_array_equal(to_np(wht.rotate(z, SEED, xp)), 0.0)


@pytest.mark.parametrize("w", [16, 1024])
def test_rotation_is_linear(xp, rng, w):
    x, y = _rows(xp, rng, 3, w), _rows(xp, rng, 3, w)
    lhs = wht.rotate(2.0 * x - 3.0 * y, SEED, xp)
    rhs = 2.0 * wht.rotate(x, SEED, xp) - 3.0 * wht.rotate(y, SEED, xp)
    np.testing.assert_allclose(to_np(lhs), to_np(rhs), atol=1e-4)


@pytest.mark.parametrize("w", [0, 3, 6, 12, 100])
def test_non_power_of_two_lengths_are_rejected(xp, w):
    x = xp.zeros((2, w), dtype=xp.float32)
    for call in (
        lambda: wht.rotate(x, SEED, xp),
        lambda: wht.inverse_rotate(x, SEED, xp),
        lambda: wht.fwht(x, xp),
        lambda: wht.rademacher_signs(w, SEED),
        lambda: wht.hadamard(w),
        lambda: wht.rotation_matrix(w, SEED, xp),
    ):
        with pytest.raises(InputError, match="power of two"):
            call()


@pytest.mark.parametrize(("n", "p"), [(0, 1), (1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (17, 32), (513, 1024)])
def test_next_pow2(n, p):
    assert wht.next_pow2(n) == p


def test_pad_to_zero_pads_and_rejects_shrinking(xp):
    x = xp.asarray([[1.0, 2.0, 3.0]], dtype=xp.float32)
    np.testing.assert_array_equal(to_np(wht.pad_to(x, 4, xp)), [[1.0, 2.0, 3.0, 0.0]])
    assert wht.pad_to(x, 3, xp) is x
    with pytest.raises(InputError, match="cannot pad"):
        wht.pad_to(x, 2, xp)


def test_cached_rotation_matrix_cannot_be_mutated_by_a_caller():
    # the numpy matrix is shared through an lru_cache: writing to it would corrupt later rotations
    w, seed = 4, 0x5EED_0FF
    x = np.eye(w, dtype=np.float32)
    before = wht.rotate(x, seed, np).copy()
    r = wht.rotation_matrix(w, seed, np)
    with pytest.raises(ValueError, match="read-only"):
        r[0, 0] += 1.0
    np.testing.assert_array_equal(wht.rotate(x, seed, np), before)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    log_w=st.integers(0, 11),
    n=st.integers(1, 5),
    seed=st.integers(0, 2**64 - 1),
    scale=st.floats(1e-3, 1e3),
)
def test_property_inverse_rotate_undoes_rotate(xp, log_w, n, seed, scale):
    w = 1 << log_w
    x = np.random.default_rng(seed % 1000).standard_normal((n, w)).astype(np.float32) * np.float32(scale)
    y = wht.rotate(xp.asarray(x), seed, xp)
    np.testing.assert_allclose(np.linalg.norm(to_np(y)), np.linalg.norm(x), rtol=1e-4)
    np.testing.assert_allclose(to_np(wht.inverse_rotate(y, seed, xp)), x, atol=1e-5 * scale * max(1.0, np.sqrt(log_w)))
