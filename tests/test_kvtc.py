"""KVTC (arXiv 2511.01815): the DP bit allocation against brute force, the quantiser's distortion
tables, calibration artifacts (fit, save/load without pickle, validation), the ``kvtc`` codec's
bytes, rate/distortion, coders, refusals, and a tiny-model calibration on the calib split."""

from __future__ import annotations

import itertools
import json
import struct

import numpy as np
import pytest

from kakeya_lib import codecs
from kakeya_lib.codecs import kakeya as kakeya_codec
from kakeya_lib.codecs import kvtc
from kakeya_lib.bitpack import packed_nbytes
from kakeya_lib.container import read_container, write_container
from kakeya_lib.errors import CorruptBlobError, InputError, SpecError
from kakeya_lib.llm import corpora, kvtc_calib
from kakeya_lib.stages import bit_allocation as ba
from tests.conftest import TinyTokenizer

H, D = 2, 16
W = H * D
NAME = "syn-kvtc"


@pytest.fixture(scope="module")
def calib_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("kvtc") / "calib"


@pytest.fixture(autouse=True)
def _calib_dir(calib_folder, monkeypatch):
    """Artifacts go to a temporary folder (shared by this module's tests), never .cache/calib."""
    monkeypatch.setattr(kakeya_codec, "CALIB_DIR", calib_folder)
    return calib_folder


def _mixing(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((W, W)) * np.geomspace(2.0, 0.02, W)[None, :]  # correlated, decaying spectrum


def _rows(t: int, seed: int, offset: float = 3.0) -> np.ndarray:
    """Synthetic rows [t·H, D] (token-major, heads interleaved) with a non-zero mean."""
    z = np.random.default_rng(seed).standard_normal((t, W)) @ _mixing().T + offset
    return z.reshape(t * H, D).astype(np.float32)


@pytest.fixture(scope="module")
def artifact(calib_folder):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kakeya_codec, "CALIB_DIR", calib_folder)
        cal = kvtc_calib.fit_kvtc({0: (_rows(3000, 1), _rows(3000, 2)), 3: (_rows(3000, 3), _rows(3000, 4))}, H,
                                  meta={"model": "synthetic"})
        cal.save(NAME)
    return cal


def _codec(**keys) -> kvtc.KVTCCodec:
    base = {"calib": NAME, "layer": 0, "stream": "k", "heads": H}
    base.update(keys)
    return codecs.get("kvtc:" + ",".join(f"{k}={v}" for k, v in base.items()))


def _rel_mse(x: np.ndarray, xh: np.ndarray) -> float:
    return float(((x - xh) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum())


# --------------------------------------------------------------------------------------------
# The dynamic programme


def _brute_force(dist: np.ndarray, budget: int) -> float:
    n, nb = dist.shape
    return min(sum(dist[i, b] for i, b in enumerate(bits))
               for bits in itertools.product(range(nb), repeat=n) if sum(bits) <= budget)


@pytest.mark.parametrize("seed", range(4))
def test_dp_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.gamma(1.0, size=4))[::-1]
    tables = [lam[:, None] * 4.0 ** -np.arange(4)[None, :],  # the textbook model, monotone
              rng.uniform(0, 1, size=(4, 4))]  # arbitrary, not monotone in b
    for dist in tables:
        for budget in range(0, 14):
            bits = ba.allocate_bits(dist, budget)
            assert bits.shape == (4,) and bits.dtype == np.int64 and bits.sum() <= budget
            assert ((bits >= 0) & (bits <= 3)).all()
            assert ba.allocation_cost(dist, bits) == pytest.approx(_brute_force(dist, budget), abs=1e-12)


