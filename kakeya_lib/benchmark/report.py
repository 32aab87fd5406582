"""The suite's markdown report and its tidy JSON."""

from __future__ import annotations

import json
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
    out += ["", "| cached tokens | cache | blocks kept decoded | tokens/s | vs the first float row | "
            "tokens/s after the first | vs the first float row | cache memory | + transient decode | "
            "same tokens as the first float row |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "generate":
            continue
        keep = "-" if r["cache"] != "compressed" else ("all" if r["keep_decoded"] is None else str(r["keep_decoded"]))
        same = "-" if r.get("reference") else {True: "yes", False: "no"}.get(r.get("same_tokens_as_float"), "-")
        steady, steady_rel = r.get("steady_tokens_per_s"), r.get("steady_relative_speed")
        out.append(f"| {r['cached_tokens']} | {r['cache']} | {keep} | {r['tokens_per_s']:.1f} | "
                   f"{r['relative_speed']:.2f}x | {'-' if steady is None else f'{steady:.1f}'} | "
                   f"{'-' if steady_rel is None else f'{steady_rel:.2f}x'} | {r['memory_bytes'] / 1e6:.2f} MB | "
                   f"{r['transient_decode_bytes'] / 1e6:.2f} MB | {same} |")
    return "\n".join(out) + "\n"


# -- bench files as markdown (benchmarks/report.py, the book's speed page) ---------------------
def _provenance_line(prov: dict[str, Any]) -> str:
    """``git <sha> [(dirty)]``, and the machine's load when the run started where it was recorded."""
    git = prov.get("git", {})
    line = f"git {str(git.get('sha'))[:10]}{' (dirty)' if git.get('dirty') else ''}"
    load = (prov.get("machine") or {}).get("load_avg_1_5_15m")
    cpus = (prov.get("machine") or {}).get("cpus")
    if load:
        line += f"; load average at start {load[0]:.2f} on {cpus} CPUs"
    return line


def _is_gpu(doc: dict[str, Any]) -> bool:
    return any(r.get("backend") == "cupy" for r in doc["results"])


def _pick_shape(doc: dict[str, Any], rows: int | None, dim: int | None) -> tuple[int, int]:
    have = {(r["rows"], r["dim"]) for r in doc["results"]}
    want = (rows or (65536 if _is_gpu(doc) else 4096), dim or 128)
    if want in have:
        return want
    return min(have, key=lambda s: (abs(s[1] - want[1]), abs(s[0] - want[0])))


def bench_file_markdown(path: str | Path, rows: int | None = None, dim: int | None = None) -> str:
    """Markdown of one ``kakeya bench --json`` file: its targets, every codec at the reference
    shape (``rows``, ``dim``; default [4096, 128] on CPU, [65536, 128] on GPU, else the nearest
    measured), the scaling exponents, the prefill table when the run had ``--forward``, and the
    file's provenance line."""
    doc = json.loads(Path(path).read_text())
    prov = doc.get("provenance", {})
    out = [f"### `{path}`", ""]
    out.append(f"Device: {prov.get('device_name', '?')}; {_provenance_line(prov)}; "
               f"command: `{' '.join(prov.get('argv') or ['kakeya', 'bench'])}`.")
    if prov.get("bandwidth_Bps"):
        out.append(f"Bandwidth fraction against {prov['bandwidth_Bps'] / 1e12:.2f} TB/s ({prov.get('bandwidth_source')}).")
    out.append("")
    if doc.get("targets"):
        out += ["| target | data | shape | MB/s | needed | |", "|---|---|---|---:|---:|---|"]
        for t in doc["targets"]:
            out.append(f"| `{t['codec']}` {t['op']} | {t['data']} | [{t['rows']}, {t['dim']}] | {t['MBps']:.1f} | "
                       f"≥ {t['target_MBps']:.0f} | {'pass' if t['pass'] else 'FAIL'} |")
        out.append("")
    if not doc["results"]:
        return "\n".join(out + ["(no results)"])
    n_ref, d_ref = _pick_shape(doc, rows, dim)
    gpu = _is_gpu(doc)
    head = "| codec | data | enc MB/s | dec MB/s | enc vec/s | dec vec/s | ratio | rel MSE | peak MB enc/dec |"
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    if gpu:
        head += " enc %BW | dec %BW |"
        sep += "---:|---:|"
    out += [f"At [{n_ref}, {d_ref}] (float32 input, median of {doc['results'][0].get('repeat', '?')}):", "", head, sep]
    for r in doc["results"]:
        if (r["rows"], r["dim"]) != (n_ref, d_ref):
            continue
        peak = "-" if r.get("peak_encode_MB") is None else f"{r['peak_encode_MB']:.1f} / {r['peak_decode_MB']:.1f}"
        line = (f"| `{r['codec']}` | {r['data']} | {r['encode_MBps']:.1f} | {r['decode_MBps']:.1f} | "
                f"{r['encode_vps']:.3g} | {r['decode_vps']:.3g} | {r['ratio_vs_bf16']:.2f}× | {r['rel_mse']:.3g} | {peak} |")
        if gpu:
            line += "".join(f" {100 * r[k]:.2f} |" if r.get(k) is not None else " - |"
                            for k in ("encode_bw_fraction", "decode_bw_fraction"))
        out.append(line)
    fits = [f for f in doc.get("scaling", []) if f["axis"] == "N"]
    if fits:
        dims = sorted({f["dim"] for f in fits})
        cell = {(f["codec"], f["data"], f["dim"], f["op"]): f["exponent"] for f in fits}
        n_lo, n_hi = min(min(f["sizes"]) for f in fits), max(max(f["sizes"]) for f in fits)
        out += ["", f"Scaling exponent b of time ≈ a·N^b (encode / decode) over N = {n_lo}..{n_hi}:", "",
                "| codec | data | " + " | ".join(f"D={d}" for d in dims) + " |", "|---|---|" + "---:|" * len(dims)]
        for spec, data in dict.fromkeys((f["codec"], f["data"]) for f in fits):
            cells = []
            for d in dims:
                e, dd = cell.get((spec, data, d, "encode")), cell.get((spec, data, d, "decode"))
                cells.append("-" if e is None else f"{e:.2f} / {dd:.2f}")
            out.append(f"| `{spec}` | {data} | " + " | ".join(cells) + " |")
    fwd = doc.get("forward")
    if fwd:
        out += ["", (f"Codec time vs a {fwd.get('model', 'model')} prefill of {fwd['tokens']} tokens "
                     f"({fwd['forward_s']:.3f} s, {fwd.get('torch_threads')} torch threads); the codec runs on every "
                     "K and V row the prefill produces:"), "",
                "| codec | rows | encode s | decode s | enc MB/s | dec MB/s | encode % of prefill | enc+dec % | "
                "encode within target |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in fwd["results"]:
            target = r.get("target_pct")
            mbps = [f"{r[k]:.1f}" if r.get(k) is not None else "-" for k in ("encode_MBps", "decode_MBps")]
            verdict = ("yes" if r["pass"] else "no") + (f" (< {target:g} %)" if target is not None else "")
            out.append(f"| `{r['codec']}` | {r['rows_total']} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | "
                       f"{mbps[0]} | {mbps[1]} | {r['encode_overhead_pct']:.1f} | {r['roundtrip_overhead_pct']:.1f} | "
                       f"{verdict} |")
    if doc.get("errors"):
        out += ["", f"{len(doc['errors'])} measurement(s) failed: "
                + "; ".join(f"`{e['codec']}` [{e['rows']}, {e['dim']}] {e['error']}" for e in doc["errors"][:5])]
    return "\n".join(out) + "\n"


BOOK_CODEC_FILES = ("codec_cpu_kv_like.json", "codec_cpu_captured.json")


def bench_page(bench_dir: str | Path) -> str:
    """The book's speed-and-storage tables from the figures ``make bench`` wrote into ``bench_dir``.

    Codec throughput (synthetic KV-like and captured rows, with the cost against a prefill), stored
    prompt caches (``prompt_cache.json``) and the cache's resident bytes (``cache_memory.json``),
    each with its provenance line. Raises :class:`FileNotFoundError` naming a missing codec file;
    a missing prompt-cache or memory file is said in the page, with the command that writes it.
    """
    bench_dir = Path(bench_dir)
    out = ["## Codec throughput", ""]
    for name in BOOK_CODEC_FILES:
        path = bench_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no benchmark figures (run `make bench`)")
        out.append(bench_file_markdown(path).replace(f"### `{path}`", f"### `{name}`", 1))
    out += ["## Prompt caches on disk", ""] + _measured(bench_dir / "prompt_cache.json", "prompt_cache.py", lambda doc, prov: [
        f"{prov.get('model')} on {prov.get('corpus')}, recipe `{prov.get('recipe')}`, {prov.get('new_tokens')} new "
        f"tokens, median of {prov.get('repeat')}; {_provenance_line(prov)}; command: `{prov.get('command')}`.", "",
        prompt_cache_markdown(doc["results"])])
    out += ["## Resident cache bytes", ""] + _measured(bench_dir / "cache_memory.json", "cache_memory.py", lambda doc, prov: [
        f"{prov.get('model')}, {prov.get('tokens')} tokens; {_provenance_line(prov)}; command: `{prov.get('command')}`.",
        "", "| cache | codec | bytes | ratio vs bf16 | prefill s |", "|---|---|---:|---:|---:|"] + [
        f"| {r['cache']} | {'-' if r.get('codec') is None else '`' + r['codec'] + '`'} | {r['bytes']:,} | "
        f"{r['ratio_vs_bf16']:.2f}x | {r['prefill_s']:.2f} |" for r in doc["results"]])
    return "\n".join(out) + "\n"


def _measured(path: Path, script: str, lines: Any) -> list[str]:
    """``lines(doc, provenance)`` of a bench file, or a line naming the script that writes it."""
    if not path.is_file():
        return [f"Not measured on this tree yet: `.venv/bin/python benchmarks/{script}` writes "
                f"`data/results/bench/{path.name}`.", ""]
    doc = json.loads(path.read_text())
    return lines(doc, doc["provenance"])
