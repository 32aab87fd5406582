"""The committed paper-profile cells: computed by this code's notebooks or sweeps from a clean tree
(never imported), and our tuned recipes chosen on calib-split passages only."""

from __future__ import annotations

import json

import pytest

from kakeya_lib import sweep
from kakeya_lib.experiments import e2e
from kakeya_lib.llm import corpora, recipes
from kakeya_lib.llm.plan import template_spec
from kakeya_lib.paths import REPO_ROOT, RESULTS_DIR
from kakeya_lib.store import Cell, Store

PAPER = RESULTS_DIR / "paper"


def committed_cells() -> list:
    return sorted(p.parent for p in PAPER.rglob("provenance.json") if not p.parent.name.startswith("."))


@pytest.mark.parametrize("cell_dir", committed_cells(), ids=lambda p: str(p.relative_to(PAPER)))
def test_paper_cells_are_not_imported_and_come_from_a_clean_tree(cell_dir):
    prov = json.loads((cell_dir / "provenance.json").read_text())
    assert "imported_from" not in json.dumps(prov), "a published cell must be computed, not imported"
    assert prov["git"]["sha"] and prov["git"]["dirty"] is False, "computed from a dirty tree"
    # it lies where the store looks for it, so a rerun finds it instead of recomputing it
    c = json.loads((cell_dir / "config.json").read_text())
    cell = Cell(c["profile"], c["model"], c["corpus"], c["analysis"], c["label"], c["params"])
    assert RESULTS_DIR / cell.relpath == cell_dir, f"stored at {cell_dir}, the store looks in {cell.relpath}"


