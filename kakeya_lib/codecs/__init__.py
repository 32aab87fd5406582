"""The codec registry: every codec is addressed by a spec string ``name[:key=value,...]``.

>>> from kakeya_lib import codecs
>>> codec = codecs.get("kakeya:bits=3,pca=rsvd,rank=32")
>>> blob = codec.encode(x)          # bytes; ratio vs bf16 = 2*N*D / len(blob)
>>> x_hat = codecs.decode(blob)     # the spec is read from the blob
"""

from __future__ import annotations

from typing import Any

from ..container import read_container
from ..errors import SpecError
from .base import Codec, ratio_vs_bf16
from .besicovitch import BesicovitchCodec
from .fp8 import Fp8Codec
from .identity import IdentityCodec
from .intq import IntCodec
from .kakeya import KakeyaCodec
from .kivi import KiviCodec
from .spec import build_params, format_spec, split_spec
from .turboquant import TurboQuantCodec

_REGISTRY: dict[str, type[Codec]] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Add a codec class to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"codec name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (IdentityCodec, KakeyaCodec, TurboQuantCodec, IntCodec, KiviCodec, Fp8Codec, BesicovitchCodec):
    register(_cls)
# calibrated: they need a kvtc_calib artifact
register(__import__(f"{__name__}.kvtc", fromlist=["KVTCCodec"]).KVTCCodec)
register(__import__(f"{__name__}.klt", fromlist=["KLTCodec"]).KLTCodec)


def names() -> list[str]:
    """Registered codec names, sorted."""
    return sorted(_REGISTRY)


def get(spec: str) -> Codec:
    """Build a codec from a spec string; unknown names or keys raise :class:`SpecError`."""
    name, raw = split_spec(spec)
    if name not in _REGISTRY:
        raise SpecError(f"unknown codec {name!r}; registered codecs: {', '.join(names())}")
    cls = _REGISTRY[name]
    return cls(build_params(cls.Params, raw, name))


def decode(blob: bytes, device: str | None = None) -> Any:
    """Decode any blob with the codec named in its own header."""
    return get(read_container(blob).spec).decode(blob, device=device)


def with_keys(spec: str, **keys: Any) -> str:
    """``spec`` with ``keys`` set (added or replaced), validated and in canonical form.

    >>> with_keys("kakeya:step=0.55,entropy=1", step=0.7)
    'kakeya:entropy=1,step=0.7'
    """
    name, raw = split_spec(spec)
    raw.update({k: str(v) for k, v in keys.items()})
    body = ",".join(f"{k}={v}" for k, v in raw.items())
    return get(f"{name}:{body}" if body else name).spec


def for_heads(spec: str, heads: int) -> str:
    """``spec`` with ``heads`` filled in for codecs that group rows by head (``kivi``, ``fp8``,
    ``kvtc``) when the spec leaves it at its default, so the rows of one cache tensor
    (:mod:`kakeya_lib.layout`) are grouped per head; other specs come back canonical, unchanged.

    The returned canonical spec (e.g. ``kivi:heads=3``) is what results are labelled with; an
    explicit ``heads=1`` is kept.
    """
    codec = get(spec)
    if not codec.groups_by_head or codec.params.heads != 1 or heads == 1:
        return codec.spec
    if "heads" in split_spec(spec)[1]:  # heads=1 given explicitly: keep it
        return codec.spec
    return with_keys(spec, heads=heads)


def ledger(blob: bytes) -> dict[str, int]:
    """Per-component byte ledger of any blob (sums to ``len(blob)``)."""
    return read_container(blob).ledger()


__all__ = ["Codec", "decode", "for_heads", "format_spec", "get", "ledger", "names", "ratio_vs_bf16", "register",
           "with_keys"]
