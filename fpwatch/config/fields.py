"""Reading one value of the config: a typed result or a located problem, never an exception.

`Fields` is the base of the reader: each method reads one key of a TOML table, collects a
`ConfigProblem` (location and what to do) when it is wrong, and returns a value the reader can go on
with, so that `fpwatch config check` lists every mistake at once. `${VAR}` is substituted here, and
every secret seen on the way is remembered for verbatim redaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from fpwatch.durations import parse_duration
from fpwatch.errors import ConfigProblem
from fpwatch.hints import did_you_mean
from fpwatch.redact import SECRET_NAME

MISSING: Any = object()
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def join(location: str, key: str) -> str:
    return f"{location}.{key}" if location else key


class Fields:
    """Problems accumulate; values come back typed (or a default, so reading goes on)."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()

    def problem(self, location: str, message: str) -> None:
        self.problems.append(ConfigProblem(location, message))

    def table(self, value: Any, location: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(location, f"expected a table, got {type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                advice = did_you_mean(key, allowed, f"valid keys: {', '.join(allowed)}")
                self.problem(join(location, key), f"unknown key; {advice}")
        return {k: v for k, v in value.items() if k in allowed}

    def interpolate(self, text: str, location: str, secret: bool) -> str | None:
        missing: list[str] = []

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                missing.append(name)
                return ""
            value = self.env[name]
            if secret or SECRET_NAME.search(name):
                self.remember_secret(value)
            return value

        result = _VAR.sub(sub, text)
        for name in missing:
            self.problem(location, f"environment variable {name} is not set; export it before starting fpwatch")
        return None if missing else result

    def remember_secret(self, value: str) -> None:
        if len(value) >= 4:  # shorter values would redact ordinary words
            self.secrets.add(value)

    def string(
        self,
        tbl: Mapping[str, Any],
        key: str,
        location: str,
        default: Any = MISSING,
        *,
        choices: tuple[str, ...] | None = None,
        secret: bool = False,
        allow_empty: bool = False,
    ) -> Any:
        loc = join(location, key)
        value = tbl.get(key, MISSING)
        if value is MISSING:
            if default is MISSING:
                self.problem(loc, "is required")
                return None
            return default
        if not isinstance(value, str):
            self.problem(loc, f"expected a string, got {type_name(value)}")
            return None
        text = self.interpolate(value, loc, secret)
        if text is None:
            return None
        if not text.strip() and not allow_empty:
            # An empty ${VAR} must not quietly drop a model from monitoring.
            self.problem(loc, "is empty" + (f" (after substituting {value})" if "${" in value else ""))
            return None
        if secret:
            self.check_header_safe(text, loc)
        if choices is not None and text not in choices:
            advice = did_you_mean(text, choices, "use one of " + ", ".join(choices))
            self.problem(loc, f'"{text}" is not valid; {advice}')
            return None
        if secret:
            self.remember_secret(text)
        return text

    def check_header_safe(self, text: str, loc: str) -> None:
        """Keys travel in HTTP headers: a stray non-ASCII or control character would crash every request."""
        for position, char in enumerate(text):
            if not char.isascii() or not char.isprintable():
                self.problem(
                    loc,
                    f"contains the character U+{ord(char):04X} at position {position + 1}, which cannot be "
                    "sent in an HTTP header; copy the value again without it",
                )
                return

    def duration(self, tbl: Mapping[str, Any], key: str, location: str, default: Any) -> Any:
        loc = join(location, key)
        value = tbl.get(key, MISSING)
        if value is MISSING:
            return default
        if value == 0 and not isinstance(value, bool):
            return timedelta(0)
        if not isinstance(value, str):
            self.problem(loc, f'expected a duration string like "15m", got {type_name(value)}')
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(loc, str(exc))
            return default

    def integer(self, tbl: Mapping[str, Any], key: str, location: str, default: Any, minimum: int | None = None) -> Any:
        loc = join(location, key)
        value = tbl.get(key, MISSING)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(loc, f"expected an integer, got {type_name(value)}")
            return default
        if minimum is not None and value < minimum:
            self.problem(loc, f"must be at least {minimum}, got {value}")
            return default
        return value

    def boolean(self, tbl: Mapping[str, Any], key: str, location: str, default: bool) -> bool:
        value = tbl.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(join(location, key), f"expected true or false, got {type_name(value)}")
            return default
        return value

    def strings(self, tbl: Mapping[str, Any], key: str, location: str) -> tuple[str, ...] | None:
        loc = join(location, key)
        value = tbl.get(key, MISSING)
        if value is MISSING:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(loc, "expected a list of strings")
            return None
        return tuple(value)

    def secret_file(self, tbl: Mapping[str, Any], key: str, location: str) -> str | None:
        name = self.string(tbl, key, location, None)
        if name is None:
            return None
        file = Path(name)
        if not file.is_absolute():
            file = self.base_dir / file
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(join(location, key), f"cannot read {file}: {exc.strerror or exc}")
            return None
        if not value:
            self.problem(join(location, key), f"{file} is empty")
            return None
        self.remember_secret(value)
        self.check_header_safe(value, join(location, key))
        return value