def test_dp_edges_and_refusals():
    lam = np.array([4.0, 1.0, 0.25, 0.01])
    dist = lam[:, None] * 4.0 ** -np.arange(9)[None, :]
    assert ba.allocate_bits(dist, 0).tolist() == [0, 0, 0, 0]
    assert ba.allocate_bits(dist, 10_000).tolist() == [8, 8, 8, 8]  # more budget than can be spent
    low = ba.allocate_bits(dist, 3)
    assert low[-1] == 0 and low[0] >= low[1] >= low[2]  # trailing coordinates dropped first
    for bad_dist, bad_budget in ((np.ones(4), 2), (np.full((2, 3), np.nan), 2), (-np.ones((2, 3)), 2),
                                 (dist, -1), (dist, 2.5)):
        with pytest.raises(InputError):
            ba.allocate_bits(bad_dist, bad_budget)


# --------------------------------------------------------------------------------------------
# The quantiser and its distortion tables


def test_gaussian_optimal_steps_match_max_1960():
    for bits, (step, mse) in {1: (1.596, 0.3634), 2: (0.9957, 0.1188), 3: (0.5860, 0.03744)}.items():
        got_step, got_mse = ba.gaussian_optimal_step(bits)
        assert got_step == pytest.approx(step, rel=1e-3) and got_mse == pytest.approx(mse, rel=1e-3)
    steps, dist = ba.gaussian_distortion_table(np.array([4.0, 0.0]), 3)
    assert dist[0].tolist() == pytest.approx([4.0, 4 * 0.3634, 4 * 0.1188, 4 * 0.03744], rel=1e-3)
    assert (dist[1] == 0).all() and (steps > 0).all()


def test_quantiser_levels_and_clipping():
    y = np.array([[-10.0, -0.6, -0.1, 0.0, 0.4, 0.9, 10.0]]).T
    q = ba.quantize(y, np.array([0.5], dtype=np.float32), np.array([2]))
    assert q[:, 0].tolist() == [0, 0, 1, 2, 2, 3, 3]  # 4 levels: -0.75, -0.25, 0.25, 0.75
    assert ba.dequantize(q, np.array([0.5], dtype=np.float32), np.array([2]))[:, 0].tolist() == \
        [-0.75, -0.75, -0.25, 0.25, 0.25, 0.75, 0.75]


def test_measured_table_is_the_quantisers_own_error():
    rng = np.random.default_rng(0)
    y = np.column_stack([rng.standard_normal(20000) * 3.0, rng.laplace(size=20000)])
    steps, dist = ba.measured_distortion_table(y, 4)
    np.testing.assert_allclose(dist[:, 0], np.mean(y**2, axis=0))
    for b in range(1, 5):
        width = np.array([b, b])
        s = steps[:, b - 1].astype(np.float32)
        err = np.mean((y - ba.dequantize(ba.quantize(y, s, width), s, width)) ** 2, axis=0)
        np.testing.assert_allclose(dist[:, b], err, rtol=1e-5)
        # Gaussian column: close to the closed-form optimum; never worse than the Gaussian step
        assert dist[0, b] == pytest.approx(9 * ba.gaussian_optimal_step(b)[1], rel=0.05)
    g_steps, _ = ba.gaussian_distortion_table(np.mean(y**2, axis=0), 4)
    for b in range(1, 5):
        width = np.array([b, b])
        s = g_steps[:, b - 1].astype(np.float32)
        gauss_err = np.mean((y - ba.dequantize(ba.quantize(y, s, width), s, width)) ** 2, axis=0)
        assert (dist[:, b] <= gauss_err * (1 + 1e-5)).all()  # float32 rounding of the scaled samples


# --------------------------------------------------------------------------------------------
# Artifacts


