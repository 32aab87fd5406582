"""Stored prompt caches and generation with a compressed cache (:func:`prompt_cache_rows`).

For one prompt of ``T + 1`` tokens (``T`` cached, the last one starts generation):

* **storage**: the ``.kvz`` file that :meth:`~kakeya_lib.llm.cache.CompressedCache.save` writes
  against a bf16 safetensors dump of the same prompt's float cache (really written, both sizes
  from the file system);
* **time to first token**: recomputing the prefill of the ``T + 1`` tokens vs loading the file
  and running the one-token step (the model is loaded in both cases and not timed);
* **generation**: ``new_tokens`` greedy tokens from the loaded cache at each ``keep_decoded``
  budget (0: decode every block at every step; ``None``: decode each block once and keep it) and
  from float caches of the same prefill: the stock model's ``DynamicCache`` (post-RoPE keys, the
  reference ``relative_speed`` is measured against, when ``stock_model`` is given) and the
  patched model's :class:`~kakeya_lib.llm.prerope.PreRopeCache` (pre-RoPE keys, rotated at every
  step as the compressed cache's are, so its row separates that cost from the codec's): tokens/s,
  and the memory the cache holds at the end (``memory_bytes``: stored bytes plus decoded floats
  kept). Speeds are over all ``new_tokens`` (the first step included: with blocks kept it
  decodes them all) and over the tokens after the first (``steady_tokens_per_s``: the
  per-step cost, from the times a streamer sees each token arrive). With ``keep_decoded=0``
  attention also decodes one layer's blocks at a time, transiently: ``transient_decode_bytes`` is
  the largest such layer.

Times are medians of ``repeat`` runs (wall clock, one process). A benchmark, never a timed test.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from ..llm import cache_file
from ..llm.cache import CompressedCache, CompressedLayer
from ..llm.plan import ResolvedPlan
from ..llm.prerope import make_cache

BUDGETS: tuple[int | None, ...] = (0, None)  # blocks per layer kept decoded (None: all)


def _median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class _TokenClock:
    """A ``generate()`` streamer that only notes when each new token arrives (``put`` is called
    with the prompt first, then once per generated token)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def _greedy(model: Any, ids: torch.Tensor, cache: Any, new_tokens: int, streamer: Any = None) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, cache=cache, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=0, streamer=streamer)


def _timed_greedy(model: Any, ids: torch.Tensor, cache: Any, new_tokens: int) -> tuple[float, float | None, Any]:
    """(seconds for all ``new_tokens``, seconds for the tokens after the first or None, the ids)."""
    clock = _TokenClock()
    t0 = time.perf_counter()
    out = _greedy(model, ids, cache, new_tokens, streamer=clock)
    seconds = time.perf_counter() - t0
    steady = clock.stamps[-1] - clock.stamps[1] if new_tokens > 1 and len(clock.stamps) == new_tokens + 1 else None
    return seconds, steady, out


def float_cache_bytes(cache: Any) -> int:
    """Bytes a float (DynamicCache-style) cache's K/V tensors hold, at their own dtype."""
    return sum((lay.keys.numel() + lay.values.numel()) * lay.keys.element_size()
               for lay in cache.layers if lay.is_initialized)


