"""Prompt-cache files: generation from a loaded cache equals generation from the cache that was
saved, token for token (three families, sink and plain layers included); every truncation, byte
flip and mismatched model is refused with a clear error."""

from __future__ import annotations

import copy
import json
import struct
import zlib

import pytest
import torch

from kakeya_lib.errors import CorruptBlobError, InputError
from kakeya_lib.llm import cache_file
from kakeya_lib.llm.cache import CompressedCache
from kakeya_lib.llm.models import tiny_model
from kakeya_lib.llm.plan import KVPlan
from kakeya_lib.llm.prerope import patch_model

PROMPT = torch.randint(0, 96, (1, 61), generator=torch.Generator().manual_seed(3))
GEN = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
SPEC = "kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1,block=64"
PLAN = KVPlan(SPEC, protect_tokens=1)  # every full-attention layer coded (Gemma3's sliding ones stay plain)


def prefilled(family: str, plan: KVPlan = PLAN):
    model = tiny_model(family)
    patch_model(model)
    cache = CompressedCache.from_plan(model.config, plan, block_tokens=16, hot_tokens=8)
    with torch.no_grad():
        model(PROMPT[:, :-1], cache=cache)
    return model, cache


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_generation_from_a_loaded_cache_equals_the_saved_cache(family, tmp_path):
    model, cache = prefilled(family)
    path = tmp_path / "prompt.kvz"
    size = cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    assert size == path.stat().st_size
    kept = copy.deepcopy(cache)
    loaded = CompressedCache.load(path, model)
    assert loaded.token_ids == PROMPT[0].tolist() and loaded.model == "tiny"
    assert loaded.cache.get_seq_length() == cache.get_seq_length() == PROMPT.shape[1] - 1
    assert loaded.cache.bytes_held() == cache.bytes_held()
    assert any(row.get("compressed_tokens", 0) > 0 for row in cache.bytes_held())  # blocks were coded
    for kind, (cos, sin) in kept.rope_tables.items():  # recomputed, bit for bit
        assert torch.equal(loaded.cache.rope_tables[kind][0], cos) and torch.equal(loaded.cache.rope_tables[kind][1], sin)
    with torch.no_grad():
        from_memory = model.generate(PROMPT, cache=kept, **GEN)
        from_file = model.generate(PROMPT, cache=loaded.cache, **GEN)
    assert torch.equal(from_memory, from_file)
    assert from_file.shape[1] == PROMPT.shape[1] + GEN["max_new_tokens"]


def test_a_plan_with_layer_step_scales_round_trips(tmp_path):
    model, cache = prefilled("llama", KVPlan(SPEC, protect_tokens=1, k_step_scale=(1.0, 1.5), v_step_scale=(0.8, 1.0)))
    path = tmp_path / "p.kvz"
    cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    loaded = CompressedCache.load(path, model)
    assert loaded.cache.plan.plan.k_step_scale == (1.0, 1.5)
    assert [lay.k_codec.spec for lay in loaded.cache.layers] == [lay.k_codec.spec for lay in cache.layers]


def test_the_file_holds_the_cache_bytes_plus_a_small_header(tmp_path):
    model, cache = prefilled("llama", KVPlan(SPEC, protect_tokens=1, layers=(1,)))  # layer 0 stays float
    path = tmp_path / "p.kvz"
    size = cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    header, payload = cache_file.read_header(path)
    held = sum(v for row in cache.bytes_held() for k, v in row.items() if k.endswith("_bytes"))
    assert len(payload) == held  # every blob and tensor, nothing else
    assert size == len(payload) + 16 + len(json.dumps(header, separators=(",", ":")))
    kinds = [e["kind"] for e in header["layers"]]
    assert kinds == ["plain", "compressed"]


