"""The ``klt`` codec (calibrated per-head KLT, per-row scale, one step, grouped rANS): its error and
rate against the step, what per-row scaling buys on low-norm rows, its bytes, and its refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kakeya_lib import codecs
from kakeya_lib.codecs import kakeya as kakeya_codec
from kakeya_lib.codecs import klt
from kakeya_lib.container import read_container, write_container
from kakeya_lib.errors import CorruptBlobError, InputError, SpecError
from kakeya_lib.llm import kvtc_calib, plan

H, D = 2, 16
W = H * D
NAME = "syn-klt"


@pytest.fixture(scope="module")
def calib_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("klt") / "calib"


@pytest.fixture(autouse=True)
def _calib_dir(calib_folder, monkeypatch):
    monkeypatch.setattr(kakeya_codec, "CALIB_DIR", calib_folder)
    return calib_folder


def _rows(t: int, seed: int, offset: float = 3.0) -> np.ndarray:
    """Synthetic rows [t·H, D] (token-major, heads interleaved): correlated, decaying spectrum, a mean."""
    mixing = np.random.default_rng(0).standard_normal((W, W)) * np.geomspace(2.0, 0.02, W)[None, :]
    z = np.random.default_rng(seed).standard_normal((t, W)) @ mixing.T + offset
    return z.reshape(t * H, D).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def artifact(calib_folder):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kakeya_codec, "CALIB_DIR", calib_folder)
        cal = kvtc_calib.fit_kvtc({0: (_rows(3000, 1), _rows(3000, 2))}, H, modes=("head", "concat"), meta={"model": "synthetic"})
        cal.save(NAME)
    return cal


def _codec(**keys) -> klt.KLTCodec:
    base = {"calib": NAME, "layer": 0, "stream": "k", "heads": H}
    base.update(keys)
    return codecs.get("klt:" + ",".join(f"{k}={v}" for k, v in base.items()))


def _row_rel_err(x: np.ndarray, xh: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-row squared error over the row's squared distance from the mean."""
    return ((x - xh) ** 2).sum(1) / ((x - mean) ** 2).sum(1)


def test_error_follows_the_step_and_rate_falls_with_it():
    x = _rows(512, 7)
    mean = kvtc_calib.load_kvtc(NAME).get(0, "k", "head").mean.reshape(H, D)[np.arange(x.shape[0]) % H]
    sizes, errs = [], []
    for step in (0.1, 0.2, 0.4):
        blob = _codec(step=step).encode(x)
        xh = codecs.decode(blob)
        assert xh.shape == x.shape and xh.dtype == x.dtype
        # uniform quantisation of each KLT coordinate of a unit-RMS row: error ≈ D · step² / 12 per row,
        # relative to D · s² -> step² / 12 (coordinates below the step round to 0 and lose less)
        err = float(_row_rel_err(x, xh, mean).mean())
        assert 0.2 * step**2 / 12 < err < 1.3 * step**2 / 12
        sizes.append(len(blob))
        errs.append(err)
    assert sizes[0] > sizes[1] > sizes[2] and errs[0] < errs[1] < errs[2]
    assert sum(codecs.ledger(blob).values()) == len(blob)


def test_concat_basis_and_a_wider_zero_bin():
    x = _rows(512, 11)
    head, concat = _codec(step=0.3), _codec(step=0.3, pca="concat")
    hb, cb = head.encode(x), concat.encode(x)
    err = {name: float(((codecs.decode(b) - x) ** 2).mean()) for name, b in (("head", hb), ("concat", cb))}
    # the synthetic heads are mixed by one [W, W] matrix: the concatenated basis decorrelates them
    assert len(cb) < len(hb) and err["concat"] < 2 * err["head"]
    cen = _codec(step=0.3, centroid=1).encode(x)
    # [groups = 2, 2] float16 offsets in a section of their own (5-byte entry), and a longer spec in the header
    assert len(cen) == len(hb) + 2 * 2 * 2 + 5 + len(",centroid=1")
    assert float(((codecs.decode(cen) - x) ** 2).mean()) < err["head"]
    dz = _codec(step=0.3, rounding=0.3).encode(x)
    assert len(dz) < len(hb) and float(((codecs.decode(dz) - x) ** 2).mean()) > err["head"]