def _bf16_dump_bytes(cache: Any, folder: Path) -> int:
    """Size of a safetensors file of the cache's K/V tensors in bf16 (what a plain dump stores)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors = {f"layer{i}.{s}": getattr(lay, s).to(torch.bfloat16).contiguous()
               for i, lay in enumerate(cache.layers) if lay.is_initialized for s in ("keys", "values")}
    path = folder / "bf16.safetensors"
    save_file(tensors, str(path))
    return path.stat().st_size


def prompt_cache_rows(model: Any, token_ids: Sequence[int], plan: ResolvedPlan, *, label: str,
                      block_tokens: int | None = None, hot_tokens: int = 0, new_tokens: int = 32,
                      budgets: Sequence[int | None] = BUDGETS, repeat: int = 3,
                      log: Callable[[str], None] | None = None, stock_model: Any | None = None
                      ) -> list[dict[str, Any]]:
    """Storage, time to first token and generation figures for one prompt (see the module docstring).

    Parameters
    ----------
    model : a pre-RoPE-patched causal LM (:func:`~kakeya_lib.llm.prerope.patch_model`)
    token_ids : the prompt, ``T + 1`` ids
    plan : the resolved plan the compressed cache follows; ``label`` names it in the rows
    block_tokens, hot_tokens : the cache's blocks and hot window; by default (None, 0) the whole
        prompt beyond the protected tokens is one block, as a stored prompt is coded
    stock_model : the same model, not patched; its ``DynamicCache`` is the float reference for
        the first token (recomputing the prefill) and for generation speed. None: the patched
        model's ``PreRopeCache`` is the reference.

    Returns
    -------
    rows: one ``{"kind": "storage"}``, one ``"first_token"`` row, and one ``"generate"`` row per
    budget plus the float cache's.
    """
    ids = torch.tensor([list(token_ids)], dtype=torch.long)
    t = ids.shape[1] - 1
    say = log or (lambda _: None)
    cache = CompressedCache.for_prompt(model.config, plan, t, hot_tokens=hot_tokens, block_tokens=block_tokens)
    block_tokens = next((lay.block_tokens for lay in cache.layers if isinstance(lay, CompressedLayer)), block_tokens)
    base = {"label": label, "cached_tokens": t, "block_tokens": block_tokens, "hot_tokens": hot_tokens}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = Path(tmp)
        t0 = time.perf_counter()
        model(ids[:, :-1], cache=cache)
        save_path = folder / "prompt.kvz"
        size = cache.save(save_path, model=label, token_ids=ids[0].tolist())
        save_s = time.perf_counter() - t0
        floats = make_cache(model)
        model(ids[:, :-1], cache=floats)
        dump = _bf16_dump_bytes(floats, folder)
        rows.append({**base, "kind": "storage", "file_bytes": size, "bf16_dump_bytes": dump,
                     "bf16_kv_bytes": cache_file.bf16_reference_bytes(model.config, t),
                     "ratio_vs_bf16_dump": dump / size, "prefill_and_save_s": save_s})
        say(f"T={t}: file {size:,} B vs bf16 dump {dump:,} B ({dump / size:.2f}x)")

        def recompute() -> Any:
            if stock_model is not None:
                return _greedy(stock_model, ids, DynamicCache(config=stock_model.config), 1)
            return _greedy(model, ids, make_cache(model), 1)

        def from_file() -> Any:
            loaded = CompressedCache.load(save_path, model, keep_decoded=None)
            return _greedy(model, ids, loaded.cache, 1)

        ttft_recompute, _ = _median_time(recompute, repeat)
        ttft_file, _ = _median_time(from_file, repeat)
        load_s, _ = _median_time(lambda: CompressedCache.load(save_path, model), repeat)
        rows.append({**base, "kind": "first_token", "recompute_s": ttft_recompute, "from_file_s": ttft_file,
                     "load_s": load_s, "speedup": ttft_recompute / ttft_file})
        say(f"T={t}: first token: recompute {ttft_recompute:.3f} s, from file {ttft_file:.3f} s")

        def speeds(runs: list[tuple[float, float | None, Any]]) -> tuple[float, float | None]:
            """tokens/s over all new tokens, and over those after the first (medians of the runs)."""
            steady = [r[1] for r in runs if r[1] is not None]
            return (new_tokens / statistics.median(r[0] for r in runs),
                    (new_tokens - 1) / statistics.median(steady) if len(steady) == len(runs) else None)

        # Each run keeps only its figures: caches of earlier runs (hundreds of MB at ctx 4096) are
        # freed before the next is timed, so no row runs under another row's memory.
        def float_run(m: Any, make: Callable[[], Any]) -> tuple[float, float | None, Any]:
            gc.collect()
            cache_f = make()
            m(ids[:, :-1], cache=cache_f)
            seconds, steady, out = _timed_greedy(m, ids, cache_f, new_tokens)
            return seconds, steady, (out, float_cache_bytes(cache_f))

        floats_runs = [("float, pre-RoPE (PreRopeCache)", model, lambda: make_cache(model))]
        if stock_model is not None:  # the reference goes first
            floats_runs.insert(0, ("float (DynamicCache, stock model)", stock_model,
                                   lambda: DynamicCache(config=stock_model.config)))
        ref: dict[str, Any] = {}

        def relative(tps: float, steady: float | None) -> dict[str, Any]:
            return {"tokens_per_s": tps, "relative_speed": tps / ref["tps"], "steady_tokens_per_s": steady,
                    "steady_relative_speed": None if steady is None or ref["steady"] is None else steady / ref["steady"]}

        for name, m, make in floats_runs:
            runs = [float_run(m, make) for _ in range(repeat)]
            tps, steady = speeds(runs)
            out, memory = runs[-1][2]
            if not ref:
                ref.update(tps=tps, steady=steady, out=out)
            rows.append({**base, "kind": "generate", "cache": name, "keep_decoded": None, **relative(tps, steady),
                         "memory_bytes": memory, "transient_decode_bytes": 0,
                         "reference": out is ref["out"], "same_tokens_as_float": bool(torch.equal(out, ref["out"]))})
        for keep in budgets:
            def run() -> tuple[float, float | None, Any]:
                gc.collect()
                comp = CompressedCache.load(save_path, model, keep_decoded=keep).cache
                seconds, steady, out = _timed_greedy(model, ids, comp, new_tokens)
                itemsize = next(model.parameters()).element_size()  # blocks decode to the model's dtype
                per_layer = [2 * lay.compressed_tokens * lay.keys.shape[1] * lay.keys.shape[3] * itemsize
                             for lay in comp.layers if isinstance(lay, CompressedLayer)]
                return seconds, steady, (out, comp.memory_bytes(), max(per_layer, default=0))

            runs = [run() for _ in range(repeat)]
            tps, steady = speeds(runs)
            out, memory, largest_layer = runs[-1][2]
            rows.append({**base, "kind": "generate", "cache": "compressed", "keep_decoded": keep, **relative(tps, steady),
                         "memory_bytes": memory, "transient_decode_bytes": largest_layer if keep == 0 else 0,
                         "same_tokens_as_float": bool(torch.equal(out, ref["out"]))})
            say(f"T={t}: keep_decoded={keep}: {tps:.1f} tok/s, {memory:,} B")
    return rows
