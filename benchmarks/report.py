"""Markdown tables from ``kakeya bench --json`` files (``data/results/bench/summary_cpu.md``), or
the book's speed-and-storage page from everything ``make bench`` wrote.

    .venv/bin/python benchmarks/report.py data/results/bench/codec_cpu_kv_like.json [more.json ...] \\
        [--rows 4096] [--dim 128]
    .venv/bin/python benchmarks/report.py --book data/results/bench > book/_generated/bench.md

For each file: the targets, every codec at the reference shape (``--rows``, ``--dim``; on a GPU
file the default reference is [65536, 128]), the rows exponent of the scaling fit per codec and
D, the prefill-overhead table when the run had ``--forward``, and the file's provenance line
(:mod:`kakeya_lib.benchmark.report` does the work).
"""

from __future__ import annotations

import argparse

from kakeya_lib.benchmark.report import bench_file_markdown, bench_page


def render(path: str, rows: int | None = None, dim: int | None = None) -> str:
    """One bench file as markdown (see :func:`kakeya_lib.benchmark.report.bench_file_markdown`)."""
    return bench_file_markdown(path, rows, dim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--book", metavar="DIR", help="the book's speed page from the figures in DIR instead")
    parser.add_argument("--rows", type=int, help="reference N (default 4096 on CPU, 65536 on GPU)")
    parser.add_argument("--dim", type=int, help="reference D (default 128)")
    args = parser.parse_args(argv)
    if bool(args.book) == bool(args.files):
        parser.error("give bench JSON files, or --book DIR")
    if args.book:
        print(bench_page(args.book), end="")
    else:
        print("\n".join(render(f, args.rows, args.dim) for f in args.files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
