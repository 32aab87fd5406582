"""The prompt-cache file: a checksummed JSON header and the sections it lists, in one file.

:meth:`~.cache.CompressedCache.save` and :meth:`~.cache.CompressedCache.load` write and read a
compressed cache through this module (what each layer puts in the header is theirs; the layout,
the checks and the tensor encoding are here).

The use that variable-rate coded bytes suit best: a prompt's cache is computed once, stored (or
sent), and loaded later to continue generating without recomputing the prefill. The file holds
exactly what the in-memory cache holds -- codec blobs, the bf16 sink and hot-window tokens, the
float tensors of layers left uncompressed -- so generation from a loaded cache equals generation
from the cache that was saved, token for token.

File layout (little-endian)::

    offset  size  field
    0       4     magic b"KVZ\\0"
    4       2     format version (FORMAT_VERSION)
    6       2     reserved, 0
    8       4     H, header length in bytes, uint32
    12      4     CRC-32 of the header
    16      H     header: UTF-8 JSON (model, plan, token ids, one entry per layer)
    16+H    ...   payload: every blob and tensor, in the order the header lists them

Each header entry names its payload section as ``[offset, length, crc32]`` (offset relative to
the payload start); the sections tile the payload exactly, so a truncated, extended or edited
file is refused before anything is decoded. No pickle: tensors are raw little-endian bytes
(bf16 as its 16-bit patterns), shapes come from the header and are checked against the lengths.

RoPE tables (the cos/sin rows the cache rotates its pre-RoPE keys with) are not stored: they are
recomputed for positions ``0..T-1`` in one call, as the prefill computed them, which gives the
same bits (the round-trip test checks the generated tokens).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import tmp_sibling
from ..errors import CorruptBlobError, InputError
from .plan import KVPlan, ResolvedPlan

MAGIC = b"KVZ\0"
FORMAT_VERSION = 1
FORMAT_NAME = "kakeya-prompt-cache"
_PREFIX = struct.Struct("<4sHHII")  # magic, version, reserved, header length, header CRC-32
_DTYPES = {"bfloat16": (torch.bfloat16, np.dtype("<i2")), "float32": (torch.float32, np.dtype("<f4")),
           "float16": (torch.float16, np.dtype("<f2"))}
_PLAN_FIELDS = ("k", "v", "boundary", "boundary_k", "boundary_v", "protect_tokens", "hot_tokens", "layers",
                "qprecond", "qprecond_variant", "qprecond_skip", "k_step_scale", "v_step_scale", "saliency_queries")
_PLAN_DEFAULTS = {"saliency_queries": 0}  # fields files written before them lack


# ---- writing: sections, the model's shape, the plan ----------------------------------------


class Payload:
    """Sections appended in order, each described as [offset, length, crc32]."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        entry = [self.size, len(data), zlib.crc32(data)]
        self.parts.append(data)
        self.size += len(data)
        return entry

    def tensor(self, t: torch.Tensor | None) -> dict[str, Any] | None:
        if t is None:
            return None
        name = str(t.dtype).removeprefix("torch.")
        if name not in _DTYPES:
            raise InputError(f"cannot store a {name} cache tensor (supported: {', '.join(_DTYPES)})")
        host = t.detach().to("cpu").contiguous()
        raw = (host.view(torch.int16) if host.dtype == torch.bfloat16 else host).numpy()
        return {"dtype": name, "shape": list(host.shape), "section": self.add(raw.astype(_DTYPES[name][1]).tobytes())}


