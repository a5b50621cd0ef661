"""The daemon against a wall clock that jumps.

The daemon records and decides on `SteadyTime` (fpwatch.clock), which takes a jump out. APScheduler 3 plans
its runs on the wall clock itself, so a jump moves the planned runs the other way: set back an hour, every
run waits an hour more; set forward a day, every run is "missed". `ClockFollower.tick` (every half second)
takes the jumps SteadyTime saw, logs and counts them, and moves the runs that were planned on the clock
before the jump by the jump, so that every model keeps its interval in elapsed time.

Which runs were planned before the jump: those unchanged since the last tick, and, for a run APScheduler
planned between that tick and the jump, the ones the trigger would not plan now: after a clock set back, a
run further ahead than the trigger's next fire time from now; after a clock set forward, a run overdue by
more than `OVERDUE` (the scheduler plans a run in the future, and wakes for it on time).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.job import Job
from apscheduler.schedulers.base import BaseScheduler

from fpwatch.clock import SteadyTime
from fpwatch.logs import get_logger
from fpwatch.service.metrics import Metrics

OVERDUE = timedelta(seconds=30)

log = get_logger("fpwatch.daemon")


def planned_on_old_clock(job: Job, step: timedelta, wall: datetime, unchanged: bool) -> bool:
    run: datetime = job.next_run_time
    if unchanged:
        return True
    if step < timedelta(0):
        ahead = job.trigger.get_next_fire_time(None, wall)
        jitter = timedelta(seconds=getattr(job.trigger, "jitter", None) or 0)
        return ahead is not None and run > ahead + jitter
    return wall - run > OVERDUE


class ClockFollower:
    """Jumps of the wall clock: logged, counted, shown as skew, and APScheduler's planned runs moved with them."""

    def __init__(self, scheduler: BaseScheduler, steady: SteadyTime, metrics: Metrics) -> None:
        self.scheduler, self.steady, self.metrics = scheduler, steady, metrics
        self._planned: dict[str, datetime | None] = {}  # job id -> its next run at the last tick

    def tick(self, wall: datetime) -> None:
        jumps = self.steady.take_jumps()
        for jump in jumps:
            self.metrics.clock_jumps.inc()
            log.warning(
                "the wall clock jumped; fpwatch keeps counting elapsed time, its records stay this far from the "
                "system clock until it restarts",
                seconds=round(jump, 1),
                skew_seconds=round(self.steady.skew, 1),
            )
        if jumps:
            step = timedelta(seconds=sum(jumps))
            for job in self.scheduler.get_jobs():
                run = job.next_run_time
                if run is not None and planned_on_old_clock(job, step, wall, self._planned.get(job.id) == run):
                    job.modify(next_run_time=max(run + step, wall) if step < timedelta(0) else run + step)
        self.metrics.clock_skew.set(self.steady.skew)
        self._planned = {job.id: job.next_run_time for job in self.scheduler.get_jobs()}
