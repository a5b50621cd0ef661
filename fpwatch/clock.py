"""Time as fpwatch stores and shows it: UTC inside, ISO 8601 with a `Z` in data, an explicit zone for people.

Code that decides by the time takes a `Clock` (or a `now` callable), so tests control time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    """Where a long-running component reads the time: wall-clock UTC for records, monotonic for intervals."""

    now: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic


def iso(value: datetime) -> str:
    """ "2026-11-22T20:42:48.092829Z": the form of every time in the database, JSON and exports."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_or_none(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_iso_or_none(text: str | None) -> datetime | None:
    return parse_iso(text) if text is not None else None


def human(value: datetime | None) -> str:
    """ "2026-11-22 20:42:48 UTC": for tables and summaries."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"