def test_per_row_scaling_keeps_low_norm_rows_relative():
    x = _rows(256, 8)
    cal_mean = kvtc_calib.load_kvtc(NAME).get(0, "k", "head").mean.reshape(H, D)
    mean = cal_mean[np.arange(x.shape[0]) % H]
    small = np.arange(0, x.shape[0], 16)  # one row in 16 close to the mean: a sink-like low-norm row
    x[small] = mean[small] + 0.01 * (x[small] - mean[small])
    per_row = _row_rel_err(x, codecs.decode(_codec(step=0.2).encode(x)), mean)
    one_scale = _row_rel_err(x, codecs.decode(_codec(step=0.2, rowscale=0).encode(x)), mean)
    assert per_row[small].mean() < 0.02 and one_scale[small].mean() > 10 * per_row[small].mean()


def test_prompt_mean_zero_rows_and_determinism():
    x = _rows(64, 9) + 5.0  # a prompt away from the calibration mean
    err_calib = float(((codecs.decode(_codec(step=0.2).encode(x)) - x) ** 2).mean())
    blob = _codec(step=0.2, mean="prompt").encode(x)
    assert "skeleton" in read_container(blob).sections
    assert float(((codecs.decode(blob) - x) ** 2).mean()) < err_calib
    assert blob == _codec(step=0.2, mean="prompt").encode(x)
    mean = kvtc_calib.load_kvtc(NAME).get(0, "k", "head").mean.reshape(H, D)
    flat = np.tile(mean, (8, 1)).astype(np.float32)  # every row equal to the mean: zero residuals
    assert np.allclose(codecs.decode(_codec().encode(flat)), flat, atol=1e-5)


def test_plans_resolve_klt_like_kvtc():
    assert plan.kvtc_needs_calibration("klt:calib=auto") and not plan.kvtc_needs_calibration(f"klt:calib={NAME}")
    assert plan.spec_for_layer("klt:calib=auto,step=0.3", 4, "v") == "klt:calib=auto,layer=4,step=0.3,stream=v"
    assert codecs.for_heads("klt:calib=auto", 3) == "klt:calib=auto,heads=3"


def test_refusals():
    x = _rows(16, 3)
    for spec, match in (("klt", "needs a calibration artifact"), ("klt:calib=auto,layer=0", "calibration artifact"),
                        (f"klt:calib={NAME}", "layer"), (f"klt:calib={NAME},layer=0", "heads=1")):
        with pytest.raises(InputError, match=match):
            codecs.get(spec).encode(x)
    with pytest.raises(InputError, match="head_dim"):
        _codec().encode(np.zeros((4, 8), np.float32))
    with pytest.raises(InputError, match="do not split"):
        _codec().encode(x[:3])
    with pytest.raises(InputError, match="larger step"):
        _codec(step=1e-5).encode(x)
    for bad in ("step=0", "step=-1", "group=0", "heads=0", "mean=none", "calib=a/b", "rounding=0", "rounding=0.6", "scale_bits=1", "scale_bits=9",
                "pca=rsvd"):
        with pytest.raises(SpecError):
            codecs.get(f"klt:{bad}")


def test_corrupt_blobs_are_refused():
    x = _rows(32, 4)
    codec = _codec(step=0.2)
    blob = codec.encode(x)
    box = read_container(blob)
    sections = {name: bytes(box.section(name)) for name in box.sections}

    def rebuilt(**changes: bytes) -> bytes:
        return write_container(box.spec, (box.n_rows, box.n_cols), box.dtype, [(n, changes.get(n, p)) for n, p in sections.items()])

    version, digest, qmax, lo, hi = struct.unpack("<B8sHff", sections["blocks"])
    cases = {
        "format version": rebuilt(blocks=struct.pack("<B8sHff", 9, digest, qmax, lo, hi)),
        "another transform": rebuilt(blocks=struct.pack("<B8sHff", version, b"x" * 8, qmax, lo, hi)),
        "scale range": rebuilt(blocks=struct.pack("<B8sHff", version, digest, qmax, hi, lo - 1)),
        "blocks section holds": rebuilt(blocks=sections["blocks"][:-1]),
        "entropy section holds": rebuilt(entropy=sections["entropy"] + b"\0"),
    }
    for match, bad in cases.items():
        with pytest.raises(CorruptBlobError, match=match):
            codec.decode(bad)
    with pytest.raises(CorruptBlobError):
        codec.decode(rebuilt(entropy=sections["entropy"][:-3]))
    with pytest.raises(CorruptBlobError, match="sections"):
        _codec(step=0.2, rowscale=0).decode(write_container(_codec(step=0.2, rowscale=0).spec, (box.n_rows, box.n_cols),
                                                            box.dtype, list(sections.items())))


