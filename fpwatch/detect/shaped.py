"""Typed values that read like their documented JSON form: `value["key"]` is `value.to_json()["key"]`.

fpwatch's own code uses the typed attributes; the mapping view is the JSON shape the README documents
(what `--json`, exports and the database carry), for readers that think in that shape.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any


class Shaped(Mapping[str, Any]):
    """Base of typed details: subclasses are frozen dataclasses that define `to_json`."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @functools.cached_property
    def _shape(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        return self._shape[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape)

    def __len__(self) -> int:
        return len(self._shape)
