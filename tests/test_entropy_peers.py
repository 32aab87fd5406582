"""``entropy=1|2`` on the fixed-rate baselines (turboquant, int, kivi): the same quantiser indices,
rANS-coded (kakeya_lib.stages.rans) instead of bit-packed. Lossless on the indices, smaller where
their distribution is not uniform, every byte in the ledger, corrupt bytes refused."""

from __future__ import annotations

import numpy as np
import pytest

from kakeya_lib import codecs, container, synthetic
from kakeya_lib.errors import CorruptBlobError, SpecError
from kakeya_lib.stages import rans

from .conftest import to_np

N, D = 1024, 64


def gaussian(n: int = N, d: int = D) -> np.ndarray:
    return synthetic.gaussian(n, d, seed=11)


def heavy_tailed(n: int = N, d: int = D) -> np.ndarray:
    return np.random.default_rng(12).standard_t(3, (n, d)).astype(np.float32)  # Student-t, 3 dof


# Every (spec, rows) the brief asks for; kivi heads=3 needs rows divisible by 3.
PEERS = [
    ("turboquant:bits=3", N),
    ("turboquant:bits=4", N),
    ("turboquant:bits=4,rotation=wht", N),
    ("turboquant:bits=3,rotation=wht,norms=f16", N),
    ("turboquant:bits=4,norms=f16", N),
    ("turboquant:bits=4,qjl=1,norms=f16", N),
    ("int:bits=4,rotate=1", N),
    ("kivi:bits=2,heads=3", 3 * 512),
    ("kivi:bits=4,heads=3", 3 * 512),
    ("kivi:bits=2,mode=value,heads=3", 3 * 512),
    ("kivi:bits=4,mode=value,heads=3", 3 * 512),
]
IDS = [spec for spec, _ in PEERS]


def with_key(spec: str, **kv: int) -> str:
    return spec + "".join(f",{k}={v}" for k, v in kv.items())


def resection(blob: bytes, edit) -> bytes:
    """The blob rebuilt (valid CRC) with ``edit(name, payload) -> payload`` applied to each section."""
    box = container.read_container(blob)
    parts = [(name, edit(name, bytes(buf))) for name, buf in box.sections.items()]
    return container.write_container(box.spec, (box.n_rows, box.n_cols), box.dtype, parts)


@pytest.mark.parametrize("spec,rows", PEERS, ids=IDS)
def test_entropy_coding_is_lossless_and_counted(spec, rows, xp):
    x = xp.asarray(gaussian(rows))
    plain = codecs.get(spec)
    ref = to_np(plain.decode(plain.encode(x)))
    for mode in (1, 2):
        codec = codecs.get(with_key(spec, entropy=mode))
        blob = codec.encode(x)
        np.testing.assert_array_equal(to_np(codec.decode(blob)), ref)  # the same indices, bit for bit
        ledger = codec.ledger(blob)
        assert sum(ledger.values()) == len(blob)
        assert ledger["entropy"] > 0
        # Only the QJL sketch stays bit-packed: one bit per element.
        assert ledger.get("codes", 0) == (rows * D + 7) // 8 * ("qjl=1" in spec)
        assert codecs.decode(blob).shape == (rows, D)  # the spec in the header rebuilds the codec


@pytest.mark.parametrize("data", [gaussian, heavy_tailed])
@pytest.mark.parametrize("spec,rows", PEERS, ids=IDS)
def test_one_table_is_smaller_on_non_uniform_indices(spec, rows, data):
    x = data(rows)
    fixed = len(codecs.get(spec).encode(x))
    coded = len(codecs.get(with_key(spec, entropy=1)).encode(x))
    # Lloyd–Max cells and min-max groups are not equiprobable: observed 1.6-9 % smaller
    # (least for int after the rotation, which makes the data Gaussian-like; most for 2-bit kivi).
    assert coded < 0.99 * fixed


@pytest.mark.parametrize("bits,max_entropy", [(2, 1.93), (3, 2.85), (4, 3.78)])
def test_turboquant_stream_is_one_table_at_the_indices_entropy(bits, max_entropy):
    x = gaussian(4096, 64)
    codec = codecs.get(f"turboquant:bits={bits},entropy=1")
    raw = bytes(container.read_container(codec.encode(x)).sections["entropy"])
    idx, used = rans.decode(raw, 4096 * 64, 1 << bits)
    assert used == len(raw)  # exactly one stream of every index
    h = rans.entropy_bits(idx, 1 << bits)
    assert h < max_entropy  # N(0,1) Lloyd–Max: 1.915 / 2.827 / 3.767 bits
    assert len(raw) * 8 / idx.size < h + 0.02  # coder overhead (header, table, lane states)


