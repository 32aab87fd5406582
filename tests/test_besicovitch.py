"""The Besicovitch-product codec and its stage (spec §2): direction codebooks, assignment, the
magnitude quantisers (the seed's quirky per-vector table and our fixed one, Riemannian fixed
scales), byte accounting against the spec's §2.5 worked examples, corrupted blobs, bad specs,
and numpy/CuPy parity (GPU cases skip cleanly). Mirrors the seed's besicovitch.rs tests (§9)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kakeya_lib import backend, codecs, container, synthetic
from kakeya_lib.bitpack import pack_bits_reference
from kakeya_lib.codecs.besicovitch import BesicovitchCodec
from kakeya_lib.errors import CorruptBlobError, InputError, SpecError
from kakeya_lib.stages import besicovitch, lloyd_max

from .conftest import to_np


def rel_mse(x, y) -> float:
    x, y = to_np(x).astype(np.float64), to_np(y).astype(np.float64)
    return float(((x - y) ** 2).sum() / (x**2).sum())


def roundtrip(spec: str, x):
    codec = codecs.get(spec)
    blob = codec.encode(x)
    return codec, blob, codec.decode(blob)


def payload(blob: bytes) -> int:
    return len(blob) - container.read_container(blob).header_nbytes


# -- direction codebook and assignment ---------------------------------------------------------
def test_g2_codebook_is_the_half_circle_grid():
    book = besicovitch.direction_codebook(2, 4)
    theta = np.pi * np.arange(16) / 16
    np.testing.assert_allclose(book, np.stack([np.cos(theta), np.sin(theta)], 1), atol=1e-7)
    assert not book.flags.writeable


@pytest.mark.parametrize("g", [3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("dir_bits", [1, 4, 8])
def test_higher_g_codebooks_are_unit_with_non_negative_leading_coordinate(g, dir_bits):
    book = besicovitch.direction_codebook(g, dir_bits)
    assert book.shape == (1 << dir_bits, g)
    np.testing.assert_allclose(np.linalg.norm(book, axis=1), 1.0, atol=1e-6)
    assert (book[:, 0] >= 0).all()
    np.testing.assert_array_equal(book, besicovitch.direction_codebook(g, dir_bits))  # deterministic


def test_g3_codebook_follows_the_seeds_fibonacci_formula():
    m = 8
    i = np.arange(m)
    z = 1 - 2 * (i + 0.5) / m
    r = np.sqrt(1 - z * z)
    a = 2 * np.pi * i / ((1 + np.sqrt(5)) / 2)
    expected = np.stack([np.abs(z), r * np.cos(a), r * np.sin(a)], 1)
    np.testing.assert_allclose(besicovitch.direction_codebook(3, 3), expected, atol=1e-6)


def test_assign_returns_the_signed_projection_on_the_nearest_line(xp):
    z = xp.asarray(np.array([[3.0, 0.0, -2.5, 0.0, 0.0, 0.0, 0.0, 2.0]], dtype=np.float32))
    ids, alpha = besicovitch.assign(z, 2, 4, xp)
    # (3,0) -> id 0, α 3; (-2.5,0) -> id 0, α -2.5; an all-zero group -> id 0, α 0; (0,2) -> θ = π/2
    np.testing.assert_array_equal(to_np(ids), [[0, 0, 0, 8]])
    np.testing.assert_allclose(to_np(alpha), [[3.0, -2.5, 0.0, 2.0]], atol=1e-6)


def test_codebook_aligned_data_is_lossless_in_f16_mode(xp):
    book = besicovitch.direction_codebook(3, 5)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 32, size=(64, 8))
    alpha = rng.uniform(-4, 4, size=(64, 8)).astype(np.float16).astype(np.float32)
    x = (alpha[..., None] * book[ids]).reshape(64, 24)
    _, _, y = roundtrip("besicovitch:g=3,dir=5,mode=f16,mean=0", xp.asarray(x))
    assert float(((to_np(y) - x) ** 2).mean()) < 1e-5


# -- round trips and error vs bits ---------------------------------------------------------------
@pytest.mark.parametrize("mode,g", [("f16", 2), ("f16", 4), ("quant", 2), ("quant", 4), ("riemann", 2), ("riemann", 8)])
def test_error_falls_as_direction_bits_rise(mode, g, xp):
    x = xp.asarray(synthetic.gaussian(512, 64, seed=1))
    errs = [rel_mse(x, roundtrip(f"besicovitch:g={g},dir={d},mode={mode}", x)[2]) for d in (2, 4, 6, 8)]
    assert all(a > b for a, b in itertools.pairwise(errs)), errs


@pytest.mark.parametrize("mode", ["quant", "riemann"])
def test_error_falls_as_magnitude_bits_rise(mode, xp):
    x = xp.asarray(synthetic.gaussian(512, 64, seed=2))
    cb = ",cb=lloyd" if mode == "riemann" else ""
    errs = [rel_mse(x, roundtrip(f"besicovitch:dir=8,mode={mode},mag={m}{cb}", x)[2]) for m in (2, 3, 4, 6, 8)]
    assert all(a > b for a, b in itertools.pairwise(errs)), errs
    # observed quant 0.117 / 0.026 / 0.0058 / 3.4e-4 / 3.2e-5 (riemann lloyd similar)
    assert errs[-1] < 1e-4


def test_seed_style_quality_bounds():
    x = synthetic.gaussian(256, 32, seed=3)
    assert rel_mse(x, roundtrip("besicovitch:dir=8,mode=f16", x)[2]) < 1e-3  # M=256: observed ~1.3e-5
    assert rel_mse(x, roundtrip("besicovitch:dir=6", x)[2]) < 0.1  # quantised magnitude


def test_decode_returns_the_input_dtype_and_is_deterministic():
    x = synthetic.kv_like(300, 64, seed=4).astype(np.float16)
    codec, blob, y = roundtrip("besicovitch:block=128", x)
    assert y.dtype == np.float16 and y.shape == x.shape
    assert codec.encode(x) == blob
    np.testing.assert_array_equal(codecs.decode(blob), y)


@pytest.mark.parametrize("spec", ["besicovitch:dir=5", "besicovitch:legacy_mag=1", "besicovitch:mode=f16",
                                  "besicovitch:mode=riemann", "besicovitch:mode=riemann,mean=0,g=4"])
def test_zero_input_and_zero_rows_decode_to_zero(spec, xp):
    z = xp.zeros((40, 16), dtype=xp.float32)
    np.testing.assert_array_equal(to_np(roundtrip(spec, z)[2]), 0.0)
    x = synthetic.gaussian(40, 16, seed=5)
    x[7] = 0.0
    y = to_np(roundtrip(spec + (",mean=0" if "mean" not in spec else ""), xp.asarray(x))[2])
    if "riemann" in spec:
        # a fixed scale and an even, symmetric table: α = 0 lands on the smallest level ±c_0·s_k
        assert np.linalg.norm(y[7]) < 0.3 * np.median(np.linalg.norm(x, axis=1))
    else:
        np.testing.assert_array_equal(y[7], 0.0)


@pytest.mark.parametrize("mode", ["f16", "quant", "riemann"])
def test_mean_subtraction_helps_on_high_mean_data(mode):
    x = synthetic.gaussian(2048, 64, seed=5) + 8.0
    with_mean = rel_mse(x, roundtrip(f"besicovitch:dir=6,mode={mode}", x)[2])
    without = rel_mse(x, roundtrip(f"besicovitch:dir=6,mode={mode},mean=0", x)[2])
    assert with_mean * 20 < without  # observed 65x (f16), 28x (quant, dir 5), 106x (riemann)


# -- bytes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,per_vector,analytical_bits",
    [
        # spec §2.5 worked examples at D=128, g=2 (G=64)
        ("besicovitch:dir=3,mag=4,mode=quant", 24 + 32 + 2, 466),
        ("besicovitch:dir=6,mode=f16", 48 + 128, None),
        ("besicovitch:dir=6,mag=3,mode=quant", 48 + 24 + 2, None),
        ("besicovitch:dir=5,mag=4,mode=quant", 40 + 32 + 2, 594),
        ("besicovitch:dir=5,mag=4,mode=quant,legacy_mag=1", 74, 594),
    ],
)
def test_bytes_match_the_spec_worked_examples(spec, per_vector, analytical_bits):
    n, d = 2048, 128  # two blocks of 1024
    x = synthetic.gaussian(n, d, seed=6)
    codec, blob, _ = roundtrip(spec, x)
    assert payload(blob) == n * per_vector + 2 * 256  # + 2D bytes of f16 mean per block
    ledger = codec.ledger(blob)
    assert sum(ledger.values()) == len(blob)
    assert ledger["skeleton"] == 2 * 256
    if analytical_bits is not None:  # "466 bits/vector" / "594 bits/vector incl. mean at bs=1024"
        assert payload(blob) * 8 / n == analytical_bits
    assert codec.params.config().vector_nbytes(d) == per_vector


def test_worked_example_ledger_and_the_seeds_analytical_bits():
    x = synthetic.gaussian(1024, 128, seed=7)
    codec, blob, _ = roundtrip("besicovitch:g=2,dir=3,mag=4,mode=quant", x)
    ledger = codec.ledger(blob)
    assert ledger["codes"] == 1024 * (24 + 32) and ledger["norms"] == 1024 * 2 and ledger["skeleton"] == 256
    cfg = codec.params.config()
    assert cfg.analytical_bits(128) == 64 * 3 + 64 * 4 + 16
    assert besicovitch.BesiConfig(dir_bits=6, mag_mode="f16").analytical_bits(128) == 64 * 6 + 64 * 16


def test_rows_are_padded_to_whole_bytes_as_the_seed_counts_per_vector():
    n, d = 100, 10  # G = 5: 15 direction bits -> 2 bytes a row, 15 magnitude bits -> 2 bytes
    x = synthetic.gaussian(n, d, seed=8)
    codec, blob, y = roundtrip("besicovitch:dir=3,mag=3,mean=0", x)
    assert codec.params.config().vector_nbytes(d) == 2 + 2 + 2
    assert payload(blob) == n * 6
    assert rel_mse(x, y) < 0.2


def test_riemann_bytes_count_the_stored_scales():
    n, d = 1500, 128  # a full block and a tail of 476 rows
    x = synthetic.gaussian(n, d, seed=9)
    codec, blob, _ = roundtrip("besicovitch:dir=6,mag=4,mode=riemann", x)
    ledger = codec.ledger(blob)
    assert ledger["scales"] == 2 * 64 * 2  # 64 f16 scales per block, 2 blocks: the seed left these out
    assert ledger["skeleton"] == 2 * 256
    assert ledger["codes"] == n * (48 + 32)  # = the seed's floor(N·G·(db+mb)/8) at D=128
    assert "norms" not in ledger


def test_renormalises_per_vector_only_in_quant_mode():
    assert codecs.get("besicovitch:mode=quant").renormalises_per_vector
    assert codecs.get("besicovitch:legacy_mag=1").renormalises_per_vector
    assert not codecs.get("besicovitch:mode=f16").renormalises_per_vector
    assert not codecs.get("besicovitch:mode=riemann").renormalises_per_vector
    assert isinstance(codecs.get("besicovitch"), BesicovitchCodec)


# -- the seed's magnitude quirk and our fixed table ----------------------------------------------
@pytest.mark.parametrize("mag,reachable,top", [(4, 8, 0.9422), (3, 4, 0.756268)])
def test_legacy_table_reaches_only_inner_levels_and_shrinks_the_largest_group(mag, reachable, top, xp):
    x = xp.asarray(synthetic.gaussian(2048, 128, seed=10))
    cfg = besicovitch.BesiConfig(g=2, dir_bits=5, mag_mode="quant", mag_bits=mag, legacy_mag=True)
    codes = besicovitch.encode_groups(x, cfg, xp)
    mags, scales = to_np(codes.mags), to_np(codes.scales)
    assert len(np.unique(mags)) == reachable  # of 2**mag
    alpha_hat = to_np(besicovitch.dequantize_magnitudes(codes.mags, codes.scales, cfg, xp))
    peak = np.abs(alpha_hat).max(axis=1)
    np.testing.assert_allclose(peak, np.float32(top) * scales, rtol=1e-6)
    fixed = besicovitch.BesiConfig(g=2, dir_bits=5, mag_mode="quant", mag_bits=mag)
    fcodes = besicovitch.encode_groups(x, fixed, xp)
    assert len(np.unique(to_np(fcodes.mags))) == 1 << mag  # every level used
    fpeak = np.abs(to_np(besicovitch.dequantize_magnitudes(fcodes.mags, fcodes.scales, fixed, xp))).max(axis=1)
    np.testing.assert_allclose(fpeak, to_np(fcodes.scales), rtol=1e-6)  # the largest group is kept


def test_legacy_scale_is_the_f16_max_magnitude_and_fixed_variant_beats_it():
    x = synthetic.gaussian(4096, 128, seed=11)
    _, alpha = besicovitch.assign(x, 2, 3, np)
    codes = besicovitch.encode_groups(x, besicovitch.BesiConfig(dir_bits=3, legacy_mag=True), np)
    np.testing.assert_array_equal(codes.scales, np.abs(alpha).max(1).astype(np.float16).astype(np.float32))
    legacy = rel_mse(x, roundtrip("besicovitch:dir=3,mag=4,legacy_mag=1", x)[2])
    fixed = rel_mse(x, roundtrip("besicovitch:dir=3,mag=4", x)[2])
    assert fixed < 0.6 * legacy  # observed 0.0195 vs 0.0394
    for mag in (2, 3):
        assert rel_mse(x, roundtrip(f"besicovitch:dir=3,mag={mag}", x)[2]) < rel_mse(
            x, roundtrip(f"besicovitch:dir=3,mag={mag},legacy_mag=1", x)[2])


def test_magnitude_tables():
    np.testing.assert_allclose(besicovitch.range_levels(2), [-1, -1 / 3, 1 / 3, 1], atol=1e-7)
    q = besicovitch.quantile_levels(4)
    assert q[-1] == pytest.approx(1.8627, abs=1e-3) and np.allclose(q, -q[::-1])  # the seed's ±1.86
    cfg = besicovitch.BesiConfig(mag_mode="riemann", mag_bits=3, centroids="lloyd")
    np.testing.assert_array_equal(cfg.levels(), lloyd_max.gaussian_codebook(3))
    table = (-2.27579, -1.5918, -0.98932, -0.42174, 0.42171, 0.99242, 1.59454, 2.27182)  # riemann_m3_d4
    np.testing.assert_allclose(besicovitch.BesiConfig(mag_mode="riemann", mag_bits=3, centroids=table).levels(), table)
    np.testing.assert_array_equal(besicovitch.BesiConfig(legacy_mag=True).levels(), lloyd_max.seed_table(4))


def test_riemann_stage_uses_the_given_fixed_scales(xp):
    x = xp.asarray(synthetic.gaussian(512, 16, seed=12))
    cfg = besicovitch.BesiConfig(g=2, dir_bits=6, mag_mode="riemann", mag_bits=4)
    s = besicovitch.group_scales(x, 2, "pct99", xp, dir_bits=6)
    _, alpha = besicovitch.assign(x, 2, 6, xp)
    expected = np.percentile(np.abs(to_np(alpha)), 99, axis=0) / 2.7
    np.testing.assert_allclose(to_np(s), expected, rtol=1e-5)
    codes = besicovitch.encode_groups(x, cfg, xp, group_scales=s)
    alpha_hat = to_np(besicovitch.dequantize_magnitudes(codes.mags, None, cfg, xp, group_scales=s))
    np.testing.assert_allclose(alpha_hat, besicovitch.quantile_levels(4)[to_np(codes.mags)] * to_np(s)[None, :], rtol=1e-6)
    with pytest.raises(InputError, match="group_scales"):
        besicovitch.encode_groups(x, cfg, xp)
    for method in besicovitch.SCALE_METHODS:
        assert to_np(besicovitch.group_scales(x, 2, method, xp)).shape == (8,)


# -- the per-vector serialisation the kakeya codec reuses ----------------------------------------
@pytest.mark.parametrize("dir_bits,mode,mag", [(3, "quant", 3), (4, "quant", 4), (6, "f16", 4), (7, "f16", 4),
                                               (5, "riemann", 3), (3, "quant", 4)])
def test_per_vector_records_round_trip_exactly(dir_bits, mode, mag, xp):
    w = 30  # G = 15 at g=2: no field ends on a byte boundary
    x = xp.asarray(synthetic.gaussian(50, w, seed=13))
    cfg = besicovitch.BesiConfig(g=2, dir_bits=dir_bits, mag_mode=mode, mag_bits=mag)
    s = xp.ones(15, dtype=xp.float32) if mode == "riemann" else None
    codes = besicovitch.encode_groups(x, cfg, xp, group_scales=s)
    raw = besicovitch.codes_to_bytes(codes, cfg, xp)
    assert len(raw) == 50 * cfg.vector_nbytes(w)
    back = besicovitch.codes_from_bytes(raw, 50, w, cfg, xp)
    np.testing.assert_array_equal(to_np(back.dir_ids), to_np(codes.dir_ids))
    np.testing.assert_array_equal(to_np(back.mags), to_np(codes.mags))
    if mode == "quant":
        np.testing.assert_array_equal(to_np(back.scales), to_np(codes.scales))
    np.testing.assert_array_equal(to_np(besicovitch.decode_groups(back, cfg, xp, s)), to_np(besicovitch.decode_groups(codes, cfg, xp, s)))
    with pytest.raises(CorruptBlobError):
        besicovitch.codes_from_bytes(raw[:-1], 50, w, cfg, xp)


def test_pack_rows_is_pack_bits_of_each_row():
    rng = np.random.default_rng(14)
    for bits, count in [(3, 5), (5, 7), (8, 3), (2, 4)]:
        v = rng.integers(0, 1 << bits, size=(9, count))
        packed = besicovitch.pack_rows(v, bits, np)
        for r in range(9):
            assert bytes(packed[r]) == pack_bits_reference([int(a) for a in v[r]], bits)
        np.testing.assert_array_equal(besicovitch.unpack_rows(packed, bits, count, np), v)
    bad = besicovitch.pack_rows(np.zeros((2, 5), dtype=np.int64), 3, np)
    bad[0, 1] = 0x80  # bit 15 of a 15-bit row is padding
    with pytest.raises(CorruptBlobError, match="padding"):
        besicovitch.unpack_rows(bad, 3, 5, np)


# -- corrupted bytes ---------------------------------------------------------------------------
def _rewrite(blob: bytes, drop: tuple[str, ...] = (), **replace: bytes) -> bytes:
    box = container.read_container(blob)
    sections = [(name, replace.get(name, bytes(buf))) for name, buf in box.sections.items() if name not in drop]
    return container.write_container(box.spec, (box.n_rows, box.n_cols), box.dtype, sections)


@pytest.mark.parametrize("spec", ["besicovitch:block=64", "besicovitch:mode=riemann,block=64", "besicovitch:mode=f16"])
def test_truncations_and_byte_flips_are_rejected(spec):
    codec = codecs.get(spec)
    blob = codec.encode(synthetic.kv_like(150, 16, seed=15))
    for cut in range(0, len(blob), 11):
        with pytest.raises(CorruptBlobError):
            codec.decode(blob[:cut])
    for pos in range(0, len(blob), 13):
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        with pytest.raises(CorruptBlobError):
            codec.decode(bytes(bad))


def test_inconsistent_sections_are_rejected_even_with_a_valid_checksum():
    codec = codecs.get("besicovitch:block=64")
    blob = codec.encode(synthetic.kv_like(150, 16, seed=16))
    box = container.read_container(blob)
    with pytest.raises(CorruptBlobError, match="codes section"):
        codec.decode(_rewrite(blob, codes=bytes(box.sections["codes"])[:-1]))
    with pytest.raises(CorruptBlobError, match="sections"):
        codec.decode(_rewrite(blob, drop=("skeleton",)))
    norms = bytearray(box.sections["norms"])
    norms[0:2] = np.array([np.inf], dtype="<f2").tobytes()
    with pytest.raises(CorruptBlobError, match="not finite"):
        codec.decode(_rewrite(blob, norms=bytes(norms)))
    norms[0:2] = np.array([-1.0], dtype="<f2").tobytes()
    with pytest.raises(CorruptBlobError, match="negative"):
        codec.decode(_rewrite(blob, norms=bytes(norms)))
    riemann = codecs.get("besicovitch:mode=riemann,block=64")
    rblob = riemann.encode(synthetic.kv_like(150, 16, seed=16))
    scales = bytearray(container.read_container(rblob).sections["scales"])
    scales[0:2] = np.array([-2.0], dtype="<f2").tobytes()
    with pytest.raises(CorruptBlobError, match="negative"):
        riemann.decode(_rewrite(rblob, scales=bytes(scales)))


def test_nonzero_padding_bits_are_rejected():
    codec = codecs.get("besicovitch:dir=3,mag=3,mean=0")  # D=10: 15-bit rows
    blob = codec.encode(synthetic.gaussian(20, 10, seed=17))
    codes = bytearray(container.read_container(blob).sections["codes"])
    codes[1] |= 0x80
    with pytest.raises(CorruptBlobError, match="padding"):
        codec.decode(_rewrite(blob, codes=bytes(codes)))


def test_decoding_with_another_spec_names_the_right_one():
    blob = codecs.get("besicovitch:dir=3").encode(synthetic.gaussian(16, 8))
    with pytest.raises(CorruptBlobError, match="besicovitch:dir=3"):
        codecs.get("besicovitch").decode(blob)
    assert codecs.decode(blob).shape == (16, 8)


# -- bad specs and input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,match",
    [
        ("besicovitch:g=1", "g must be"),
        ("besicovitch:g=9", "g must be"),
        ("besicovitch:dir=0", "dir must be"),
        ("besicovitch:dir=9", "dir must be"),
        ("besicovitch:mag=9", "mag must be"),
        ("besicovitch:mode=int", "f16, quant, riemann"),
        ("besicovitch:block=0", "block"),
        ("besicovitch:mode=f16,mag=3", "mag is not used"),
        ("besicovitch:mode=f16,legacy_mag=1", "legacy_mag"),
        ("besicovitch:legacy_mag=1,mag=5", "1..4"),
        ("besicovitch:mag=1", "mag >= 2"),
        ("besicovitch:scale=rms", "riemann only"),
        ("besicovitch:mode=riemann,scale=pct50", "pct99"),
        ("besicovitch:cb=lloyd", "riemann only"),
        ("besicovitch:gg=2", "unknown key"),
    ],
)
def test_bad_specs_raise_spec_errors(spec, match):
    with pytest.raises(SpecError, match=match):
        codecs.get(spec)


def test_stage_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="magnitude mode"):
        besicovitch.BesiConfig(mag_mode="int")
    with pytest.raises(ValueError, match="riemann centroid table"):
        besicovitch.BesiConfig(mag_mode="riemann", mag_bits=2, centroids=(1.0, 0.0, 2.0, 3.0))
    with pytest.raises(InputError, match="divide"):
        besicovitch.BesiConfig(g=3).groups(128)


def test_bad_input_is_rejected():
    codec = codecs.get("besicovitch:g=4")
    with pytest.raises(InputError, match="g=4 must divide"):
        codec.encode(synthetic.gaussian(8, 10))
    x = synthetic.gaussian(8, 8)
    x[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        codec.encode(x)
    with pytest.raises(InputError, match="f16"):
        codecs.get("besicovitch:mode=f16").encode(np.full((4, 4), 1e6, dtype=np.float32))
    assert "besicovitch" in codecs.names()


# -- numpy vs CuPy -------------------------------------------------------------------------------
gpu = [pytest.mark.gpu,
       pytest.mark.skipif(not backend.gpu_available(), reason="CuPy with a usable CUDA device is not available")]


@pytest.mark.parametrize("spec", ["besicovitch", "besicovitch:legacy_mag=1,dir=3", "besicovitch:mode=f16,g=4,dir=8",
                                  "besicovitch:mode=riemann,dir=6", "besicovitch:mode=riemann,cb=lloyd,scale=rms,g=2"])
@pytest.mark.parametrize("_gpu", [pytest.param(0, marks=gpu)])
def test_codec_parity(spec, _gpu, monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    cp = backend.cupy_or_raise()
    x = synthetic.kv_like(2048, 128, seed=0)
    codec = codecs.get(spec)
    blob_cpu, blob_gpu = codec.encode(x), codec.encode(cp.asarray(x))
    assert len(blob_cpu) == len(blob_gpu)  # no data-dependent sizes
    y_cpu, y_gpu = codec.decode(blob_cpu, device="cpu"), codec.decode(blob_gpu, device="gpu").get()
    assert rel_mse(x, y_gpu) == pytest.approx(rel_mse(x, y_cpu), rel=0.02, abs=1e-7)
    np.testing.assert_allclose(codec.decode(blob_gpu, device="cpu"), y_gpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("_gpu", [pytest.param(0, marks=gpu)])
def test_stage_parity(_gpu, monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    cp = backend.cupy_or_raise()
    x = synthetic.gaussian(512, 64, seed=1)
    for g in (2, 4):
        ids_c, a_c = besicovitch.assign(x, g, 6, np)
        ids_g, a_g = besicovitch.assign(cp.asarray(x), g, 6, cp)
        assert (ids_g.get() == ids_c).mean() > 0.999  # float ties may differ in the last bit
        np.testing.assert_allclose(a_g.get(), a_c, atol=1e-4)
    v = np.random.default_rng(0).integers(0, 8, size=(33, 5))
    np.testing.assert_array_equal(besicovitch.pack_rows(cp.asarray(v), 3, cp).get(), besicovitch.pack_rows(v, 3, np))
    np.testing.assert_array_equal(besicovitch.unpack_rows(besicovitch.pack_rows(cp.asarray(v), 3, cp), 3, 5, cp).get(), v)
