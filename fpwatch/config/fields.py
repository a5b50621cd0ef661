"""Reading one value of the config: a typed result or a located problem, never an exception.

`Fields` is the base of the reader: each method reads one key of a TOML table, collects a
`ConfigProblem` (location and what to do) when it is wrong, and returns a value the reader can go on
with, so that `fpwatch config check` lists every mistake at once. `${VAR}` is substituted here, and
every secret seen on the way is remembered for verbatim redaction. The character rule names obey (`refused`)
is here too, with `printable`, the escape every human output uses for what providers send.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from fpwatch.config.secret_files import read_secret_file
from fpwatch.durations import LONGEST, parse_duration
from fpwatch.errors import ConfigProblem
from fpwatch.hints import did_you_mean
from fpwatch.redact import SECRET_NAME

MISSING: Any = object()
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Variables that name a place, not a secret: systemd's per-unit directories (CREDENTIALS_DIRECTORY matches
# SECRET_NAME, yet it is only /run/credentials/UNIT) and the home and XDG base directories. Their values are
# never remembered as secrets, so an error keeps the path a person needs ("cannot read
# /run/credentials/fpwatch.service/openai", not "[REDACTED]/openai"); a secret in the same value still is.
# Only XDG's *_HOME, *_DIR and *_DIRS are places: XDG_SESSION_COOKIE, for one, is not.
_LOCATION_NAME = frozenset(
    {
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "LOGS_DIRECTORY",
        "CACHE_DIRECTORY",
        "HOME",
        "PWD",
        "TMPDIR",
    }
)
_XDG_LOCATION = re.compile(r"XDG_[A-Z]+_(HOME|DIRS?)")
# The cap of the settings that say how often and how long a check runs or an alert waits (interval, jitter,
# timeout, group_wait): nothing overflows below durations.LONGEST, but a check less often than yearly monitors
# nothing, and a timeout or wait of more than a year is a typo. Other durations go up to durations.LONGEST
# (`grace_period = "3650d"` means "never retire", `retention = "36500d"` "keep everything").
LONGEST_WAIT = timedelta(days=365)
INT_RANGE = (-(2**63), 2**63 - 1)  # TOML's integers; SQLite stores no larger one
_KIND = {"Cc": "a control character", "Cs": "a lone surrogate"}
# Format characters (Cf) that belong to visible text: ZWNJ and ZWJ (U+200C, U+200D) shape Persian and Indic
# words and join emoji sequences; the prepended concatenation marks (the Arabic number sign, end of ayah, ...)
# are drawn. Every other format character is invisible, so refused: the bidi embeddings, overrides, isolates
# and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), U+200B, U+2060, U+FEFF, the soft hyphen.
_VISIBLE_FORMAT = frozenset(
    "\u200c\u200d\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)


def refused(char: str) -> bool:
    """Must this character not be printed raw to a terminal, a log line or a message?

    Controls (Unicode category Cc: NUL, tab, newline, DEL, the C1 controls), line and paragraph separators
    (Zl, Zp: U+2028, U+2029), lone surrogates (Cs: no encoding can print them) and invisible format
    characters (Cf but for those in _VISIBLE_FORMAT). All visible text is allowed, in any script.
    """
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp", "Cs"):
        return True
    return category == "Cf" and char not in _VISIBLE_FORMAT


def describe(char: str) -> str:
    """A character by its code point and name, never itself: "U+202E (RIGHT-TO-LEFT OVERRIDE)"."""
    name = unicodedata.name(char, "") or _KIND.get(unicodedata.category(char), "an invisible character")
    return f"U+{ord(char):04X} ({name})"


def first_refused(text: str) -> tuple[int, str] | None:
    """The first refused character of `text` (1-based position, character), or None."""
    if text.isprintable():  # the fast path: isprintable refuses a superset of `refused`
        return None
    for position, char in enumerate(text, 1):
        if refused(char):
            return position, char
    return None


def printable(text: str) -> str:
    """`text` fit for one line of human output: each refused character shown as <U+XXXX>, newline and tab too.

    The one escape of fpwatch's human output: config errors, the `check`, `status`, `history` and `events`
    tables, the Nagios line and notifications (report.text and notify.render call it). It lives here, beside the
    rule the config's names obey, because the notify layer sits below report. JSON outputs keep the exact value.
    """
    if text.isprintable():
        return text
    return "".join(f"<U+{ord(c):04X}>" if refused(c) else c for c in text)


def is_location(name: str) -> bool:
    """Does the environment variable `name` hold a directory (`_LOCATION_NAME`), which is never a secret?"""
    return name in _LOCATION_NAME or _XDG_LOCATION.fullmatch(name) is not None


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
            if is_location(name):
                return value
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
        free_text: bool = False,
    ) -> Any:
        """A string (`${VAR}` substituted). Unless it is `free_text` (a prompt, a regex) or a secret (checked as
        an HTTP header), it must be printable: names and settings end up in tables, logs and one-line statuses."""
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
        elif not free_text and not self.check_printable(text, loc):
            return None
        if choices is not None and text not in choices:
            advice = did_you_mean(text, choices, "use one of " + ", ".join(choices))
            self.problem(loc, f'"{text}" is not valid; {advice}')
            return None
        if secret:
            self.remember_secret(text)
        return text

    def check_printable(self, text: str, loc: str) -> bool:
        """Is `text` free of refused characters (see `refused`)? If not, a problem names the first one."""
        found = first_refused(text)
        if found is not None:
            position, char = found
            self.problem(
                loc,
                f"contains the character {describe(char)} at position {position}, which must not be printed "
                "raw into tables and logs; remove it",
            )
        return found is None

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

    def duration(
        self, tbl: Mapping[str, Any], key: str, location: str, default: Any, maximum: timedelta = LONGEST
    ) -> Any:
        """A duration string (or 0) of at most `maximum`: LONGEST_WAIT for the schedule and wait settings."""
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
            return parse_duration(value, maximum)
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
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            self.problem(loc, f"is too {'large' if value > 0 else 'small'} for a 64-bit integer, the limit of TOML")
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
        if not all([self.check_printable(v, f"{loc}[{i}]") for i, v in enumerate(value)]):
            return None
        return tuple(value)

    def secret_file(
        self, tbl: Mapping[str, Any], key: str, location: str, *, header: bool = True, minimum: int = 1
    ) -> str | None:
        """The secret in the file `key` names (relative to the config's folder), read safely (secret_files.py), of
        at least `minimum` characters. `header`: it travels in an HTTP header or URL, so must be printable ASCII."""
        name = self.string(tbl, key, location, None)
        if name is None:
            return None
        file = Path(name)
        if not file.is_absolute():
            file = self.base_dir / file
        try:
            value = read_secret_file(file)
        except ValueError as exc:
            self.problem(join(location, key), str(exc))
            return None
        if not value:
            self.problem(join(location, key), f"{file} is empty; write the secret into it")
            return None
        if len(value) < minimum:  # refused, so not remembered: redacting a short word would garble messages
            self.problem(
                join(location, key),
                f"the secret in {file} is shorter than {minimum} characters; make one with `openssl rand -hex 32`",
            )
            return None
        self.remember_secret(value)
        if header:
            self.check_header_safe(value, join(location, key))
        return value
