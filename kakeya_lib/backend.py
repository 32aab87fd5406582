"""Array backend selection: numpy on the CPU, CuPy on a CUDA GPU.

Rules (the README's "Tests, devices, speed" section says the same for users):

* Public entry points call :func:`get_namespace` once on their input arrays and pass ``xp`` to
  private helpers. Mixing numpy and CuPy arrays in one call is an error.
* ``KAKEYA_DEVICE`` = ``cpu`` | ``gpu`` | ``auto`` (default ``auto``) forces a side. ``cpu`` moves
  CuPy inputs to the host; ``gpu`` moves numpy inputs to the device and raises
  :class:`~kakeya_lib.errors.BackendError` when no usable GPU exists; ``auto`` follows the input
  arrays (and, where there are none, e.g. when decoding bytes, uses the GPU only if one is usable).
  There is never a silent fallback from one side to the other.
* CuPy is imported lazily, only if installed.
* Random draws come from a seeded *host* numpy Generator and are then moved to the device, so
  numpy and CuPy runs see identical draws (:func:`host_rng`, :func:`to_device`).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

from .errors import BackendError

DEVICE_ENV = "KAKEYA_DEVICE"
_VALID_DEVICES = ("cpu", "gpu", "auto")


@functools.lru_cache(maxsize=1)
def _cupy_module() -> ModuleType | None:
    """Return the ``cupy`` module if it is installed, else None (import errors are not hidden)."""
    try:
        import cupy  # noqa: PLC0415  (lazy: CuPy is optional)
    except ModuleNotFoundError:
        return None
    return cupy


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy is installed and at least one CUDA device answers."""
    cp = _cupy_module()
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:  # a broken driver reports as unavailable; `gpu` then errors clearly
        return False


def requested_device() -> str:
    """The value of ``KAKEYA_DEVICE`` (default ``auto``), validated."""
    value = os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if value not in _VALID_DEVICES:
        raise BackendError(f"{DEVICE_ENV}={value!r} is not one of {', '.join(_VALID_DEVICES)}")
    return value


def cupy_or_raise() -> ModuleType:
    """Return CuPy, or raise a BackendError explaining why the GPU side cannot be used."""
    cp = _cupy_module()
    if cp is None:
        raise BackendError(
            "the GPU backend was requested but CuPy is not installed; "
            "install it with `pip install -r requirements-gpu.txt` or set KAKEYA_DEVICE=cpu"
        )
    if not gpu_available():
        raise BackendError(
            "the GPU backend was requested but no usable CUDA device was found; set KAKEYA_DEVICE=cpu"
        )
    return cp


def is_cupy_array(a: Any) -> bool:
    cp = _cupy_module()
    return cp is not None and isinstance(a, cp.ndarray)


def namespace_of(*arrays: Any) -> ModuleType:
    """The array module the given arrays live in (numpy or cupy); mixing them is an error."""
    kinds = {is_cupy_array(a) for a in arrays if a is not None}
    if len(kinds) > 1:
        raise BackendError("arrays from numpy and CuPy were mixed in one call; move them to one side")
    if kinds == {True}:
        return _cupy_module()  # type: ignore[return-value]
    return np


def get_namespace(*arrays: Any) -> tuple[ModuleType, list[Any]]:
    """Pick the compute namespace for a public entry point and move the inputs there.

    Returns
    -------
    xp : module
        ``numpy`` or ``cupy``.
    arrays : list
        The inputs, on the chosen side (unchanged when they already are).
    """
    device = requested_device()
    if device == "auto":
        xp = namespace_of(*arrays)
    elif device == "cpu":
        xp = np
    else:
        xp = cupy_or_raise()
    return xp, [None if a is None else to_namespace(a, xp) for a in arrays]


def default_namespace(device: str | None = None) -> ModuleType:
    """Namespace for work that has no input array (e.g. decoding bytes).

    ``device`` overrides ``KAKEYA_DEVICE``; ``auto`` means the GPU when one is usable.
    """
    device = (device or requested_device()).lower()
    if device not in _VALID_DEVICES:
        raise BackendError(f"device {device!r} is not one of {', '.join(_VALID_DEVICES)}")
    if device == "cpu":
        return np
    if device == "gpu":
        return cupy_or_raise()
    return cupy_or_raise() if gpu_available() else np


def to_namespace(a: Any, xp: ModuleType) -> Any:
    """Move an array to ``xp``'s side (a no-op when it is already there)."""
    if xp is np:
        return to_host(a)
    return to_device(a, xp)


def to_host(a: Any) -> np.ndarray:
    """A numpy copy/view of ``a`` (CuPy arrays are copied to the host)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def to_device(a: Any, xp: ModuleType) -> Any:
    """Move a host array to ``xp`` (identity for numpy)."""
    if xp is np:
        return to_host(a)
    return xp.asarray(a)


def host_rng(seed: int) -> np.random.Generator:
    """The one source of randomness: a seeded host Generator (PCG64).

    Draw on the host, cast, then :func:`to_device`, so numpy and CuPy see the same numbers.
    """
    return np.random.default_rng(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)


def device_name(xp: ModuleType) -> str:
    """A short human-readable description of where ``xp`` computes."""
    if xp is np:
        return "cpu (numpy)"
    dev = xp.cuda.Device()
    props = xp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"gpu {dev.id} ({name}, cupy {xp.__version__})"
