"""The identity codec: stores the input's own bytes (lossless; the reference every harness
compares against, e.g. Δppl = 0 and KL = 0 exactly)."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..container import Container
from ..errors import CorruptBlobError
from .base import Codec, as_host_bytes


@dataclass(frozen=True)
class IdentityParams:
    """No parameters."""


class IdentityCodec(Codec):
    name = "identity"
    Params = IdentityParams

    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        return [("raw", as_host_bytes(x.astype(x.dtype.newbyteorder("<"), copy=False)))]

    def _decode(self, box: Container, xp: ModuleType) -> Any:
        raw = box.section("raw")
        dt = box.dtype.newbyteorder("<")
        count = box.n_rows * box.n_cols
        if len(raw) != count * dt.itemsize:
            raise CorruptBlobError(f"raw section holds {len(raw)} bytes, shape needs {count * dt.itemsize}")
        host = np.frombuffer(raw, dtype=dt, count=count).reshape(box.n_rows, box.n_cols)
        return xp.asarray(host.astype(box.dtype))