def test_truncated_extended_and_flipped_files_are_refused(tmp_path):
    model, cache = prefilled("llama")
    path = tmp_path / "p.kvz"
    cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    good = path.read_bytes()
    bad = tmp_path / "bad.kvz"
    n_header = struct.unpack_from("<I", good, 8)[0]
    cuts = [0, 3, 15, 16, 16 + n_header // 2, 16 + n_header, 16 + n_header + 7, len(good) - 1]
    for cut in cuts:
        bad.write_bytes(good[:cut])
        with pytest.raises(CorruptBlobError, match="truncated|shorter|payload holds"):
            CompressedCache.load(bad, model)
    bad.write_bytes(good + b"\0")
    with pytest.raises(CorruptBlobError, match="payload holds"):
        CompressedCache.load(bad, model)
    step = max(1, len(good) // 97)
    for at in range(0, len(good), step):  # a flip anywhere: magic, header, CRC or payload
        flipped = bytearray(good)
        flipped[at] ^= 0x20
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CorruptBlobError):
            CompressedCache.load(bad, model)


def test_an_edited_header_with_a_valid_checksum_is_still_checked(tmp_path):
    model, cache = prefilled("llama")
    path = tmp_path / "p.kvz"
    cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    header, _ = cache_file.read_header(path)
    raw = path.read_bytes()
    payload = raw[16 + struct.unpack_from("<I", raw, 8)[0]:]

    def rewrite(h: dict) -> None:
        text = json.dumps(h).encode()
        path.write_bytes(struct.pack("<4sHHII", b"KVZ\0", 1, 0, len(text), zlib.crc32(text)) + text + payload)

    edits = {
        "codec": lambda h: h["layers"][1].update(k_codec="kakeya:bits=2"),
        "kind": lambda h: h["layers"][1].update(kind="plain"),
        "blocks": lambda h: h["layers"][1].update(compressed_tokens=h["layers"][1]["compressed_tokens"] + 16),
        "tokens": lambda h: h.update(tokens=h["tokens"] + 5),
        "shape": lambda h: h["layers"][1]["hot_k"].update(shape=[1, 1, 1, 1]),
        "order": lambda h: h["layers"][1]["k_blobs"].reverse(),
        "plan": lambda h: h["plan"].pop("k"),
        "ids": lambda h: h["token_ids"].__setitem__(0, "x"),
    }
    for name, edit in edits.items():
        h = json.loads(json.dumps(header))
        edit(h)
        rewrite(h)
        with pytest.raises(CorruptBlobError):
            CompressedCache.load(path, model)
    rewrite(header)
    CompressedCache.load(path, model)  # the untouched header still loads


def test_wrong_model_wrong_input_and_unsupported_state(tmp_path):
    model, cache = prefilled("llama")
    path = tmp_path / "p.kvz"
    cache.save(path, model="tiny", token_ids=PROMPT[0].tolist())
    other = tiny_model("qwen3")
    patch_model(other)
    with pytest.raises(InputError, match="written for a model of shape"):
        CompressedCache.load(path, other)
    with pytest.raises(InputError, match="does not exist"):
        CompressedCache.load(tmp_path / "missing.kvz", model)
    with pytest.raises(InputError, match="token ids"):
        cache.save(tmp_path / "x.kvz", model="tiny", token_ids=[1, 2, 3])
    with pytest.raises(InputError, match="does not exist"):
        cache.save(tmp_path / "missing" / "x.kvz", model="tiny", token_ids=PROMPT[0].tolist())
    with pytest.raises(InputError, match="is a folder"):
        cache.save(tmp_path, model="tiny", token_ids=PROMPT[0].tolist())
    assert path.read_bytes()[:4] == b"KVZ\0"  # a refused write leaves the earlier file as it was
    empty = CompressedCache.from_plan(model.config, PLAN)
    with pytest.raises(InputError, match="empty"):
        empty.save(tmp_path / "x.kvz", model="tiny", token_ids=[1])
    (tmp_path / "not.kvz").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(CorruptBlobError, match="not a prompt-cache file"):
        CompressedCache.load(tmp_path / "not.kvz", model)
