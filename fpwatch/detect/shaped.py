"""Typed values with a documented JSON form, converted by their field types, and read like that form.

A `Shaped` subclass is a frozen dataclass. `to_json` writes each field by its type (times as ISO 8601
strings, tuples as lists, nested values as their own JSON); `from_json` reads them back, a field missing
from an older row taking its default, or an empty value. fpwatch's own code uses the typed attributes;
`value["key"]` is `value.to_json()["key"]`, the shape the README documents (what `--json`, exports and
the database carry), for readers that think in that shape.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Self

from fpwatch.clock import iso, parse_iso


class Shaped(Mapping[str, Any]):
    """Base of typed details."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                values[f.name] = _from_json(hints[f.name], data[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                values[f.name] = _empty(hints[f.name])
        return cls(**values)

    @functools.cached_property
    def _shape(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        return self._shape[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape)

    def __len__(self) -> int:
        return len(self._shape)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _to_json(value: Any) -> Any:
    if type(value) in _PLAIN:  # most fields: no isinstance against the abstract Mapping (a check's JSON has thousands)
        return value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Shaped):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def _from_json(kind: Any, value: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin is tuple:
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return tuple(_from_json(inner, v) for v in value)
    if origin in (dict, Mapping, typing.get_origin(Mapping[str, Any])):
        return {k: _from_json(args[1], v) for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, Shaped):
        return kind.from_json(value)
    if kind is datetime:
        return parse_iso(value)
    return kind(value) if kind in (int, float, str, bool) else value


def _empty(kind: Any) -> Any:
    """What a field an older row lacks reads as: None where allowed, else the type's empty value."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union) and type(None) in typing.get_args(kind):
        return None
    if origin is tuple:
        return ()
    if origin is not None:  # a mapping
        return {}
    if isinstance(kind, type) and issubclass(kind, Shaped):
        return kind.from_json({})
    return kind() if kind in (int, float, str, bool) else None
