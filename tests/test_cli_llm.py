"""`kakeya eval` and `kakeya capture` end to end on a tiny saved model and a local corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kakeya_lib import cli
from kakeya_lib.llm.models import tiny_model

WORDS = [f"w{i}" for i in range(90)]


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    """A saved tiny Llama with an offline word-level tokenizer, and a local text corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    corpus = root / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for d in range(40):
        (corpus / f"doc{d:02d}.txt").write_text(" ".join(rng.choice(WORDS, size=200)))
    return model_dir, corpus


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_identity_is_exact_and_a_lossy_codec_is_not(tiny_assets, tmp_path, capsys):
    model_dir, corpus = tiny_assets
    base = ["eval", "--model", model_dir, "--corpus", corpus, "--ctx", 64, "--n-eval", 16, "--passages", 3,
            "--no-progress"]
    code, out, _ = run([*base, "--codec", "identity", "--json", tmp_path / "id.json"], capsys)
    assert code == 0, out
    ident = json.loads((tmp_path / "id.json").read_text())
    assert ident["delta_ppl_pct"] == 0.0 and ident["kl_mean"] == 0.0
    assert ident["provenance"]["git"]["sha"] and len(ident["passage_ids"]) == 3
    code, out, _ = run([*base, "--k-codec", "kakeya:bits=2,block=64", "--v-codec", "kakeya:bits=4,block=64",
                        "--mode", "cache", "--block-tokens", 16, "--hot-tokens", 8, "--json", tmp_path / "b2.json"], capsys)
    assert code == 0
    lossy = json.loads((tmp_path / "b2.json").read_text())
    assert lossy["kl_mean"] > 0 and lossy["mode"] == "cache"
    assert lossy["k_codec"] == "kakeya:bits=2,block=64" and lossy["v_codec"] == "kakeya:bits=4,block=64"
    assert "ratio" in out and "KL" in out


def test_eval_boundary_layers_are_left_uncompressed(tiny_assets, tmp_path, capsys):
    model_dir, corpus = tiny_assets
    code, _, _ = run(["eval", "--model", model_dir, "--corpus", corpus, "--ctx", 32, "--n-eval", 8, "--passages", 2,
                      "--codec", "kakeya:bits=2", "--boundary", 1, "--no-progress", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["compressed_layers"] == []


def test_capture_writes_safetensors_and_sidecars(tiny_assets, tmp_path, capsys):
    from safetensors.numpy import load_file

    model_dir, corpus = tiny_assets
    out_dir = tmp_path / "cap"
    code, out, _ = run(["capture", "--model", model_dir, "--corpus", corpus, "--ctx", 24, "--passages", 2,
                        "--out", out_dir], capsys)
    assert code == 0 and "wrote 2" in out
    tensors = load_file(out_dir / "passage000.safetensors")
    assert tensors["layer0.k"].shape == (2, 24, 16) and tensors["layer1.q"].shape == (4, 24, 16)
    meta = json.loads((out_dir / "passage000.json").read_text())
    assert meta["passage_id"] and meta["positions"] == [0, 24] and meta["dtype"] == "float32"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "--model", "no-such-model", "--codec", "identity"], "unknown model"),
        (["eval", "--model", "smollm2-135m"], "--codec"),
    ],
)
def test_bad_llm_arguments_exit_with_one_line(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_runs_a_recipe(tiny_assets, tmp_path, capsys):
    model_dir, corpus = tiny_assets
    code, _, _ = run(["eval", "--model", model_dir, "--corpus", corpus, "--ctx", 48, "--n-eval", 8, "--passages", 2,
                      "--recipe", "ours-k3v3-sink", "--no-progress", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["plan"] == "ours-k3v3-sink" and r["protect_tokens"] == 1 and r["kl_mean"] > 0


def test_calibrate_writes_an_artifact_that_eval_can_use(tiny_assets, tmp_path, capsys, monkeypatch):
    from kakeya_lib.codecs import kakeya as kakeya_codec

    monkeypatch.setattr(kakeya_codec, "CALIB_DIR", tmp_path / "calib")
    model_dir, corpus = tiny_assets
    code, stdout, _ = run(["calibrate", "--model", model_dir, "--corpus", corpus, "--ctx", 48, "--passages", 2,
                           "--variant", "rope", "--no-progress"], capsys)
    assert code == 0 and "artifact: qcal-" in stdout
    assert len(list((tmp_path / "calib").glob("qcal-*.safetensors"))) == 1
    out = tmp_path / "r.json"
    code, _, _ = run(["eval", "--model", model_dir, "--corpus", corpus, "--ctx", 48, "--n-eval", 8,
                      "--passages", 2, "--no-progress", "--json", out, "--codec", "kakeya:bits=3,block=64",
                      "--qprecond", "calib", "--qprecond-variant", "rope", "--calib-passages", 2,
                      "--calibrated-codebook"], capsys)
    assert code == 0
    r = json.loads(out.read_text())
    assert r["qprecond"] and r["k_rel_mse_whitened"] > 0 and r["codebooks"]




def test_cache_save_then_generate_matches_the_in_memory_cache_and_refuses_a_damaged_file(tiny_assets, tmp_path, capsys):
    import torch

    from kakeya_lib.llm import models, recipes
    from kakeya_lib.llm.cache import CompressedCache
    from kakeya_lib.llm.prerope import patch_model

    model_dir, _ = tiny_assets
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(" ".join(WORDS[(7 * i) % 90] for i in range(60)))
    out = tmp_path / "prompt.kvz"
    code, text, err = run(["cache", "save", "--model", model_dir, "--prompt-file", prompt, "--recipe", "ours-5x",
                           "--out", out, "--block-tokens", 16, "--hot-tokens", 8, "--bos", "no"], capsys)
    assert code == 0, err
    assert "59 prompt tokens cached with ours-5x" in text and out.is_file()
    code, text, err = run(["cache", "generate", "--cache", out, "--max-new-tokens", 8, "--json", tmp_path / "g.json"],
                          capsys)
    assert code == 0, err
    got = json.loads((tmp_path / "g.json").read_text())
    assert got["cached_tokens"] == 59 and len(got["new_token_ids"]) == 8

    loaded = models.load_model(str(model_dir))  # the same cache, built and kept in memory
    patch_model(loaded.model)
    ids = loaded.tokenizer(prompt.read_text(), add_special_tokens=False)["input_ids"]
    cache = CompressedCache.from_plan(loaded.model.config, recipes.load("ours-5x").plan(), block_tokens=16, hot_tokens=8)
    with torch.no_grad():
        loaded.model(torch.tensor([ids[:-1]]), cache=cache)
        ref = loaded.model.generate(torch.tensor([ids]), cache=cache, max_new_tokens=8, do_sample=False,
                                    pad_token_id=loaded.tokenizer.eos_token_id)
    assert got["new_token_ids"] == ref[0, len(ids):].tolist()

    out.write_bytes(out.read_bytes()[:-10])
    code, _, err = run(["cache", "generate", "--cache", out], capsys)
    assert code == 2 and ("truncated" in err or "payload holds" in err)
    code, _, err = run(["cache", "save", "--model", model_dir, "--prompt-file", tmp_path / "none.txt", "--out", out],
                       capsys)
    assert code == 2 and "does not exist" in err
