"""The spec-key reference is generated from the codecs' Params and documents every key."""

from __future__ import annotations

import dataclasses

from kakeya_lib import cli, codecs
from kakeya_lib.codecs import reference


def test_every_key_of_every_codec_has_a_meaning():
    for name in codecs.names():
        fields = [f.name for f in dataclasses.fields(type(codecs.get(name).params))]
        keys = reference.spec_keys(name)
        assert [k.name for k in keys] == fields
        undocumented = [k.name for k in keys if not k.doc]
        assert not undocumented, f"{name}: give these Params fields a trailing comment: {undocumented}"


def test_markdown_page_has_one_table_row_per_key(tmp_path):
    page = reference.markdown_reference()
    for name in codecs.names():
        assert f"## `{name}`" in page
        for k in reference.spec_keys(name):
            assert f"| `{k.name}` |" in page
    assert "| `pca` | `exact` | one of: exact, rsvd, none |" in page and ":mod:" not in page
    out = tmp_path / "ref.md"
    assert cli.main(["codecs", "--markdown", str(out)]) == 0 and out.read_text() == page
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["codecs", "--markdown", str(blocker / "ref.md")]) == 2  # one clear line, no traceback
