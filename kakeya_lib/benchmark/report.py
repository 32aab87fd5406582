"""The suite's markdown report and its tidy JSON."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .prefill import PREFILL_OVERHEAD_TARGET_PCT


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


def prompt_cache_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Tables of :func:`~kakeya_lib.benchmark.prompt_cache.prompt_cache_rows` (storage, first token, generation)."""
    out = ["| cached tokens | recipe | .kvz file | bf16 safetensors dump | smaller by | first token: recompute | "
           "from file | speed-up |", "|---|---|---|---|---|---|---|---|"]
    first = {(r["cached_tokens"], r["label"]): r for r in rows if r["kind"] == "first_token"}
    for r in rows:
        if r["kind"] != "storage":
            continue
        f = first[(r["cached_tokens"], r["label"])]
        out.append(f"| {r['cached_tokens']} | {r['label']} | {r['file_bytes'] / 1e6:.2f} MB | "
                   f"{r['bf16_dump_bytes'] / 1e6:.2f} MB | {r['ratio_vs_bf16_dump']:.2f}x | {f['recompute_s']:.3f} s | "
                   f"{f['from_file_s']:.3f} s | {f['speedup']:.1f}x |")
    out += ["", "| cached tokens | cache | blocks kept decoded | tokens/s | vs float cache | cache memory | "
            "+ transient decode | same tokens as float |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "generate":
            continue
        keep = "-" if r["cache"] != "compressed" else ("all" if r["keep_decoded"] is None else str(r["keep_decoded"]))
        same = {True: "yes", False: "no"}.get(r.get("same_tokens_as_float"), "-")
        out.append(f"| {r['cached_tokens']} | {r['cache']} | {keep} | {r['tokens_per_s']:.1f} | "
                   f"{r['relative_speed']:.2f}x | {r['memory_bytes'] / 1e6:.2f} MB | "
                   f"{r['transient_decode_bytes'] / 1e6:.2f} MB | {same} |")
    return "\n".join(out) + "\n"
