"""Shared fixtures: ``xp`` runs a test on every available array backend (numpy always, CuPy when
a GPU is usable; otherwise the CuPy case is skipped with a reason)."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import backend


def _backends() -> list:
    return [
        pytest.param("numpy", id="numpy"),
        pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
    ]


@pytest.fixture(params=_backends())
def xp(request, monkeypatch):
    """The array module under test (numpy or cupy); KAKEYA_DEVICE follows it."""
    if request.param == "numpy":
        monkeypatch.setenv(backend.DEVICE_ENV, "auto")
        return np
    if not backend.gpu_available():
        pytest.skip("CuPy with a usable CUDA device is not available")
    monkeypatch.setenv(backend.DEVICE_ENV, "gpu")
    return backend.cupy_or_raise()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def to_np(a) -> np.ndarray:
    """Host copy of a numpy or CuPy array."""
    return backend.to_host(a)
