"""Backend selection: KAKEYA_DEVICE, clear errors when a GPU is asked for and absent, host RNG."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import backend, codecs, synthetic
from kakeya_lib.errors import BackendError


def test_invalid_device_value_is_an_error(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "tpu")
    with pytest.raises(BackendError, match="KAKEYA_DEVICE"):
        backend.requested_device()


def test_cpu_forces_numpy(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "cpu")
    xp, (a,) = backend.get_namespace(np.ones(3))
    assert xp is np and isinstance(a, np.ndarray)
    assert backend.default_namespace() is np


def test_auto_follows_numpy_inputs(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    assert backend.get_namespace(np.ones(3))[0] is np


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is available here")
def test_gpu_requested_without_gpu_raises_clearly(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "gpu")
    with pytest.raises(BackendError, match="KAKEYA_DEVICE=cpu"):
        backend.get_namespace(np.ones(3))
    with pytest.raises(BackendError):
        codecs.get("kakeya").encode(synthetic.gaussian(8, 4))
    with pytest.raises(BackendError):
        codecs.get("identity").decode(codecs.get("identity").encode(synthetic.gaussian(2, 2)), device="gpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is available here")
def test_auto_without_gpu_decodes_on_numpy(monkeypatch):
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    blob = codecs.get("kakeya").encode(synthetic.gaussian(8, 4))
    assert isinstance(codecs.decode(blob), np.ndarray)


def test_host_rng_is_deterministic():
    a = backend.host_rng(42).standard_normal(5)
    assert np.array_equal(a, backend.host_rng(42).standard_normal(5))
    assert not np.array_equal(a, backend.host_rng(43).standard_normal(5))
    backend.host_rng(2**64 + 5)  # seeds are reduced to 64 bits, never an error


def test_device_name_cpu():
    assert backend.device_name(np).startswith("cpu")
