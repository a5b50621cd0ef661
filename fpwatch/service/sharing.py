"""Several daemons on one shared state (PostgreSQL): this daemon's heartbeat, and whether it takes a model's check.

Every daemon schedules every model at its own phase, but each model is one daemon's turn: among the daemons alive
(their heartbeats), the one whose name hashed with the model's ranks highest (rendezvous hashing: when a daemon comes
or goes, only its own share of the models moves). The others skip the model's runs without asking the database, so
three daemons cost about what one does. The daemon whose turn it is still claims the model's current schedule slot
(store/postgres_instances.py) and checks it only if it got it: the claim is what guarantees one check per slot
while the daemons' views of who is alive differ for a moment. The slots are the same for every daemon: an interval
model's start at a fixed offset within its interval, drawn from its name (`anchor`), and a cron model's are its cron
times. A daemon that dies leaves its models to the others once its heartbeat is older than the instances' TTL; a
model whose daemon stops checking it while still beating (a stuck daemon, or one whose config lacks the model) is
taken by the others once its last check is two intervals old, as they see when they read its state.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection
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
REREAD_AFTER = timedelta(minutes=5)  # how stale this daemon lets its copy of another daemon's model's state get

log = get_logger("fpwatch.daemon")


def anchor(model: ModelConfig) -> float:
    """Where in its interval an interval model's slots start: the same on every host, different per model."""
    assert model.interval is not None
    return _fraction(model.name, 0) * model.interval.total_seconds()


def _fraction(name: str, part: int) -> float:
    """A number in [0, 1) drawn from the name, the same on every host; each `part` (0 or 1) another draw."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[8 * part : 8 * part + 8], "big") / 2**64


def turn(model: str, live: Collection[str]) -> str:
    """Whose turn the model is among the live daemons: the same answer on every host that sees the same daemons."""
    return max(live, key=lambda name: (hashlib.sha256(f"{name}\n{model}".encode()).digest(), name))


def overdue(model: ModelConfig, state: ModelState | None, wall: datetime, started: datetime) -> bool:
    """Is an interval model's last check by any daemon (or, never checked, this daemon's start) two intervals old,
    plus its timeout and a minute?"""
    if model.interval is None:
        return False  # a cron model's daemon is the one whose turn it is, as long as it beats
    last = state.last_check if state is not None and state.last_check is not None else started
    return wall - last > 2 * model.interval + model.timeout + timedelta(seconds=60)


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
        self.live: frozenset[str] = frozenset({self.name})  # the daemons alive at the last heartbeat
        # When this daemon last read each of the others' models' state. The copy read at start counts as read earlier
        # than the start by a share of REREAD_AFTER drawn from the model's name: the first rereads come spread over
        # REREAD_AFTER, not at once (10,000 models' reads in one second would starve the checks of connections).
        self._read: dict[str, datetime] = {}
        self._mine: dict[str, bool] = {}  # turn() of each model asked about, among the daemons in `live`

    async def beat(self, models: int) -> None:
        await self.store.heartbeat(self.name, __version__, self.started, models)
        live = frozenset(i.name for i in await self.store.instances() if i.alive) | {self.name}
        if live != self.live:
            self.live, self._mine = live, {}

    def mine(self, model: str) -> bool:
        """Is the model this daemon's turn (as far as it knows who is alive)?"""
        if len(self.live) == 1:
            return True
        if (found := self._mine.get(model)) is None:
            found = self._mine[model] = turn(model, self.live) == self.name
        return found

    async def take(self, model: ModelConfig, wall: datetime, states: dict[str, ModelState]) -> bool:
        """Does this daemon check the model now? Not when it is another daemon's turn (then `states` gets what that
        one wrote, read at most every REREAD_AFTER, unless that one has stopped checking it), nor when another
        daemon got the slot first (then `states` gets what it wrote). While the heartbeat finds the database out of
        reach, no: the check could not be recorded, and waiting for a connection would only pile the runs up."""
        if not self.reachable:
            return False
        try:
            if not self.mine(model.name):
                if model.name not in self._read:  # the copy read at start: as if read a while before it
                    self._read[model.name] = self.started - _fraction(model.name, 1) * REREAD_AFTER
                fresh = wall - self._read[model.name] < REREAD_AFTER
                if fresh and not overdue(model, states.get(model.name), wall, wall):  # never checked: not yet
                    return False
                states[model.name] = await self.store.load_state(model.name)
                self._read[model.name] = wall
                if not overdue(model, states[model.name], wall, self.started):
                    return False
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