def test_artifact_save_load_roundtrip_without_pickle(artifact, calib_folder):
    path = calib_folder / f"{NAME}.npz"
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype == np.float32 for k in npz.files)
        assert "L3.v.head.basis" in npz.files and npz["L3.v.head.basis"].shape == (H, D, D)
    loaded = kvtc_calib.load_kvtc(NAME)
    assert loaded.layers == [0, 3] and loaded.modes == ["concat", "head"] and loaded.heads == H
    assert loaded.head_dim == D and loaded.max_bits == 8
    for key, s in artifact.streams.items():
        t = loaded.streams[key]
        assert t.digest == s.digest
        for f in kvtc_calib.FIELDS:
            np.testing.assert_array_equal(getattr(t, f), getattr(s, f))
    concat = loaded.get(0, "k", "concat")
    np.testing.assert_allclose(concat.basis.T @ concat.basis, np.eye(W), atol=1e-5)
    assert (np.diff(concat.eig) <= 0).all()
    # bytes: every array as stored, per kind and in total; the sidecar has them too
    per_stream = W + W * W + W + W * 8 + W * 9 + (W + H * D * D + W + W * 8 + W * 9)
    assert kvtc_calib.artifact_nbytes(NAME) == 4 * 2 * 2 * per_stream
    meta = json.loads((calib_folder / f"{NAME}.json").read_text())
    assert meta["nbytes"]["total"] == kvtc_calib.artifact_nbytes(NAME) and meta["model"] == "synthetic"
    assert meta["n_tokens"] == {"L0.k": 3000, "L0.v": 3000, "L3.k": 3000, "L3.v": 3000}


def test_artifact_refusals(artifact, calib_folder):
    with pytest.raises(InputError, match="no KVTC calibration 'nope'.*available.*syn-kvtc"):
        kvtc_calib.load_kvtc("nope")
    with pytest.raises(InputError, match="not valid"):
        kvtc_calib.load_kvtc("../escape")
    with pytest.raises(InputError, match="no layer 5"):
        artifact.get(5, "k", "concat")
    only = kvtc_calib.fit_kvtc({1: (_rows(64, 5), _rows(64, 6))}, H, modes=("concat",), max_bits=3)
    with pytest.raises(InputError, match="no pca='head'"):
        only.get(1, "k", "head")
    with pytest.raises(InputError, match="rows must be"):
        kvtc_calib.fit_kvtc({0: (_rows(8, 1)[:-1], _rows(8, 2))}, H)
    with pytest.raises(InputError, match="modes"):
        kvtc_calib.fit_kvtc({0: (_rows(8, 1), _rows(8, 2))}, H, modes=("pairs",))
    # corrupted files: wrong shape, NaN, non-orthonormal basis, pickled object arrays
    good = dict(np.load(calib_folder / f"{NAME}.npz", allow_pickle=False))
    side = (calib_folder / f"{NAME}.json").read_text()
    cases = {
        "bad-shape": ({"L0.k.concat.mean": np.zeros(W + 1, np.float32)}, "shape"),
        "bad-nan": ({"L0.v.head.step": np.full((W, 8), np.nan, np.float32)}, "NaN"),
        "bad-basis": ({"L3.k.concat.basis": 2 * good["L3.k.concat.basis"]}, "orthonormal"),
    }
    for name, (patch, message) in cases.items():
        np.savez(calib_folder / f"{name}.npz", **{**good, **patch})
        (calib_folder / f"{name}.json").write_text(side)
        with pytest.raises(CorruptBlobError, match=message):
            kvtc_calib.load_kvtc(name)
    np.savez(calib_folder / "bad-pickle.npz", **{**good, "L0.k.concat.mean": np.array([object()], dtype=object)})
    (calib_folder / "bad-pickle.json").write_text(side)
    with pytest.raises(CorruptBlobError, match="pickle"):
        kvtc_calib.load_kvtc("bad-pickle")


# --------------------------------------------------------------------------------------------
# The codec


