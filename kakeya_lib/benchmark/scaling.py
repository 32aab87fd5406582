"""Scaling laws (``t ≈ a·N^b``) fitted to the timings, and the speed targets they are checked against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import codecs

# Throughput targets (MB/s of float32 input): on the CPU, our entropy-coded recipe's K spec (the
# second default codec, ours-5x's) at 200 / 400 MB/s; on the GPU, the default KakeyaTurbo spec.
TARGETS = {
    "cpu": {"spec": "kakeya:pca=none,bits=5,quant=uniform,step=0.55,entropy=1,scalar_bits=8,block=3072",
            "rows": 4096, "dim": 128, "encode_MBps": 200.0, "decode_MBps": 400.0},
    "gpu": {"spec": "kakeya", "rows": 65536, "dim": 128, "encode_MBps": 20_000.0, "decode_MBps": 100_000.0},
}


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
