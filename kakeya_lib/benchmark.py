"""The codec speed suite behind ``kakeya bench`` (benchmarks, never timed tests).

For every codec spec, data kind, width ``D`` and row count ``N`` it times encode and decode of a
float32 block ``[N, D]`` on numpy (CPU) or CuPy (GPU) and records

* throughput: MB/s of float32 input (``N·D·4`` bytes, 1 MB = 10⁶ B) and vectors (rows) per second;
* the real compressed size (ratio vs bf16) and the reconstruction error (rel MSE);
* peak working memory above the input: ``tracemalloc`` on the CPU (numpy's buffers are traced),
  the CuPy memory pool's high-water mark on the GPU (one untimed pass each);
* per-stage time of the ``kakeya`` codec (:data:`kakeya_lib.timing.STAGES`);
* on the GPU, the fraction of the device's memory bandwidth reached, counting the bytes a
  codec must at least move (f32 input + blob for encode, blob + f32 output for decode);
* the scaling law: a least-squares fit ``t ≈ a·N^b`` per (codec, data, D) and ``t ≈ a·D^b`` per
  (codec, data, N);
* optionally (:func:`forward_overhead`), the cost of a model prefill on T tokens against the codec
  time for every K and V row that prefill produces (``T·n_kv`` rows of width ``head_dim`` per layer
  and stream), i.e. the overhead the codec adds to a prefill.

Captured KV rows (:func:`save_captured` / :func:`load_captured`) are a small ``.npz`` of float16
rows, one array per (layer, stream), read without pickle; ``benchmarks/capture_kv.py`` writes one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import backend, codecs, synthetic
from .errors import InputError, KakeyaError
from .timing import STAGES

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
SYNTHETIC_KINDS = tuple(sorted(synthetic.GENERATORS))
WARMUP_ROWS = 4096  # CPU warm-up slice (codebooks, caches); the GPU warms up on the full input

# The issue's targets for the default spec (MB/s of float32 input).
TARGETS = {
    "cpu": {"spec": "kakeya", "rows": 4096, "dim": 128, "encode_MBps": 50.0, "decode_MBps": 200.0},
    "gpu": {"spec": "kakeya", "rows": 65536, "dim": 128, "encode_MBps": 20_000.0, "decode_MBps": 100_000.0},
}
PREFILL_OVERHEAD_TARGET_PCT = 10.0
# Vendor datasheet memory bandwidths (bytes/s), preferred to the driver's clock x bus width figure.
NOMINAL_BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 8.64e11}


# -- data --------------------------------------------------------------------------------------
@dataclass
class DataSource:
    """Where the rows of a measurement come from.

    ``rows_for(n, d)`` returns a float32 host array [n, d]. Synthetic sources take any ``d``;
    a captured stream has one fixed width (``dim``) and is tiled when ``n`` exceeds its rows.
    """

    name: str
    generate: Callable[[int, int], np.ndarray]
    dim: int | None = None  # fixed width (captured data) or None (any)
    available_rows: int | None = None
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def dims(self, requested: Sequence[int]) -> list[int]:
        return [self.dim] if self.dim is not None else list(requested)

    def rows_for(self, n: int, d: int, n_max: int) -> np.ndarray:
        """Rows [n, d]: a prefix of one array generated at the largest size (nested subsets)."""
        if d not in self._cache or self._cache[d].shape[0] < n:
            self._cache = {d: self.generate(max(n, n_max), d)}  # one width at a time in memory
        return self._cache[d][:n]

    def tiled(self, n: int) -> bool:
        return self.available_rows is not None and n > self.available_rows


def synthetic_source(kind: str, seed: int = 0) -> DataSource:
    if kind not in synthetic.GENERATORS:
        raise InputError(f"unknown data kind {kind!r}; choose {', '.join(SYNTHETIC_KINDS)} or 'captured FILE'")
    gen = synthetic.GENERATORS[kind]
    return DataSource(kind, lambda n, d: gen(n, d, seed=seed))


def captured_sources(path: str | os.PathLike) -> list[DataSource]:
    """One source per stream (``k``, ``v``) of a captured-rows file (see :func:`save_captured`)."""
    streams, _ = load_captured(path)
    stem = Path(path).name.removesuffix(".npz")
    out = []
    for stream, rows in streams.items():
        def gen(n: int, d: int, rows: np.ndarray = rows) -> np.ndarray:
            reps = -(-n // rows.shape[0])
            return np.ascontiguousarray(np.tile(rows, (reps, 1))[:n])
        out.append(DataSource(f"captured:{stem}:{stream}", gen, dim=int(rows.shape[1]),
                              available_rows=int(rows.shape[0])))
    return out


def parse_data(tokens: Sequence[str], seed: int = 0) -> list[DataSource]:
    """``["kv_like", "gaussian", "captured", "FILE", "captured=FILE2"]`` -> data sources."""
    sources: list[DataSource] = []
    it = iter(tokens)
    for tok in it:
        if tok == "captured":
            path = next(it, None)
            if path is None:
                raise InputError("'--data captured' needs a file: --data captured FILE.npz")
            sources += captured_sources(path)
        elif tok.startswith("captured="):
            sources += captured_sources(tok.split("=", 1)[1])
        else:
            sources.append(synthetic_source(tok, seed))
    if not sources:
        raise InputError("no data kinds given")
    return sources


def save_captured(tensors: dict[str, Any], path: str | os.PathLike, layers: Sequence[int] | None = None,
                  meta: dict[str, Any] | None = None, dtype: str = "float16") -> dict[str, Any]:
    """Save pre-RoPE K/V of some layers as rows ``[T·n_kv, D]`` (token-major, heads interleaved,
    as :mod:`kakeya_lib.layout`) in a pickle-free ``.npz``.

    ``tensors`` maps ``layer{L}.k`` / ``layer{L}.v`` to arrays or tensors ``[n_kv, T, D]`` (the
    layout :func:`kakeya_lib.llm.capture.capture_passage` returns); other keys are ignored.
    Returns the metadata written next to the arrays (key ``meta``, a JSON string).
    """
    n_layers = len({k.split(".")[0] for k in tensors if k.endswith((".k", ".v"))})
    chosen = list(range(n_layers)) if layers is None else [int(i) % n_layers for i in layers]
    arrays: dict[str, np.ndarray] = {}
    shapes = {}
    for i in dict.fromkeys(chosen):
        for stream in ("k", "v"):
            t = tensors[f"layer{i}.{stream}"]
            a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
            if a.ndim != 3:
                raise InputError(f"layer{i}.{stream}: expected [n_kv, T, D], got shape {a.shape}")
            h, n, d = a.shape
            rows = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(n * h, d)).astype(dtype)
            if not np.isfinite(rows).all():
                raise InputError(f"layer{i}.{stream} does not fit {dtype} (non-finite after the cast)")
            arrays[f"layer{i}.{stream}"] = rows
            shapes[f"layer{i}.{stream}"] = [int(s) for s in rows.shape]
    info = {"layout": "rows [T*n_kv, D], token-major, heads interleaved; pre-RoPE", "dtype": dtype,
            "layers": list(dict.fromkeys(chosen)), "n_layers": n_layers, "shapes": shapes, **(meta or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(info)), **arrays)
    return info


def load_captured(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``({"k": rows, "v": rows}, meta)``: each stream's layers concatenated, as float32."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"captured-rows file {str(path)!r} does not exist (make one with benchmarks/capture_kv.py)")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            parts: dict[str, list[np.ndarray]] = {"k": [], "v": []}
            for key in sorted(z.files, key=_layer_order):
                if key.endswith((".k", ".v")):
                    parts[key[-1]].append(z[key].astype(np.float32))
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {str(path)!r} as a pickle-free .npz of captured rows: {exc}") from exc
    streams = {s: np.concatenate(a, axis=0) for s, a in parts.items() if a}
    if not streams:
        raise InputError(f"{str(path)!r} holds no layer*.k / layer*.v arrays")
    dims = {a.shape[1] for a in streams.values()}
    if len(dims) != 1 or any(a.ndim != 2 for a in streams.values()):
        raise InputError(f"{str(path)!r}: streams must be 2-D rows of one width, got {sorted(dims)}")
    return streams, meta


def _layer_order(key: str) -> tuple[int, str]:
    head = key.split(".")[0]
    return (int(head[5:]) if head.startswith("layer") and head[5:].isdigit() else -1, key)


# -- device helpers ----------------------------------------------------------------------------
def resolve_device(device: str) -> ModuleType:
    """numpy for ``cpu``, CuPy for ``gpu`` (an error without one), ``auto``: GPU when usable."""
    if device not in ("cpu", "gpu", "auto"):
        raise InputError(f"device must be cpu, gpu or auto, got {device!r}")
    return backend.default_namespace(device)


def _sync(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


@contextlib.contextmanager
def _device_env(xp: ModuleType) -> Iterator[None]:
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


# -- one measurement ---------------------------------------------------------------------------
def _median(v: Sequence[float]) -> float:
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
    _sync(xp)
    pool.free_all_blocks()
    base = pool.total_bytes()
    blob = codec.encode(x)
    _sync(xp)
    enc_peak = pool.total_bytes() - base
    pool.free_all_blocks()
    base = pool.total_bytes()
    y = codec.decode(blob, device=device)
    _sync(xp)
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
    with _device_env(xp):
        warm = x if xp is not np else x[: min(n, WARMUP_ROWS)]
        _sync(xp)
        codec.decode(codec.encode(warm), device=device)
        _sync(xp)
        enc_times: list[float] = []
        dec_times: list[float] = []
        cpu_stages = stages and xp is np  # on the GPU the stage timer synchronises: time it apart
        with STAGES.collect() if cpu_stages else contextlib.nullcontext({}) as stage_totals:
            for _ in range(repeat):
                if max_time is not None and enc_times and sum(enc_times) + sum(dec_times) > max_time:
                    break
                _sync(xp)
                t0 = time.perf_counter()
                blob = codec.encode(x)
                t1 = time.perf_counter()
                y = codec.decode(blob, device=device)
                _sync(xp)
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
                    _sync(xp)
                    op_totals["encode"] += t1 - t0
                    op_totals["decode"] += time.perf_counter() - t1
            stage_totals = dict(totals)
        rel_mse = _rel_mse(x, y, xp)
        del y
        peak_enc = peak_dec = None
        if memory:
            peak_enc, peak_dec = _peak_memory(codec, x, xp, device)
    enc, dec = _median(enc_times), _median(dec_times)
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
    _release(xp)
    return {
        "results": results, "stages": stage_rows, "scaling": scaling_fits(results),
        "targets": check_targets(results, "cpu" if xp is np else "gpu"), "errors": errors, "skipped": skipped,
        "device": backend.device_name(xp), "bandwidth_Bps": bw["Bps"], "bandwidth_source": bw["source"],
        "bandwidth": bw,
        "elapsed_s": time.perf_counter() - start,
    }


def _release(xp: ModuleType) -> None:
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()


# -- analysis ----------------------------------------------------------------------------------
def fit_power_law(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares ``t ≈ a·s^b`` in log-log space; ``(a, b)``, or None with < 2 distinct sizes."""
    s = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    ok = (s > 0) & (t > 0)
    s, t = s[ok], t[ok]
    if np.unique(s).size < 2:
        return None
    b, log_a = np.polyfit(np.log(s), np.log(t), 1)
    return float(math.exp(log_a)), float(b)


