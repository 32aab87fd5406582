"""Markdown tables from ``kakeya bench --json`` files (``data/results/bench/summary_cpu.md``, a notebook or the book).

    .venv/bin/python benchmarks/report.py data/results/bench/codec_cpu_kv_like.json [more.json ...] \\
        [--rows 4096] [--dim 128]

For each file: the targets, every codec at the reference shape (``--rows``, ``--dim``; on a GPU
file the default reference is [65536, 128]), the rows exponent of the scaling fit per codec and
D, the prefill-overhead table when the run had ``--forward``, and the file's provenance line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _is_gpu(doc: dict[str, Any]) -> bool:
    return any(r.get("backend") == "cupy" for r in doc["results"])


def _pick_shape(doc: dict[str, Any], rows: int | None, dim: int | None) -> tuple[int, int]:
    have = {(r["rows"], r["dim"]) for r in doc["results"]}
    want = (rows or (65536 if _is_gpu(doc) else 4096), dim or 128)
    if want in have:
        return want
    return min(have, key=lambda s: (abs(s[1] - want[1]), abs(s[0] - want[0])))


def render(path: str, rows: int | None = None, dim: int | None = None) -> str:
    doc = json.loads(Path(path).read_text())
    prov = doc.get("provenance", {})
    out = [f"### `{path}`", ""]
    git = prov.get("git", {})
    out.append(f"Device: {prov.get('device_name', '?')}; git {str(git.get('sha'))[:10]}{' (dirty)' if git.get('dirty') else ''}; "
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
                "| codec | rows | encode s | decode s | encode % of prefill | enc+dec % | < 10 % |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for r in fwd["results"]:
            out.append(f"| `{r['codec']}` | {r['rows_total']} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | "
                       f"{r['encode_overhead_pct']:.1f} | {r['roundtrip_overhead_pct']:.1f} | {'yes' if r['pass'] else 'no'} |")
    if doc.get("errors"):
        out += ["", f"{len(doc['errors'])} measurement(s) failed: "
                + "; ".join(f"`{e['codec']}` [{e['rows']}, {e['dim']}] {e['error']}" for e in doc["errors"][:5])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rows", type=int, help="reference N (default 4096 on CPU, 65536 on GPU)")
    parser.add_argument("--dim", type=int, help="reference D (default 128)")
    args = parser.parse_args(argv)
    print("\n".join(render(f, args.rows, args.dim) for f in args.files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