@pytest.mark.parametrize("spec,rows", [("turboquant:bits=4", N), ("int:bits=4,rotate=1", N),
                                       ("kivi:bits=2,mode=value,heads=2", 2 * 512)])
def test_per_coordinate_tables_pay_on_key_shaped_data(spec, rows):
    x = synthetic.kv_like(rows, D, seed=13)  # shared mean + heavy channels: coordinates differ in law
    one = len(codecs.get(with_key(spec, entropy=1)).encode(x))
    per_coord = len(codecs.get(with_key(spec, entropy=2)).encode(x))
    assert per_coord < 0.95 * one  # observed 10-15 % smaller


def test_default_blobs_are_unchanged():
    x = synthetic.kv_like(96, 48, seed=14)
    for spec in ("turboquant:bits=3,qjl=1", "int:bits=4,rotate=1", "kivi:bits=2,heads=3"):
        codec = codecs.get(with_key(spec, entropy=0))
        assert codec.spec == codecs.get(spec).spec and "entropy" not in codec.spec
        blob = codec.encode(x)
        assert blob == codecs.get(spec).encode(x)
        assert set(codec.ledger(blob)) >= {"codes"} and "entropy" not in codec.ledger(blob)


@pytest.mark.parametrize("spec", ["turboquant:bits=4,entropy=1", "turboquant:bits=3,qjl=1,norms=f16,entropy=1",
                                  "turboquant:entropy=2", "int:rotate=1,entropy=1", "int:entropy=2",
                                  "kivi:heads=3,entropy=1", "kivi:heads=3,entropy=2",
                                  "kivi:mode=value,heads=3,entropy=2"])
def test_corrupt_entropy_blobs_are_refused(spec):
    x = synthetic.kv_like(96, 48, seed=15)
    codec = codecs.get(spec)
    blob = codec.encode(x)
    for cut in (0, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptBlobError):
            codec.decode(blob[:cut])
    edits = [
        lambda name, b: b[:-1] if name == "entropy" else b,  # stream truncated
        lambda name, b: b + b"\0" if name == "entropy" else b,  # trailing bytes
        lambda name, b: b[:8] + bytes([b[8] ^ 0xFF]) + b[9:] if name == "entropy" else b,  # table bitmap
        lambda name, b: b[:-3] + bytes([b[-3] ^ 0x5A]) + b[-2:] if name == "entropy" else b,  # a word
        lambda name, b: b[:1] + bytes([b[1] + 1]) + b[2:] if name == "entropy" else b,  # prob_bits
        lambda name, b: b"" if name == "entropy" else b,
        lambda name, b: b[:-1] if name in ("codes", "scales", "norms") else b,  # the other sections
    ]
    for edit in edits:
        with pytest.raises(CorruptBlobError):
            codec.decode(resection(blob, edit))


def test_sections_must_match_the_entropy_mode():
    x = synthetic.kv_like(64, 32, seed=16)
    for spec in ("turboquant:bits=3", "int:bits=4", "kivi:bits=2"):
        plain, coded = codecs.get(spec), codecs.get(with_key(spec, entropy=1))
        fixed_box = container.read_container(plain.encode(x))
        # bit-packed sections under an entropy=1 header: no entropy section
        spliced = container.write_container(coded.spec, (64, 32), np.dtype("float32"),
                                            [(k, bytes(v)) for k, v in fixed_box.sections.items()])
        with pytest.raises(CorruptBlobError, match="sections"):
            coded.decode(spliced)
        # an extra entropy section in an entropy=0 blob
        extra = container.write_container(plain.spec, (64, 32), np.dtype("float32"),
                                          [(k, bytes(v)) for k, v in fixed_box.sections.items()] + [("entropy", b"x")])
        with pytest.raises(CorruptBlobError, match="sections"):
            plain.decode(extra)


@pytest.mark.parametrize("spec", ["turboquant:entropy=3", "int:entropy=-1", "kivi:entropy=yes"])
def test_bad_entropy_values(spec):
    with pytest.raises(SpecError, match="entropy"):
        codecs.get(spec)


@pytest.mark.parametrize("spec", ["turboquant:bits=1,entropy=1", "turboquant:bits=2,qjl=1,entropy=2",
                                  "int:bits=1,group=3,entropy=2", "kivi:bits=8,group=5,entropy=1"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (33, 96)])
def test_entropy_odd_shapes_round_trip(spec, shape):
    x = synthetic.kv_like(*shape, seed=17)
    plain = codecs.get(spec.rsplit(",", 1)[0])
    codec = codecs.get(spec)
    np.testing.assert_array_equal(codec.decode(codec.encode(x)), plain.decode(plain.encode(x)))
