"""The results store: cells named by their parameters, atomic writes, skip-if-present, validation."""

from __future__ import annotations

import json
import os
import math

import numpy as np
import pytest

from kakeya_lib.errors import InputError
from kakeya_lib.store import Cell, Store, StoreError


def make_cell(**params) -> Cell:
    return Cell("smoke", "tiny-llama", "sotu", "e2e/head_to_head", "ctx64-n2", {"ctx": 64, **params})


def test_same_parameters_same_directory_different_parameters_different(tmp_path):
    store = Store(tmp_path)
    a, b, c = make_cell(seed=0), make_cell(seed=0), make_cell(seed=1)
    assert store.path(a) == store.path(b) != store.path(c)
    assert store.path(a).parent == tmp_path / "smoke" / "tiny-llama_sotu" / "e2e" / "head_to_head"
    assert store.path(a).name.startswith("ctx64-n2-")


def test_run_computes_once_then_reads_back(tmp_path):
    store = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return [{"plan": "a", "kl": np.float64(0.5), "nan": float("nan")}], {"per_layer": [1, 2]}

    first = store.run(make_cell(), compute, provenance_extra={"seed": 0})
    second = store.run(make_cell(), compute)
    assert calls == [1] and first.computed and not second.computed
    assert second.rows == [{"plan": "a", "kl": 0.5, "nan": None}]  # numpy scalars and NaN made JSON-safe
    prov = json.loads((store.path(make_cell()) / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["params"] == make_cell().config and "git" in prov and prov["wall_seconds"] >= 0
    assert store.load(make_cell(), with_results=True).results == {"per_layer": [1, 2]}
    store.run(make_cell(), compute, force=True)
    assert calls == [1, 1]


def test_rows_only_compute_is_accepted(tmp_path):
    res = Store(tmp_path).run(make_cell(), lambda: [{"x": 1}])
    assert res.rows == [{"x": 1}] and res.results is None


def test_an_interrupted_compute_leaves_no_cell(tmp_path):
    store = Store(tmp_path)

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run(make_cell(), boom)
    assert not store.has(make_cell())
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in tmp_path.rglob("*"))


def test_a_failed_write_keeps_the_previous_cell(tmp_path):
    store = Store(tmp_path)
    store.save(make_cell(), [{"x": 1}])
    with pytest.raises(InputError):
        store.save(make_cell(), [{"x": object()}])  # not JSON-able: refused before anything is replaced
    assert store.load(make_cell()).rows == [{"x": 1}]


def test_a_write_interrupted_midway_leaves_the_previous_cell_and_no_debris(tmp_path, monkeypatch):
    from kakeya_lib import store as store_module

    store = Store(tmp_path)
    store.save(make_cell(), [{"x": 1}], results={"r": 1})
    write = store_module._write_json

    def fail_on_provenance(path, obj):  # rows.json and results.json are written, then the disk fails
        if path.name == "provenance.json":
            raise OSError("disk full")
        write(path, obj)

    monkeypatch.setattr(store_module, "_write_json", fail_on_provenance)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_cell(), [{"x": 2}], results={"r": 2})
    monkeypatch.undo()
    assert store.load(make_cell(), with_results=True).rows == [{"x": 1}]
    assert store.load(make_cell(), with_results=True).results == {"r": 1}
    assert not [p for p in store.path(make_cell()).parent.iterdir() if p.name.startswith(".")]


def test_incomplete_or_edited_cells_are_not_trusted(tmp_path):
    store = Store(tmp_path)
    store.save(make_cell(), [{"x": 1}])
    d = store.path(make_cell())
    cfg = json.loads((d / "config.json").read_text())
    cfg["params"]["ctx"] = 65
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="does not match"):
        store.load(make_cell())
    assert list(store.cells()) == []  # its name no longer matches its parameters
    (d / "rows.json").write_text("{not json")
    with pytest.raises(StoreError):
        store.load(make_cell())
    (d / "rows.json").unlink()
    assert not store.has(make_cell())


