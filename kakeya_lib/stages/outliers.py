"""Outlier compensation (spec §1.11): coordinates of the scaled residual with ``|z| > T`` are
kept as sparse (flat position, value) pairs and overwrite the quantised value at decode."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import CorruptBlobError


def find(z: Any, threshold: float, xp: ModuleType) -> tuple[Any, Any]:
    """Flat positions (ascending, int64) and values of entries of z [n, w] with |z| > threshold."""
    flat = z.reshape(-1)
    pos = xp.nonzero(xp.abs(flat) > threshold)[0].astype(xp.int64)
    return pos, flat[pos]


def apply(zhat: Any, positions: Any, values: Any, xp: ModuleType) -> Any:
    """Overwrite zhat [n, w] at the flat positions with values (in place; returns zhat)."""
    if positions.size == 0:
        return zhat
    flat = zhat.reshape(-1)
    if int(positions.max()) >= flat.size or int(positions.min()) < 0:
        raise CorruptBlobError("outlier position lies outside the block")
    if positions.size > 1 and not bool((positions[1:] > positions[:-1]).all()):
        raise CorruptBlobError("outlier positions are not strictly ascending")
    flat[positions] = values
    return flat.reshape(zhat.shape)
