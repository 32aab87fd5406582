"""Adopt `kakeya compare` runs made before the results store existed as `exp-e2e` head-to-head cells.

Each run below was made with the CLI command in the README (same harness, same passages, same
seeds as the notebook's cell); its rows are rebuilt from its own results.json and its original
provenance (git sha, versions, machine) is kept, with ``imported_from`` added. The cell's
parameters are exactly those `exp-e2e` builds for the given papermill parameters, so the
notebook finds the cell and skips the compute. A run whose plans no longer match the current
recipes is refused. Rerunning with ``force`` in the notebook recomputes any of them.

    .venv/bin/python scripts/import_compare_runs.py
"""

from __future__ import annotations

import json
import sys

from kakeya_lib.experiments import e2e
from kakeya_lib.experiments.table import summary_row
from kakeya_lib.paths import RESULTS_DIR
from kakeya_lib.store import Cell, Store

# (compare run folder, model, corpus, the exp-e2e parameters that reproduce it)
RUNS = [
    ("smollm2-135m_sotu_ctx1024_n48_v2", "smollm2-135m", "sotu",
     {"pairs": ["int:bits=4,rotate=1", "turboquant:bits=4", "turboquant:bits=3", "kivi:bits=4|kivi:bits=4,mode=value"],
      "recipes": ["seed-tier1", "seed-tier1-fixed", "seed-v13-ppl", "seed-v14-pareto", "seed-r3", "ours-k3v3-sink",
                  "ours-ec5-fine", "ours-ec5", "ours-ec6", "ours-ec6-lean"], "k_metric": True, "n_passages": 48}),
    ("smollm2-135m_wiki_ctx1024_n48", "smollm2-135m", "wiki",
     {"pairs": ["turboquant:bits=4", "turboquant:bits=3"], "recipes": ["ours-ec5", "ours-ec6"], "k_metric": False,
      "n_passages": 48}),
    ("gemma3-270m_sotu_ctx1024_n16", "gemma3-270m", "sotu",
     {"pairs": ["turboquant:bits=4", "turboquant:bits=3"], "recipes": ["ours-ec5", "ours-ec6"], "k_metric": False,
      "n_passages": 16}),
]


def main() -> int:
    store = Store()
    for folder, model, corpus, params in RUNS:
        run = json.loads((RESULTS_DIR / "compare" / folder / "results.json").read_text())
        prov = run["provenance"]
        plans = e2e.comparison_plans(params["pairs"], params["recipes"])
        labels = [p.label for _, p in plans]
        if labels != prov["plans"] or prov["model"] != model or prov["corpus"] != corpus:
            print(f"{folder}: plans/model/corpus differ from today's recipes; not imported", file=sys.stderr)
            return 1
        size = {"ctx": prov["ctx"], "n_eval": prov["n_eval"], "n_passages": params["n_passages"], "seed": prov["seed"],
                "calib_passages": 8}
        if prov["passages"] != params["n_passages"]:
            raise SystemExit(f"{folder}: {prov['passages']} passages, expected {params['n_passages']}")
        cell = Cell("paper", model, corpus, "e2e/head_to_head", f"ctx{size['ctx']}-n{size['n_passages']}",
                    {**size, "k_metric": params["k_metric"], "plans": labels})
        rows = [{**cols, **summary_row(res), "ctx": prov["ctx"], "codec_seconds": res.get("codec_seconds"),
                 "compressed_layers": len(res.get("compressed_layers") or [])}
                for (cols, _), res in zip(plans, run["results"])]
        results = {"results": run["results"], "passage_ids": prov["passage_ids"]}
        path = store.save(cell, rows, results=results,
                          prov={**prov, "params": cell.config, "imported_from": f"data/results/compare/{folder}"})
        print(f"{folder} -> {path.relative_to(RESULTS_DIR)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