def test_spec_keys_and_head_filling(artifact):
    codec = _codec(bits=2.5)
    assert codec.groups_by_head and codec.spec == f"kvtc:bits=2.5,calib={NAME},heads=2,layer=0"
    assert codecs.for_heads(f"kvtc:calib={NAME},layer=0", H) == f"kvtc:calib={NAME},heads=2,layer=0"
    for bad in ("kvtc:bits=0", "kvtc:bits=9", "kvtc:heads=0", "kvtc:pca=rows", "kvtc:coder=zstd",
                "kvtc:calib=a/b", "kvtc:layer=-2"):
        with pytest.raises(SpecError):
            codecs.get(bad)


@pytest.mark.parametrize("pca", ["concat", "head"])
def test_near_exact_at_8_bits(artifact, pca):
    x = _rows(400, 11)
    codec = _codec(bits=8.0, pca=pca)
    assert codec.allocation().tolist() == [8] * W
    rel = _rel_mse(x, codecs.decode(codec.encode(x)))
    assert rel < 1e-3
    assert _rel_mse(x, codecs.decode(codec.encode(x.astype(np.float16)))) < 2e-3  # dtype kept, still close


@pytest.mark.parametrize("pca", ["concat", "head"])
def test_rate_falls_and_error_rises_as_bits_fall(artifact, pca):
    x = _rows(400, 12)
    sizes, errors = [], []
    for bits in (6.0, 4.0, 3.0, 2.0, 1.0, 0.25):
        codec = _codec(bits=bits, pca=pca)
        blob = codec.encode(x)
        sizes.append(len(blob))
        errors.append(_rel_mse(x, codec.decode(blob)))
        assert codec.allocation().sum() <= int(bits * W)
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert _codec(bits=0.25, pca=pca).allocation()[-1] == 0  # trailing coordinates dropped


def test_ledger_and_section_sizes(artifact):
    x = _rows(301, 13)
    t = 301
    for scale in ("calib", "prompt"):
        codec = _codec(bits=3.0, coder="none", scale=scale)
        blob = codec.encode(x)
        led = codec.ledger(blob)
        assert sum(led.values()) == len(blob)
        bits = codec.allocation()
        widths = bits[bits > 0]
        codes = sum(packed_nbytes(t * int((widths == b).sum()), int(b)) for b in np.unique(widths))
        expect = {"blocks": 9, "codes": codes} | ({"scales": 2 * widths.size} if scale == "prompt" else {})
        assert {k: v for k, v in led.items() if k != "header"} == expect
        box = read_container(blob)
        assert led["header"] == len(blob) - sum(len(v) for v in box.sections.values())
        assert list(box.sections) == ["blocks"] + (["scales"] if scale == "prompt" else []) + ["codes"]
    deflate = _codec(bits=3.0)
    led = deflate.ledger(deflate.encode(x))
    assert set(led) == {"header", "blocks", "scales", "entropy"} and led["entropy"] < codes  # DEFLATE beats packing


@pytest.mark.parametrize("scale", ["calib", "prompt"])
def test_coders_roundtrip_to_the_same_values(artifact, scale):
    x = _rows(257, 14)
    outs = {}
    for coder, extra in (("deflate", {}), ("deflate", {"lz": 1}), ("rans", {}), ("none", {})):
        codec = _codec(bits=2.5, coder=coder, scale=scale, stream="v", layer=3, **extra)
        blob = codec.encode(x)
        outs[(coder, bool(extra))] = codecs.decode(blob)
        assert outs[(coder, bool(extra))].dtype == np.float32 and outs[(coder, bool(extra))].shape == x.shape
    ref = outs[("none", False)]
    for out in outs.values():
        np.testing.assert_array_equal(out, ref)
    assert _rel_mse(x, ref) < 0.2


def test_single_token_and_all_dropped(artifact):
    x = _rows(1, 15)
    mean = artifact.get(0, "k", "concat").mean.reshape(H, D)
    xh = _codec(bits=8.0).decode(_codec(bits=8.0).encode(x))
    assert ((x - xh) ** 2).sum() / ((x - mean) ** 2).sum() < 1e-3
    tiny = _codec(bits=0.01)  # budget floor(0.32) = 0 bits: every coordinate dropped, decodes to the mean
    assert tiny.allocation().sum() == 0
    for coder in ("deflate", "rans", "none"):
        c = _codec(bits=0.01, coder=coder)
        out = c.decode(c.encode(_rows(5, 16)))
        np.testing.assert_allclose(out, np.tile(mean, (5, 1)), atol=1e-6)


