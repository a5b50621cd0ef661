"""When a model is checked: its APScheduler trigger, and what makes two schedules the same."""

from __future__ import annotations

from datetime import datetime

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from fpwatch.config import ModelConfig

JOB_PREFIX = "check:"


def trigger(model: ModelConfig, first_run: datetime | None = None) -> BaseTrigger:
    if model.cron:
        return cron_trigger(model, jitter=int(model.jitter.total_seconds()) or None)
    assert model.interval is not None
    # No trigger jitter: APScheduler 3 adds it to the previous, already jittered, run, so a "1m" model
    # would drift to every 1m + jitter/2. Instead each model gets a fixed random phase (first_run).
    return IntervalTrigger(seconds=model.interval.total_seconds(), start_date=first_run, timezone=model.timezone)


def cron_trigger(model: ModelConfig, jitter: int | None = None) -> CronTrigger:
    assert model.cron is not None
    minute, hour, day, month, day_of_week = model.cron.split()
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone=model.timezone, jitter=jitter
    )


def schedule_key(model: ModelConfig) -> str:
    """What makes a schedule: a reload that leaves this unchanged leaves the job's timing alone."""
    return f"{model.interval}|{model.cron}|{model.timezone}|{model.jitter}"