def test_new_cells_record_their_thread_counts():
    from kakeya_lib import provenance

    prov = provenance.collect()
    assert {"torch_intraop", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"} <= set(prov["threads"])


def tuned_recipes() -> list[recipes.Recipe]:
    return [r for r in (recipes.load(n) for n in recipes.names()) if r.tuning is not None]


def test_the_headline_recipes_are_tuned():
    assert {r.name for r in tuned_recipes()} >= {e2e.HEADLINE_RECIPE, "ours-fine"}


@pytest.mark.parametrize("recipe", tuned_recipes(), ids=lambda r: r.name)
def test_tuned_recipes_come_from_a_calib_tuning_cell_by_its_rule(recipe):
    cell_dir = RESULTS_DIR / recipe.tuning["cell"]
    assert (cell_dir / "config.json").is_file(), f"{recipe.name}: its tuning cell {recipe.tuning['cell']} is not in the store"
    config = json.loads((cell_dir / "config.json").read_text())
    cell = Cell(config["profile"], config["model"], config["corpus"], config["analysis"], config["label"], config["params"])
    got = Store().load(cell, with_results=True)
    assert cell.analysis == "e2e/tuning" and got.results["split"] == "calib"
    assert all(corpora.split_of(d) == "calib" for docs in got.results["doc_ids"] for d in docs)
    assert all(":calib:" in pid for pid in got.results["passage_ids"])
    chosen = e2e.select_by_kl(got.rows, recipe.tuning["target_kl"])
    assert chosen is not None and recipe.tuning["target_kl"] in chosen["selected_for_kl"]
    plan = recipe.plan()
    assert (template_spec(plan.k), template_spec(plan.v)) == (template_spec(chosen["k_codec"]),
                                                             template_spec(chosen["v_codec"])), \
        f"{recipe.name}: its specs are not the ones its tuning cell selected"
    assert plan.protect_tokens == chosen["protect_tokens"]


@pytest.mark.parametrize("recipe", tuned_recipes(), ids=lambda r: r.name)
def test_tuned_steps_lie_inside_their_tuning_grid(recipe):
    # The rule picks the largest ratio under the target among the grid's points; a pick on the grid's
    # edge may only mean the grid stopped short of a better point, so each chosen step needs a grid
    # step on either side of it.
    (cell,) = [c for c in Store().cells("paper", "e2e/tuning") if c.cell.relpath.as_posix() == recipe.tuning["cell"]]
    chosen = e2e.select_by_kl(cell.rows, recipe.tuning["target_kl"])
    for key in ("k_step", "v_step"):
        grid = sorted({r[key] for r in cell.rows})
        assert grid[0] < chosen[key] < grid[-1], \
            f"{recipe.name}: {key} {chosen[key]} lies on the edge of its tuning grid {grid}"


def test_tuning_rows_are_the_current_template_at_their_steps():
    # A tuning cell is named by its steps: its stored specs must still be today's recipe structure.
    for c in Store().cells("paper", "e2e/tuning"):
        for r in c.rows:
            ((_, plan),) = e2e.tuning_plans([r["k_step"]], [r["v_step"]], base=c.cell.params.get("base"))
            assert (template_spec(r["k_codec"]), template_spec(r["v_codec"])) == (template_spec(plan.k),
                                                                                 template_spec(plan.v))
            assert r["protect_tokens"] == plan.protect_tokens


def test_no_tuning_passage_shares_a_document_with_an_evaluation_passage():
    store = Store()
    tuning_docs = {d for c in store.cells("paper", "e2e/tuning") for docs in
                   (store.load(c.cell, with_results=True).results or {}).get("doc_ids", []) for d in docs}
    eval_docs = set()
    for c in store.cells("paper"):
        if c.cell.analysis.startswith("e2e/") and c.cell.analysis != "e2e/tuning":
            res = store.load(c.cell, with_results=True).results or {}
            eval_docs |= {d for docs in res.get("doc_ids", []) for d in docs}
            assert res.get("split", "eval") == "eval"
    assert tuning_docs, "no tuning cell in the paper store"
    assert not tuning_docs & eval_docs


def test_a_calibrated_structure_was_tuned_off_its_calibration_documents():
    # klt reads per-model tables fitted on the first calib passages (seed 0); its tuning passages must
    # come from other documents, and their ids must name exactly that exclusion.
    store = Store()
    cells = [c for c in store.cells("paper", "e2e/tuning") if c.cell.params.get("exclude_calibration_docs")]
    assert cells, "no tuning cell of a calibrated structure in the paper store"
    from kakeya_lib.llm.corpora.passages import exclusion_tag
    from kakeya_lib.llm.models import load_model

    for c in cells:
        p = c.cell.params
        loaded = load_model(c.cell.model)
        calibration = corpora.passages(c.cell.corpus, loaded.tokenizer, p["ctx"], 0, p["calib_passages"], 0,
                                       split="calib", bos=loaded.needs_bos)
        used = sorted({d for q in calibration for d in q.doc_ids})
        res = store.load(c.cell, with_results=True).results
        assert not set(used) & {d for docs in res["doc_ids"] for d in docs}
        assert all(exclusion_tag(used) + ":" in pid for pid in res["passage_ids"])


def test_the_saliency_exponent_is_the_one_its_tuning_runs_chose():
    # ours-klt-sal's gamma was chosen between tuning runs that differ only in it: the run whose rule
    # selects the larger ratio at the recipe's target wins.
    from kakeya_lib.codecs.spec import split_spec

    recipe = recipes.load("ours-klt-sal")
    target = recipe.tuning["target_kl"]
    runs = {}
    for c in Store().cells("paper", "e2e/tuning"):
        base = c.cell.params.get("base") or {}
        if str(base.get("name", "")).startswith("ours-klt-sal") and (chosen := e2e.select_by_kl(c.rows, target)):
            runs[float(split_spec(base["k"])[1]["saliency"])] = chosen["ratio_vs_bf16"]
    assert len(runs) >= 2, f"the exponent needs at least two tuning runs to choose from, found {sorted(runs)}"
    best = max(runs, key=runs.get)
    assert float(split_spec(recipe.plan().k)[1]["saliency"]) == best, f"tuning runs chose gamma {best}: {runs}"


def test_every_cell_the_paper_sweeps_name_is_committed():
    paper_sweeps = sorted((REPO_ROOT / "sweeps").glob("paper-*.yaml"))
    tasks = sweep.combine([sweep.load(p) for p in paper_sweeps]).tasks
    store = Store(RESULTS_DIR)
    missing = [str(t.cell.relpath) for t in tasks if not store.has(t.cell)]
    assert tasks and not missing, f"the paper sweeps name cells that are not committed: {missing}"


def test_every_paper_cell_was_computed_at_one_commit():
    shas = {json.loads((c / "provenance.json").read_text())["git"]["sha"] for c in committed_cells()}
    assert len(shas) == 1, f"paper cells come from {len(shas)} commits: {sorted(shas)}"
