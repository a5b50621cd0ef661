"""The daemon's health on a controlled clock: the pure reasons, and a real Daemon whose clock the test moves."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fpwatch.clock import Clock
from fpwatch.config import load_config
from fpwatch.providers import TYPES
from fpwatch.service import health
from fpwatch.service.daemon import Daemon
from fpwatch.sim import Simulator

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def snapshot(tmp_path: Path, **changes: object) -> health.Snapshot:
    path = tmp_path / "fpwatch.toml"
    path.write_text(
        '[providers.sim]\ntype = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[[models]]\nprovider = "sim"\nmodel = "m"\ninterval = "1m"\ntimeout = "30s"\n'
    )
    config = load_config(path, TYPES, env={})
    base = health.Snapshot(
        now=T0,
        wall=T0,
        monotonic=500.0,
        started=T0 - timedelta(minutes=10),
        scheduler_running=True,
        loop_tick=499.8,
        next_runs=[("sim/m", T0 + timedelta(seconds=20))],
        in_flight=[],
        models=config.models,
        last_checks={"sim/m": T0 - timedelta(seconds=40)},
        scheduled_since={"sim/m": T0 - timedelta(minutes=10)},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def texts(reasons: list[health.Reason]) -> list[str]:
    return [r.text for r in reasons]


def test_a_daemon_checking_on_schedule_is_healthy(tmp_path: Path) -> None:
    """Scheduler running, loop ticking, last check a moment ago, nothing stuck: no reason at all."""
    assert health.reasons(snapshot(tmp_path)) == []


def test_each_symptom_is_its_own_reason_and_only_the_scheduler_ones_call_for_a_restart(tmp_path: Path) -> None:
    """A blocked loop, a long check and a late model are reported; the watchdog acts only on the scheduler."""
    sick = snapshot(
        tmp_path,
        scheduler_running=False,
        loop_tick=490.0,
        next_runs=[("sim/m", T0 - timedelta(minutes=2))],
        in_flight=[500.0 - 400],
        last_checks={"sim/m": T0 - timedelta(minutes=5)},
    )
    found = health.reasons(sick)
    assert texts(found) == [
        "the scheduler is not running",
        "the event loop has been blocked for 10s",
        "the scheduler is stuck: 1 checks overdue (e.g. sim/m)",
        "1 checks have run for more than 360s",
        "1 models have not been checked on schedule (e.g. sim/m)",
    ]
    assert [r.text for r in found if r.restart_helps] == [
        "the scheduler is not running",
        "the scheduler is stuck: 1 checks overdue (e.g. sim/m)",
    ]


def test_a_model_is_late_only_after_two_intervals_its_timeout_and_a_minute(tmp_path: Path) -> None:
    """interval 1m, timeout 30s: 3m30s without a check is allowed, a second more is late."""
    last = {"sim/m": T0 - timedelta(minutes=3, seconds=30)}
    assert health.reasons(snapshot(tmp_path, last_checks=last)) == []
    later = {"sim/m": T0 - timedelta(minutes=3, seconds=31)}
    assert texts(health.reasons(snapshot(tmp_path, last_checks=later))) == [
        "1 models have not been checked on schedule (e.g. sim/m)"
    ]
    fresh = snapshot(tmp_path, last_checks={}, scheduled_since={"sim/m": T0 - timedelta(minutes=1)})
    assert health.reasons(fresh) == []  # just added by a reload: judged from when its schedule began


class FakeTime:
    """The daemon's clock, moved by the test."""

    def __init__(self) -> None:
        self.wall = datetime.now(UTC)  # APScheduler plans its runs on the real wall clock
        self.tick = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.tick += seconds

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, monotonic=lambda: self.tick, wall=lambda: self.wall)


def test_a_daemon_whose_scheduler_does_not_fire_turns_unhealthy_as_its_clock_moves(tmp_path: Path) -> None:
    """A paused scheduler, five minutes later by the daemon's clock: late models and overdue jobs, the latter one
    for the watchdog; no sleeping."""
    path = tmp_path / "fpwatch.toml"
    with Simulator(seed=1) as sim:
        path.write_text(
            f'[fpwatch]\nstate = "state.db"\n[defaults]\ninterval = "1m"\njitter = "10s"\n'
            f'[providers.sim]\ntype = "openai-compatible"\nbase_url = "{sim.base_url}"\n'
            '[[models]]\nprovider = "sim"\nmodel = "a"\n[[models]]\nprovider = "sim"\nmodel = "b"\n'
        )
        fake = FakeTime()

        async def scenario() -> tuple[list[str], list[str], list[str], str]:
            daemon = Daemon(path, load_config(path, TYPES, env={}), clock=fake.clock())
            await daemon.open()
            await daemon.sync_jobs(first=True)
            daemon.scheduler.start(paused=True)
            healthy = daemon.health()
            fake.advance(5 * 60)
            sick, stuck = daemon.health(), daemon.stuck()
            line = daemon.status_line()
            daemon.scheduler.shutdown(wait=False)
            await daemon.close()
            return healthy, sick, stuck, line

        healthy, sick, stuck, line = asyncio.run(scenario())
    assert healthy == []
    blocked, overdue, late = sick
    assert blocked == "the event loop has been blocked for 300s"  # its watchdog task is not running here
    assert overdue.startswith("the scheduler is stuck: 2 checks overdue (e.g. sim/")  # whichever was due first
    assert late == "2 models have not been checked on schedule (e.g. sim/a)"
    assert stuck == [overdue]
    assert line == "watching 2 models: 2 learning"
