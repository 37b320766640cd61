"""The one type check of config values, whether they come from a TOML/YAML file or a
command-line flag, and the TOML spelling of values (for examples and --print-config).

Supported annotations: bool, int, float (finite only), str, Path, `X | None`,
Literal[...], tuple[X, ...] and list[X]. A value that does not fit raises `Bad` with a
phrase ("has type str, expected int") and the type to give an example of; callers add
the key or the flag.
"""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import PurePath
from typing import Literal


def is_optional(kind) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def inner(kind):
    """X for X | None."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"config trees support X | None, not {kind}")
    return args[0]


def element(kind):
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"config trees support tuple[X, ...], not {kind}")
    return args[0]


def type_name(kind) -> str:
    if is_optional(kind):
        return type_name(inner(kind))
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    if origin in (tuple, list):
        return f"list of {type_name(element(kind))}"
    if isinstance(kind, type) and issubclass(kind, PurePath):
        return "path"
    return kind.__name__


def example(kind) -> str:
    """A TOML value of this type, for "write e.g." hints."""
    if is_optional(kind):
        return example(inner(kind))
    origin = typing.get_origin(kind)
    if origin is Literal:
        return toml_value(typing.get_args(kind)[0])
    if origin in (tuple, list):
        return f"[{example(element(kind))}, {example(element(kind))}]"
    if isinstance(kind, type) and issubclass(kind, PurePath):
        return '"path/to/file"'
    return {bool: "true", int: "4", float: "0.5", str: '"text"'}[kind]


class Bad(Exception):
    """A value that does not fit: `phrase` completes "<value> ..." and `kind` gives the example."""

    def __init__(self, phrase: str, kind) -> None:
        super().__init__(phrase)
        self.phrase, self.kind = phrase, kind


def check_value(path: str, value, kind, choices: tuple | None = None):
    """`value` as the field's type, or a ValueError naming the key, the value and the fix."""
    try:
        return checked(value, kind, choices)
    except Bad as bad:
        leaf = path.rsplit(".", 1)[-1]
        raise ValueError(f"config key {path} = {value!r} {bad.phrase}; write e.g. {leaf} = {example(bad.kind)}") from None


def checked(value, kind, choices: tuple | None):
    checked = _check(value, kind)
    if choices is not None and checked not in choices:
        raise Bad(f"is not one of {', '.join(map(str, choices))}", Literal[tuple(choices)])
    return checked


def _check(value, kind):
    if is_optional(kind):
        return None if value is None else _check(value, inner(kind))
    origin = typing.get_origin(kind)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in typing.get_args(kind)):
            raise Bad(f"is not {type_name(kind)}", kind)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(value, kind)
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_check(item, element(kind)))
            except Bad as bad:
                raise Bad(f"has item {i} = {item!r} that {bad.phrase}", kind) from None
        return origin(items)
    if isinstance(kind, type) and issubclass(kind, PurePath):
        if not isinstance(value, (str, PurePath)):
            raise _wrong_type(value, kind)
        return kind(value)
    ok = {
        bool: lambda: isinstance(value, bool),
        int: lambda: isinstance(value, int) and not isinstance(value, bool),
        float: lambda: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: lambda: isinstance(value, str),
    }
    if kind not in ok:
        raise TypeError(f"type {kind!r} is not supported by config trees")
    if not ok[kind]():
        raise _wrong_type(value, kind)
    if kind is float:
        if not math.isfinite(value):
            raise Bad("is not a finite number", kind)
        return float(value)
    return value


def _wrong_type(value, kind) -> Bad:
    return Bad(f"has type {type(value).__name__}, expected {type_name(kind)}", kind)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, PurePath)):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def from_text(text: str, kind):
    """A flag's text as a value of `kind` (lists are comma-separated), to be checked next."""
    if is_optional(kind):
        return from_text(text, inner(kind))
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        items = []
        for i, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
            try:
                items.append(from_text(part, element(kind)))
            except Bad as bad:
                raise Bad(f"has item {i} = {part!r} that {bad.phrase}", kind) from None
        return items
    if origin is Literal:
        return next((a for a in typing.get_args(kind) if str(a) == text), text)
    if kind is bool:
        if text not in ("true", "false"):
            raise Bad("is not true or false", kind)
        return text == "true"
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise Bad(f"is not {'an' if kind is int else 'a'} {kind.__name__}", kind) from None
    return text