def _recontainer(blob: bytes, **replace: bytes) -> bytes:
    """The blob with some section payloads replaced and a valid checksum (to reach the codec's checks)."""
    box = read_container(blob)
    sections = [(name, replace.get(name, bytes(buf))) for name, buf in box.sections.items()]
    return write_container(box.spec, (box.n_rows, box.n_cols), box.dtype, sections)


def test_corrupted_and_truncated_blobs_are_refused(artifact):
    x = _rows(200, 17)
    for coder in ("deflate", "rans", "none"):
        codec = _codec(bits=3.0, coder=coder)
        blob = codec.encode(x)
        with pytest.raises(CorruptBlobError):
            codec.decode(blob[:-7])
        flipped = bytearray(blob)
        flipped[len(blob) // 2] ^= 0x5A
        with pytest.raises(CorruptBlobError):
            codec.decode(bytes(flipped))
        payload = "codes" if coder == "none" else "entropy"
        raw = bytes(read_container(blob).sections[payload])
        for bad in (raw[:-3], raw + b"\x00\x01", b""):
            with pytest.raises(CorruptBlobError):
                codec.decode(_recontainer(blob, **{payload: bad}))
    codec = _codec(bits=3.0)
    blob = codec.encode(x)
    with pytest.raises(CorruptBlobError, match="different tables"):
        codec.decode(_recontainer(blob, blocks=struct.pack("<B8s", 1, b"\x00" * 8)))
    with pytest.raises(CorruptBlobError, match="version"):
        codec.decode(_recontainer(blob, blocks=struct.pack("<B8s", 9, artifact.get(0, "k", "concat").digest)))
    with pytest.raises(CorruptBlobError, match="blocks section"):
        codec.decode(_recontainer(blob, blocks=b"\x01"))
    # indices beyond a coordinate's width (a valid DEFLATE stream of the right length)
    bits = codec.allocation()
    widths = bits[bits > 0]
    streams = [kvtc._deflate(kvtc._deflate_symbols(np.full(200 * int((widths == b).sum()), (1 << int(b)) - 1
                                                             if b <= 2 else 255, dtype=np.uint8), int(b)), False)
               for b in np.unique(widths)]
    assert any(b >= 3 for b in widths)
    with pytest.raises(CorruptBlobError, match="exceeds"):
        codec.decode(_recontainer(blob, entropy=b"".join(streams)))
    prompt = _codec(bits=3.0)  # scale=prompt: the default
    pblob = prompt.encode(x)
    n_scales = len(read_container(pblob).sections["scales"])
    with pytest.raises(CorruptBlobError):
        prompt.decode(_recontainer(pblob, scales=b"\x00" * (n_scales - 2)))
    with pytest.raises(CorruptBlobError, match="negative"):
        prompt.decode(_recontainer(pblob, scales=np.full(n_scales // 2, -1.0, "<f2").tobytes()))


def test_missing_or_mismatched_calibration_is_refused(artifact):
    x = _rows(16, 18)
    with pytest.raises(InputError, match="set calib=NAME"):
        codecs.get("kvtc:layer=0,heads=2").encode(x)
    with pytest.raises(InputError, match="set layer=N"):
        codecs.get(f"kvtc:calib={NAME},heads=2").encode(x)
    with pytest.raises(InputError, match="no KVTC calibration 'missing'"):
        codecs.get("kvtc:calib=missing,layer=0,heads=2").encode(x)
    with pytest.raises(InputError, match="no layer 1"):
        _codec(layer=1).encode(x)
    with pytest.raises(InputError, match="heads=3.*2 KV heads"):
        _codec(heads=3).encode(x)
    with pytest.raises(InputError, match="D=8"):
        _codec().encode(x[:, :8])
    with pytest.raises(InputError, match="do not split"):
        _codec().encode(x[:-1])
    box = read_container(_codec().encode(x))
    unnamed = write_container("kvtc:heads=2,layer=0", (box.n_rows, box.n_cols), box.dtype,
                              [(k, bytes(v)) for k, v in box.sections.items()])
    with pytest.raises(InputError, match="set calib=NAME"):
        codecs.decode(unnamed)


def test_refitted_artifact_under_the_same_name_is_detected(artifact, calib_folder):
    x = _rows(32, 19)
    kvtc_calib.fit_kvtc({0: (_rows(100, 20), _rows(100, 21))}, H, modes=("concat",), max_bits=4).save("refit")
    codec = codecs.get("kvtc:calib=refit,layer=0,heads=2,bits=3.0")
    blob = codec.encode(x)
    kvtc_calib.fit_kvtc({0: (_rows(100, 22), _rows(100, 23))}, H, modes=("concat",), max_bits=4).save("refit")
    with pytest.raises(CorruptBlobError, match="different tables"):
        codec.decode(blob)
    with pytest.raises(InputError, match="max_bits=4"):
        codecs.get("kvtc:calib=refit,layer=0,heads=2,bits=5").encode(x)


# --------------------------------------------------------------------------------------------
# Calibration on a corpus (tiny model)


def test_calibrate_on_the_calib_split_with_protected_tokens(tiny_corpus, calib_folder, monkeypatch):
    from kakeya_lib.llm.capture import capture_passage
    from kakeya_lib.layout import tensor_to_rows  # noqa: PLC0415
    from kakeya_lib.llm.models import tiny_model

    model = tiny_model("llama")
    tok = TinyTokenizer()
    name = kvtc_calib.calibrate_kvtc_on_corpus(model, tok, tiny_corpus, 32, n_passages=2, protect_tokens=1,
                                               max_bits=6)
    assert name.startswith("kvtc-llama-unnamed-docs.jsonl-ctx32-n2-p1-")
    art = kvtc_calib.load_kvtc(name)
    cfg = model.config
    assert art.heads == cfg.num_key_value_heads and art.head_dim == 16 and art.layers == [0, 1]
    assert art.meta["n_tokens"]["L0.k"] == 2 * 31 and art.meta["protect_tokens"] == 1  # first token excluded
    assert art.meta["split"] == "calib" and all(corpora.split_of(d) == "calib" for d in art.meta["doc_ids"])
    other = kvtc_calib.calibrate_kvtc_on_corpus(model, tok, tiny_corpus, 32, n_passages=2, protect_tokens=0,
                                                max_bits=6)
    assert other != name  # excluded tokens are part of the name
    monkeypatch.setattr(kvtc_calib, "fit_kvtc", lambda *a, **k: pytest.fail("should reuse the cached artifact"))
    assert kvtc_calib.calibrate_kvtc_on_corpus(model, tok, tiny_corpus, 32, n_passages=2, protect_tokens=1,
                                               max_bits=6) == name
    # the codec on real pre-RoPE keys of an evaluation passage
    ids = corpora.passages(tiny_corpus, tok, 48, 0, 1, seed=0)[0].input_ids
    rows = tensor_to_rows(capture_passage(model, ids)["layer1.k"][None, :, 1:])  # the protected token stays exact
    errors = []
    for bits in (6.0, 2.0):
        spec = codecs.for_heads(f"kvtc:calib={name},layer=1,stream=k,bits={bits}", cfg.num_key_value_heads)
        errors.append(_rel_mse(rows, codecs.decode(codecs.get(spec).encode(rows))))
    assert errors[0] < 5e-3 and errors[0] < errors[1] < 0.1, errors
