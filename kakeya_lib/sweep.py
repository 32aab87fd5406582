"""Sweeps: a YAML grid of end-to-end cells, run in-process or on Dask, resumable through the store.

A sweep file names a profile, models × corpora × sizes, and the analyses to run (the same ones
as the ``exp-e2e`` notebook, built by the same task constructors, so a sweep and the notebook
write and find the same cells)::

    profile: paper
    models: [smollm2-135m]         # models x corpora, or settings: [[smollm2-135m, sotu], [gemma3-270m, sotu]]
    corpora: [sotu]
    seed: 0
    device: cpu                    # gpu: cells ask Dask for the worker resource GPU=1
    sizes:
      - {ctx: 1024, n_eval: 64, n_passages: 48, calib_passages: 8}
    analyses:
      head_to_head: {recipes: [seed-tier1, ours-5x], entries: [{name: TQ-4 +sink, k: "turboquant:bits=4",
                     protect_tokens: 1}], k_metric: true}
      tables: {gain: {entries: [...]}}        # further head-to-head cells, one per name
      frontier:
        series:                    # one cell per series: an entry swept over points
          TurboQuant +sink: {base: {name: tq, k: "turboquant:norms=f16", protect_tokens: 1},
                             points: [{bits: 2}, {bits: 3}, {bits: 4}]}
      tuning: {k_steps: [0.45, 0.55], v_steps: [0.7, 0.9], targets: [0.005, 0.01], n_passages: 16}
      ablation: {}
      depth: {depths: [1, 4, 16, 30]}
      long_context: {sizes: [{ctx: 2048, n_passages: 48}], pairs: ["turboquant:bits=4"], recipes: [ours-5x]}
      mse: {ctx_lengths: [256, 1024, 4096]}   # exp-mse's cells (configs default to the seed's MSE table)

The tuning cell reads passages of the corpus's ``calib`` split; every other cell reads ``eval``.

:func:`expand` turns it into cell tasks (:class:`~.experiments.e2e.Task`, and
:class:`~.experiments.mse_tasks.MseTask` for ``analyses.mse``); :func:`run_local` and
:func:`run_dask` run them. Each cell is a library call (no subprocess) through :func:`run_cell`:
a cell already in the store is skipped, a computed cell is written atomically, and a cell that
raises (a bad spec, an unknown recipe) is recorded as failed with its error while the sweep
goes on. On Dask, a worker that dies mid-cell has its cell rescheduled on another worker (at
most ``distributed.scheduler.allowed-failures`` times, then the cell is recorded as failed); as
writes are atomic and named by the cell, the store ends with exactly one result per cell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import InputError
from .experiments import e2e, mse_tasks
from .paths import RESULTS_DIR
from .store import Store

# what a sweep runs: an end-to-end cell or an exp-mse cell (both have cell, seed, compute, provenance)
CellTask = e2e.Task | mse_tasks.MseTask
_TOP_KEYS = {"profile", "models", "corpora", "settings", "seed", "device", "sizes", "analyses", "name"}
_SIZE_KEYS = {"ctx", "n_eval", "n_passages", "calib_passages"}
_ANALYSIS_KEYS = {
    "head_to_head": {"pairs", "recipes", "entries", "k_metric"},
    "tables": set(),  # {NAME: {entries: [...]}}: further head-to-head cells (e.g. "where the gain comes from")
    "frontier": {"series"},
    "tuning": {"k_steps", "v_steps", "targets", "n_passages", "base"},
    "ablation": set(),
    "depth": {"depths"},
    "long_context": {"sizes", "pairs", "recipes", "entries"},
    # the exp-mse cells (mse/layers on n_passages captured passages of ctx tokens, mse/ctx_scaling
    # on the first one; n_eval is not used by them)
    "mse": {"configs", "rope_configs", "scaling_configs", "ctx_lengths"},
}
_SERIES_KEYS = {"base", "points"}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    name: str
    profile: str
    device: str
    tasks: tuple[CellTask, ...]


def _check_keys(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(got) - allowed
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _size(where: str, raw: Mapping[str, Any], seed: int, base: e2e.Size | None = None) -> e2e.Size:
    _check_keys(where, raw, _SIZE_KEYS)
    fields = dataclasses.asdict(base) if base else {"calib_passages": 8}
    fields.update(raw)
    fields["seed"] = seed
    missing = [k for k in ("ctx", "n_eval", "n_passages") if k not in fields]
    if missing:
        raise InputError(f"{where}: missing {missing}")
    if not all(isinstance(fields[k], int) and fields[k] > 0 for k in ("ctx", "n_eval", "n_passages")):
        raise InputError(f"{where}: ctx, n_eval and n_passages must be positive integers")
    return e2e.Size(**fields)


def expand(spec: Mapping[str, Any], name: str = "sweep") -> Sweep:
    """The cells of a sweep (a parsed YAML mapping), in a stable order; bad keys are errors."""
    if not isinstance(spec, Mapping):
        raise InputError("a sweep file must hold a mapping")
    _check_keys("sweep", spec, _TOP_KEYS)
    for key in ("profile", "sizes", "analyses"):
        if not spec.get(key):
            raise InputError(f"sweep: '{key}' is required and must not be empty")
    if not spec.get("models") and not spec.get("settings"):
        raise InputError("sweep: 'models' (with 'corpora') or 'settings' is required and must not be empty")
    if "settings" in spec and ("models" in spec or "corpora" in spec):
        raise InputError("sweep: give either 'settings' ([model, corpus] pairs) or 'models' x 'corpora', not both")
    for key in ("models", "corpora", "sizes", "settings"):
        if key in spec and not isinstance(spec[key], list):
            raise InputError(f"sweep: '{key}' must be a list, got {type(spec[key]).__name__}")
    device = spec.get("device", "cpu")
    if device not in ("cpu", "gpu"):
        raise InputError(f"sweep: device must be 'cpu' or 'gpu', got {device!r}")
    seed = int(spec.get("seed", 0))
    analyses = spec["analyses"]
    if not isinstance(analyses, Mapping):
        raise InputError("sweep: 'analyses' must map analysis names to their settings")
    for kind, settings in analyses.items():
        if kind not in _ANALYSIS_KEYS:
            raise InputError(f"sweep: unknown analysis {kind!r}; one of {sorted(_ANALYSIS_KEYS)}")
        if kind != "tables":  # its keys are table names
            _check_keys(f"analyses.{kind}", settings or {}, _ANALYSIS_KEYS[kind])
        needed = {"frontier": "series", "depth": "depths", "long_context": "sizes",
                  "tuning": "k_steps"}.get(kind)
        if needed and not (settings or {}).get(needed):
            raise InputError(f"sweep: analyses.{kind} needs a non-empty '{needed}'")
        if kind == "frontier":
            _check_series(settings["series"])
        if kind == "tables":
            _check_tables(settings)
    profile = str(spec["profile"])
    tasks: list[CellTask] = []
    if "settings" in spec:
        settings_list = [_setting(i, pair) for i, pair in enumerate(spec["settings"])]
    else:
        settings_list = [(m, c) for m in spec["models"] for c in (spec.get("corpora") or ["sotu"])]
    for model, corpus in settings_list:
        for i, raw in enumerate(spec["sizes"]):
            size = _size(f"sizes[{i}]", raw, seed)
            for kind, settings in analyses.items():
                tasks += _tasks(kind, dict(settings or {}), profile, model, corpus, size, seed)
    seen: dict[str, CellTask] = {}
    for t in tasks:  # the same cell twice (e.g. one long-context size listed twice) runs once
        seen.setdefault(str(t.cell.relpath), t)
    return Sweep(str(spec.get("name", name)), profile, device, tuple(seen.values()))


def _setting(i: int, pair: Any) -> tuple[str, str]:
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) and x for x in pair)):
        raise InputError(f"sweep: settings[{i}] must be a [model, corpus] pair, got {pair!r}")
    return pair[0], pair[1]


def _check_series(series: Any) -> None:
    if not isinstance(series, Mapping):
        raise InputError("sweep: analyses.frontier.series must map series names to {base, points}")
    for name, body in series.items():
        if not isinstance(body, Mapping) or not body.get("points") or "base" not in body:
            raise InputError(f"sweep: frontier series {name!r} needs a 'base' entry and a non-empty 'points' list")
        _check_keys(f"analyses.frontier.series.{name}", body, _SERIES_KEYS)


def _check_tables(tables: Any) -> None:
    if not isinstance(tables, Mapping) or not tables:
        raise InputError("sweep: analyses.tables must map table names to {entries: [...]}")
    for name, body in tables.items():
        if not isinstance(body, Mapping) or not body.get("entries"):
            raise InputError(f"sweep: table {name!r} needs a non-empty 'entries' list")
        _check_keys(f"analyses.tables.{name}", body, {"entries"})


def _tasks(kind: str, s: dict[str, Any], profile: str, model: str, corpus: str, size: e2e.Size, seed: int
           ) -> list[CellTask]:
    """The tasks of one analysis for one model, corpus and size."""
    if kind == "head_to_head":
        pairs = s.get("pairs", [] if (s.get("recipes") or s.get("entries")) else e2e.BASELINE_PAIRS)
        return [e2e.head_to_head(profile, model, corpus, size, pairs, s.get("recipes", []), bool(s.get("k_metric", False)),
                                 s.get("entries", []))]
    if kind == "tables":
        return [e2e.head_to_head(profile, model, corpus, size, entries=body["entries"], table=str(name))
                for name, body in s.items()]
    if kind == "frontier":
        return [e2e.frontier(profile, model, corpus, size, str(name), body["base"], body["points"])
                for name, body in s["series"].items()]
    if kind == "tuning":
        tune = dataclasses.replace(size, n_passages=int(s.get("n_passages", size.n_passages)))
        return [e2e.tuning(profile, model, corpus, tune, s["k_steps"], s.get("v_steps", s["k_steps"]),
                           s.get("targets", [0.005, 0.01]), s.get("base"))]
    if kind == "ablation":
        return [e2e.ablation(profile, model, corpus, size)]
    if kind == "depth":
        return [e2e.depth(profile, model, corpus, size, s["depths"])]
    if kind == "mse":
        configs = s.get("configs") or None
        return [mse_tasks.layers_task(profile, model, corpus, size.ctx, size.n_passages, seed, configs,
                                      s.get("rope_configs") or None),
                mse_tasks.ctx_scaling_task(profile, model, corpus, size.ctx, s.get("ctx_lengths") or [size.ctx], seed,
                                           configs, s.get("scaling_configs") or mse_tasks.SCALING_CONFIGS)]
    out = []
    for j, long_raw in enumerate(s.get("sizes", [])):
        long = _size(f"analyses.long_context.sizes[{j}]", long_raw, seed, size)
        # as in head_to_head: the default peer pair only when no recipes or named entries are given
        pairs = s.get("pairs", [] if (s.get("recipes") or s.get("entries")) else e2e.LONG_CONTEXT_PAIRS)
        out.append(e2e.long_context(profile, model, corpus, long, pairs,
                                    s.get("recipes", []), s.get("entries", [])))
    return out


def load(path: str | os.PathLike) -> Sweep:
    """Read and expand a sweep YAML file."""
    import yaml  # noqa: PLC0415

    p = Path(path)
    if not p.is_file():
        raise InputError(f"sweep file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"sweep file {str(p)!r} is not valid YAML: {exc}") from exc
    return expand(raw, name=p.stem)


def combine(sweeps: Sequence[Sweep]) -> Sweep:
    """One sweep of every cell of ``sweeps`` (same profile and device), in order, each cell once,
    so one cluster balances them all (e.g. every paper file in one run)."""
    if not sweeps:
        raise InputError("no sweep files to combine")
    for other in sweeps[1:]:
        if (other.profile, other.device) != (sweeps[0].profile, sweeps[0].device):
            raise InputError(f"sweeps {sweeps[0].name!r} and {other.name!r} differ in profile or device "
                             f"({sweeps[0].profile}/{sweeps[0].device} vs {other.profile}/{other.device}); run them apart")
    tasks: dict[Any, CellTask] = {}
    for sw in sweeps:
        for t in sw.tasks:
            tasks.setdefault(t.cell.relpath, t)  # the relpath holds the config digest: same path, same cell
    return Sweep("+".join(sw.name for sw in sweeps), sweeps[0].profile, sweeps[0].device, tuple(tasks.values()))


# ---- one cell ------------------------------------------------------------------------------

_SESSIONS: dict[tuple[str, str, int], e2e.Session] = {}


def _session(model: str, corpus: str, seed: int) -> e2e.Session:
    """One session (one loaded model) per process: Dask workers keep theirs between cells."""
    key = (model, corpus, seed)
    if key not in _SESSIONS:
        _SESSIONS[key] = e2e.Session(model, corpus, seed)
    return _SESSIONS[key]


def run_cell(task: CellTask, store_root: str, force: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run one cell where it lands (in-process or on a worker); never raises for a failing cell.

    Returns ``{"cell", "status": "skipped"|"computed"|"failed", "error", "seconds", "pid"}``.
    """
    store = Store(store_root)
    out: dict[str, Any] = {"cell": str(task.cell.relpath), "pid": os.getpid(), "error": None}
    t0 = time.perf_counter()
    if store.has(task.cell) and not force:
        return {**out, "status": "skipped", "seconds": 0.0}
    previous = os.environ.get("KAKEYA_DEVICE")
    if device == "gpu":
        os.environ["KAKEYA_DEVICE"] = "gpu"  # codecs run on CuPy here; never a silent CPU fallback
    try:
        e2e.run_task(store, task, _session(task.cell.model, task.cell.corpus, task.seed), force=force)
        status = "computed"
    except Exception as exc:  # noqa: BLE001  (a deterministic failure is a result: record it, go on)
        status = "failed"
        out["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    finally:  # the local executor shares the caller's process: leave its environment as it was
        if device == "gpu":
            if previous is None:
                os.environ.pop("KAKEYA_DEVICE", None)
            else:
                os.environ["KAKEYA_DEVICE"] = previous
    return {**out, "status": status, "seconds": round(time.perf_counter() - t0, 3)}


# ---- executors -----------------------------------------------------------------------------

def run_local(sweep: Sweep, store_root: str | os.PathLike = RESULTS_DIR, force: bool = False,
              progress: bool = True) -> list[dict[str, Any]]:
    """Every cell in this process, one at a time."""
    tasks: Iterable[CellTask] = sweep.tasks
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        tasks = tqdm(sweep.tasks, desc=f"sweep {sweep.name}", unit="cell")
    return [run_cell(t, str(store_root), force, sweep.device) for t in tasks]


def run_dask(sweep: Sweep, store_root: str | os.PathLike = RESULTS_DIR, force: bool = False,
             scheduler: str | None = None, n_workers: int = 2, progress: bool = True,
             client: Any | None = None, on_submitted: Callable[[Any, list[Any]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Every cell on a Dask cluster: ``scheduler`` (an address), ``client`` (an existing
    ``distributed.Client``), or neither (a ``LocalCluster`` of ``n_workers`` processes).

    ``on_submitted(client, futures)`` is called once all cells are submitted (tests use it to
    kill a worker mid-sweep). Returns one outcome per cell, in sweep order.
    """
    try:
        from distributed import Client, LocalCluster, as_completed  # noqa: PLC0415
        from distributed.scheduler import KilledWorker  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - distributed is in requirements.txt
        raise InputError("--executor dask needs the 'distributed' package (pip install distributed)") from exc

    own_cluster = None
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            own_cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            client = Client(own_cluster)
    try:
        resources = {"GPU": 1} if sweep.device == "gpu" else None
        if resources:
            workers = client.scheduler_info()["workers"].values()
            if not any(w.get("resources", {}).get("GPU") for w in workers):
                raise InputError("the sweep asks for GPU cells but no worker offers the resource GPU "
                                 "(start workers with --resources GPU=1, e.g. dask-cuda-worker)")
        futures = [client.submit(run_cell, t, str(store_root), force, sweep.device, key=f"cell-{t.cell.digest}",
                                 resources=resources, pure=False) for t in sweep.tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        if on_submitted is not None:
            on_submitted(client, futures)
        outcomes: list[dict[str, Any] | None] = [None] * len(futures)
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=len(futures), desc=f"sweep {sweep.name} (dask)", unit="cell")
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                outcomes[i] = fut.result()
            except KilledWorker as exc:  # the cell took down more workers than allowed
                outcomes[i] = {"cell": str(sweep.tasks[i].cell.relpath), "status": "failed", "seconds": None,
                               "pid": None, "error": f"KilledWorker: {exc}"}
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        return [o for o in outcomes if o is not None]
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()


def summarise(sweep: Sweep, outcomes: Sequence[Mapping[str, Any]], store_root: str | os.PathLike = RESULTS_DIR
              ) -> dict[str, Any]:
    """Counts per status, the failures with their errors; also written to
    ``<store>/<profile>/_sweeps/<name>.json`` (beside the cells, not a cell itself)."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    summary = {"sweep": sweep.name, "profile": sweep.profile, "cells": len(outcomes), "counts": counts,
               "failures": [{"cell": o["cell"], "error": o["error"]} for o in outcomes if o["status"] == "failed"],
               "outcomes": list(outcomes)}
    path = Path(store_root) / sweep.profile / "_sweeps" / f"{sweep.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)
    return summary
