"""The codec speed suite behind ``kakeya bench`` (benchmarks, never timed tests).

Modules: :mod:`.sources` (synthetic or captured rows), :mod:`.device` (numpy / CuPy, bandwidth),
:mod:`.measure` (timing, memory, the suite), :mod:`.scaling` (power-law fits, targets),
:mod:`.prefill` (overhead on a model prefill), :mod:`.report` (markdown and JSON).

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

from .device import resolve_device
from .measure import (
    DEFAULT_CODECS,
    DEFAULT_DIMS,
    DEFAULT_ROWS,
    measure,
    run_suite,
    validate,
)
from .prefill import PREFILL_OVERHEAD_TARGET_PCT, forward_overhead
from .report import format_report, to_json
from .scaling import TARGETS, check_targets, fit_power_law, scaling_fits
from .sources import (
    DataSource,
    captured_sources,
    load_captured,
    parse_data,
    save_captured,
    synthetic_source,
)

__all__ = ["DEFAULT_CODECS", "DEFAULT_DIMS", "DEFAULT_ROWS", "PREFILL_OVERHEAD_TARGET_PCT", "SYNTHETIC_KINDS", "TARGETS",
           "DataSource", "captured_sources", "check_targets", "fit_power_law", "format_report", "forward_overhead",
           "load_captured", "measure", "parse_data", "resolve_device", "run_suite", "save_captured", "scaling_fits",
           "synthetic_source", "to_json", "validate"]
