"""Timing one codec spec on one block (:func:`measure`) and the whole grid (:func:`run_suite`)."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .. import backend, codecs
from ..errors import InputError, KakeyaError
from ..timing import STAGES
from .device import device_bandwidth, device_env, release, resolve_device, sync
from .scaling import check_targets, scaling_fits
from .sources import DataSource, synthetic_source

# One representative spec per registered codec; the first is the default KakeyaTurbo spec, the
# second our recipe's K spec (recipes/ours-5x.yaml; tests/test_bench.py pins the two together).
DEFAULT_CODECS = (
    "kakeya",
    "kakeya:pca=none,bits=5,quant=uniform,step=0.55,entropy=1,scalar_bits=8,block=3072",
    "turboquant:bits=4",
    "int:bits=4,rotate=1",
    "kivi:bits=4",
    "fp8",
    "besicovitch",
    "identity",
)

DEFAULT_DIMS = (64, 128, 256)

DEFAULT_ROWS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

WARMUP_ROWS = 4096  # CPU warm-up slice (codebooks, caches); the GPU warms up on the full input


# -- one measurement ---------------------------------------------------------------------------
def median(v: Sequence[float]) -> float:
    return float(np.median(np.asarray(v, dtype=np.float64)))


def _rel_mse(x: Any, y: Any, xp: ModuleType) -> float:
    x64, y64 = x.astype(xp.float64), y.astype(xp.float64)
    den = float((x64 * x64).sum())
    num = float(((x64 - y64) ** 2).sum())
    return num / den if den > 0 else num


def _peak_memory(codec: codecs.Codec, x: Any, xp: ModuleType, device: str) -> tuple[float, float]:
    """Peak working bytes above the input during one encode and one decode (untimed pass)."""
    if xp is np:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            blob = codec.encode(x)
            enc_peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            y = codec.decode(blob, device=device)
            dec_peak = tracemalloc.get_traced_memory()[1] - base
            del y
        finally:
            if started:
                tracemalloc.stop()
        return float(enc_peak), float(dec_peak)
    pool = xp.get_default_memory_pool()
    sync(xp)
    pool.free_all_blocks()
    base = pool.total_bytes()
    blob = codec.encode(x)
    sync(xp)
    enc_peak = pool.total_bytes() - base
    pool.free_all_blocks()
    base = pool.total_bytes()
    y = codec.decode(blob, device=device)
    sync(xp)
    dec_peak = pool.total_bytes() - base
    del y
    pool.free_all_blocks()
    return float(enc_peak), float(dec_peak)


def measure(spec: str, x_host: np.ndarray, xp: ModuleType, repeat: int, *, data: str = "?",
            stages: bool = True, memory: bool = True, bandwidth: float | None = None,
            max_time: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Time ``repeat`` encodes and decodes of ``x_host`` [N, D] on ``xp``'s side.

    ``max_time`` (seconds) stops the timed runs early once they add up to more than that (at
    least one run). Returns the result row and the tidy per-stage rows (empty for codecs without
    stage timers).
    """
    codec = codecs.get(spec)
    device = "cpu" if xp is np else "gpu"
    n, d = (int(s) for s in x_host.shape)
    x = backend.to_device(np.ascontiguousarray(x_host, dtype=np.float32), xp)
    mb = n * d * 4 / 1e6
    with device_env(xp):
        warm = x if xp is not np else x[: min(n, WARMUP_ROWS)]
        sync(xp)
        codec.decode(codec.encode(warm), device=device)
        sync(xp)
        enc_times: list[float] = []
        dec_times: list[float] = []
        cpu_stages = stages and xp is np  # on the GPU the stage timer synchronises: time it apart
        with STAGES.collect() if cpu_stages else contextlib.nullcontext({}) as stage_totals:
            for _ in range(repeat):
                if max_time is not None and enc_times and sum(enc_times) + sum(dec_times) > max_time:
                    break
                sync(xp)
                t0 = time.perf_counter()
                blob = codec.encode(x)
                t1 = time.perf_counter()
                y = codec.decode(blob, device=device)
                sync(xp)
                t2 = time.perf_counter()
                enc_times.append(t1 - t0)
                dec_times.append(t2 - t1)
        runs = len(enc_times)
        stage_totals = dict(stage_totals)
        op_totals = {"encode": sum(enc_times), "decode": sum(dec_times)}  # what stage shares refer to
        if stages and xp is not np:
            op_totals = {"encode": 0.0, "decode": 0.0}
            with STAGES.collect() as totals:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    b = codec.encode(x)
                    t1 = time.perf_counter()
                    codec.decode(b, device=device)
                    sync(xp)
                    op_totals["encode"] += t1 - t0
                    op_totals["decode"] += time.perf_counter() - t1
            stage_totals = dict(totals)
        rel_mse = _rel_mse(x, y, xp)
        del y
        peak_enc = peak_dec = None
        if memory:
            peak_enc, peak_dec = _peak_memory(codec, x, xp, device)
    enc, dec = median(enc_times), median(dec_times)
    row: dict[str, Any] = {
        "codec": codec.spec, "name": codec.name, "data": data, "device": backend.device_name(xp),
        "backend": "cupy" if xp is not np else "numpy", "rows": n, "dim": d, "repeat": runs,
        "input_MB": mb, "bytes": len(blob), "ratio_vs_bf16": codecs.ratio_vs_bf16(n, d, len(blob)),
        "rel_mse": rel_mse,
        "encode_s": enc, "decode_s": dec, "encode_s_all": enc_times, "decode_s_all": dec_times,
        "encode_MBps": mb / enc, "decode_MBps": mb / dec,
        "encode_vps": n / enc, "decode_vps": n / dec,
        "peak_encode_MB": None if peak_enc is None else peak_enc / 1e6,
        "peak_decode_MB": None if peak_dec is None else peak_dec / 1e6,
        "peak_memory_method": None if not memory else ("tracemalloc" if xp is np else "cupy memory pool high-water"),
        "stage_MBps": {k: mb * runs / v for k, v in sorted(stage_totals.items()) if v > 0},
    }
    if bandwidth:
        moved_enc = n * d * 4 + len(blob)
        row["encode_bw_fraction"] = moved_enc / enc / bandwidth
        row["decode_bw_fraction"] = moved_enc / dec / bandwidth
    stage_rows = []
    for op, total in op_totals.items():
        for name, secs in sorted(stage_totals.items()):
            if name.startswith(op + "/") and secs > 0:
                stage_rows.append({
                    "codec": codec.spec, "data": data, "device": row["device"], "rows": n, "dim": d,
                    "op": op, "stage": name, "seconds": secs / runs, "MBps": mb * runs / secs,
                    "share": secs / total if total > 0 else None,
                })
    return row, stage_rows


