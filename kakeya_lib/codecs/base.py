"""The codec interface every codec implements, with the input checks they all share.

A codec turns a 2-D float array ``[N, D]`` (numpy or CuPy) into bytes and back::

    blob = codec.encode(x)            # bytes: a container (kakeya_lib.container)
    x_hat = codec.decode(blob)        # array [N, D], dtype of x, on the compute backend
    codec.ledger(blob)                # {"header": ..., "skeleton": ..., ...}, sums to len(blob)

The compression ratio anywhere in the project is ``2*N*D / len(blob)`` (vs bf16) from these
bytes (:func:`ratio_vs_bf16`).
"""

from __future__ import annotations

import abc
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..backend import default_namespace, get_namespace
from ..container import Container, dtype_code, read_container, write_container
from ..errors import CorruptBlobError, InputError
from .spec import format_spec


def validate_input(x: Any, xp: ModuleType, max_cols: int | None = None) -> None:
    """Reject anything a codec cannot take, with a message naming the problem."""
    if x.ndim != 2:
        raise InputError(f"expected a 2-D array [N, D], got {x.ndim}-D with shape {tuple(x.shape)}")
    n, d = (int(s) for s in x.shape)
    if n == 0 or d == 0:
        raise InputError(f"expected a non-empty array, got shape ({n}, {d})")
    if x.dtype.kind != "f":
        raise InputError(f"expected a floating-point array, got dtype {x.dtype}")
    dtype_code(x.dtype)  # float16/32/64 only
    if max_cols is not None and d > max_cols:
        raise InputError(f"D={d} is larger than this codec supports (max {max_cols})")
    if not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise InputError(f"input holds {bad} NaN/Inf value(s); clean them before encoding")


def ratio_vs_bf16(n_rows: int, n_cols: int, nbytes: int) -> float:
    """Compression ratio against a bfloat16 copy of the same array, from real bytes."""
    return 2.0 * n_rows * n_cols / nbytes


class Codec(abc.ABC):
    """Base class: subclasses set ``name`` and ``Params`` and implement the two array hooks."""

    name: ClassVar[str]
    Params: ClassVar[type]
    max_cols: ClassVar[int | None] = None

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    def groups_by_head(self) -> bool:
        """Whether the codec groups rows per KV head (then it has a ``heads`` parameter)."""
        return False

    @property
    def spec(self) -> str:
        """Canonical spec string (non-default keys only)."""
        return format_spec(self.name, self.params)

    def __repr__(self) -> str:
        return f"<codec {self.spec}>"

    # -- public API -------------------------------------------------------------------------
    def encode(self, x: Any, weights: Any | None = None) -> bytes:
        """Encode ``x`` [N, D] (float16/32/64, numpy or CuPy) to bytes.

        ``weights`` [N] (optional, >= 0) weight rows in the fits of codecs that use them.
        """
        xp, (x, weights) = get_namespace(x, weights)
        validate_input(x, xp, self.max_cols)
        if weights is not None:
            weights = self._check_weights(weights, int(x.shape[0]), xp)
        sections = self._encode(x, weights, xp)
        return write_container(self.spec, tuple(x.shape), x.dtype, sections)

    def decode(self, blob: bytes, device: str | None = None) -> Any:
        """Decode a blob made by this codec into an array [N, D] of the encoded dtype.

        ``device`` = ``cpu`` | ``gpu`` | ``auto`` overrides ``KAKEYA_DEVICE`` for the output side.
        """
        box = self._open(blob)
        xp = default_namespace(device)
        out = self._decode(box, xp)
        if tuple(out.shape) != (box.n_rows, box.n_cols):
            raise CorruptBlobError(f"decoded shape {tuple(out.shape)} != header shape {(box.n_rows, box.n_cols)}")
        return out.astype(box.dtype, copy=False)

    def ledger(self, blob: bytes) -> dict[str, int]:
        """Bytes per component of ``blob`` (sums to ``len(blob)``)."""
        return self._open(blob).ledger()

    # -- hooks ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _encode(self, x: Any, weights: Any | None, xp: ModuleType) -> list[tuple[str, bytes]]:
        """Return the (section name, payload) list for a validated input."""

    @abc.abstractmethod
    def _decode(self, box: Container, xp: ModuleType) -> Any:
        """Rebuild the float array from a validated container."""

    # -- helpers ----------------------------------------------------------------------------
    def _open(self, blob: bytes) -> Container:
        box = read_container(blob)
        if box.spec != self.spec:
            raise CorruptBlobError(
                f"blob was encoded by {box.spec!r}, not by this codec {self.spec!r}; "
                "use kakeya_lib.codecs.decode(blob), which reads the spec from the blob"
            )
        return box

    @staticmethod
    def _check_weights(w: Any, n: int, xp: ModuleType) -> Any:
        w = xp.asarray(w, dtype=xp.float32)
        if w.shape != (n,):
            raise InputError(f"weights must have shape ({n},), got {tuple(w.shape)}")
        if not bool(xp.isfinite(w).all()) or bool((w < 0).any()):
            raise InputError("weights must be finite and non-negative")
        return w


def as_host_bytes(a: Any) -> bytes:
    """Bytes of an array (numpy or CuPy), row-major."""
    if not isinstance(a, np.ndarray):
        a = a.get()
    return np.ascontiguousarray(a).tobytes()
