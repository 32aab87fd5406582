"""Stored prompt caches and generation with the compressed cache on the packaged model.

Per context length: the .kvz file vs a bf16 safetensors dump, time to first token from the file
vs recomputing the prefill, and generate() tokens/s and cache memory at each decoded-block
budget vs a float cache (kakeya_lib/benchmark/prompt_cache.py says how each is measured).
Writes data/results/bench/prompt_cache.json (rows + provenance) and prompt_cache.md (tables).

    .venv/bin/python benchmarks/prompt_cache.py [--ctx 1024 4096] [--recipe ours-klt-sal] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from kakeya_lib import provenance
from kakeya_lib.benchmark.prompt_cache import prompt_cache_rows
from kakeya_lib.benchmark.report import prompt_cache_markdown
from kakeya_lib.llm import corpora, recipes
from kakeya_lib.llm.models import load_model
from kakeya_lib.llm.evaluate import resolve_for_model
from kakeya_lib.llm.prerope import patch_model
from kakeya_lib.paths import RESULTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="sotu")
    parser.add_argument("--ctx", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--recipe", default="ours-klt-sal")  # the headline recipe
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS_DIR / "bench" / "prompt_cache.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model(args.model)
    model = loaded.model
    stock = load_model(args.model).model  # unpatched: its DynamicCache is the float reference
    patch_model(model)
    plan = resolve_for_model(recipes.load(args.recipe).plan(), model, corpus=args.corpus, tokenizer=loaded.tokenizer,
                        ctx=1024, n_passages=8, seed=0, bos=loaded.needs_bos, model_name=args.model)
    rows, passages = [], {}
    for ctx in args.ctx:
        (passage,) = corpora.passages(args.corpus, loaded.tokenizer, ctx, 1, 1, seed=0, bos=loaded.needs_bos)
        passages[ctx] = passage.passage_id
        rows += prompt_cache_rows(model, passage.input_ids, plan, label=args.recipe, new_tokens=args.new_tokens,
                                  repeat=args.repeat, log=lambda m: print(m, file=sys.stderr), stock_model=stock)
    meta = provenance.collect(command="benchmarks/prompt_cache.py", model=args.model, corpus=args.corpus,
                              recipe=args.recipe, passages=passages, new_tokens=args.new_tokens, repeat=args.repeat,
                              torch_threads=torch.get_num_threads())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": meta, "results": rows}, indent=2))
    out.with_suffix(".md").write_text(prompt_cache_markdown(rows))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
