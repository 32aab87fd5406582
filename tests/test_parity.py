"""numpy vs CuPy parity: the same input and seed give the same codes and close decodes.
Runs only where a usable GPU exists (skipped cleanly otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import backend, codecs, synthetic
from kakeya_lib.stages import kmeans, lloyd_max, pca, rsvd, wht

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.gpu_available(), reason="CuPy with a usable CUDA device is not available"),
]

SPECS = [
    "kakeya", "kakeya:bits=2,pca=rsvd,rank=32,outlier=2.0", "kakeya:share_basis=1,skel=bf16", "identity",
    "turboquant:bits=3", "turboquant:bits=3,qjl=1,rotation=wht", "int:bits=4,rotate=1", "kivi:bits=2,heads=2",
    "kivi:bits=4,mode=value", "fp8:heads=2",
    "kakeya:pca=none,bits=5,quant=uniform,step=0.65,entropy=1,scalar_bits=8,block=1024",
    "kakeya:pca=none,k=0,rotate=0,quant=uniform,bits=3", "kakeya:pca=none,k=0,rbesi_dir=3,rbesi_mag=4",
    "besicovitch:g=2,dir=3,mag=4", "besicovitch:g=4,dir=6,mode=f16", "besicovitch:dir=5,mode=riemann,cb=lloyd",
]


@pytest.fixture
def cp(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    return backend.cupy_or_raise()


@pytest.mark.parametrize("spec", SPECS)
def test_codec_parity(spec, cp):
    x = synthetic.kv_like(2048, 128, seed=0)
    codec = codecs.get(spec)
    blob_cpu = codec.encode(x)
    blob_gpu = codec.encode(cp.asarray(x))
    y_cpu = codec.decode(blob_cpu, device="cpu")
    y_gpu = codec.decode(blob_gpu, device="gpu").get()
    assert len(blob_gpu) == pytest.approx(len(blob_cpu), rel=0.02)
    err_cpu = float(((x - y_cpu) ** 2).sum() / (x**2).sum())
    err_gpu = float(((x - y_gpu) ** 2).sum() / (x**2).sum())
    assert err_gpu == pytest.approx(err_cpu, rel=0.05, abs=1e-7)
    # cross-decoding: bytes made on one side decode on the other to the same array
    np.testing.assert_allclose(codec.decode(blob_gpu, device="cpu"), y_gpu, rtol=1e-4, atol=1e-4)


def test_stage_parity(cp):
    x = synthetic.kv_like(512, 64, seed=1)
    xd = cp.asarray(x)
    np.testing.assert_allclose(wht.rotate(xd, 7, cp).get(), wht.rotate(x, 7, np), atol=1e-5)
    fit_c, fit_g = pca.fit_exact(x, None, np), pca.fit_exact(xd, None, cp)
    assert fit_c.d_eff == fit_g.d_eff
    np.testing.assert_allclose(np.abs(fit_g.basis.get()), np.abs(fit_c.basis), atol=2e-3)
    r_c = rsvd.fit_randomized(x, None, np, 16, seed=3)
    r_g = rsvd.fit_randomized(xd, None, cp, 16, seed=3)
    np.testing.assert_allclose(r_g.basis.get(), r_c.basis, atol=5e-3)
    c = pca.project(fit_c, x)
    cen_c = kmeans.fit(c, 16, np, seed=5)
    cen_g = kmeans.fit(cp.asarray(c), 16, cp, seed=5)
    np.testing.assert_allclose(cen_g.get(), cen_c, atol=5e-3)
    z = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
    lv = lloyd_max.gaussian_codebook(3)
    assert np.array_equal(lloyd_max.quantize(cp.asarray(z), lv, cp).get(), lloyd_max.quantize(z, lv, np))
