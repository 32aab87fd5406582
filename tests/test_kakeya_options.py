"""The ``kakeya`` codec's later options: uniform quantiser, entropy-coded indices, quantised
per-row scalars, the no-rotation ablation switch, ``unit_residuals`` and ``calib:`` codebooks;
plus the two stages behind them (:mod:`~kakeya_lib.stages.uniform`, ``scalarq``)."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import codecs, container, synthetic
from kakeya_lib.bitpack import packed_nbytes
from kakeya_lib.codecs import kakeya as kakeya_mod
from kakeya_lib.errors import CorruptBlobError, InputError, SpecError
from kakeya_lib.stages import lloyd_max, scalarq, uniform

from .test_kakeya_codec import _rewrite, rel_mse, roundtrip


# -- uniform stage -------------------------------------------------------------------------------
def test_uniform_optimal_steps_match_the_known_gaussian_values():
    # Max (1960), table of optimum uniform quantisers for N(0, 1): 3 levels 1.224, 7 levels 0.6289
    assert uniform.optimal_step(2) == pytest.approx(1.224, abs=2e-3)
    assert uniform.optimal_step(3) == pytest.approx(0.6289, abs=2e-3)
    # a uniform grid never beats Lloyd–Max with one more level, and Lloyd–Max 3 bit is 0.03454
    assert uniform.gaussian_mse(3, 0) > 0.03454


def test_uniform_levels_are_symmetric_cell_centroids():
    lv = uniform.levels(3, 0.5)
    assert lv.shape == (7,) and lv[3] == 0 and np.allclose(lv, -lv[::-1])
    assert np.allclose(lv[1:-1], (np.arange(1, 6) - 3) * 0.5, atol=0.03)  # inner cells: near the grid
    assert lv[-1] > 1.25  # outer, open cell: its centroid lies beyond its grid point 1.5 - 0.25


def test_uniform_quantize_rounds_and_clips():
    z = np.array([-9.0, -0.26, -0.24, 0.0, 0.74, 0.76, 9.0], dtype=np.float32)
    idx = uniform.quantize(z, 3, 0.5, np)
    assert idx.tolist() == [0, 2, 3, 3, 4, 5, 6]


def test_uniform_empirical_mse_matches_theory(rng):
    z = rng.standard_normal(400_000).astype(np.float32)
    for bits, step in [(3, 0), (4, 0.6)]:
        zh = uniform.levels(bits, step)[uniform.quantize(z, bits, step, np)]
        assert float(((z - zh) ** 2).mean()) == pytest.approx(uniform.gaussian_mse(bits, step), rel=0.02)


# -- scalarq stage -------------------------------------------------------------------------------
def test_log_codes_keep_relative_error_within_half_a_step(rng):
    v = np.exp(rng.uniform(-3, 2, 1000)).astype(np.float32)
    v[5] = 0.0
    buf, dec = scalarq.encode_log(v, 8, np, 1e-12)
    assert len(buf) == scalarq.nbytes(1000, 8)
    back = scalarq.decode_log(memoryview(buf), 1000, 8, np)
    assert np.array_equal(back, dec) and back[5] == 0
    live = v > 0
    span = np.log(v[live]).max() - np.log(v[live]).min()
    assert np.abs(np.log(back[live] / v[live])).max() <= span / 254 / 2 + 1e-5


def test_linear_codes_and_constant_blocks(rng):
    v = rng.normal(size=300).astype(np.float32)
    buf, dec = scalarq.encode_linear(v, 6, np)
    back = scalarq.decode_linear(memoryview(buf), 300, 6, np)
    assert np.array_equal(back, dec)
    assert np.abs(back - v).max() <= (v.max() - v.min()) / 63 / 2 + 1e-6
    const = np.full(10, 2.5, np.float32)
    assert np.array_equal(scalarq.decode_linear(memoryview(scalarq.encode_linear(const, 4, np)[0]), 10, 4, np), const)


def test_scalarq_rejects_bad_fields():
    buf = bytearray(scalarq.encode_linear(np.arange(8, dtype=np.float32), 4, np)[0])
    with pytest.raises(CorruptBlobError, match="bytes"):
        scalarq.decode_linear(memoryview(bytes(buf[:-1])), 8, 4, np)
    buf[0:8] = np.array([2.0, 1.0], dtype="<f4").tobytes()  # lo > hi
    with pytest.raises(CorruptBlobError, match="range"):
        scalarq.decode_linear(memoryview(bytes(buf)), 8, 4, np)


# -- codec options -------------------------------------------------------------------------------
def test_scalar_bits_shrink_the_norms_section_and_cost_almost_no_error():
    n, d = 2048, 64
    x = synthetic.kv_like(n, d, seed=40)
    _, blob_f, y_f = roundtrip("kakeya:pca=none,block=1024", x)
    codec, blob_q, y_q = roundtrip("kakeya:pca=none,block=1024,scalar_bits=8", x)
    assert codec.ledger(blob_q)["norms"] == 2 * 2 * scalarq.nbytes(1024, 8)  # t and ‖r‖ per block
    assert codecs.ledger(blob_f)["norms"] == 2 * 2 * n  # two f16 per row
    assert rel_mse(x, y_q) < rel_mse(x, y_f) * 1.01


def test_uniform_fixed_rate_stores_bits_per_index_and_is_worse_than_lloyd():
    n, d = 1024, 64
    x = synthetic.gaussian(n, d, seed=41)
    codec, blob, y = roundtrip("kakeya:pca=none,k=0,bits=3,quant=uniform,block=1024", x)
    assert codec.ledger(blob)["codes"] == packed_nbytes(n * d, 3)
    _, _, y_lm = roundtrip("kakeya:pca=none,k=0,bits=3,block=1024", x)
    assert rel_mse(x, y_lm) < rel_mse(x, y) < 0.06  # theory: 0.0345 vs 0.0451


def test_rotate_off_codes_d_eff_coordinates_and_is_worse_on_skewed_data():
    n, d = 1024, 48  # not a power of two: without the rotation nothing is padded
    x = synthetic.kv_like(n, d, seed=42)
    x[:, 0] *= 30  # one heavy channel: what the rotation spreads out
    codec, blob, y_norot = roundtrip("kakeya:pca=none,k=0,bits=3,rotate=0,block=1024", x)
    assert codec.ledger(blob)["codes"] == packed_nbytes(n * d, 3)
    assert codec.block_table(blob)[0].width == d
    _, blob_rot, y_rot = roundtrip("kakeya:pca=none,k=0,bits=3,block=1024", x)
    assert codecs.ledger(blob_rot)["codes"] == packed_nbytes(n * 64, 3)
    assert rel_mse(x, y_rot) < rel_mse(x, y_norot)


def test_unit_residuals_are_the_quantised_unit_rms_coordinates():
    x = synthetic.kv_like(1500, 64, seed=43)
    z = codecs.get("kakeya:pca=none,bits=3,block=512").unit_residuals(x)
    assert z.shape == (1500, 64) and z.dtype == np.float32
    assert np.allclose((z**2).mean(axis=1), 1.0, atol=1e-4)
    rng = np.random.default_rng(1)
    mixed = np.concatenate([np.outer(rng.normal(size=100), rng.normal(size=32)),  # rank 1: width 1
                            rng.normal(size=(100, 32))]).astype(np.float32)  # full rank: width 32
    with pytest.raises(InputError, match="widths"):
        codecs.get("kakeya:vr=0.9,k=0,block=100").unit_residuals(mixed)


def test_calib_codebooks_resolve_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(kakeya_mod, "CALIB_DIR", tmp_path)
    table = lloyd_max.gaussian_codebook(3) * 1.1
    np.save(tmp_path / "demo_k_b3.npy", table)
    x = synthetic.kv_like(256, 32, seed=44)
    codec, blob, y = roundtrip("kakeya:bits=3,codebook=calib:demo_k_b3", x)
    stored = np.frombuffer(container.read_container(blob).sections["codebook"], dtype="<f4")
    assert np.array_equal(stored, table.astype(np.float32))
    (tmp_path / "demo_k_b3.npy").unlink()  # decode needs only the blob
    assert np.array_equal(codecs.decode(blob), y)
    with pytest.raises(InputError, match="plain file name"):
        codecs.get("kakeya:codebook=calib:../x").encode(x)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("kakeya:quant=uniform,bits=1", "bits >= 2"),
        ("kakeya:quant=uniform,codebook=x.npy", "custom codebook"),
        ("kakeya:step=0.5", "step only applies"),
        ("kakeya:quant=uniform,step=-1", "step must be"),
        ("kakeya:scalar_bits=1", "scalar_bits"),
        ("kakeya:scalar_bits=17", "scalar_bits"),
        ("kakeya:quant=vq", "not one of"),
    ],
)
def test_bad_option_specs(spec, match):
    with pytest.raises(SpecError, match=match):
        codecs.get(spec)


def test_uniform_blob_with_out_of_range_index_is_rejected():
    x = synthetic.kv_like(64, 16, seed=45)
    codec = codecs.get("kakeya:pca=none,k=0,bits=3,quant=uniform,block=64")
    blob = codec.encode(x)
    codes = bytearray(container.read_container(blob).sections["codes"])
    codes[0] = 0xFF  # index 7: the uniform grid has only 7 levels (0..6)
    with pytest.raises(CorruptBlobError, match="exceeds the codebook"):
        codec.decode(_rewrite(blob, codes=bytes(codes)))


def test_quantised_scalar_corruption_is_rejected():
    x = synthetic.kv_like(64, 16, seed=46)
    codec = codecs.get("kakeya:pca=none,block=64,scalar_bits=6")
    blob = codec.encode(x)
    norms = bytearray(container.read_container(blob).sections["norms"])
    norms[0:4] = np.array([np.nan], dtype="<f4").tobytes()
    with pytest.raises(CorruptBlobError, match="range"):
        codec.decode(_rewrite(blob, norms=bytes(norms)))


# -- K-residual Besicovitch ---------------------------------------------------------------------
def test_residual_besicovitch_replaces_lloyd_max_and_counts_its_records():
    from kakeya_lib.stages import besicovitch

    n, d = 1024, 64
    x = synthetic.kv_like(n, d, seed=47)
    codec, blob, y = roundtrip("kakeya:pca=none,k=0,block=1024,rbesi_dir=3,rbesi_mag=4", x)
    cfg = besicovitch.BesiConfig(g=2, dir_bits=3, mag_mode="quant", mag_bits=4)
    assert codec.ledger(blob)["codes"] == n * cfg.vector_nbytes(64)  # 24 + 32 + 2 bytes per row
    assert rel_mse(x, y) < 0.05
    _, _, y_legacy = roundtrip("kakeya:pca=none,k=0,block=1024,rbesi_dir=3,rbesi_mag=4,legacy_rbesi_mag=1", x)
    assert rel_mse(x, y) < rel_mse(x, y_legacy)  # the seed's quirky magnitudes lose resolution
    with pytest.raises(SpecError, match="replaces the scalar quantiser"):
        codecs.get("kakeya:rbesi_dir=3,outlier=2")
    with pytest.raises(SpecError, match="legacy_rbesi_mag"):
        codecs.get("kakeya:legacy_rbesi_mag=1")
    box = container.read_container(blob)
    with pytest.raises(CorruptBlobError):
        codec.decode(_rewrite(blob, codes=bytes(box.sections["codes"])[:-3]))


# -- entropy-coded indices -----------------------------------------------------------------------
def test_entropy_coding_is_lossless_and_smaller_than_packed_codes():
    n, d = 2048, 64
    x = synthetic.kv_like(n, d, seed=48)
    _, blob_packed, y_packed = roundtrip("kakeya:pca=none,k=0,bits=3,block=1024", x)
    codec, blob, y = roundtrip("kakeya:pca=none,k=0,bits=3,block=1024,entropy=1", x)
    assert np.array_equal(y, y_packed)  # same indices, only their storage differs
    ledger = codec.ledger(blob)
    assert ledger["codes"] == 0 and ledger["entropy"] < packed_nbytes(n * d, 3) * 0.97  # LM-3 entropy ≈ 2.83 bits
    assert len(blob) < len(blob_packed)


def test_entropy_coded_uniform_grid_beats_lloyd_max_at_equal_bytes():
    x = synthetic.gaussian(4096, 64, seed=49)
    _, blob_lm, y_lm = roundtrip("kakeya:pca=none,k=0,bits=3,block=1024", x)
    _, blob_u, y_u = roundtrip("kakeya:pca=none,k=0,bits=5,quant=uniform,step=0.62,block=1024,entropy=1", x)
    assert len(blob_u) < len(blob_lm) and rel_mse(x, y_u) < rel_mse(x, y_lm)


def test_corrupted_entropy_streams_are_rejected():
    x = synthetic.kv_like(256, 32, seed=50)
    codec = codecs.get("kakeya:pca=none,bits=5,quant=uniform,step=0.6,block=128,entropy=1")
    blob = codec.encode(x)
    raw = bytes(container.read_container(blob).sections["entropy"])
    with pytest.raises(CorruptBlobError):
        codec.decode(_rewrite(blob, entropy=raw[:-2]))
    with pytest.raises(CorruptBlobError, match="entropy section"):
        codec.decode(_rewrite(blob, entropy=raw + b"\0"))
    flipped = bytearray(raw)
    flipped[len(flipped) // 2] ^= 0x5A
    with pytest.raises(CorruptBlobError):
        codec.decode(_rewrite(blob, entropy=bytes(flipped)))
    plain = codecs.get("kakeya:pca=none,bits=5,quant=uniform,step=0.6,block=128")
    box = container.read_container(plain.encode(x))
    sections = [(k, bytes(v)) for k, v in box.sections.items()] + [("entropy", b"x")]
    with pytest.raises(CorruptBlobError, match="unexpected entropy"):
        plain.decode(container.write_container(box.spec, (box.n_rows, box.n_cols), box.dtype, sections))


def test_per_coordinate_entropy_streams_round_trip_and_suit_unrotated_klt_coefficients():
    n, d = 2048, 32
    rng = np.random.default_rng(51)
    x = (rng.normal(size=(n, d)) * np.geomspace(8, 0.1, d)).astype(np.float32)  # strongly anisotropic
    base = "kakeya:vr=1.0,k=0,rotate=0,bits=6,quant=uniform,step=0.3,block=1024"
    _, blob1, y1 = roundtrip(base + ",entropy=1", x)
    codec, blob2, y2 = roundtrip(base + ",entropy=2", x)
    assert np.array_equal(y1, y2)  # same indices, coded per coordinate
    assert codec.ledger(blob2)["entropy"] < codecs.ledger(blob1)["entropy"]  # each coordinate's own table
    with pytest.raises(SpecError, match="entropy must be"):
        codecs.get("kakeya:entropy=3")
