"""What the HTML report reads, the same on both backends: requests counted per time step, and the drift screens.

A time is stored in fpwatch's one ISO form ("2026-11-22T20:42:48.092829Z"), so a time step aligned on the UTC clock
is a prefix of it: the first 13 characters name the hour. Counting by `substr(time, 1, n)` needs no date
function (SQLite and PostgreSQL have different ones), uses no index it lacks, and returns a chart's worth of rows
however many requests there were: 90 days of 20 models at an hourly step are at most 43,200 groups per value.

Values only (rows, and the SQL text each backend fills in with its own placeholder); each backend runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fpwatch.clock import iso, parse_iso
from fpwatch.detect.events import ScreenFigures
from fpwatch.store.protocol import AnswerCount, CheckRecord, DriftScreen

# A step -> the length of the ISO prefix that names it.
STEPS: dict[timedelta, int] = {
    timedelta(days=1): 10,  # 2026-11-22
    timedelta(hours=1): 13,  # 2026-11-22T20
    timedelta(minutes=10): 15,  # 2026-11-22T20:4
    timedelta(minutes=1): 16,  # 2026-11-22T20:42
    timedelta(seconds=10): 18,  # 2026-11-22T20:42:4
    timedelta(seconds=1): 19,  # 2026-11-22T20:42:48
}
_COMPLETION = "0000-01-01T00:00:00"  # what a prefix lacks, from its own length on


def finest_step(width: timedelta) -> timedelta:
    """The coarsest step that still divides buckets of `width` finely (at most `width`; a second at least)."""
    return max((s for s in STEPS if s <= width), default=min(STEPS))


def step_start(prefix: str) -> datetime:
    """The start of the step an ISO prefix names ("2026-11-22T20" -> 20:00 UTC that day)."""
    return datetime.fromisoformat(prefix + _COMPLETION[len(prefix) :]).replace(tzinfo=UTC)


def answer_sql(step: timedelta, mark: str) -> str:
    """Requests since a time (one parameter, `mark` its placeholder), grouped per model, step and values."""
    return (
        f"SELECT model, substr(time, 1, {_prefix(step)}) AS step, system_fingerprint, response_model, ok, count(*) "
        f"FROM observations WHERE time >= {mark} GROUP BY model, step, system_fingerprint, response_model, ok"
    )


def _prefix(step: timedelta) -> int:
    if step not in STEPS:
        raise ValueError(f"a step is one of {', '.join(str(s) for s in STEPS)}, not {step}")
    return STEPS[step]


def answer_counts(rows: Iterable[Sequence[Any]]) -> list[AnswerCount]:
    return [AnswerCount(r[0], step_start(r[1]), r[2], r[3], bool(r[4]), int(r[5])) for r in rows]


SCREEN_COLUMNS = (
    "check_id",
    "model",
    "time",
    "surprise",
    "threshold",
    "logprob_change",
    "logprob_threshold",
    "samples",
)


def screen_sql(step: timedelta, mark: str) -> str:
    """The drift screens since a time (one parameter, `mark` its placeholder), oldest first: per model and step, the
    check whose screen came nearest to its threshold (or passed it furthest), on either channel."""
    columns = ", ".join(SCREEN_COLUMNS[1:])
    answers, logprobs = "surprise / threshold", "coalesce(logprob_change, 0) / logprob_threshold"
    return (
        f"SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY model, substr(time, 1, "
        f"{_prefix(step)}) ORDER BY CASE WHEN {answers} > {logprobs} THEN {answers} ELSE {logprobs} END DESC, time) "
        f"AS worst FROM drift_screens WHERE time >= {mark}) AS screens WHERE worst = 1 ORDER BY time"
    )


def insert_screen_sql(mark: str) -> str:
    return f"INSERT INTO drift_screens ({', '.join(SCREEN_COLUMNS)}) VALUES ({', '.join([mark] * len(SCREEN_COLUMNS))})"


def screen_row(check: CheckRecord) -> tuple[Any, ...] | None:
    """The row of the check's drift screen, if it ran one."""
    s = check.screen
    if s is None:
        return None
    return (
        check.id,
        check.model,
        iso(check.finished),
        s.surprise,
        s.threshold,
        s.logprob_change,
        s.logprob_threshold,
        s.samples,
    )


def drift_screens(rows: Iterable[Sequence[Any]]) -> list[DriftScreen]:
    return [
        DriftScreen(
            r[0], parse_iso(r[1]), ScreenFigures(float(r[2]), float(r[3]), _float(r[4]), float(r[5]), int(r[6]))
        )
        for r in rows
    ]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