@pytest.mark.parametrize("pca", ["head", "concat"])
def test_recent_tokens_get_the_finer_step_and_nothing_else_changes(pca):
    x = _rows(200, 11)
    t_recent = 20
    plain = _codec(step=0.4, pca=pca)
    fine = _codec(step=0.4, pca=pca, recent=t_recent, recent_step=0.25)
    xp_, xf = codecs.decode(plain.encode(x)), codecs.decode(fine.encode(x))
    old, new = slice(0, (200 - t_recent) * H), slice((200 - t_recent) * H, None)
    err = lambda a, s: float(((x[s] - a[s]) ** 2).mean())  # noqa: E731
    assert err(xf, old) == pytest.approx(err(xp_, old), rel=0.05)  # same step on the older tokens
    assert err(xf, new) < 0.15 * err(xp_, new)  # (0.25)^2 = 0.0625 at high rate
    assert len(fine.encode(x)) > len(plain.encode(x))
    assert _codec(step=0.4, pca=pca, recent=0).encode(x) == plain.encode(x)  # recent=0: the same bytes
    short = _rows(5, 12)  # fewer tokens than `recent`: every token is recent
    every = codecs.decode(_codec(step=0.4, pca=pca, recent=t_recent, recent_step=0.25).encode(short))
    finest = codecs.decode(_codec(step=0.1, pca=pca).encode(short))
    assert np.allclose(every, finest, atol=1e-5)
    for bad in ("recent=-1", "recent_step=0", "recent_step=17"):
        with pytest.raises(SpecError):
            codecs.get(f"klt:calib={NAME},layer=0,{bad}")


@pytest.mark.parametrize("pca", ["head", "concat"])
def test_salient_tokens_get_a_finer_step_through_the_coded_scale(pca):
    x = _rows(200, 13)
    w = np.full(200 * H, 1.0)
    w[: 20 * H] = 100.0  # the first 20 tokens draw the attention
    sal = _codec(step=0.4, pca=pca, saliency=0.5, saliency_clip=8)
    plain = _codec(step=0.4, pca=pca)
    blob = sal.encode(x, weights=w)
    xs, xp_ = codecs.decode(blob), codecs.decode(plain.encode(x))
    hot, cold = slice(0, 20 * H), slice(20 * H, None)
    err = lambda a, s: float(((x[s] - a[s]) ** 2).mean())  # noqa: E731
    # factors (w / geomean)^-0.5: hot tokens ~ 1/2.6 of the plain step, cold ones ~ 1.26x
    assert err(xs, hot) < 0.3 * err(xp_, hot)
    assert err(xs, cold) > 1.2 * err(xp_, cold)
    same_layout = read_container(plain.encode(x)).sections
    assert {k: len(v) for k, v in read_container(blob).sections.items()}.keys() == same_layout.keys()  # no new section
    even = codecs.decode(_codec(step=0.4, pca=pca, saliency=0.5).encode(x, weights=np.full(200 * H, 3.0)))
    assert np.allclose(even, xp_, atol=1e-4 * np.abs(x).max())  # equal weights: the plain step
    assert plain.encode(x, weights=w) == plain.encode(x)  # without saliency the weights are ignored
    with pytest.raises(InputError, match="needs the rows' weights"):
        sal.encode(x)
    for bad in ("saliency=-0.1", "saliency=3", "saliency_clip=0.5", "saliency_clip=100"):
        with pytest.raises(SpecError):
            codecs.get(f"klt:calib={NAME},layer=0,{bad}")
