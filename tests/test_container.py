"""Versioned blob container: header/section round trip, a ledger that sums to the blob length, and
CorruptBlobError (never a crash or a silent success) for every flipped byte and every truncation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from kakeya_lib import container
from kakeya_lib.container import FORMAT_VERSION, MAGIC, SECTION_TAGS, read_container, write_container
from kakeya_lib.errors import CorruptBlobError, InputError

SPEC = "kakeya:bits=2,k=8"
SECTIONS = [("blocks", b"\x01\x02\x03"), ("skeleton", bytes(range(40))), ("codes", b""), ("norms", b"\xaa\xbb")]


@pytest.fixture
def blob() -> bytes:
    return write_container(SPEC, (17, 9), np.dtype("float32"), SECTIONS)


def _reseal(body: bytes | bytearray) -> bytes:
    """Recompute the trailing CRC so that only the structural checks can object."""
    body = bytes(body)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFF_FFFF)


def test_round_trip_of_header_and_sections(blob):
    box = read_container(blob)
    assert box.spec == SPEC
    assert (box.n_rows, box.n_cols) == (17, 9)
    assert box.dtype == np.dtype("float32")
    assert list(box.sections) == [name for name, _ in SECTIONS]  # payload order kept
    for name, payload in SECTIONS:
        assert bytes(box.section(name)) == payload


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_supported_dtype_round_trips(dtype):
    box = read_container(write_container("identity", (1, 2), np.dtype(dtype), []))
    assert box.dtype == np.dtype(dtype)
    assert box.sections == {}


def test_layout_matches_the_documented_offsets(blob):
    assert blob[:4] == MAGIC == b"KKTV"
    assert blob[4] == FORMAT_VERSION
    assert struct.unpack_from("<IIH", blob, 6) == (17, 9, len(SPEC))
    assert blob[16 : 16 + len(SPEC)] == SPEC.encode()
    assert blob[16 + len(SPEC)] == len(SECTIONS)
    assert struct.unpack("<I", blob[-4:])[0] == zlib.crc32(blob[:-4])


def test_ledger_sums_to_blob_length(blob):
    box = read_container(blob)
    ledger = box.ledger()
    assert sum(ledger.values()) == len(blob)
    header = 16 + len(SPEC) + 1 + 5 * len(SECTIONS) + 4
    assert ledger == {"header": header, **{name: len(payload) for name, payload in SECTIONS}}


def test_reads_bytearray_and_memoryview(blob):
    for view in (bytearray(blob), memoryview(blob)):
        box = read_container(view)
        assert box.spec == SPEC
        assert bytes(box.section("skeleton")) == bytes(range(40))


def test_unicode_spec_and_large_shape_round_trip():
    spec = "kakeya:codebook=/tmp/tabl\u00e9.f32"
    box = read_container(write_container(spec, (2**32 - 1, 4096), np.dtype("float16"), [("raw", b"x")]))
    assert box.spec == spec
    assert box.n_rows == 2**32 - 1


def test_missing_section_lookup_is_corrupt_and_lists_what_exists(blob):
    with pytest.raises(CorruptBlobError, match="no 'outliers' section.*blocks, skeleton, codes, norms"):
        read_container(blob).section("outliers")


def test_every_single_byte_change_anywhere_is_detected(blob):
    for pos in range(len(blob)):
        for value in range(256):
            if value == blob[pos]:
                continue
            bad = bytearray(blob)
            bad[pos] = value
            with pytest.raises(CorruptBlobError):
                read_container(bytes(bad))


def test_every_truncation_is_detected(blob):
    for length in range(len(blob)):
        with pytest.raises(CorruptBlobError):
            read_container(blob[:length])


def test_appended_bytes_are_detected(blob):
    for extra in (b"\x00", b"\x00" * 4, blob[-4:]):
        with pytest.raises(CorruptBlobError):
            read_container(blob + extra)


def test_wrong_magic_says_it_is_not_a_kakeya_blob(blob):
    with pytest.raises(CorruptBlobError, match=r"not a kakeya blob: magic b'KKTX', expected b'KKTV'"):
        read_container(b"KKTX" + blob[4:])


def test_unsupported_version_names_both_versions(blob):
    bad = blob[:4] + bytes([FORMAT_VERSION + 1]) + blob[5:]
    message = f"version {FORMAT_VERSION + 1} is not supported.*reads {FORMAT_VERSION}"
    with pytest.raises(CorruptBlobError, match=message):
        read_container(_reseal(bad[:-4]))


def test_checksum_mismatch_is_reported(blob):
    bad = bytearray(blob)
    bad[20] ^= 0x01
    with pytest.raises(CorruptBlobError, match="checksum mismatch"):
        read_container(bytes(bad))


def test_short_garbage_and_non_bytes_are_corrupt():
    with pytest.raises(CorruptBlobError, match="truncated"):
        read_container(b"KKTV")
    with pytest.raises(CorruptBlobError, match="expected bytes"):
        read_container("KKTV" * 10)  # type: ignore[arg-type]


# Structural errors behind a valid checksum (a buggy writer, not bit rot).


def test_unknown_dtype_code_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    bad[5] = 9
    with pytest.raises(CorruptBlobError, match="unknown dtype code 9"):
        read_container(_reseal(bad))


def test_unknown_section_tag_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    table = 16 + len(SPEC) + 1
    bad[table] = 200
    with pytest.raises(CorruptBlobError, match="unknown section tag 200"):
        read_container(_reseal(bad))


def test_section_lengths_that_disagree_with_the_blob_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    table = 16 + len(SPEC) + 1
    struct.pack_into("<I", bad, table + 1, 4)  # "blocks" claims 4 bytes instead of 3
    with pytest.raises(CorruptBlobError, match="section lengths add up to"):
        read_container(_reseal(bad))


def test_duplicate_section_behind_valid_crc():
    good = write_container("x", (1, 1), np.dtype("float32"), [("codes", b"a"), ("norms", b"b")])
    bad = bytearray(good[:-4])
    table = 16 + 1 + 1
    bad[table + 5] = bad[table]  # second entry gets the first entry's tag
    with pytest.raises(CorruptBlobError, match="appears twice"):
        read_container(_reseal(bad))


def test_spec_length_beyond_the_blob_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    struct.pack_into("<H", bad, 14, 60000)
    with pytest.raises(CorruptBlobError, match="truncated inside the codec spec"):
        read_container(_reseal(bad))


def test_section_count_beyond_the_blob_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    bad[16 + len(SPEC)] = 200
    with pytest.raises(CorruptBlobError, match="truncated inside the section table"):
        read_container(_reseal(bad))


def test_invalid_utf8_spec_behind_valid_crc(blob):
    bad = bytearray(blob[:-4])
    bad[16] = 0xFF
    with pytest.raises(CorruptBlobError, match="UTF-8"):
        read_container(_reseal(bad))


# Writer-side validation.


def test_writer_rejects_unknown_and_duplicate_section_names():
    with pytest.raises(InputError, match="unknown section name 'extra'"):
        write_container("x", (1, 1), np.dtype("float32"), [("extra", b"")])
    with pytest.raises(InputError, match="unique"):
        write_container("x", (1, 1), np.dtype("float32"), [("codes", b""), ("codes", b"")])


def test_writer_rejects_unsupported_dtype_and_oversized_fields():
    with pytest.raises(InputError, match="unsupported dtype int32"):
        write_container("x", (1, 1), np.dtype("int32"), [])
    with pytest.raises(InputError, match="uint32"):
        write_container("x", (2**32, 1), np.dtype("float32"), [])
    with pytest.raises(InputError, match="65535"):
        write_container("x" * 70000, (1, 1), np.dtype("float32"), [])


def test_section_tags_are_stable():
    # Tags are part of the on-disk format: renumbering would break old blobs.
    assert SECTION_TAGS == {
        1: "blocks", 2: "skeleton", 3: "centres", 4: "codes", 5: "norms", 6: "outliers", 7: "codebook", 8: "raw",
        9: "scales", 10: "entropy",
    }
    assert container.DTYPE_CODES == {1: np.dtype("float16"), 2: np.dtype("float32"), 3: np.dtype("float64")}