def test_query_filters_and_labels_rows(tmp_path):
    store = Store(tmp_path)
    store.save(make_cell(seed=0), [{"plan": "a"}])
    store.save(Cell("smoke", "tiny-qwen2", "wiki", "e2e/ablation", "x", {}), [{"plan": "b"}])
    store.save(Cell("paper", "tiny-qwen2", "wiki", "e2e/ablation", "x", {}), [{"plan": "c"}])
    assert [r["plan"] for r in store.rows("smoke")] == ["a", "b"]
    assert store.rows("smoke", analysis="e2e/ablation") == [
        {"model": "tiny-qwen2", "corpus": "wiki", "analysis": "e2e/ablation", "cell": "x", "plan": "b"}]
    assert [r["plan"] for r in store.rows(model="tiny-qwen2")] == ["c", "b"]


@pytest.mark.parametrize("bad", [{"profile": "../x"}, {"model": "a/b"}, {"analysis": "e2e/../x"}, {"label": ""},
                                 {"params": {"x": object()}}])
def test_bad_cells_are_refused(bad):
    fields = {"profile": "smoke", "model": "m", "corpus": "c", "analysis": "a/b", "label": "l", "params": {}}
    with pytest.raises(InputError):
        Cell(**{**fields, **bad})


def test_infinities_become_null(tmp_path):
    store = Store(tmp_path)
    store.save(make_cell(), [{"v": math.inf}])
    assert store.load(make_cell()).rows == [{"v": None}]


def test_largest_picks_most_passages_then_longest_context(tmp_path):
    store = Store(tmp_path)
    for ctx, n in ((64, 2), (128, 2), (32, 8)):
        store.save(Cell("smoke", "m", "c", "e2e/x", f"ctx{ctx}-n{n}", {"ctx": ctx, "n_passages": n}), [{"ctx": ctx}])
    assert store.largest("smoke", "e2e/x", "m", "c").rows == [{"ctx": 32}]
    assert store.largest("smoke", "e2e/none", "m", "c") is None


def test_only_lists_the_named_cells(tmp_path):
    store = Store(tmp_path)
    a, b = make_cell(seed=0), make_cell(seed=1)
    for cell in (a, b):
        store.save(cell, [{"plan": "x"}])
    assert len(list(store.cells("smoke"))) == 2
    only = store.only([a.relpath])
    assert [c.cell for c in only.cells("smoke")] == [a]
    assert only.largest("smoke", "e2e/head_to_head", "tiny-llama", "sotu").cell == a
    assert list(store.only([]).cells()) == []


def test_kakeya_results_dir_points_the_default_store_elsewhere(tmp_path):
    import subprocess
    import sys

    code = "from kakeya_lib.store import Store; print(Store().root)"
    env = {**os.environ, "KAKEYA_RESULTS_DIR": str(tmp_path / "elsewhere")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "elsewhere")


def _set_git(store: Store, cell: Cell, sha: str, dirty: bool) -> None:
    prov_path = store.path(cell) / "provenance.json"
    prov = json.loads(prov_path.read_text())
    prov["git"] = {"sha": sha, "dirty": dirty}
    prov_path.write_text(json.dumps(prov))


def test_copy_cells_from_takes_only_clean_cells_of_one_commit(tmp_path):
    src, dst = Store(tmp_path / "fresh"), Store(tmp_path / "committed")
    sha, other_sha = "a" * 40, "b" * 40
    here, elsewhere, dirty = make_cell(seed=0), make_cell(seed=1), make_cell(seed=2)
    for cell, (commit, is_dirty) in zip((here, elsewhere, dirty), ((sha, False), (other_sha, False), (sha, True))):
        src.save(cell, [{"plan": "x", "kl": 0.5}])
        _set_git(src, cell, commit, is_dirty)
    dst.save(here, [{"plan": "x", "kl": 0.7}])  # an older result at the same path is replaced

    assert dst.copy_cells_from(src, sha) == [here.relpath]
    assert dst.load(here).rows == [{"plan": "x", "kl": 0.5}]
    assert dst.load(here).provenance["git"]["sha"] == sha
    assert not dst.has(elsewhere) and not dst.has(dirty)
    assert dst.copy_cells_from(src, sha) == []  # identical cells are not copied again
    assert not [p for p in dst.path(here).parent.iterdir() if p.name.startswith(".")]


def test_copy_cells_from_refuses_a_short_sha(tmp_path):
    with pytest.raises(InputError, match="40-hex-digit"):
        Store(tmp_path / "a").copy_cells_from(Store(tmp_path / "b"), "abc123")
