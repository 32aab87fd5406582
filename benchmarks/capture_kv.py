"""Capture a few layers' pre-RoPE K/V rows of a real model into a small, pickle-free .npz.

The file feeds ``kakeya bench --data captured FILE`` (CPU or GPU) and ``scripts/gpu_check.sh``,
which cannot run the model on the device machine (no packaged model, no registry there). Rows are
``[T·n_kv, head_dim]`` per (layer, stream), token-major with the heads interleaved, stored as
float16 (the bench reads them back as float32). With the defaults (SmolLM2-135M, 1024 sotu tokens,
4 layers) the file is about 3 MB.

    .venv/bin/python benchmarks/capture_kv.py [--model smollm2-135m] [--tokens 1024] \\
        [--layers 0 10 20 -1] [--out .cache/bench/smollm2-135m_sotu_kv.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kakeya_lib import benchmark, provenance
from kakeya_lib.paths import CACHE_DIR

DEFAULT_OUT = CACHE_DIR / "bench" / "smollm2-135m_sotu_kv.npz"
MAX_MB = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="packaged name, HF id or local folder")
    parser.add_argument("--corpus", default="sotu")
    parser.add_argument("--tokens", type=int, default=1024, help="prefill length T")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 10, 20, -1],
                        help="layers to keep (negative = from the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    from kakeya_lib.llm import corpora  # noqa: PLC0415  (torch only when run)
    from kakeya_lib.llm.capture import capture_passage  # noqa: PLC0415
    from kakeya_lib.llm.models import load_model  # noqa: PLC0415

    loaded = load_model(args.model)
    (passage,) = corpora.passages(args.corpus, loaded.tokenizer, args.tokens, 0, 1, seed=args.seed,
                                  bos=loaded.needs_bos)
    tensors = capture_passage(loaded.model, passage.prefix_ids)
    meta = {"model": args.model, "family": loaded.family, "corpus": args.corpus, "tokens": args.tokens,
            "passage_id": passage.passage_id, "seed": args.seed,
            "provenance": provenance.collect(command="benchmarks/capture_kv.py")}
    info = benchmark.save_captured(tensors, args.out, args.layers, meta, args.dtype)
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out}: layers {info['layers']} of {info['n_layers']}, "
          f"{', '.join(f'{k} {v}' for k, v in info['shapes'].items())}; {size_mb:.2f} MB")
    if size_mb > MAX_MB:
        print(f"warning: {size_mb:.1f} MB is over the {MAX_MB:.0f} MB meant to travel to the GPU machine; "
              "use fewer --tokens or --layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
