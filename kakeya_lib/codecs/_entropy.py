"""Quantiser indices of the fixed-rate baselines (turboquant, int, kivi), bit-packed or rANS-coded.

The three codecs share one spec key ``entropy`` and one storage helper:

* ``entropy=0``: the indices bit-packed at ``bits`` bits each (:mod:`kakeya_lib.bitpack`), in the
  ``codes`` section, as the codecs always did (those blobs are byte-identical to before);
* ``entropy=1``: **one** ANS stream (:mod:`kakeya_lib.stages.rans`, the coder of the kakeya
  recipes) of all indices in row-major order, in the ``entropy`` section;
* ``entropy=2``: one rANS stream, each with its own frequency table, per *coordinate* (a column of
  the index matrix, or a row with ``tables="rows"``), concatenated in the ``entropy`` section.

Decoding gives back exactly the indices that were coded, so ``entropy`` never changes the decoded
array, only the bytes. Why two granularities: after a fixed rotation every coordinate of a
*random* direction has the same N(0, 1/d) law, so one table is enough on isotropic data; keys
typically have a shared mean and heavy channels, so each coordinate's indices have their own law
and per-coordinate tables win although each stream pays its own header, table and lane states
(~40 bytes per stream of 4096 indices at 4 bits: header, table, the coder's flushed state).
Measured on [4096, 64] inputs (bits per index, including every stream byte; ``synthetic.kv_like``
is the key-shaped proxy)::

                          packed  entropy=1  entropy=2
    turboquant:bits=4
        gaussian            4      3.77       3.84
        kv_like             4      3.76       2.86
    int:bits=4 (group 32)
        gaussian            4      3.87       3.93
        kv_like             4      3.89       3.16
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from ..backend import to_device, to_host
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..container import Container
from ..errors import CorruptBlobError
from ..stages import rans

ENTROPY_MODES = (0, 1, 2)


def check_entropy(entropy: int) -> None:
    """Raise ``ValueError`` (a SpecError once parsed) unless ``entropy`` is 0, 1 or 2."""
    if entropy not in ENTROPY_MODES:
        raise ValueError(f"entropy must be 0 (bit-packed), 1 (one rANS table) or 2 (one per coordinate), got {entropy}")


def index_section(entropy: int) -> str:
    """Name of the section that holds the indices: ``codes`` (bit-packed) or ``entropy`` (rANS)."""
    return "entropy" if entropy else "codes"


def check_sections(box: Container, expected: set[str]) -> None:
    """Refuse a blob whose sections are not exactly ``expected`` (e.g. an ``entropy`` section in an
    ``entropy=0`` blob), so a spliced or mislabelled blob cannot decode to garbage."""
    found = set(box.sections)
    if found != expected:
        raise CorruptBlobError(
            f"blob has sections {', '.join(sorted(found)) or 'none'}; this codec expects {', '.join(sorted(expected))}"
        )


def encode_indices(idx: Any, bits: int, entropy: int, xp: ModuleType,
                   tables: Literal["cols", "rows"] = "cols") -> bytes:
    """Bytes of the quantiser indices ``idx`` in the layout that ``entropy`` selects.

    Parameters
    ----------
    idx : integer array [rows, cols] (numpy or CuPy), values in ``[0, 2**bits)``
    bits : int in 1..8, the quantiser's index width
    entropy : 0 (bit-packed, row-major), 1 (one rANS stream, row-major) or 2 (one stream per
        column, or per row with ``tables="rows"``, concatenated in that order)
    xp : array namespace of ``idx``
    tables : which lines of ``idx`` are the coordinates that get a table each (``entropy=2``)

    Returns
    -------
    bytes; :func:`decode_indices` needs only the shape, ``bits``, ``entropy`` and ``tables``.
    """
    if not entropy:
        return to_host(pack_bits(idx.reshape(-1), bits)).tobytes()
    host = to_host(idx)  # the coder is host numpy
    if entropy == 1:
        return rans.encode(host.reshape(-1), 1 << bits)
    lines = host.T if tables == "cols" else host
    return b"".join(rans.encode_many([np.ascontiguousarray(line) for line in lines], 1 << bits))


def decode_indices(raw: Any, shape: tuple[int, int], bits: int, entropy: int, xp: ModuleType,
                   tables: Literal["cols", "rows"] = "cols") -> Any:
    """Inverse of :func:`encode_indices`: int64 indices [rows, cols] on ``xp``.

    Raises :class:`CorruptBlobError` unless ``raw`` is exactly the bytes of that many indices
    (the packed length, or rANS streams that decode cleanly and end at the end of ``raw``).
    """
    rows, cols = shape
    count = rows * cols
    if not entropy:
        if len(raw) != packed_nbytes(count, bits):
            raise CorruptBlobError(f"codes section holds {len(raw)} bytes, expected {packed_nbytes(count, bits)}")
        return unpack_bits(xp.asarray(np.frombuffer(raw, dtype=np.uint8)), bits, count).reshape(rows, cols)
    if not 1 <= count < 1 << 32:  # the coder's limits; a valid header never breaks them
        raise CorruptBlobError(f"cannot hold {count} rANS-coded indices")
    if entropy == 1:
        symbols, used = rans.decode_many(raw, [count], 1 << bits)
        out = symbols[0].reshape(rows, cols)
    else:
        n_lines, length = (cols, rows) if tables == "cols" else (rows, cols)
        symbols, used = rans.decode_many(raw, [length] * n_lines, 1 << bits)
        out = np.stack(symbols, axis=1 if tables == "cols" else 0)
    if used != len(raw):  # trailing bytes mean the section was not written by this codec
        raise CorruptBlobError(f"entropy section holds {len(raw)} bytes, its rANS streams use {used}")
    return to_device(out.astype(np.int64), xp)