# -- the suite ---------------------------------------------------------------------------------
def validate(specs: Sequence[str], dims: Sequence[int], rows: Sequence[int], repeat: int) -> list[str]:
    """Check the arguments before any time is spent; returns the canonical specs."""
    if not specs:
        raise InputError("no codecs given")
    canonical = [codecs.get(s).spec for s in specs]  # SpecError for unknown names or keys
    if not dims or any(int(d) < 1 for d in dims):
        raise InputError(f"dims must be positive integers, got {list(dims)}")
    if not rows or any(int(n) < 1 for n in rows):
        raise InputError(f"rows must be positive integers, got {list(rows)}")
    if int(repeat) < 1:
        raise InputError(f"repeat must be >= 1, got {repeat}")
    return canonical


def run_suite(specs: Sequence[str] = DEFAULT_CODECS, dims: Sequence[int] = DEFAULT_DIMS,
              rows: Sequence[int] = DEFAULT_ROWS, repeat: int = 3, data: Sequence[DataSource] | None = None,
              device: str = "cpu", stages: bool = True, memory: bool = True, time_limit: float | None = None,
              max_time: float | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every (data, D, N, codec); returns ``{"results", "stages", "scaling", "targets",
    "errors", "skipped", "device", "bandwidth_Bps", "bandwidth_source"}``.

    A codec that fails on one shape is recorded in ``errors`` and the suite goes on; with
    ``time_limit`` (seconds), measurements not started by then are listed in ``skipped``;
    ``max_time`` caps each measurement's timed runs (see :func:`measure`).
    """
    validate(specs, dims, rows, repeat)
    xp = resolve_device(device)
    data = list(data) if data is not None else [synthetic_source("kv_like")]
    bw = device_bandwidth(xp)
    rows_sorted = sorted({int(n) for n in rows})
    results, stage_rows, errors, skipped = [], [], [], []
    start = time.perf_counter()
    for src in data:
        for d in src.dims([int(v) for v in dims]):
            for n in rows_sorted:
                x = None
                for spec in specs:
                    where = {"codec": spec, "data": src.name, "dim": d, "rows": n}
                    if time_limit is not None and time.perf_counter() - start > time_limit:
                        skipped.append(where)
                        continue
                    if x is None:
                        x = src.rows_for(n, d, rows_sorted[-1])
                    try:
                        row, srows = measure(spec, x, xp, repeat, data=src.name, stages=stages,
                                             memory=memory, bandwidth=bw["Bps"], max_time=max_time)
                    except KakeyaError as exc:
                        errors.append({**where, "error": f"{type(exc).__name__}: {exc}"})
                        if log:
                            log(f"error {spec} on {src.name} [{n}, {d}]: {exc}")
                        continue
                    row["tiled"] = src.tiled(n)
                    results.append(row)
                    stage_rows += srows
                    if log:
                        log(f"{row['codec']:<44} {src.name:<10} [{n:>6}, {d:>4}] "
                            f"enc {row['encode_MBps']:>10.1f} MB/s  dec {row['decode_MBps']:>10.1f} MB/s")
    release(xp)
    return {
        "results": results, "stages": stage_rows, "scaling": scaling_fits(results),
        "targets": check_targets(results, "cpu" if xp is np else "gpu"), "errors": errors, "skipped": skipped,
        "device": backend.device_name(xp), "bandwidth_Bps": bw["Bps"], "bandwidth_source": bw["source"],
        "bandwidth": bw,
        "elapsed_s": time.perf_counter() - start,
    }