def model_shape(config: Any) -> dict[str, Any]:
    """What a cache file must agree with to be loaded into a model."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return {"layers": int(config.num_hidden_layers), "kv_heads": int(config.num_key_value_heads),
            "head_dim": int(head_dim), "layer_types": list(types), "model_type": getattr(config, "model_type", None)}


def bf16_reference_bytes(config: Any, n_tokens: int) -> int:
    """Bytes of the same prompt's K/V in a stock bf16 cache (sliding-window layers keep their window),
    the size a bf16 safetensors dump of that cache would hold in tensors."""
    shape = model_shape(config)
    window = getattr(config, "sliding_window", None)
    per_token = 2 * 2 * shape["kv_heads"] * shape["head_dim"]  # K and V, 2 bytes each
    return sum(per_token * (min(n_tokens, window - 1) if t == "sliding_attention" and window else n_tokens)
               for t in shape["layer_types"])


def plan_header(plan: KVPlan | ResolvedPlan) -> dict[str, Any]:
    """The plan as the cache uses it: resolved codec specs, the Σ_q artifact by name."""
    if isinstance(plan, ResolvedPlan):  # codec_plan's specs name any calibrated tables themselves
        codec_plan = plan.codec_plan
        qprecond = None if plan.qprecond is None else plan.qprecond.name
    else:
        codec_plan, qprecond = plan, plan.qprecond
    out = {f: getattr(codec_plan, f) for f in _PLAN_FIELDS}
    out["qprecond"] = qprecond
    for key in ("layers", "qprecond_skip", "k_step_scale", "v_step_scale"):
        out[key] = None if out[key] is None else list(out[key])
    return out


def write(path: str | Path, header: dict[str, Any], payload: Payload) -> int:
    """Write ``header`` (JSON) and ``payload``'s sections to ``path`` atomically; returns the file size."""
    blob = json.dumps(header, separators=(",", ":")).encode()
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a folder")
    tmp = tmp_sibling(path)
    with open(tmp, "wb") as fh:
        fh.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(blob), zlib.crc32(blob)))
        fh.write(blob)
        for part in payload.parts:
            fh.write(part)
    tmp.replace(path)
    return path.stat().st_size


# ---- reading and checking ------------------------------------------------------------------


def plan_from_header(header: dict[str, Any], where: str) -> KVPlan:
    """The stored plan (resolved specs, Σ_q artifact by name) as a :class:`KVPlan`."""
    p = header["plan"]
    try:
        p = {**_PLAN_DEFAULTS, **p}
        return KVPlan(**{f: (tuple(p[f]) if isinstance(p[f], list) else p[f]) for f in _PLAN_FIELDS})
    except (KeyError, TypeError) as exc:
        raise CorruptBlobError(f"{where}: bad plan in the header ({exc})") from None


def check_model(header: dict[str, Any], config: Any, where: str) -> None:
    """Refuse a file written for a model of another shape (or one with a bad layer list)."""
    if header["model_shape"] != model_shape(config):
        raise InputError(f"{where} was written for a model of shape {header['model_shape']}, "
                         f"not this one ({model_shape(config)})")
    if len(header["layers"]) != config.num_hidden_layers:
        raise CorruptBlobError(f"{where}: {len(header['layers'])} layer entries for {config.num_hidden_layers} layers")


