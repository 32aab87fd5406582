"""The device a benchmark runs on: numpy or CuPy, synchronisation, and memory bandwidth."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from .. import backend
from ..errors import InputError

# Vendor datasheet memory bandwidths (bytes/s), preferred to the driver's clock x bus width figure.
NOMINAL_BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 8.64e11}


# -- device helpers ----------------------------------------------------------------------------
def resolve_device(device: str) -> ModuleType:
    """numpy for ``cpu``, CuPy for ``gpu`` (an error without one), ``auto``: GPU when usable."""
    if device not in ("cpu", "gpu", "auto"):
        raise InputError(f"device must be cpu, gpu or auto, got {device!r}")
    return backend.default_namespace(device)


def sync(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


@contextlib.contextmanager
def device_env(xp: ModuleType) -> Iterator[None]:
    """Pin KAKEYA_DEVICE to the measured side so no codec moves data behind the benchmark's back."""
    old = os.environ.get(backend.DEVICE_ENV)
    os.environ[backend.DEVICE_ENV] = "cpu" if xp is np else "gpu"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(backend.DEVICE_ENV, None)
        else:
            os.environ[backend.DEVICE_ENV] = old


def device_bandwidth(xp: ModuleType) -> dict[str, Any]:
    """Peak device memory bandwidth: ``{"Bps", "source", "nominal_Bps", "reported_Bps"}``.

    ``Bps`` is the vendor datasheet figure where the part is known (an H200: 4.8 TB/s), else the
    one computed from the memory clock and bus width the driver reports, else None.
    """
    out: dict[str, Any] = {"Bps": None, "source": "not measured on the CPU", "nominal_Bps": None, "reported_Bps": None}
    if xp is np:
        return out
    dev = xp.cuda.Device().id
    rt = xp.cuda.runtime
    props = rt.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    if not clock_khz or not bus_bits:
        try:  # CUDA 13 dropped the clock from cudaDeviceProp; ask the attributes instead
            clock_khz = rt.deviceGetAttribute(36, dev)  # cudaDevAttrMemoryClockRate (kHz)
            bus_bits = rt.deviceGetAttribute(37, dev)  # cudaDevAttrGlobalMemoryBusWidth (bits)
        except Exception:  # noqa: BLE001 - attribute missing in this runtime: datasheet only
            clock_khz = bus_bits = None
    if clock_khz and bus_bits:
        out["reported_Bps"] = 2.0 * float(clock_khz) * 1e3 * float(bus_bits) / 8  # double data rate
    for key, bw in NOMINAL_BANDWIDTH.items():  # longest names first in the table
        if key in name:
            out["nominal_Bps"] = bw
            break
    if out["nominal_Bps"]:
        out["Bps"] = out["nominal_Bps"]
        out["source"] = f"vendor datasheet for {name}: {out['nominal_Bps'] / 1e12:.2f} TB/s"
    elif out["reported_Bps"]:
        out["Bps"] = out["reported_Bps"]
        out["source"] = f"driver: {float(clock_khz) / 1e3:.0f} MHz x {bus_bits} bit x 2"
    else:
        out["source"] = f"unknown for {name}"
    if out["reported_Bps"] and out["nominal_Bps"]:
        out["source"] += f" (the driver's clock x bus width gives {out['reported_Bps'] / 1e12:.2f} TB/s)"
    out["copy_Bps"] = _copy_bandwidth(xp)
    return out


def _copy_bandwidth(xp: ModuleType, nbytes: int = 1 << 30, reps: int = 10) -> float | None:
    """Measured device-to-device copy rate (bytes read + written per second): the practical ceiling."""
    try:
        a = xp.ones(nbytes // 4, dtype=xp.float32)
        b = xp.empty_like(a)
        xp.copyto(b, a)
        start, stop = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        for _ in range(reps):
            xp.copyto(b, a)
        stop.record()
        stop.synchronize()
        seconds = xp.cuda.get_elapsed_time(start, stop) / 1e3
        del a, b
        xp.get_default_memory_pool().free_all_blocks()
        return 2.0 * nbytes * reps / seconds if seconds > 0 else None
    except Exception:  # noqa: BLE001 - a figure for context only
        return None


def release(xp: ModuleType) -> None:
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
