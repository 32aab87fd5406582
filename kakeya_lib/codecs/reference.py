"""The spec-key reference, read from the codecs' own parameter dataclasses.

Each codec's ``Params`` dataclass is the single source of its spec keys: name, type, default,
and the meaning written as the field's trailing comment. :func:`spec_keys` reads them (the
comments through :mod:`tokenize`, since they are not in the compiled class), and
:func:`markdown_reference` renders the page the book shows (``kakeya codecs --markdown``), so
the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

from . import get, names


@dataclass(frozen=True)
class SpecKey:
    """One key of a codec's spec string."""

    name: str
    type: str
    default: Any
    doc: str


def _field_comments(params_cls: type) -> dict[str, str]:
    """``{field: trailing comment}`` of the annotated fields in the class body."""
    source = textwrap.dedent(inspect.getsource(params_cls))
    comments: dict[str, str] = {}
    line_field: dict[int, str] = {}
    for line_no, line in enumerate(source.splitlines(), start=1):
        head = line.split("#", 1)[0]
        if line.startswith("    ") and not line.startswith("     ") and ":" in head and "=" in head:
            name = head.strip().split(":", 1)[0].strip()
            if name.isidentifier():
                line_field[line_no] = name
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            comments[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return comments


def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, or ``one of: a, b, c`` for a Literal."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "")
    if text.startswith("Literal["):
        return "one of: " + text[len("Literal["):-1].replace('"', "").replace("'", "")
    return text


def spec_keys(codec_name: str) -> list[SpecKey]:
    """The spec keys of one registered codec, in declaration order."""
    params_cls = type(get(codec_name).params)
    comments = _field_comments(params_cls)
    return [SpecKey(f.name, _type_name(f.type), f.default, comments.get(f.name, ""))
            for f in dataclasses.fields(params_cls)]


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if value is None:
        return "none"
    return "''" if value == "" else str(value)


def markdown_reference() -> str:
    """A markdown page: per codec, a table of its keys (key, default, type, meaning)."""
    lines = ["# Spec-key reference", "",
             "Generated from the codecs' parameter dataclasses by `kakeya codecs --markdown` "
             "(`kakeya_lib/codecs/reference.py`); a spec string is `name[:key=value,...]`, unknown keys "
             "and bad values are errors, and the canonical form (non-default keys, sorted) is stored in "
             "every blob.", ""]
    for name in names():
        module = inspect.getmodule(type(get(name)))
        summary = " ".join((inspect.getdoc(module) or "").split("\n\n")[0].split())
        summary = re.sub(r":\w+:`([^`]+)`", r"`\1`", summary).replace("``", "`")  # reST roles -> code
        lines += [f"## `{name}`", "", summary, ""]
        keys = spec_keys(name)
        if not keys:
            lines += ["No keys.", ""]
            continue
        lines += ["| key | default | type | meaning |", "|---|---|---|---|"]
        for k in keys:
            doc = k.doc.replace("|", "\\|")
            lines.append(f"| `{k.name}` | `{_default_text(k.default)}` | {k.type} | {doc} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