def read_header(path: str | Path) -> tuple[dict[str, Any], memoryview]:
    """The validated header and the payload of a cache file (every section's bounds and CRC checked)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"cache file {str(path)!r} does not exist")
    raw = memoryview(path.read_bytes())
    where = f"cache file {path.name}"
    if len(raw) < _PREFIX.size:
        raise CorruptBlobError(f"{where}: {len(raw)} bytes, shorter than its {_PREFIX.size}-byte prefix")
    magic, version, reserved, n_header, crc = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise CorruptBlobError(f"{where}: not a prompt-cache file (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION or reserved:
        raise CorruptBlobError(f"{where}: format version {version}, this library reads {FORMAT_VERSION}")
    if n_header > len(raw) - _PREFIX.size:
        raise CorruptBlobError(f"{where}: truncated: header of {n_header} bytes, {len(raw) - _PREFIX.size} remain")
    text = raw[_PREFIX.size : _PREFIX.size + n_header]
    if zlib.crc32(text) != crc:
        raise CorruptBlobError(f"{where}: header checksum mismatch")
    try:
        header = json.loads(bytes(text))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptBlobError(f"{where}: header is not JSON ({exc})") from None
    payload = raw[_PREFIX.size + n_header :]
    _check_header(header, len(payload), where)
    _check_sections(header, payload, where)
    return header, payload


def _check_header(h: Any, payload_len: int, where: str) -> None:
    required = {"format": str, "model": str, "model_shape": dict, "plan": dict, "tokens": int, "token_ids": list,
                "layers": list, "payload_bytes": int}
    if not isinstance(h, dict):
        raise CorruptBlobError(f"{where}: header is not a JSON object")
    for key, kind in required.items():
        if not isinstance(h.get(key), kind):
            raise CorruptBlobError(f"{where}: header field {key!r} missing or not a {kind.__name__}")
    if h["format"] != FORMAT_NAME:
        raise CorruptBlobError(f"{where}: header format {h['format']!r}, expected {FORMAT_NAME!r}")
    if h["payload_bytes"] != payload_len:
        raise CorruptBlobError(f"{where}: payload holds {payload_len} bytes, the header says {h['payload_bytes']} "
                               "(truncated or extended file)")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in h["token_ids"]):
        raise CorruptBlobError(f"{where}: token ids must be non-negative integers")
    if len(h["token_ids"]) not in (h["tokens"], h["tokens"] + 1) or h["tokens"] < 1:
        raise CorruptBlobError(f"{where}: {len(h['token_ids'])} token ids for a cache of {h['tokens']} tokens")


def _sections(h: dict[str, Any]) -> list[list[int]]:
    out = []
    for layer in h["layers"]:
        if not isinstance(layer, dict):
            raise CorruptBlobError("a layer entry of the header is not an object")
        for key, value in layer.items():
            if key.endswith("_blobs"):
                out.extend(value)
            elif isinstance(value, dict) and "section" in value:
                out.append(value["section"])
    return out


def _check_sections(h: dict[str, Any], payload: memoryview, where: str) -> None:
    """Every section is [offset, length, crc32] of ints, they tile the payload, and their CRCs match."""
    sections = _sections(h)
    pos = 0
    for s in sections:
        if not (isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and v >= 0 for v in s)):
            raise CorruptBlobError(f"{where}: bad section entry {s!r}")
        offset, length, crc = s
        if offset != pos:
            raise CorruptBlobError(f"{where}: section at {offset} does not follow the previous one (expected {pos})")
        if offset + length > len(payload):
            raise CorruptBlobError(f"{where}: truncated: section [{offset}, +{length}) beyond {len(payload)} bytes")
        if zlib.crc32(payload[offset : offset + length]) != crc:
            raise CorruptBlobError(f"{where}: checksum mismatch in the section at payload byte {offset}")
        pos = offset + length
    if pos != len(payload):
        raise CorruptBlobError(f"{where}: {len(payload) - pos} payload bytes belong to no section")


def read_tensor(entry: Any, payload: memoryview, where: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES or not isinstance(entry.get("shape"), list):
        raise CorruptBlobError(f"{where}: bad tensor entry {entry!r}")
    torch_dtype, np_dtype = _DTYPES[entry["dtype"]]
    dims = tuple(entry["shape"])
    if not all(isinstance(d, int) and d >= 0 for d in dims) or len(dims) != 4:
        raise CorruptBlobError(f"{where}: bad tensor shape {dims}")
    if shape is not None and dims != shape:
        raise CorruptBlobError(f"{where}: tensor shape {dims}, expected {shape}")
    offset, length, _ = entry["section"]
    if length != int(np.prod(dims)) * np_dtype.itemsize:
        raise CorruptBlobError(f"{where}: {length} bytes for a {entry['dtype']} tensor of shape {dims}")
    arr = np.frombuffer(payload[offset : offset + length], dtype=np_dtype).reshape(dims)
    t = torch.from_numpy(arr.copy())
    return t.view(torch.bfloat16) if torch_dtype == torch.bfloat16 else t


