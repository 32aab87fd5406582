"""Exception types. Every error names what was wrong and, where possible, what to do."""

from __future__ import annotations


class KakeyaError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(KakeyaError, ValueError):
    """An input array is unusable: wrong rank, dtype, empty, NaN/Inf, unsupported size."""


class SpecError(KakeyaError, ValueError):
    """A codec spec string is malformed, names an unknown codec or key, or has a bad value."""


class CorruptBlobError(KakeyaError, ValueError):
    """Encoded bytes are truncated, corrupted or from an incompatible format version."""


class BackendError(KakeyaError, RuntimeError):
    """The requested array backend (e.g. a GPU) is not usable on this machine."""


class MissingDependencyError(KakeyaError, ImportError):
    """A package the requested operation needs is not installed; the message says how to install it."""
