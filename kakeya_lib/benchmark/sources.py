"""Where benchmark rows come from: synthetic generators, or captured KV rows in a pickle-free ``.npz``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import synthetic
from ..errors import InputError

SYNTHETIC_KINDS = tuple(sorted(synthetic.GENERATORS))


# -- data --------------------------------------------------------------------------------------
@dataclass
class DataSource:
    """Where the rows of a measurement come from.

    ``rows_for(n, d)`` returns a float32 host array [n, d]. Synthetic sources take any ``d``;
    a captured stream has one fixed width (``dim``) and is tiled when ``n`` exceeds its rows.
    """

    name: str
    generate: Callable[[int, int], np.ndarray]
    dim: int | None = None  # fixed width (captured data) or None (any)
    available_rows: int | None = None
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def dims(self, requested: Sequence[int]) -> list[int]:
        return [self.dim] if self.dim is not None else list(requested)

    def rows_for(self, n: int, d: int, n_max: int) -> np.ndarray:
        """Rows [n, d]: a prefix of one array generated at the largest size (nested subsets)."""
        if d not in self._cache or self._cache[d].shape[0] < n:
            self._cache = {d: self.generate(max(n, n_max), d)}  # one width at a time in memory
        return self._cache[d][:n]

    def tiled(self, n: int) -> bool:
        return self.available_rows is not None and n > self.available_rows


def synthetic_source(kind: str, seed: int = 0) -> DataSource:
    if kind not in synthetic.GENERATORS:
        raise InputError(f"unknown data kind {kind!r}; choose {', '.join(SYNTHETIC_KINDS)} or 'captured FILE'")
    gen = synthetic.GENERATORS[kind]
    return DataSource(kind, lambda n, d: gen(n, d, seed=seed))


def captured_sources(path: str | os.PathLike) -> list[DataSource]:
    """One source per stream (``k``, ``v``) of a captured-rows file (see :func:`save_captured`)."""
    streams, _ = load_captured(path)
    stem = Path(path).name.removesuffix(".npz")
    out = []
    for stream, rows in streams.items():
        def gen(n: int, d: int, rows: np.ndarray = rows) -> np.ndarray:
            reps = -(-n // rows.shape[0])
            return np.ascontiguousarray(np.tile(rows, (reps, 1))[:n])
        out.append(DataSource(f"captured:{stem}:{stream}", gen, dim=int(rows.shape[1]),
                              available_rows=int(rows.shape[0])))
    return out


def parse_data(tokens: Sequence[str], seed: int = 0) -> list[DataSource]:
    """``["kv_like", "gaussian", "captured", "FILE", "captured=FILE2"]`` -> data sources."""
    sources: list[DataSource] = []
    it = iter(tokens)
    for tok in it:
        if tok == "captured":
            path = next(it, None)
            if path is None:
                raise InputError("'--data captured' needs a file: --data captured FILE.npz")
            sources += captured_sources(path)
        elif tok.startswith("captured="):
            sources += captured_sources(tok.split("=", 1)[1])
        else:
            sources.append(synthetic_source(tok, seed))
    if not sources:
        raise InputError("no data kinds given")
    return sources


def save_captured(tensors: dict[str, Any], path: str | os.PathLike, layers: Sequence[int] | None = None,
                  meta: dict[str, Any] | None = None, dtype: str = "float16") -> dict[str, Any]:
    """Save pre-RoPE K/V of some layers as rows ``[T·n_kv, D]`` (token-major, heads interleaved,
    as :mod:`kakeya_lib.layout`) in a pickle-free ``.npz``.

    ``tensors`` maps ``layer{L}.k`` / ``layer{L}.v`` to arrays or tensors ``[n_kv, T, D]`` (the
    layout :func:`kakeya_lib.llm.capture.capture_passage` returns); other keys are ignored.
    Returns the metadata written next to the arrays (key ``meta``, a JSON string).
    """
    n_layers = len({k.split(".")[0] for k in tensors if k.endswith((".k", ".v"))})
    chosen = list(range(n_layers)) if layers is None else [int(i) % n_layers for i in layers]
    arrays: dict[str, np.ndarray] = {}
    shapes = {}
    for i in dict.fromkeys(chosen):
        for stream in ("k", "v"):
            t = tensors[f"layer{i}.{stream}"]
            a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
            if a.ndim != 3:
                raise InputError(f"layer{i}.{stream}: expected [n_kv, T, D], got shape {a.shape}")
            h, n, d = a.shape
            rows = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(n * h, d)).astype(dtype)
            if not np.isfinite(rows).all():
                raise InputError(f"layer{i}.{stream} does not fit {dtype} (non-finite after the cast)")
            arrays[f"layer{i}.{stream}"] = rows
            shapes[f"layer{i}.{stream}"] = [int(s) for s in rows.shape]
    info = {"layout": "rows [T*n_kv, D], token-major, heads interleaved; pre-RoPE", "dtype": dtype,
            "layers": list(dict.fromkeys(chosen)), "n_layers": n_layers, "shapes": shapes, **(meta or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(info)), **arrays)
    return info


def load_captured(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``({"k": rows, "v": rows}, meta)``: each stream's layers concatenated, as float32."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"captured-rows file {str(path)!r} does not exist (make one with benchmarks/capture_kv.py)")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            parts: dict[str, list[np.ndarray]] = {"k": [], "v": []}
            for key in sorted(z.files, key=_layer_order):
                if key.endswith((".k", ".v")):
                    parts[key[-1]].append(z[key].astype(np.float32))
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {str(path)!r} as a pickle-free .npz of captured rows: {exc}") from exc
    streams = {s: np.concatenate(a, axis=0) for s, a in parts.items() if a}
    if not streams:
        raise InputError(f"{str(path)!r} holds no layer*.k / layer*.v arrays")
    dims = {a.shape[1] for a in streams.values()}
    if len(dims) != 1 or any(a.ndim != 2 for a in streams.values()):
        raise InputError(f"{str(path)!r}: streams must be 2-D rows of one width, got {sorted(dims)}")
    return streams, meta


def _layer_order(key: str) -> tuple[int, str]:
    head = key.split(".")[0]
    return (int(head[5:]) if head.startswith("layer") and head[5:].isdigit() else -1, key)