def scaling_fits(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tidy rows: exponent ``b`` of time ≈ a·N^b per (codec, data, D) and ≈ a·D^b per (codec, data, N)."""
    out = []
    for axis, fixed, var in (("N", "dim", "rows"), ("D", "rows", "dim")):
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in results:
            groups.setdefault((r["codec"], r["data"], r[fixed]), []).append(r)
        for (spec, data, fixed_value), rs in groups.items():
            for op in ("encode", "decode"):
                fit = fit_power_law([r[var] for r in rs], [r[f"{op}_s"] for r in rs])
                if fit is None:
                    continue
                out.append({"codec": spec, "data": data, "axis": axis, fixed: fixed_value, "op": op,
                            "exponent": fit[1], "coef": fit[0], "points": len(rs),
                            "sizes": sorted(r[var] for r in rs)})
    return out


def check_targets(results: Sequence[dict[str, Any]], side: str) -> list[dict[str, Any]]:
    """The issue's throughput targets, one row per matching measurement (pass/fail)."""
    tgt = TARGETS[side]
    spec = codecs.get(tgt["spec"]).spec
    out = []
    for r in results:
        if r["codec"] == spec and r["rows"] == tgt["rows"] and r["dim"] == tgt["dim"]:
            for op in ("encode", "decode"):
                want, got = tgt[f"{op}_MBps"], r[f"{op}_MBps"]
                out.append({"codec": spec, "data": r["data"], "rows": r["rows"], "dim": r["dim"], "device": side,
                            "op": op, "target_MBps": want, "MBps": got, "pass": bool(got >= want)})
    return out


# -- the model forward pass --------------------------------------------------------------------
def forward_overhead(model: Any, input_ids: Sequence[int], specs: Sequence[str], repeat: int = 3,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prefill cost of ``model`` on ``input_ids`` (one sequence) against the codec time for the
    K and V rows that prefill produces.

    A prefill of T tokens leaves ``T·n_kv`` rows of width ``head_dim`` per layer and stream (K,
    V); the codec is run on every one of those ``2·layers`` arrays (pre-RoPE rows captured from
    the same tokens, token-major with the heads interleaved, as the harness codes them), so the
    overhead is ``codec seconds / prefill seconds`` for exactly the work one prefill asks of it.
    The prefill is timed on the stock model (``use_cache=True``) before the capture patches it.
    """
    import torch  # noqa: PLC0415

    from .llm.capture import capture_passage  # noqa: PLC0415

    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    validate(specs, [1], [1], repeat)
    with torch.no_grad():
        model(ids, use_cache=True)  # warm-up
        fwd = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(ids, use_cache=True)
            fwd.append(time.perf_counter() - t0)
    forward_s = _median(fwd)
    tensors = capture_passage(model, list(input_ids))
    n_layers = len({k.split(".")[0] for k in tensors})
    arrays = []
    for i in range(n_layers):
        for stream in ("k", "v"):
            t = tensors[f"layer{i}.{stream}"]  # [n_kv, T, D]
            h, n, d = t.shape
            arrays.append(np.ascontiguousarray(t.permute(1, 0, 2).reshape(n * h, d).numpy(), dtype=np.float32))
    n_kv, tokens, head_dim = (int(s) for s in tensors["layer0.k"].shape)
    total_rows = sum(a.shape[0] for a in arrays)
    mb = sum(a.nbytes for a in arrays) / 1e6
    rows = []
    with _device_env(np):
        for spec in specs:
            codec = codecs.get(codecs.for_heads(spec, n_kv))
            codec.decode(codec.encode(arrays[0]), device="cpu")  # warm-up
            enc_runs, dec_runs, nbytes = [], [], 0
            for _ in range(repeat):
                enc = dec = 0.0
                nbytes = 0
                for a in arrays:
                    t0 = time.perf_counter()
                    blob = codec.encode(a)
                    t1 = time.perf_counter()
                    codec.decode(blob, device="cpu")
                    dec += time.perf_counter() - t1
                    enc += t1 - t0
                    nbytes += len(blob)
                enc_runs.append(enc)
                dec_runs.append(dec)
            enc_s, dec_s = _median(enc_runs), _median(dec_runs)
            row = {
                "codec": codec.spec, "tokens": tokens, "layers": n_layers, "kv_heads": n_kv, "head_dim": head_dim,
                "arrays": len(arrays), "rows_total": total_rows, "input_MB": mb, "bytes": nbytes,
                "ratio_vs_bf16": 2.0 * total_rows * head_dim / nbytes,
                "forward_s": forward_s, "encode_s": enc_s, "decode_s": dec_s,
                "encode_MBps": mb / enc_s, "decode_MBps": mb / dec_s,
                "encode_overhead_pct": 100.0 * enc_s / forward_s,
                "roundtrip_overhead_pct": 100.0 * (enc_s + dec_s) / forward_s,
                "target_pct": PREFILL_OVERHEAD_TARGET_PCT,
                "pass": bool(100.0 * enc_s / forward_s < PREFILL_OVERHEAD_TARGET_PCT),
            }
            rows.append(row)
            if log:
                log(f"forward {tokens} tokens {forward_s:.3f} s; {codec.spec}: encode {enc_s:.3f} s "
                    f"({row['encode_overhead_pct']:.1f} %), decode {dec_s:.3f} s")
    return {"forward_s": forward_s, "forward_s_all": fwd, "tokens": tokens, "torch_threads": torch.get_num_threads(),
            "results": rows}


# -- printing ----------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def format_report(suite: dict[str, Any], forward: dict[str, Any] | None = None) -> str:
    """The human-readable tables: results, per-stage, scaling, targets, forward overhead."""
    lines: list[str] = []
    res = suite["results"]
    gpu = any(r["backend"] == "cupy" for r in res)
    cw = max([len("codec")] + [len(r["codec"]) for r in res])
    dw = max([len("data")] + [len(r["data"]) for r in res])
    head = (f"{'codec':<{cw}} {'data':<{dw}} {'D':>4} {'N':>6} {'enc MB/s':>10} {'dec MB/s':>10} "
            f"{'enc vec/s':>10} {'dec vec/s':>10} {'ratio':>6} {'rel MSE':>9} {'peak MB e/d':>13}")
    if gpu:
        head += f" {'enc %BW':>7} {'dec %BW':>7}"
    lines += [f"codec throughput on {suite['device']} (MB/s of float32 input, median; vectors = rows)", head,
              "-" * len(head)]
    for r in res:
        peak = "-" if r["peak_encode_MB"] is None else f"{r['peak_encode_MB']:.1f}/{r['peak_decode_MB']:.1f}"
        line = (f"{r['codec']:<{cw}} {r['data']:<{dw}} {r['dim']:>4} {r['rows']:>6} {r['encode_MBps']:>10.1f} "
                f"{r['decode_MBps']:>10.1f} {r['encode_vps']:>10.3g} {r['decode_vps']:>10.3g} "
                f"{r['ratio_vs_bf16']:>5.2f}x {r['rel_mse']:>9.3g} {peak:>13}")
        if gpu:
            for op in ("encode", "decode"):
                frac = r.get(f"{op}_bw_fraction")
                line += f" {_fmt(None if frac is None else 100 * frac, '.2f'):>7}"
        lines.append(line)
    if gpu and suite.get("bandwidth_Bps"):
        copy = (suite.get("bandwidth") or {}).get("copy_Bps")
        lines.append(f"%BW: (f32 bytes + blob bytes) / time / {suite['bandwidth_Bps'] / 1e12:.2f} TB/s "
                     f"({suite['bandwidth_source']})"
                     + (f"; a device copy measured {copy / 1e12:.2f} TB/s here" if copy else ""))
    lines += _stage_table(suite["stages"])
    lines += _scaling_table(suite["scaling"])
    if suite["targets"]:
        lines += ["", "targets"]
        for t in suite["targets"]:
            lines.append(f"  {t['codec']} {t['op']} on {t['data']} [{t['rows']}, {t['dim']}] ({t['device']}): "
                         f"{t['MBps']:.1f} MB/s vs >= {t['target_MBps']:.0f}: {'PASS' if t['pass'] else 'FAIL'}")
    if forward:
        lines += ["", (f"codec cost vs a prefill of {forward['tokens']} tokens ({forward['forward_s']:.3f} s, "
                       f"torch threads {forward['torch_threads']}); rows = tokens x kv_heads per layer and stream")]
        fw = max([len("codec")] + [len(r["codec"]) for r in forward["results"]])
        h = f"  {'codec':<{fw}} {'rows':>8} {'enc s':>8} {'dec s':>8} {'enc %':>7} {'enc+dec %':>9} {'ratio':>6}"
        lines += [h, "  " + "-" * (len(h) - 2)]
        for r in forward["results"]:
            lines.append(f"  {r['codec']:<{fw}} {r['rows_total']:>8} {r['encode_s']:>8.3f} {r['decode_s']:>8.3f} "
                         f"{r['encode_overhead_pct']:>7.1f} {r['roundtrip_overhead_pct']:>9.1f} "
                         f"{r['ratio_vs_bf16']:>5.2f}x")
        lines.append(f"  target: encode adds < {PREFILL_OVERHEAD_TARGET_PCT:.0f} % to the prefill")
    if suite["errors"]:
        lines += ["", f"{len(suite['errors'])} measurement(s) failed:"]
        lines += [f"  {e['codec']} on {e['data']} [{e['rows']}, {e['dim']}]: {e['error']}" for e in suite["errors"]]
    if suite["skipped"]:
        lines += ["", f"{len(suite['skipped'])} measurement(s) skipped by the time limit"]
    return "\n".join(lines)


def _reference_rows(rows: Sequence[int], want: int = 4096) -> int:
    return min(rows, key=lambda n: (abs(math.log(n / want)), -n))


STAGE_ORDER = ("encode/skeleton", "encode/kmeans", "encode/rotate", "encode/quantize", "encode/pack",
               "encode/entropy", "decode/entropy", "decode/unpack", "decode/dequantize", "decode/rotate",
               "decode/unproject")


def _stage_key(name: str) -> tuple[int, str]:
    """Pipeline order for the known stages, then any others alphabetically."""
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def _stage_table(stage_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per-stage MB/s (and share of the op's time) at the N nearest 4096, columns = D."""
    if not stage_rows:
        return []
    out = []
    by_codec: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in stage_rows:
        by_codec.setdefault((r["codec"], r["data"]), []).append(r)
    for (spec, data), rs in by_codec.items():
        n_ref = _reference_rows(sorted({r["rows"] for r in rs}))
        rs = [r for r in rs if r["rows"] == n_ref]
        dims = sorted({r["dim"] for r in rs})
        names = sorted({r["stage"] for r in rs}, key=_stage_key)
        cell = {(r["stage"], r["dim"]): r for r in rs}
        out += ["", f"stages of {spec} on {data}, N = {n_ref} (MB/s, share of encode/decode time)"]
        out.append(f"  {'stage':<20}" + "".join(f" {'D=' + str(d):>18}" for d in dims))
        for name in names:
            cells = []
            for d in dims:
                r = cell.get((name, d))
                cells.append(f" {'-':>18}" if r is None else f" {r['MBps']:>10.1f} ({100 * (r['share'] or 0):>3.0f} %)")
            out.append(f"  {name:<20}" + "".join(cells))
    return out


def _scaling_table(fits: Sequence[dict[str, Any]]) -> list[str]:
    n_fits = [f for f in fits if f["axis"] == "N"]
    if not n_fits:
        return []
    out = ["", "scaling: time ~ a * N^b per (codec, data, D); b = 1 is linear in rows"]
    keys = list(dict.fromkeys((f["codec"], f["data"], f["dim"]) for f in n_fits))
    cw = max([len("codec")] + [len(k[0]) for k in keys])
    out.append(f"  {'codec':<{cw}} {'data':<10} {'D':>4} {'b enc':>6} {'b dec':>6}  N range")
    cell = {(f["codec"], f["data"], f["dim"], f["op"]): f for f in n_fits}
    for spec, data, d in keys:
        e, dd = cell.get((spec, data, d, "encode")), cell.get((spec, data, d, "decode"))
        rng = e or dd
        out.append(f"  {spec:<{cw}} {data:<10} {d:>4} {_fmt(e and e['exponent'], '.2f'):>6} "
                   f"{_fmt(dd and dd['exponent'], '.2f'):>6}  {rng['sizes'][0]}..{rng['sizes'][-1]}")
    d_fits = [f for f in fits if f["axis"] == "D"]
    if d_fits:
        n_ref = _reference_rows(sorted({f["rows"] for f in d_fits}))
        out += ["", f"scaling in D at N = {n_ref}: time ~ a * D^b"]
        cell = {(f["codec"], f["data"], f["op"]): f for f in d_fits if f["rows"] == n_ref}
        for spec, data in dict.fromkeys((f["codec"], f["data"]) for f in d_fits if f["rows"] == n_ref):
            e, dd = cell.get((spec, data, "encode")), cell.get((spec, data, "decode"))
            out.append(f"  {spec:<{cw}} {data:<10} b enc {_fmt(e and e['exponent'], '.2f'):>6}  "
                       f"b dec {_fmt(dd and dd['exponent'], '.2f'):>6}")
    return out


def _argv() -> list[str]:
    """The command line, with the entry point shown as ``kakeya`` when it was the CLI."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith("__main__.py") or Path(argv[0]).name == "kakeya"):
        argv[0] = "kakeya"
    return argv


def to_json(suite: dict[str, Any], provenance_meta: dict[str, Any], forward: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tidy document written by ``--json``: one row per measurement plus provenance."""
    return {
        "provenance": {**provenance_meta, "device_name": suite["device"], "bandwidth_Bps": suite["bandwidth_Bps"],
                       "bandwidth_source": suite["bandwidth_source"], "bandwidth": suite["bandwidth"],
                       "elapsed_s": suite["elapsed_s"],
                       "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"), "argv": _argv()},
        "results": suite["results"],
        "stages": suite["stages"],
        "scaling": suite["scaling"],
        "targets": suite["targets"],
        "forward": forward,
        "errors": suite["errors"],
        "skipped": suite["skipped"],
    }
