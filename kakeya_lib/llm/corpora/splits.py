"""The eval / calib split: each document assigned once by a hash of its id (:func:`split_of`)."""

from __future__ import annotations

import hashlib

from ...errors import InputError
from .documents import Corpus

CALIB_FRACTION = 0.10

SPLITS = ("eval", "calib")


def split_of(doc_id: str) -> str:
    """``"calib"`` for about :data:`CALIB_FRACTION` of document ids, ``"eval"`` for the rest.

    A SHA-256 of the id (not Python's salted ``hash``) keeps the assignment identical across
    processes, machines and seeds.
    """
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "calib" if h < CALIB_FRACTION * 2.0**64 else "eval"


def split_rows(corpus: Corpus, split: str) -> list[int]:
    """Row numbers of the non-blank documents of ``split``, ordered by document id."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    keep = corpus.nonblank
    rows = [r for r, i in enumerate(corpus.ids) if keep[r] and split_of(i) == split]
    # Sorting by id makes the order independent of how the source lists its documents.
    return sorted(rows, key=lambda r: corpus.ids[r])
