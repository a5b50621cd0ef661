"""Durations as people write them in config files and on the command line: "90s", "15m", "1h30m", "7d"."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# 100 years: the longest duration anything accepts. No caller's arithmetic can overflow: now - LONGEST is
# about 1925 and now + LONGEST about 2125 (datetime holds years 1 to 9999); the longest product, the 7 grace
# periods after which a value retires anyway (detect.signals), is 255,500 days (timedelta holds 999,999,999);
# waits stay below threading.TIMEOUT_MAX (about 292 years). Callers with a tighter sense of "sane" pass their
# own maximum (config.fields.LONGEST_WAIT).
LONGEST = timedelta(days=36500)


def parse_duration(text: str, maximum: timedelta = LONGEST) -> timedelta:
    """Parse "90s", "15m", "24h", "7d", "1h30m" or "0", at most `maximum`; ValueError says what a valid one is."""
    s = text.strip().lower()
    if s == "0":
        return timedelta(0)
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]  # a 400-digit number is inf: too long below
        pos = match.end()
    shown = text if len(text) <= 40 else f"{text[:24]}...{text[-8:]}"
    if pos != len(s) or not s:
        raise ValueError(f'"{shown}" is not a duration; write it like "90s", "15m", "24h" or "7d"')
    if total > min(maximum, LONGEST).total_seconds():
        raise ValueError(f'"{shown}" is too long; the longest accepted is {format_duration(min(maximum, LONGEST))}')
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, the inverse of parse_duration."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0"
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    out, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
