"""Is the daemon healthy? Pure: a snapshot of what the daemon knows in, the reasons it is not out.

`/healthz` reports every reason; systemd's watchdog is pinged only while no reason is one a restart
would fix (the scheduler not running or not firing). Slow providers or checks queueing on concurrency
limits are reported, not punished by a kill that would lose in-flight checks and fix nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fpwatch.config import ModelConfig

MISFIRE_GRACE_SECONDS = 60
LOOP_BLOCKED_SECONDS = 5.0


@dataclass(frozen=True)
class Reason:
    text: str
    restart_helps: bool = False  # what the watchdog acts on


@dataclass(frozen=True)
class Snapshot:
    """What the daemon knows at one moment, as health needs it."""

    now: datetime  # the daemon's own time (it does not jump with the wall clock)
    wall: datetime  # the wall clock, which APScheduler's planned run times are on
    monotonic: float
    started: datetime
    scheduler_running: bool
    loop_tick: float  # monotonic time of the event loop's last tick
    next_runs: Sequence[tuple[str, datetime | None]]  # (model, next scheduled run)
    in_flight: Sequence[float]  # monotonic start of each check running now
    models: Sequence[ModelConfig]
    last_checks: Mapping[str, datetime | None]  # model -> its last check attempt
    scheduled_since: Mapping[str, datetime]  # model -> when its current schedule began
    state_problems: Sequence[str] = ()  # the state database: a failed write, a file deleted under us


def reasons(s: Snapshot) -> list[Reason]:
    """Reasons the daemon is unhealthy; empty when all is well."""
    out = [Reason(text) for text in s.state_problems]
    if not s.scheduler_running:
        out.append(Reason("the scheduler is not running", restart_helps=True))
    blocked = s.monotonic - s.loop_tick
    if blocked > LOOP_BLOCKED_SECONDS:
        out.append(Reason(f"the event loop has been blocked for {blocked:.0f}s"))
    overdue = [
        name
        for name, next_run in s.next_runs
        if next_run is not None and s.wall - next_run > timedelta(seconds=MISFIRE_GRACE_SECONDS + 30)
    ]
    if overdue:
        out.append(Reason(f"the scheduler is stuck: {len(overdue)} checks overdue (e.g. {overdue[0]})", True))
    limit = max((10 * m.timeout.total_seconds() + 60 for m in s.models), default=60)
    stuck = [since for since in s.in_flight if s.monotonic - since > limit]
    if stuck:
        out.append(Reason(f"{len(stuck)} checks have run for more than {limit:.0f}s"))
    late = [m.name for m in s.models if _last_check_too_old(s, m)]
    if late:
        out.append(Reason(f"{len(late)} models have not been checked on schedule (e.g. {late[0]})"))
    return out


def _last_check_too_old(s: Snapshot, model: ModelConfig) -> bool:
    """Two missed intervals (plus the request timeout and some slack) without any check attempt."""
    if model.interval is None:
        return False  # cron schedules: the overdue-job test covers them
    allowed = 2 * model.interval + model.timeout + timedelta(seconds=60)
    last = s.last_checks.get(model.name)
    scheduled = s.scheduled_since.get(model.name, s.started)
    since = max(last, scheduled) if last else scheduled
    return s.now - since > allowed
