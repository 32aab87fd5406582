"""Codec spec strings: ``name[:key=value[,key=value...]]``.

Every codec has a frozen parameter dataclass; a spec string is parsed against its fields and
type hints (int, float, bool, str, ``Literal[...]``, ``X | None``). Unknown keys, duplicate keys,
and values of the wrong type are :class:`~kakeya_lib.errors.SpecError`\\ s that list what is valid.
The canonical form (:func:`format_spec`) lists only non-default keys, sorted, so equal codecs
have equal strings; it labels result rows and is stored in every blob's header.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from ..errors import SpecError

P = TypeVar("P")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", "off"}


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:k=v,k2=v2"`` into the codec name and a dict of raw string values."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"a codec spec must be a non-empty string like 'kakeya:bits=3', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise SpecError(f"codec spec {spec!r} has no codec name before ':'")
    raw: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or not key or not value.strip():
                raise SpecError(f"codec spec {spec!r}: {item.strip()!r} is not of the form key=value")
            if key in raw:
                raise SpecError(f"codec spec {spec!r}: key {key!r} is given twice")
            raw[key] = value.strip()
    return name, raw


def split_pair(text: str) -> tuple[str, str | None]:
    """``"K_SPEC|V_SPEC"`` → (K, V); a single spec codes both streams (V is None)."""
    k, sep, v = text.partition("|")
    if not k.strip() or (sep and not v.strip()):
        raise SpecError(f"pair {text!r}: expected SPEC or K_SPEC|V_SPEC")
    return k.strip(), (v.strip() if sep else None)


def _convert(value: str, hint: Any, key: str, codec: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if type(None) in get_args(hint) and value.lower() in _NONE:
            return None
        if len(options) != 1:
            raise TypeError(f"unsupported spec field type {hint}")
        return _convert(value, options[0], key, codec)
    if origin is Literal:
        allowed = [str(a) for a in get_args(hint)]
        if value.lower() not in allowed:
            raise SpecError(f"{codec}: {key}={value!r} is not one of {', '.join(allowed)}")
        return value.lower()
    if hint is bool:
        v = value.lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise SpecError(f"{codec}: {key}={value!r} is not a boolean (use 1/0, true/false)")
    if hint is int:
        try:
            return int(value, 0)
        except ValueError:
            raise SpecError(f"{codec}: {key}={value!r} is not an integer") from None
    if hint is float:
        try:
            out = float(value)
        except ValueError:
            raise SpecError(f"{codec}: {key}={value!r} is not a number") from None
        if not math.isfinite(out):
            raise SpecError(f"{codec}: {key}={value!r} must be finite")
        return out
    if hint is str:
        return value
    raise TypeError(f"unsupported spec field type {hint}")


def build_params(cls: type[P], raw: dict[str, str], codec: str) -> P:
    """Instantiate the parameter dataclass ``cls`` from raw spec values (validated by the class)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise SpecError(
            f"{codec}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields)) or '(none)'}"
        )
    kwargs = {key: _convert(value, hints[key], key, codec) for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{codec}: {exc}") from exc


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_spec(name: str, params: Any) -> str:
    """Canonical spec: the name, then non-default keys sorted (``"kakeya:bits=2,k=8"``)."""
    items = []
    for f in sorted(dataclasses.fields(params), key=lambda f: f.name):
        value = getattr(params, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default:
            items.append(f"{f.name}={_format_value(value)}")
    return name if not items else f"{name}:{','.join(items)}"
