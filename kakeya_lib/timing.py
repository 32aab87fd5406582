"""Opt-in per-stage wall-clock accounting for benchmarks (off by default, ~free when off).

>>> with STAGES.collect() as totals:
...     codec.encode(x)
>>> totals  # {"encode/skeleton": 0.012, ...} seconds

On CuPy the device is synchronised at each stage boundary so times are real.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

import numpy as np


class StageTimer:
    def __init__(self) -> None:
        self._totals: dict[str, float] | None = None

    @contextmanager
    def collect(self) -> Iterator[dict[str, float]]:
        """Record stage times while the block runs; yields the (filled-in) totals dict."""
        previous = self._totals
        self._totals = defaultdict(float)
        try:
            yield self._totals
        finally:
            self._totals = previous

    @contextmanager
    def stage(self, name: str, xp: ModuleType = np) -> Iterator[None]:
        if self._totals is None:
            yield
            return
        _sync(xp)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(xp)
            self._totals[name] += time.perf_counter() - start


def _sync(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


STAGES = StageTimer()
