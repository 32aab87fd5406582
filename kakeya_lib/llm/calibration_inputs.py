"""What every calibrated artifact of a model shares: its folder, names and fingerprints, and the
calib-split passages it is fitted on.

Query second moments (:mod:`.qprecond`), calibrated codebooks (:mod:`.codebooks`) and KVTC's
bases (:mod:`.kvtc_calib`) are all fitted on passages of the corpus's **calib** split, saved
under :func:`calib_dir` and named by the model, the corpus and fingerprints of the weights and
passages. Those shared pieces live here, so the three calibrations depend on this module and
not on each other (and the plan that resolves them depends on all three, not the reverse).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

DEFAULT_PASSAGES = 8


def calib_dir() -> Path:
    """Where calibration artifacts live: the kakeya codec's ``CALIB_DIR`` (``.cache/calib``), read
    at call time so codebooks (``codebook=calib:NAME``) and Σ_q artifacts share one folder."""
    from ..codecs import kakeya  # noqa: PLC0415

    return Path(kakeya.CALIB_DIR)


def calib_passages(corpus: Any, tokenizer: Any, ctx: int, n_passages: int = DEFAULT_PASSAGES, seed: int = 0,
                   bos: bool = False) -> list[Any]:
    """``n_passages`` windows of ``ctx`` tokens from the corpus's **calib** split."""
    from . import corpora  # noqa: PLC0415

    return corpora.passages(corpus, tokenizer, ctx, 0, n_passages, seed, split="calib", bos=bos)


def token_lists(passages: Sequence[Any]) -> list[list[int]]:
    """Token ids of calibration passages; Passage records must come from the calib split."""
    out = []
    for p in passages:
        split = getattr(p, "split", None)
        if split is not None and split != "calib":
            raise InputError(f"calibration passage {getattr(p, 'passage_id', '?')} comes from the {split!r} split; "
                             "Σ_q and codebooks must be calibrated on the 'calib' split, never on evaluation text")
        ids = list(getattr(p, "input_ids", p))
        if not ids:
            raise InputError("empty calibration passage")
        out.append(ids)
    if not out:
        raise InputError("no calibration passages")
    return out


def model_fingerprint(model: Any) -> str:
    """A short hash of the model's shape and a strided sample of every parameter (cheap, and
    different for different weights), so cached calibrations are never reused across models."""
    import torch  # noqa: PLC0415

    cfg = model.config
    h = hashlib.sha256()
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"):
        h.update(f"{key}={getattr(cfg, key, None)};".encode())
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 1024)
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(flat[::step][:1024].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def model_label(model: Any) -> str:
    """A readable model name: the folder or HF id it was loaded from, else the model type."""
    path = str(getattr(model.config, "_name_or_path", "") or "")
    return Path(path).name if path else f"{model.config.model_type}-unnamed"


def passages_fingerprint(passages: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for ids in passages:
        h.update(np.asarray(list(ids), dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-") or "x"
    return s[:limit]


def ensure_patched(model: Any) -> None:
    from .prerope import patch_model  # noqa: PLC0415

    if not any(getattr(layer.self_attn, "_kakeya_prerope", False) for layer in model.model.layers):
        patch_model(model)


def prefill(model: Any, ids: Sequence[int], cache: Any) -> None:
    """One forward of ``ids`` into ``cache`` for calibration (only the last position's logits are
    computed: the lm_head over the whole window is wasted work here)."""
    import torch  # noqa: PLC0415

    x = torch.tensor([list(ids)], dtype=torch.long)
    with torch.no_grad():
        try:
            model(x, cache=cache, logits_to_keep=1)
        except TypeError:  # a model class without logits_to_keep
            model(x, cache=cache)
