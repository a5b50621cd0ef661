"""Several daemons on one shared state (PostgreSQL): this daemon's heartbeat, and whether it takes a model's check.

Every daemon schedules every model at its own phase; when a model's job fires, the daemon asks the store for the
model's current schedule slot (store/postgres_instances.py) and checks it only if it got the slot. The slots are
the same for every daemon: an interval model's start at a fixed offset within its interval, drawn from its name
(`anchor`), and a cron model's are its cron times. So the provider sees each model checked once per interval,
whichever daemons run, and one that dies leaves its models to the next daemon whose phase comes in the slot.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fpwatch import __version__
from fpwatch.config import ModelConfig
from fpwatch.detect.state import ModelState
from fpwatch.errors import FpwatchError
from fpwatch.logs import get_logger
from fpwatch.service.schedule import cron_trigger
from fpwatch.store.leases import lease_owner
from fpwatch.store.protocol import Shared

HEARTBEAT_EVERY = 5.0  # seconds; the store calls a daemon gone after INSTANCE_TTL (30 s) without one
CRON_LOOKBACK = timedelta(minutes=10)  # how far back a late cron job looks for the cron time it fired for

log = get_logger("fpwatch.daemon")


def anchor(model: ModelConfig) -> float:
    """Where in its interval an interval model's slots start: the same on every host, different per model."""
    assert model.interval is not None
    digest = hashlib.sha256(model.name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * model.interval.total_seconds()


def slot(model: ModelConfig, wall: datetime) -> tuple[float, float]:
    """(anchor, period) for `Shared.claim_check`: an interval model's grid, or the cron time this run is for."""
    if model.interval is not None:
        return anchor(model), model.interval.total_seconds()
    plain = cron_trigger(model)  # without jitter: the cron times themselves
    latest = None
    fire = plain.get_next_fire_time(None, wall - CRON_LOOKBACK)
    while fire is not None and fire <= wall:
        latest = fire
        fire = plain.get_next_fire_time(fire, fire + timedelta(seconds=1))
    when = latest if latest is not None else wall.replace(microsecond=0)
    return when.astimezone(UTC).timestamp(), 0.0


def clear_of_edges(model: ModelConfig, start: datetime) -> datetime:
    """`start`, or a little later, so that an interval model's runs fall at least an eighth of the interval inside
    its slots: a run a few milliseconds either side of a slot's edge would sometimes find its slot already taken by
    its own previous run, and skip. (Within one eighth of the interval, the hosts' and the server's clocks may
    disagree, and runs be late, without a run changing slot.)"""
    if model.interval is None:
        return start  # cron runs fire at their cron times (plus jitter): inside their slots already
    period = model.interval.total_seconds()
    margin = period / 8
    offset = (start.timestamp() - anchor(model)) % period
    if offset < margin:
        return start + timedelta(seconds=margin - offset)
    if offset > period - margin:
        return start + timedelta(seconds=period - offset + margin)
    return start


@dataclass
class Sharing:
    """This daemon among the others on a shared state."""

    store: Shared
    started: datetime
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or lease_owner()  # what its outbox leases say: one name for both
        self.reachable = True  # the last heartbeat got through: while not, checks are not even tried

    async def beat(self, models: int) -> None:
        await self.store.heartbeat(self.name, __version__, self.started, models)

    async def take(self, model: ModelConfig, wall: datetime, states: dict[str, ModelState]) -> bool:
        """Did this daemon get the model's check now? If another one did, `states` gets what that one wrote last.
        While the heartbeat finds the database out of reach, no: the check could not be recorded, and waiting for a
        connection would only pile the runs up behind each other."""
        if not self.reachable:
            return False
        try:
            if await self.store.claim_check(model.name, self.name, *slot(model, wall)):
                return True
            states[model.name] = await self.store.load_state(model.name)
        except FpwatchError as exc:
            log.warning("check skipped: the state database is unreachable", model=model.name, error=str(exc))
        return False

    async def leave(self) -> None:
        await self.store.leave(self.name)

    async def forever(self, models: Callable[[], int], problems: dict[str, str], now: Callable[[], datetime]) -> None:
        """A heartbeat every few seconds. While the database takes none, `problems` (what /healthz reports) says
        so; one taken clears that, and an earlier failed write (a heartbeat is a write)."""
        while True:
            try:
                await self.beat(models())
            except FpwatchError as exc:
                self.reachable = False
                if "database" not in problems:
                    problems["database"] = f"the state database is unreachable since {now():%H:%M:%S} UTC: {exc}"
                    log.error("the state database is unreachable; checks wait for it", error=str(exc))
            except Exception:
                log.exception("instance heartbeat failed unexpectedly; retrying")
            else:
                self.reachable = True
                if problems.pop("database", None) is not None:
                    log.info("the state database is reachable again")
                problems.pop("write", None)
            await asyncio.sleep(HEARTBEAT_EVERY)
