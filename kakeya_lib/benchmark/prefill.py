"""The codec's overhead on a model prefill of the same tokens (:func:`forward_overhead`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import codecs
from .device import device_env
from .measure import median, validate

PREFILL_OVERHEAD_TARGET_PCT = 25.0  # coding a prefill's cache adds at most this much (stretch: 10 %)


def _saliency_weights(model: Any, tensors: dict[str, Any], n_queries: int, layers: Sequence[int]
                      ) -> tuple[list[Any], float]:
    """Token weights of a plan with ``saliency_queries`` for every captured K and V array (the
    layer's weights for both streams, None where the layer is not coded) and the seconds taken."""
    from ..llm import saliency  # noqa: PLC0415  (torch only for this measurement)
    from ..llm.prerope import rope_kinds, rope_tables_for  # noqa: PLC0415

    n_layers = len({k.split(".")[0] for k in tensors})
    t0 = time.perf_counter()
    tables = rope_tables_for(model, int(tensors["layer0.k"].shape[1]))
    kinds = rope_kinds(model)
    per_layer: list[Any] = [None] * n_layers
    for i in layers:
        attn = model.model.layers[i].self_attn
        q, k = tensors[f"layer{i}.q"][None], tensors[f"layer{i}.k"][None]
        cos, sin = tables[kinds[i]]
        per_layer[i] = saliency.token_weights(q, k, cos, sin, attn.scaling, min(n_queries, k.shape[2]),
                                              getattr(attn, "sliding_window", None))
    return [per_layer[i] for i in range(n_layers) for _ in (0, 1)], time.perf_counter() - t0


# -- the model forward pass --------------------------------------------------------------------
def forward_overhead(model: Any, input_ids: Sequence[int], specs: Sequence[str], repeat: int = 3,
                     log: Callable[[str], None] | None = None,
                     plans: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """Prefill cost of ``model`` on ``input_ids`` (one sequence) against the codec time for the
    K and V rows that prefill produces.

    A prefill of T tokens leaves ``T·n_kv`` rows of width ``head_dim`` per layer and stream (K,
    V); the codec is run on every one of those ``2·layers`` arrays (pre-RoPE rows captured from
    the same tokens, token-major with the heads interleaved, as the harness codes them), so the
    overhead is ``codec seconds / prefill seconds`` for exactly the work one prefill asks of it.
    The prefill is timed on the stock model (``use_cache=True``) before the capture patches it.

    ``plans`` adds whole-cache recipes as ``(label, resolved plan)``: each layer's K and V arrays go
    through that layer's codecs (calibrated codecs such as ``klt`` are per layer and stream), layers
    the plan leaves uncompressed cost nothing (billed at bf16), and the row's ``codec`` is the
    label; its exact tokens are coded too (this measures speed, not the plan's ratio). A plan with
    ``saliency_queries`` also pays for its token weights (the last queries' attention on every
    token, :mod:`kakeya_lib.llm.saliency`): their time is added to its encode time.
    """
    import torch  # noqa: PLC0415

    from ..llm.capture import capture_passage  # noqa: PLC0415  (torch only for this measurement)

    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    if specs or not plans:
        validate(specs, [1], [1], repeat)
    with torch.no_grad():
        model(ids, use_cache=True)  # warm-up
        fwd = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(ids, use_cache=True)
            fwd.append(time.perf_counter() - t0)
    forward_s = median(fwd)
    tensors = capture_passage(model, list(input_ids))
    n_layers = len({k.split(".")[0] for k in tensors})
    arrays = []
    for i in range(n_layers):
        for stream in ("k", "v"):
            t = tensors[f"layer{i}.{stream}"]  # [n_kv, T, D]
            h, n, d = t.shape
            arrays.append(np.ascontiguousarray(t.permute(1, 0, 2).reshape(n * h, d).numpy(), dtype=np.float32))
    n_kv, tokens, head_dim = (int(s) for s in tensors["layer0.k"].shape)
    total_rows = sum(a.shape[0] for a in arrays)
    mb = sum(a.nbytes for a in arrays) / 1e6
    rows = []
    jobs: list[tuple[str, list[Any]]] = []  # (label, one codec or None per array)
    for spec in specs:
        codec = codecs.get(codecs.for_heads(spec, n_kv))
        jobs.append((codec.spec, [codec] * len(arrays)))
    weights: dict[str, tuple[list[Any], float]] = {}  # label -> (row weights per array, seconds to compute them)
    for label, plan in plans:
        per_layer = plan.layer_codecs(model.config)
        jobs.append((label, [None if per_layer[i] is None else per_layer[i][j] for i in range(n_layers) for j in (0, 1)]))
        if getattr(plan, "saliency_queries", 0):
            weights[label] = _saliency_weights(model, tensors, plan.saliency_queries,
                                               [i for i in range(n_layers) if per_layer[i] is not None])
    with device_env(np):
        for label, per_array in jobs:
            row_weights, weights_s = weights.get(label, ([None] * len(arrays), 0.0))
            first = next((i for i, c in enumerate(per_array) if c is not None), None)
            if first is not None:
                per_array[first].decode(per_array[first].encode(arrays[first], row_weights[first]), device="cpu")
            enc_runs, dec_runs, nbytes = [], [], 0
            for _ in range(repeat):
                enc, dec = weights_s, 0.0
                nbytes = 0
                for a, codec, w in zip(arrays, per_array, row_weights):
                    if codec is None:  # kept uncompressed: bf16, no codec work
                        nbytes += 2 * a.size
                        continue
                    t0 = time.perf_counter()
                    blob = codec.encode(a, w)
                    t1 = time.perf_counter()
                    codec.decode(blob, device="cpu")
                    dec += time.perf_counter() - t1
                    enc += t1 - t0
                    nbytes += len(blob)
                enc_runs.append(enc)
                dec_runs.append(dec)
            enc_s, dec_s = median(enc_runs), median(dec_runs)
            row = {
                "codec": label, "tokens": tokens, "layers": n_layers, "kv_heads": n_kv, "head_dim": head_dim,
                "arrays": len(arrays), "rows_total": total_rows, "input_MB": mb, "bytes": nbytes,
                "ratio_vs_bf16": 2.0 * total_rows * head_dim / nbytes,
                "forward_s": forward_s, "encode_s": enc_s, "decode_s": dec_s,
                "encode_MBps": mb / enc_s, "decode_MBps": mb / dec_s,
                "encode_overhead_pct": 100.0 * enc_s / forward_s,
                "roundtrip_overhead_pct": 100.0 * (enc_s + dec_s) / forward_s,
                "target_pct": PREFILL_OVERHEAD_TARGET_PCT,
                "pass": bool(100.0 * enc_s / forward_s < PREFILL_OVERHEAD_TARGET_PCT),
            }
            rows.append(row)
            if log:
                log(f"forward {tokens} tokens {forward_s:.3f} s; {label}: encode {enc_s:.3f} s "
                    f"({row['encode_overhead_pct']:.1f} %), decode {dec_s:.3f} s")
    return {"forward_s": forward_s, "forward_s_all": fwd, "tokens": tokens, "torch_threads": torch.get_num_threads(),
            "results": rows}
