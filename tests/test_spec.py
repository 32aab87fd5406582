"""Codec spec strings: parsing into parameter dataclasses, the canonical form (non-default keys only,
sorted, round-trippable), and SpecErrors that name the offending key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from kakeya_lib.codecs.kakeya import SEED_ROTATION, KakeyaParams
from kakeya_lib.codecs.spec import build_params, format_spec, split_spec
from kakeya_lib.errors import SpecError


@dataclass(frozen=True)
class ToyParams:
    n: int = 4
    ratio: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    label: str = "x"
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def parse(spec: str, cls=KakeyaParams):
    name, raw = split_spec(spec)
    return name, build_params(cls, raw, name)


# -- split_spec -------------------------------------------------------------------------------


def test_split_bare_name():
    assert split_spec("kakeya") == ("kakeya", {})
    assert split_spec("  identity:  ") == ("identity", {})


def test_split_keys_and_values_are_trimmed_and_keys_lowercased():
    assert split_spec(" Kakeya : Bits = 3 , pca=RSVD ") == ("kakeya", {"bits": "3", "pca": "RSVD"})


def test_split_value_may_contain_equals_and_colons():
    assert split_spec("kakeya:codebook=C:/tabs/a=b.f32") == ("kakeya", {"codebook": "C:/tabs/a=b.f32"})


@pytest.mark.parametrize("spec", ["", "   ", None, 3])
def test_split_rejects_empty_or_non_string(spec):
    with pytest.raises(SpecError, match="non-empty string"):
        split_spec(spec)  # type: ignore[arg-type]


def test_split_rejects_missing_name():
    with pytest.raises(SpecError, match="no codec name"):
        split_spec(":bits=3")


@pytest.mark.parametrize("item", ["bits", "=3", "bits=", "bits= ", ""])
def test_split_rejects_malformed_items(item):
    with pytest.raises(SpecError, match="is not of the form key=value"):
        split_spec(f"kakeya:k=8,{item}")


def test_split_rejects_a_trailing_comma():
    with pytest.raises(SpecError, match="key=value"):
        split_spec("kakeya:bits=3,")


def test_split_rejects_duplicate_keys_naming_the_key():
    with pytest.raises(SpecError, match="key 'bits' is given twice"):
        split_spec("kakeya:bits=3,k=4,BITS=2")


# -- build_params -----------------------------------------------------------------------------


def test_parse_kakeya_params_of_every_field_type():
    name, p = parse("kakeya:bits=2,pca=RSVD,vr=0.9,rank=32,outlier=2.5,share_basis=yes,codebook=/t/ds.f32,seed=0x10")
    assert name == "kakeya"
    assert p == KakeyaParams(
        bits=2, pca="rsvd", vr=0.9, rank=32, outlier=2.5, share_basis=True, codebook="/t/ds.f32", seed=16
    )
    assert isinstance(p.vr, float) and isinstance(p.rank, int) and p.share_basis is True


def test_no_keys_gives_the_defaults():
    assert parse("kakeya")[1] == KakeyaParams()


@pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)])
def test_boolean_spellings(text, value):
    assert parse(f"toy:flag={text}", ToyParams)[1].flag is value


@pytest.mark.parametrize("text", ["none", "NULL", "off"])
def test_optional_field_accepts_none(text):
    assert parse(f"kakeya:outlier={text}")[1].outlier is None
    assert parse(f"toy:limit={text}", ToyParams)[1].limit is None


def test_optional_field_accepts_its_inner_type():
    assert parse("toy:limit=1e-3", ToyParams)[1].limit == pytest.approx(1e-3)


def test_integers_accept_prefixes_and_underscores():
    assert parse("toy:n=0x20", ToyParams)[1].n == 32
    assert parse("toy:n=1_000", ToyParams)[1].n == 1000


def test_str_values_keep_their_case():
    assert parse("toy:label=MiXeD", ToyParams)[1].label == "MiXeD"


def test_unknown_key_is_named_and_valid_keys_listed():
    with pytest.raises(SpecError, match=r"unknown key\(s\) bitz; valid keys: .*bits.*block") as info:
        parse("kakeya:bitz=3")
    assert "legacy_wht_scale" in str(info.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("bits=three", r"bits='three' is not an integer"),
        ("bits=3.0", r"bits='3.0' is not an integer"),
        ("vr=high", r"vr='high' is not a number"),
        ("vr=nan", r"vr='nan' must be finite"),
        ("outlier=inf", r"outlier='inf' must be finite"),
        ("share_basis=2", r"share_basis='2' is not a boolean"),
        ("pca=svd", r"pca='svd' is not one of exact, rsvd"),
        ("skel=f8", r"skel='f8' is not one of f16, bf16, f32"),
    ],
)
def test_bad_values_raise_spec_error_naming_the_key(item, message):
    with pytest.raises(SpecError, match=message):
        parse(f"kakeya:{item}")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("bits=9", "bits must be in 1..8, got 9"),
        ("bits=0", "bits must be in 1..8"),
        ("vr=0", "vr must be in"),
        ("vr=1.5", "vr must be in"),
        ("k=-1", "k must be in"),
        ("block=0", "block must be >= 1"),
        ("outlier=-1", "outlier threshold must be >= 0"),
        ("legacy_ip_norm=1", "legacy_ip_norm only applies with metric=ip"),
        ("legacy_rsvd_no_reorth=1", "legacy_rsvd_.* flags only apply with pca=rsvd"),
    ],
)
def test_dataclass_validation_becomes_spec_error(item, message):
    with pytest.raises(SpecError, match=f"kakeya: {message}"):
        parse(f"kakeya:{item}")


def test_toy_dataclass_validation_becomes_spec_error():
    with pytest.raises(SpecError, match="toy: n must be >= 1, got 0"):
        parse("toy:n=0", ToyParams)


# -- format_spec ------------------------------------------------------------------------------


def test_canonical_form_of_defaults_is_the_bare_name():
    assert format_spec("kakeya", KakeyaParams()) == "kakeya"
    assert format_spec("toy", ToyParams()) == "toy"


def test_canonical_form_lists_only_non_default_keys_sorted():
    p = KakeyaParams(k=8, bits=2, vr=0.95, pca="rsvd", outlier=2.0, share_basis=True)
    assert format_spec("kakeya", p) == "kakeya:bits=2,k=8,outlier=2.0,pca=rsvd,share_basis=1"


def test_canonical_form_of_bools_none_and_seed():
    assert format_spec("toy", ToyParams(flag=True, limit=0.25)) == "toy:flag=1,limit=0.25"
    assert format_spec("kakeya", KakeyaParams(seed=SEED_ROTATION + 1)) == f"kakeya:seed={SEED_ROTATION + 1}"


@pytest.mark.parametrize(
    "spec",
    [
        "kakeya:K=8 ,bits=2",
        "kakeya:pca=RSVD,rank=32,power_iters=3,oversample=10,legacy_rsvd_sketch_vr=true",
        "kakeya:vr=0.99,skel=f32,scalars=bf16,outlier=1.5,metric=ip,legacy_ip_norm=on",
        "kakeya:seed=0xCAFEBABF,codebook=/data/ds_K_b2.f32,bits=2",
        "kakeya:bits=3,vr=0.95,outlier=none",  # only defaults
    ],
)
def test_canonical_form_round_trips_and_is_a_fixed_point(spec):
    name, p = parse(spec)
    canon = format_spec(name, p)
    name2, p2 = parse(canon)
    assert (name2, p2) == (name, p)
    assert format_spec(name2, p2) == canon


def test_equal_params_spelled_differently_have_equal_canonical_forms():
    a = format_spec(*parse("kakeya:bits=2,k=8,share_basis=yes"))
    b = format_spec(*parse("KAKEYA: share_basis=1 , K=0x8, bits=2, vr=0.95"))
    assert a == b == "kakeya:bits=2,k=8,share_basis=1"
