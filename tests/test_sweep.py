"""Sweeps: YAML grids expand to the notebook's cells; local and Dask executors give the same rows;
a worker killed mid-sweep does not lose or duplicate a cell; reruns do no work; a failing cell is
recorded and does not stop the sweep."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kakeya_lib import sweep
from kakeya_lib.errors import InputError
from kakeya_lib.experiments import e2e, mse_tasks
from kakeya_lib.store import Store

PAIRS = ["identity", "kakeya:bits=2,block=64", "turboquant:bits=3"]
TIMING = ("codec_seconds",)  # wall time: the one row column that differs between runs


def grid(n_sizes: int = 4, n_passages: int = 3, extra_pairs: tuple[str, ...] = ()) -> dict:
    return {"profile": "smoke", "models": ["tiny-llama"], "corpora": ["sotu"], "seed": 0,
            "sizes": [{"ctx": 32 + 16 * i, "n_eval": 8, "n_passages": n_passages, "calib_passages": 1}
                      for i in range(n_sizes)],
            "analyses": {"head_to_head": {"pairs": PAIRS + list(extra_pairs), "recipes": []}}}


def stable_rows(store: Store) -> dict[str, list[dict]]:
    return {str(c.cell.relpath): [{k: v for k, v in r.items() if k not in TIMING} for r in c.rows]
            for c in store.cells("smoke")}


def test_expand_builds_the_notebook_cells_and_rejects_bad_keys():
    s = sweep.expand(grid(2))
    assert [t.kind for t in s.tasks] == ["head_to_head", "head_to_head"]
    notebook = e2e.head_to_head("smoke", "tiny-llama", "sotu", e2e.Size(32, 8, 3, 0, 1), PAIRS, [])
    assert s.tasks[0].cell == notebook.cell
    no_grid = {k: v for k, v in grid(1).items() if k not in ("models", "corpora")}
    for bad, why in (({"bogus": 1}, "unknown key"), ({"analyses": {"nope": {}}}, "unknown analysis 'nope'"),
                     ({"analyses": {"frontier": {"stepz": [1]}}}, r"unknown key\(s\) \['stepz'\]"),
                     ({"sizes": [{"ctx": 0, "n_eval": 8, "n_passages": 1}]}, "must be positive integers"),
                     ({"models": []}, "must not be empty"), ({"device": "tpu"}, "device must be"),
                     ({"models": "tiny-llama"}, "'models' must be a list"),
                     ({"analyses": {"frontier": {}}}, "non-empty 'series'"),
                     ({"analyses": {"depth": {"depths": []}}}, "non-empty 'depths'"),
                     ({"analyses": {"frontier": {"series": {"x": {"base": "identity"}}}}}, "non-empty 'points'"),
                     ({"analyses": {"frontier": {"series": {"x": {"base": "identity", "points": [{}], "oops": 1}}}}},
                      r"unknown key\(s\) \['oops'\]"),
                     ({"analyses": {"tables": {"gain": {}}}}, "non-empty 'entries'"),
                     ({"analyses": {"tuning": {"k_steps": []}}}, "non-empty 'k_steps'"),
                     ({"settings": [["tiny-llama", "sotu"]]}, "not both")):
        with pytest.raises(InputError, match=why):
            sweep.expand({**grid(1), **bad})
    with pytest.raises(InputError, match=r"must be a \[model, corpus\] pair"):
        sweep.expand({**no_grid, "settings": [["tiny-llama"]]})


def test_settings_series_tables_and_tuning_expand_to_their_cells():
    spec = {"profile": "smoke", "settings": [["tiny-llama", "sotu"], ["tiny-gemma3", "sotu"]], "seed": 0,
            "sizes": [{"ctx": 32, "n_eval": 8, "n_passages": 2, "calib_passages": 1}],
            "analyses": {"frontier": {"series": {"TQ +sink": {"base": {"name": "TQ +sink", "k": "turboquant",
                                                                         "protect_tokens": 1},
                                                                "points": [{"bits": 3}, {"bits": 4}]}}},
                         "tables": {"gain": {"entries": ["identity", {"name": "x", "k": "kivi:bits=2", "hot_tokens": 4}]}},
                         "tuning": {"k_steps": [0.5, 0.9], "v_steps": [0.7], "targets": [0.01], "n_passages": 3}}}
    s = sweep.expand(spec)
    assert [(t.kind, t.cell.model) for t in s.tasks] == [
        ("frontier", "tiny-llama"), ("head_to_head", "tiny-llama"), ("tuning", "tiny-llama"),
        ("frontier", "tiny-gemma3"), ("head_to_head", "tiny-gemma3"), ("tuning", "tiny-gemma3")]
    front, table, tune = s.tasks[:3]
    assert front.cell.label.startswith("TQ-plus-sink-") and front.cell.params["exact_tokens"] == [[1, 0, 0]] * 2
    assert [p.label for _, p in front.plans()] == ["TQ +sink bits=3", "TQ +sink bits=4"]
    assert table.cell.label.startswith("gain-") and table.plans()[1][1].hot_tokens == 4
    assert tune.split == "calib" and tune.size.n_passages == 3 and len(tune.plans()) == 2


def test_tuning_a_calibrated_structure_names_its_cell_and_leaves_out_the_calibration_documents():
    base = {"name": "klt +sink", "k": "klt:calib=auto", "protect_tokens": 1}
    spec = {"profile": "smoke", "settings": [["tiny-llama", "sotu"]], "seed": 0,
            "sizes": [{"ctx": 32, "n_eval": 8, "n_passages": 2, "calib_passages": 2}],
            "analyses": {"tuning": {"k_steps": [0.2, 0.3], "v_steps": [0.4], "targets": [0.01], "base": base}}}
    (tune,) = sweep.expand(spec).tasks
    assert tune.cell.label.startswith("klt-plus-sink-") and tune.cell.params["exclude_calibration_docs"] is True
    assert [p.label for _, p in tune.plans()] == ["klt +sink K step 0.2, V step 0.4", "klt +sink K step 0.3, V step 0.4"]
    assert [(p.k, p.v, p.protect_tokens) for _, p in tune.plans()][0] == ("klt:calib=auto,step=0.2",
                                                                         "klt:calib=auto,step=0.4", 1)
    ours = e2e.tuning("smoke", "tiny-llama", "sotu", tune.size, [0.2], [0.4], [0.01])
    assert "base" not in ours.cell.params and ours.plans()[0][1].label == "ours K step 0.2, V step 0.4"
    session = e2e.Session("tiny-llama", "sotu")
    calibration = set(session.calibration_docs(32, 2))
    chosen = session.passages(40, 8, 6, "calib", e2e.TUNING_SEED, sorted(calibration))
    assert calibration and not calibration & {d for p in chosen for d in p.doc_ids}


def test_long_context_with_named_entries_adds_no_default_pair():
    long = {"sizes": [{"ctx": 64, "n_passages": 2}], "entries": ["ours-5x", {"name": "TQ-4 +sink", "k": "turboquant:bits=4",
                                                                              "protect_tokens": 1}]}
    (named,) = sweep.expand({**grid(1), "analyses": {"long_context": long}}).tasks
    assert [p.label for _, p in named.plans()] == ["ours-5x", "TQ-4 +sink"]
    (default,) = sweep.expand({**grid(1), "analyses": {"long_context": {"sizes": long["sizes"]}}}).tasks
    assert [p.label for _, p in default.plans()] == e2e.LONG_CONTEXT_PAIRS


def test_the_mse_analysis_builds_the_notebook_cells_and_computes_them(tmp_path):
    configs = {"ref": "identity", "tq": "turboquant:bits=3"}
    mse = {"configs": configs, "rope_configs": ["ref"], "scaling_configs": ["tq"], "ctx_lengths": [16, 32]}
    layers, scaling = sweep.expand({**grid(1, 2), "analyses": {"mse": mse}}).tasks
    assert layers.cell == mse_tasks.layers_task("smoke", "tiny-llama", "sotu", 32, 2, 0, configs, ["ref"]).cell
    assert scaling.cell == mse_tasks.ctx_scaling_task("smoke", "tiny-llama", "sotu", 32, [16, 32], 0, configs, ["tq"]).cell
    out = sweep.run_local(sweep.expand({**grid(1, 2), "analyses": {"mse": mse}}), tmp_path, progress=False)
    assert [o["status"] for o in out] == ["computed", "computed"]
    rows = {str(c.cell.relpath): c.rows for c in Store(tmp_path).cells("smoke")}
    ident = [r for r in rows[str(layers.cell.relpath)] if r["config"] == "ref"]
    assert ident and all(r["rel_mse"] == 0.0 for r in ident)  # identity codes every layer exactly
    assert [r["ctx"] for r in rows[str(scaling.cell.relpath)]] == [16, 32]
    for bad in ({**mse, "scaling_configs": ["nope"]}, {**mse, "ctx_lengths": [16, 64]}):  # 64 > ctx 32
        with pytest.raises(InputError, match="scaling configs|ctx_lengths"):
            sweep.expand({**grid(1, 2), "analyses": {"mse": bad}})


def test_local_run_then_rerun_does_no_work_and_failures_are_recorded(tmp_path):
    s = sweep.expand(grid(2, 2, extra_pairs=("besicovitch:g=3",)))  # g=3 does not divide head_dim 16
    out = sweep.run_local(s, tmp_path, progress=False)
    assert [o["status"] for o in out] == ["failed", "failed"]
    assert "group size g=3 must divide" in out[0]["error"]
    good = sweep.expand(grid(2, 2))
    assert [o["status"] for o in sweep.run_local(good, tmp_path, progress=False)] == ["computed", "computed"]
    assert [o["status"] for o in sweep.run_local(good, tmp_path, progress=False)] == ["skipped", "skipped"]
    summary = sweep.summarise(s, out, tmp_path)
    assert summary["counts"] == {"failed": 2} and len(summary["failures"]) == 2
    assert (tmp_path / "smoke" / "_sweeps" / "sweep.json").is_file()


def test_dask_matches_local_and_survives_a_killed_worker(tmp_path):
    from distributed import Client, LocalCluster

    s = sweep.expand(grid(4, 3))
    local_root, dask_root = tmp_path / "local", tmp_path / "dask"
    assert all(o["status"] == "computed" for o in sweep.run_local(s, local_root, progress=False))

    killed: list[int] = []

    def kill_one_busy_worker(client, futures):
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            busy = [addr for addr, keys in client.processing().items() if keys]
            pids = client.run(os.getpid)
            if busy and len(pids) == 2:
                time.sleep(0.5)  # let it get into the cell
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
            time.sleep(0.05)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = sweep.run_dask(s, dask_root, client=client, on_submitted=kill_one_busy_worker, progress=False)
    assert killed, "no worker was killed: the test did not exercise the failure"
    assert [o["status"] for o in out] == ["computed"] * 4
    assert len(list(Store(dask_root).cells("smoke"))) == 4
    assert stable_rows(Store(dask_root)) == stable_rows(Store(local_root))
    again = sweep.run_local(s, dask_root, progress=False)
    assert [o["status"] for o in again] == ["skipped"] * 4


def test_unreadable_sweep_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        sweep.load(bad)
    with pytest.raises(InputError, match="does not exist"):
        sweep.load(tmp_path / "missing.yaml")


def test_combined_sweep_files_run_each_cell_once_and_refuse_mixed_profiles():
    a = sweep.expand(grid(2))
    b = sweep.expand(grid(3))  # its first two cells are a's
    both = sweep.combine([a, b])
    assert [t.cell.relpath for t in both.tasks] == [t.cell.relpath for t in b.tasks]
    assert both.name == f"{a.name}+{b.name}" and both.profile == "smoke"
    other = sweep.expand({**grid(1), "profile": "paper"})
    with pytest.raises(InputError, match="differ in profile"):
        sweep.combine([a, other])
    with pytest.raises(InputError, match="no sweep files"):
        sweep.combine([])
