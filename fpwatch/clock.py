"""Time as fpwatch stores and shows it: UTC inside, ISO 8601 with a `Z` in data, an explicit zone for people.

Code that decides by the time takes a `Clock` (or a `now` callable), so tests control time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

JUMP_SECONDS = 60.0  # a step of the wall clock larger than this, against elapsed time, is a jump


def utcnow() -> datetime:
    return datetime.now(UTC)


def elapsed() -> float:
    """Seconds since boot, counting suspend (CLOCK_BOOTTIME), so a suspended machine is not a jumped clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


class SteadyTime:
    """Wall-clock UTC without its jumps: the time a long-running process records and decides by.

    It follows the wall clock (and its slow NTP corrections) exactly until the wall clock steps, against elapsed
    time, by more than `JUMP_SECONDS`; from then on it keeps counting elapsed time, `skew` seconds apart from the
    wall clock, until the process restarts. So a clock set back an hour does not stall anything, and a clock set
    forward a day does not look like a day of absence: no grace period, schedule or health test sees a jump.
    Each jump is kept in `jumps` until taken (the daemon logs and counts them). Thread-safe.
    """

    def __init__(self, wall: Callable[[], datetime] = utcnow, since_boot: Callable[[], float] = elapsed) -> None:
        self._wall, self._since_boot = wall, since_boot
        self._lock = threading.Lock()
        self._last_wall, self._last_elapsed = wall(), since_boot()
        self.skew = 0.0  # seconds: the wall clock minus this time
        self._jumps: list[float] = []

    def __call__(self) -> datetime:
        with self._lock:
            wall, now = self._wall(), self._since_boot()
            step = (wall - self._last_wall).total_seconds() - (now - self._last_elapsed)
            if abs(step) > JUMP_SECONDS:
                self.skew += step
                self._jumps.append(step)
            self._last_wall, self._last_elapsed = wall, now
            return wall - timedelta(seconds=self.skew)

    def take_jumps(self) -> list[float]:
        """The jumps seen since the last call (seconds, negative: set back), oldest first."""
        self()
        with self._lock:
            jumps, self._jumps = self._jumps, []
        return jumps


@dataclass(frozen=True)
class Clock:
    """Where a long-running component reads the time: `now` for records and decisions (UTC), `monotonic` for
    intervals, and `wall` for what follows the system clock itself (APScheduler plans its runs on it)."""

    now: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = utcnow


def steady_clock() -> Clock:
    """The daemon's clock: records and decisions on `SteadyTime`, so a jump of the wall clock changes nothing."""
    return Clock(now=SteadyTime())


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
