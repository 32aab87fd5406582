"""Lloyd–Max scalar quantiser (spec §1.10, §5.3, §9 quantize.rs): computed N(0,1) codebooks against
the seed's tables and textbook distortions, nearest-level quantisation with ties to the lower index,
codebook validation and loading, and calibrated codebooks on non-Gaussian data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from kakeya_lib.errors import InputError
from kakeya_lib.stages import lloyd_max

from .conftest import to_np

# Lloyd–Max distortions of N(0,1) (Max 1960), b = 1..4
KNOWN_MSE = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}


def _gaussian_mse(levels: np.ndarray) -> float:
    """Exact E[(z - Q(z))^2] for z ~ N(0,1) and nearest-level quantisation with ``levels``."""
    lv = np.asarray(levels, dtype=np.float64)
    edges = np.concatenate([[-np.inf], (lv[1:] + lv[:-1]) / 2, [np.inf]])
    lo, hi = edges[:-1], edges[1:]
    m0 = norm.cdf(hi) - norm.cdf(lo)
    m1 = norm.pdf(lo) - norm.pdf(hi)
    lo_term = np.where(np.isinf(lo), 0.0, np.nan_to_num(lo) * norm.pdf(lo))
    hi_term = np.where(np.isinf(hi), 0.0, np.nan_to_num(hi) * norm.pdf(hi))
    m2 = m0 + lo_term - hi_term
    return float(np.sum(m2 - 2 * lv * m1 + lv**2 * m0))


def _sample_mse(xp, z: np.ndarray, levels: np.ndarray) -> float:
    zx = xp.asarray(z)
    zhat = lloyd_max.dequantize(lloyd_max.quantize(zx, levels, xp), levels, xp)
    return float(np.mean((to_np(zhat) - z) ** 2))


@pytest.fixture(scope="module")
def gaussian_samples() -> np.ndarray:
    return np.random.default_rng(2024).standard_normal(200_000).astype(np.float32)


# -- built-in codebooks -----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_computed_codebook_matches_the_seed_tables(bits):
    # observed max deviation 4.5e-4 (b=4); the seed tables are printed to 4-6 digits
    np.testing.assert_allclose(lloyd_max.gaussian_codebook(bits), lloyd_max.seed_table(bits), atol=1e-3)


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_has_2_pow_b_symmetric_strictly_ascending_levels(bits):
    c = lloyd_max.gaussian_codebook(bits)
    assert c.shape == (1 << bits,) and c.dtype == np.float32
    assert np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c, -c[::-1], atol=1e-6)
    assert np.all(np.isfinite(c))


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_is_a_lloyd_max_fixed_point(bits):
    # every level is the N(0,1) mean of its own cell (centroid condition)
    c = lloyd_max.gaussian_codebook(bits).astype(np.float64)
    edges = np.concatenate([[-np.inf], (c[1:] + c[:-1]) / 2, [np.inf]])
    cond_mean = (norm.pdf(edges[:-1]) - norm.pdf(edges[1:])) / (norm.cdf(edges[1:]) - norm.cdf(edges[:-1]))
    np.testing.assert_allclose(c, cond_mean, atol=1e-5)


def test_eight_bit_codebook_reaches_the_lloyd_max_optimum():
    # optimum 4.11851e-5 = plain Lloyd iteration run to a 1e-12 step (157 469 steps); a 10 000-step
    # stop gives 4.28e-5. Panter–Dite asymptote: sqrt(3)·pi/2 · 4^-8 = 4.15e-5.
    assert _gaussian_mse(lloyd_max.gaussian_codebook(8)) == pytest.approx(4.11851e-5, rel=1e-4)


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, "3"])
def test_gaussian_codebook_rejects_bad_widths(bits):
    with pytest.raises(InputError, match="bit width"):
        lloyd_max.gaussian_codebook(bits)  # type: ignore[arg-type]


def test_gaussian_codebook_returns_a_fresh_array():
    c = lloyd_max.gaussian_codebook(2)
    c[0] = 123.0
    assert lloyd_max.gaussian_codebook(2)[0] != 123.0


# -- distortion -------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_on_gaussian_samples_is_close_to_the_lloyd_max_distortion(xp, gaussian_samples, bits):
    # observed 0.3641, 0.1181, 0.03480, 0.009570 on 200k samples (sampling error ~0.3 %)
    mse = _sample_mse(xp, gaussian_samples, lloyd_max.gaussian_codebook(bits))
    assert mse == pytest.approx(KNOWN_MSE[bits], rel=0.03)
    assert _gaussian_mse(lloyd_max.gaussian_codebook(bits)) == pytest.approx(KNOWN_MSE[bits], rel=2e-3)


def test_mse_strictly_decreases_with_bits(xp, gaussian_samples):
    mses = [_sample_mse(xp, gaussian_samples, lloyd_max.gaussian_codebook(b)) for b in range(1, 6)]
    assert all(a > b for a, b in zip(mses, mses[1:])), mses


def test_mse_strictly_decreases_with_bits_on_a_sine_ramp(xp):
    z = (2.0 * np.sin(np.linspace(0, 6 * np.pi, 997))).astype(np.float32)
    mses = [_sample_mse(xp, z, lloyd_max.gaussian_codebook(b)) for b in range(1, 5)]
    assert all(a > b for a, b in zip(mses, mses[1:])), mses


# -- quantize / dequantize --------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_levels_quantise_to_their_own_index_and_round_trip(xp, bits):
    c = lloyd_max.gaussian_codebook(bits)
    idx = lloyd_max.quantize(xp.asarray(c), c, xp)
    np.testing.assert_array_equal(to_np(idx), np.arange(1 << bits))
    np.testing.assert_allclose(to_np(lloyd_max.dequantize(idx, c, xp)), c, atol=1e-5)


def test_ties_go_to_the_lower_index(xp):
    levels = np.array([-3.0, -0.5, 0.5, 3.0], dtype=np.float32)
    idx = to_np(lloyd_max.quantize(xp.asarray([0.0, -1.75, 1.75]), levels, xp))
    np.testing.assert_array_equal(idx, [1, 0, 2])


def test_quantize_is_nearest_level_like_brute_force(xp, rng):
    levels = np.sort(rng.standard_normal(8)).astype(np.float32)
    z = (rng.standard_normal(5000) * 2).astype(np.float32)
    brute = np.argmin(np.abs(z[:, None] - levels[None, :]), axis=1)
    np.testing.assert_array_equal(to_np(lloyd_max.quantize(xp.asarray(z), levels, xp)), brute)


def test_out_of_range_inputs_snap_to_the_extremes(xp):
    for bits in (1, 2, 3, 4):
        c = lloyd_max.gaussian_codebook(bits)
        idx = to_np(lloyd_max.quantize(xp.asarray([-1e30, -50.0, 50.0, 1e30]), c, xp))
        np.testing.assert_array_equal(idx, [0, 0, (1 << bits) - 1, (1 << bits) - 1])


def test_quantize_is_idempotent(xp, rng):
    c = lloyd_max.gaussian_codebook(3)
    z = xp.asarray(rng.standard_normal(1000).astype(np.float32) * 3)
    idx = lloyd_max.quantize(z, c, xp)
    again = lloyd_max.quantize(lloyd_max.dequantize(idx, c, xp), c, xp)
    np.testing.assert_array_equal(to_np(again), to_np(idx))


def test_quantize_keeps_shape_and_returns_int64_indices(xp, rng):
    c = lloyd_max.gaussian_codebook(2)
    z = xp.asarray(rng.standard_normal((3, 5, 4)).astype(np.float32))
    idx = lloyd_max.quantize(z, c, xp)
    assert idx.shape == (3, 5, 4) and idx.dtype == np.int64
    assert 0 <= int(idx.min()) and int(idx.max()) < 4
    assert lloyd_max.dequantize(idx, c, xp).shape == (3, 5, 4)


def test_empty_input_quantises_to_empty(xp):
    idx = lloyd_max.quantize(xp.zeros(0, dtype=xp.float32), lloyd_max.gaussian_codebook(2), xp)
    assert idx.shape == (0,)


def test_levels_may_already_live_on_xp(xp):
    c = lloyd_max.gaussian_codebook(2)
    z = xp.asarray([-2.0, -0.1, 0.1, 2.0])
    np.testing.assert_array_equal(to_np(lloyd_max.quantize(z, xp.asarray(c), xp)), [0, 1, 2, 3])


# -- custom codebooks -------------------------------------------------------------------------


def test_the_seed_calibrated_tables_validate():
    ds_k_b3 = [-1.63359, -1.11117, -0.71726, -0.25148, 0.30623, 0.76633, 1.13808, 1.62979]
    out = lloyd_max.validate_codebook(ds_k_b3, bits=3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ds_k_b3, rtol=1e-6)


@pytest.mark.parametrize(
    ("levels", "bits", "message"),
    [
        ([1.0, 2.0, 3.0], None, "2\\*\\*b levels"),
        ([1.0], None, "2\\*\\*b levels"),
        ([[1.0, 2.0], [3.0, 4.0]], None, "2\\*\\*b levels"),
        (list(range(512)), None, "2\\*\\*b levels"),
        ([-1.0, 1.0], 2, "has 2 levels but bits=2 needs 4"),
        ([-1.0, -2.0, 1.0, 2.0], None, "strictly ascending"),
        ([-1.0, 0.0, 0.0, 1.0], None, "strictly ascending"),
        ([-1.0, 0.0, np.nan, 1.0], None, "finite"),
        ([-np.inf, 0.0, 0.5, 1.0], None, "finite"),
        ([0.0, 1.0, 1.0 + 1e-9, 2.0], None, "strictly ascending"),  # distinct in f64, equal in f32
    ],
)
def test_invalid_custom_codebooks_are_rejected(levels, bits, message):
    with pytest.raises(InputError, match=message):
        lloyd_max.validate_codebook(levels, bits)


def test_custom_codebook_round_trip(xp):
    levels = lloyd_max.validate_codebook([-1.2301, -0.49533, 0.54491, 1.22156], bits=2)
    idx = lloyd_max.quantize(xp.asarray(levels), levels, xp)
    np.testing.assert_array_equal(to_np(lloyd_max.dequantize(idx, levels, xp)), levels)


def test_load_codebook_from_npy_and_raw_f32(tmp_path):
    table = np.array([-1.5, -0.45, 0.45, 1.5], dtype=np.float32)
    npy = tmp_path / "table.npy"
    np.save(npy, table.astype(np.float64))
    raw = tmp_path / "ds_V_b2.f32"
    raw.write_bytes(table.astype("<f4").tobytes())
    for path in (npy, str(raw)):
        out = lloyd_max.load_codebook(path, bits=2)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, table)


def test_load_codebook_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        lloyd_max.load_codebook(tmp_path / "missing.f32")
    ragged = tmp_path / "ragged.f32"
    ragged.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="whole number of float32"):
        lloyd_max.load_codebook(ragged)
    wrong = tmp_path / "b3.f32"
    wrong.write_bytes(lloyd_max.gaussian_codebook(3).astype("<f4").tobytes())
    with pytest.raises(InputError, match="bits=2 needs 4"):
        lloyd_max.load_codebook(wrong, bits=2)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):  # pickles are refused
        lloyd_max.load_codebook(pickled)


def _lloyd_calibrate(samples: np.ndarray, bits: int, iters: int) -> np.ndarray:
    """Spec §5.3 procedure: start from quartile (quantile-bin) means, then 1-D Lloyd steps."""
    s = np.sort(samples.astype(np.float64))
    levels = np.array([chunk.mean() for chunk in np.array_split(s, 1 << bits)])
    for _ in range(iters):
        cells = np.searchsorted((levels[1:] + levels[:-1]) / 2, s)
        levels = np.array([s[cells == j].mean() for j in range(1 << bits)])
    return levels.astype(np.float32)


def test_quartile_mean_codebook_beats_gaussian_on_laplace_data(xp):
    rng = np.random.default_rng(7)
    train = rng.laplace(size=50_000).astype(np.float32)
    test = rng.laplace(size=50_000).astype(np.float32)
    calibrated = _lloyd_calibrate(train, bits=2, iters=0)
    gauss = _sample_mse(xp, test, lloyd_max.gaussian_codebook(2))
    cal = _sample_mse(xp, test, lloyd_max.validate_codebook(calibrated, bits=2))
    assert cal < 0.95 * gauss  # observed 0.460 vs 0.506


def test_lloyd_calibrated_codebook_beats_gaussian_on_unit_variance_laplace(xp):
    rng = np.random.default_rng(8)
    train = (rng.laplace(size=50_000) / np.sqrt(2)).astype(np.float32)
    test = (rng.laplace(size=50_000) / np.sqrt(2)).astype(np.float32)
    for bits in (2, 3):
        calibrated = lloyd_max.validate_codebook(_lloyd_calibrate(train, bits, iters=30), bits)
        gauss = _sample_mse(xp, test, lloyd_max.gaussian_codebook(bits))
        cal = _sample_mse(xp, test, calibrated)
        assert cal < 0.97 * gauss, (bits, cal, gauss)  # observed b=2 0.175 vs 0.197
