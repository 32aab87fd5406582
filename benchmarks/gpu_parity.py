"""numpy vs CuPy parity report for the benchmark's codec specs (needs a GPU and CuPy).

For every spec and input (synthetic KV-like rows at each D, and the captured rows when given):
encode on the CPU and on the GPU, and record

* ``bytes_identical``: the two blobs are byte-for-byte equal, and which sections differ;
* ``cross_max_abs``: the largest difference between decoding the CPU bytes on the CPU and on the
  GPU (the same bytes, so only float arithmetic differs), relative to max |x|;
* the rel MSE of each side's own round trip.

Identical bytes are required where the arithmetic is exact (``EXPECT_IDENTICAL``); decoded values
must agree to ``--tol`` (relative to max |x|) for every spec. Exit status 1 when either fails.

    python3 benchmarks/gpu_parity.py [--rows 4096] [--dims 64 128] [--captured FILE.npz] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from kakeya_lib import backend, benchmark, codecs, container, provenance, synthetic

EXPECT_IDENTICAL = {"identity"}  # codecs whose encode is exact arithmetic on both sides


def _on(side: str):
    os.environ[backend.DEVICE_ENV] = side


def compare(spec: str, x: np.ndarray, cp, data: str) -> dict:
    codec = codecs.get(spec)
    _on("cpu")
    blob_c = codec.encode(x)
    y_cc = codec.decode(blob_c, device="cpu")
    _on("gpu")
    blob_g = codec.encode(cp.asarray(x))
    y_gg = codec.decode(blob_g, device="gpu").get()
    y_cg = codec.decode(blob_c, device="gpu").get()
    _on("cpu")
    y_gc = codec.decode(blob_g, device="cpu")
    sec_c, sec_g = container.read_container(blob_c).sections, container.read_container(blob_g).sections
    differ = sorted(n for n in set(sec_c) | set(sec_g) if bytes(sec_c.get(n, b"")) != bytes(sec_g.get(n, b"")))
    scale = float(np.abs(x).max()) or 1.0

    def rel(y):
        return float(((x.astype(np.float64) - y) ** 2).sum() / (x.astype(np.float64) ** 2).sum())

    return {
        "codec": codec.spec, "data": data, "rows": int(x.shape[0]), "dim": int(x.shape[1]),
        "bytes_cpu": len(blob_c), "bytes_gpu": len(blob_g), "bytes_identical": blob_c == blob_g,
        "sections_differing": differ,
        "cross_max_abs": float(np.abs(y_cc - y_cg).max()) / scale,  # CPU bytes, decoded on both sides
        "cross_max_abs_gpu_bytes": float(np.abs(y_gg - y_gc).max()) / scale,
        "rel_mse_cpu": rel(y_cc), "rel_mse_gpu": rel(y_gg),
        "expect_identical": codec.name in EXPECT_IDENTICAL,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codecs", nargs="+", default=list(benchmark.DEFAULT_CODECS))
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--captured", help="captured-rows .npz (benchmarks/capture_kv.py)")
    parser.add_argument("--tol", type=float, default=1e-4, help="max |decode difference| / max |x|")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    cp = backend.cupy_or_raise()
    inputs = [("kv_like", synthetic.kv_like(args.rows, d, seed=0)) for d in args.dims]
    if args.captured:
        for src in benchmark.captured_sources(args.captured):
            inputs.append((src.name, src.rows_for(args.rows, src.dim, args.rows)))
    rows, bad = [], []
    for data, x in inputs:
        for spec in args.codecs:
            try:
                r = compare(spec, x, cp, data)
            except Exception as exc:  # noqa: BLE001 - report every spec, fail at the end
                r = {"codec": spec, "data": data, "rows": int(x.shape[0]), "dim": int(x.shape[1]),
                     "error": f"{type(exc).__name__}: {exc}"}
            rows.append(r)
            if "error" in r:
                bad.append(f"{spec} on {data} [{x.shape[0]}, {x.shape[1]}]: {r['error']}")
                print(f"{spec:<44} {data:<28} ERROR {r['error']}")
                continue
            ok_bytes = r["bytes_identical"] or not r["expect_identical"]
            ok_vals = max(r["cross_max_abs"], r["cross_max_abs_gpu_bytes"]) <= args.tol
            if not (ok_bytes and ok_vals):
                bad.append(f"{r['codec']} on {data} [{r['rows']}, {r['dim']}]: identical={r['bytes_identical']} "
                           f"cross={r['cross_max_abs']:.2e}/{r['cross_max_abs_gpu_bytes']:.2e}")
            print(f"{r['codec']:<44} {data:<28} D={r['dim']:<4} bytes {'identical' if r['bytes_identical'] else 'differ':<9} "
                  f"({r['bytes_cpu']} vs {r['bytes_gpu']}; differing: {','.join(r['sections_differing']) or '-'}) "
                  f"cross-decode {r['cross_max_abs']:.1e} rel MSE {r['rel_mse_cpu']:.4g}/{r['rel_mse_gpu']:.4g}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        meta = provenance.collect(command="benchmarks/gpu_parity.py", tol=args.tol, device=backend.device_name(cp))
        Path(args.json).write_text(json.dumps({"provenance": meta, "results": rows}, indent=1))
    if bad:
        print(f"{len(bad)} parity failure(s):\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"parity ok: {len(rows)} comparisons")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
