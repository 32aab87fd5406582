"""Versioned binary container that every codec's ``encode`` returns.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"KKTV"
    4       1     format version (FORMAT_VERSION)
    5       1     input dtype code (DTYPE_CODES)
    6       4     n_rows  (uint32)
    10      4     n_cols  (uint32)
    14      2     spec length S (uint16)
    16      S     canonical codec spec, UTF-8 ("name:key=value,...", non-default keys only)
    16+S    1     number of sections M
    ...     5*M   section table: tag (uint8), length (uint32), in payload order
    ...     ...   section payloads, concatenated
    end-4   4     CRC-32 of every preceding byte

Sections carry a ledger name from :data:`SECTION_TAGS`; the per-component byte ledger is read
straight off this table, so it always sums to ``len(blob)``. :func:`read_container` validates
magic, version, every length and the checksum, and raises :class:`CorruptBlobError` otherwise.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptBlobError, InputError

MAGIC = b"KKTV"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sBBIIH")  # magic, version, dtype, rows, cols, spec length
_SECTION = struct.Struct("<BI")
_CRC = struct.Struct("<I")

# dtype of the array given to encode (decode returns the same dtype)
DTYPE_CODES = {1: np.dtype("float16"), 2: np.dtype("float32"), 3: np.dtype("float64")}
_CODE_OF_DTYPE = {v: k for k, v in DTYPE_CODES.items()}

# Ledger names of sections. Tags are part of the format: never renumber, only append.
SECTION_TAGS = {
    1: "blocks",  # per-block table (ranks, centre counts, outlier counts)
    2: "skeleton",  # PCA means and bases
    3: "centres",  # k-means centres
    4: "codes",  # packed integer codes (centre ids, quantiser indices)
    5: "norms",  # per-vector scalars (projection t, residual norm)
    6: "outliers",  # sparse (position, value) pairs
    7: "codebook",  # custom quantiser levels
    8: "raw",  # uncompressed values
    9: "scales",  # per-group / per-block quantiser scales and offsets
    10: "entropy",  # entropy-coded (rANS) quantiser indices
}
_TAG_OF_NAME = {v: k for k, v in SECTION_TAGS.items()}


@dataclass(frozen=True)
class Container:
    """A parsed blob: header fields and the named section payloads (in order)."""

    spec: str
    n_rows: int
    n_cols: int
    dtype: np.dtype
    sections: dict[str, memoryview]
    header_nbytes: int  # fixed header + spec + section table + checksum

    def section(self, name: str) -> memoryview:
        if name not in self.sections:
            raise CorruptBlobError(f"blob has no {name!r} section (found: {', '.join(self.sections) or 'none'})")
        return self.sections[name]

    def ledger(self) -> dict[str, int]:
        """Bytes per component; sums to the blob's length."""
        out = {"header": self.header_nbytes}
        out.update({name: len(buf) for name, buf in self.sections.items()})
        return out


def dtype_code(dtype: np.dtype) -> int:
    dt = np.dtype(dtype)
    if dt not in _CODE_OF_DTYPE:
        raise InputError(f"unsupported dtype {dt}; give float16, float32 or float64")
    return _CODE_OF_DTYPE[dt]


def write_container(spec: str, shape: tuple[int, int], dtype: np.dtype, sections: list[tuple[str, bytes]]) -> bytes:
    """Assemble a blob. ``sections`` are (ledger name, payload) in payload order; names are unique."""
    n_rows, n_cols = (int(s) for s in shape)
    spec_bytes = spec.encode("utf-8")
    if len(spec_bytes) > 0xFFFF:
        raise InputError("codec spec is longer than 65535 bytes")
    if not (0 <= n_rows <= 0xFFFF_FFFF and 0 <= n_cols <= 0xFFFF_FFFF):
        raise InputError(f"shape {shape} does not fit the container's uint32 fields")
    names = [name for name, _ in sections]
    if len(set(names)) != len(names) or len(names) > 255:
        raise InputError(f"section names must be unique and at most 255: {names}")
    parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, dtype_code(dtype), n_rows, n_cols, len(spec_bytes)), spec_bytes]
    parts.append(bytes([len(sections)]))
    for name, payload in sections:
        if name not in _TAG_OF_NAME:
            raise InputError(f"unknown section name {name!r}")
        if len(payload) > 0xFFFF_FFFF:
            raise InputError(f"section {name!r} is larger than 4 GiB; encode smaller chunks")
        parts.append(_SECTION.pack(_TAG_OF_NAME[name], len(payload)))
    parts.extend(bytes(payload) for _, payload in sections)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body) & 0xFFFF_FFFF)


def read_container(blob: bytes | bytearray | memoryview) -> Container:
    """Parse and validate a blob written by :func:`write_container`."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CorruptBlobError(f"expected bytes, got {type(blob).__name__}")
    mv = memoryview(blob).cast("B") if isinstance(blob, memoryview) else memoryview(blob)
    total = len(mv)
    if total < _FIXED.size + 1 + _CRC.size:
        raise CorruptBlobError(f"blob is truncated: {total} bytes is shorter than any valid header")
    magic, version, code, n_rows, n_cols, spec_len = _FIXED.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CorruptBlobError(f"not a kakeya blob: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"blob format version {version} is not supported (this library reads {FORMAT_VERSION})")
    (crc,) = _CRC.unpack_from(mv, total - _CRC.size)
    if zlib.crc32(mv[: total - _CRC.size]) & 0xFFFF_FFFF != crc:
        raise CorruptBlobError("checksum mismatch: the blob is corrupted or truncated")
    if code not in DTYPE_CODES:
        raise CorruptBlobError(f"unknown dtype code {code}")
    pos = _FIXED.size
    if pos + spec_len + 1 > total - _CRC.size:
        raise CorruptBlobError("blob is truncated inside the codec spec")
    try:
        spec = bytes(mv[pos : pos + spec_len]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptBlobError("codec spec is not valid UTF-8") from exc
    pos += spec_len
    n_sections = mv[pos]
    pos += 1
    table_end = pos + n_sections * _SECTION.size
    if table_end > total - _CRC.size:
        raise CorruptBlobError("blob is truncated inside the section table")
    entries = []
    for i in range(n_sections):
        tag, length = _SECTION.unpack_from(mv, pos + i * _SECTION.size)
        if tag not in SECTION_TAGS:
            raise CorruptBlobError(f"unknown section tag {tag}")
        entries.append((SECTION_TAGS[tag], length))
    payload_end = table_end + sum(length for _, length in entries)
    if payload_end != total - _CRC.size:
        raise CorruptBlobError(
            f"section lengths add up to {payload_end - table_end} bytes but the blob holds {total - _CRC.size - table_end}"
        )
    sections: dict[str, memoryview] = {}
    pos = table_end
    for name, length in entries:
        if name in sections:
            raise CorruptBlobError(f"section {name!r} appears twice")
        sections[name] = mv[pos : pos + length]
        pos += length
    return Container(
        spec=spec,
        n_rows=n_rows,
        n_cols=n_cols,
        dtype=DTYPE_CODES[code],
        sections=sections,
        header_nbytes=table_end + _CRC.size,
    )
