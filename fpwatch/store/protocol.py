"""The `Store` protocol: fpwatch's state in the domain's words, awaited from the event loop.

Implementations keep the event loop free: the SQLite store does all its work on worker threads, and a
PostgreSQL store would use an async driver. Nothing here names a database: no connections, PRAGMAs
or process checks; leases name their owner, and what "alive" means is the implementation's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from fpwatch.clock import iso
from fpwatch.detect.events import Event, ScreenFigures
from fpwatch.detect.observation import Observation
from fpwatch.detect.signals import Signal
from fpwatch.detect.state import ModelState
from fpwatch.store.chain import Audit, ChainHead


@dataclass(frozen=True)
class StoredEvent:
    id: int | None  # None for an event of a dry run, which is never stored
    event: Event
    check_id: str | None
    acked_at: datetime | None = None
    ack_comment: str | None = None
    # The details exactly as stored (a row of an earlier fpwatch may carry fewer or other keys): the audit
    # trail shows them as they are, the typed `event.details` serve routing and rendering.
    stored_details: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The event object of `events --json`, `check --json` and exports (documented in the README)."""
        e = self.event
        return {
            "id": self.id,
            "time": iso(e.time),
            "model": e.model,
            "type": e.type,
            "severity": e.severity,
            "summary": e.summary,
            "details": dict(self.stored_details) if self.stored_details is not None else e.details.to_json(),
            "check_id": self.check_id,
            "acked_at": iso(self.acked_at) if self.acked_at else None,
            "ack_comment": self.ack_comment,
        }


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    notifier: str
    title: str
    body: str
    notify_type: str
    created: datetime
    attempts: int


@dataclass(frozen=True)
class CheckRecord:
    id: str
    model: str
    started: datetime
    finished: datetime
    requests: int
    failures: int
    error: str | None
    screen: ScreenFigures | None = None  # the drift screen it ran (none while the model learns): the report's chart


@dataclass(frozen=True)
class AnswerCount:
    """How many requests of a model in one time step were answered with this fingerprint and resolved model (`ok`),
    or failed (`ok` False: the values are what the error answer carried, usually none)."""

    model: str
    step: datetime  # the step's start (UTC)
    system_fingerprint: str | None
    response_model: str | None
    ok: bool
    count: int


@dataclass(frozen=True)
class DriftScreen:
    """The drift screen one check ran: its figures against the model's thresholds at the time."""

    model: str
    time: datetime  # when the check finished
    figures: ScreenFigures


Conclude = Callable[[ModelState], tuple[ModelState, list[Event]]]
"""Applied to the model's state inside the check's transaction (detect.conclude, bound to the check)."""
Route = Callable[[ModelState, StoredEvent], list[str]]
"""The notifiers an event goes to, given the model's state after its check (notify.routing)."""


class Store(Protocol):
    """Where fpwatch keeps what it knows. Every method may raise `StateError` with a one-line reason."""

    # -- checks and model state

    async def load_state(self, model: str) -> ModelState: ...

    async def record_check(
        self,
        check: CheckRecord,
        observations: Sequence[Observation],
        conclude: Conclude,
        route: Route | None = None,
    ) -> tuple[ModelState, list[StoredEvent]]:
        """Atomically: load the model's state, apply `conclude`, append the observations (hash-chained), save
        the state and the events, and queue each event for the notifiers `route` names.

        `conclude` may run the drift confirmation's exact tests (about a second) when another process changed
        the state since the check screened it: implementations run it off the event loop."""
        ...

    async def update_state(self, model: str, change: Callable[[ModelState], ModelState]) -> ModelState:
        """Atomically: load the model's state, apply `change` (what discovery found), save and return it."""
        ...

    async def signal_history(self, model: str, kind: str) -> list[Signal]: ...

    # -- events

    async def events(
        self,
        *,
        since: datetime | None = None,
        model: str | None = None,
        severities: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Events oldest first (the newest `limit` of them when limited)."""
        ...

    async def event(self, event_id: int) -> StoredEvent | None: ...

    async def events_by_id(self, ids: Sequence[int]) -> list[StoredEvent]:
        """These events, in the order asked (missing ones left out)."""
        ...

    async def ack(self, event_id: int, comment: str | None, now: datetime) -> StoredEvent | None:
        """A person's acknowledgement; acking the open canary.drift ends the model's `drift` state."""
        ...

    # -- the outbox (DESIGN section 7)

    async def pending_alerts(self, notifier: str) -> list[tuple[int, datetime]]:
        """(event id, queued at) of this notifier's alerts not yet in a message, oldest first."""
        ...

    async def compose_message(
        self, notifier: str, event_ids: Sequence[int], title: str, body: str, notify_type: str, now: datetime
    ) -> int | None:
        """Write one message for these alerts and tie them to it; None if another process got there first."""
        ...

    async def due_reminders(self, event_types: Sequence[str], every: timedelta, now: datetime) -> list[tuple[int, str]]:
        """(event id, notifier) of unacked alerts of these types, delivered, last sent over `every` ago."""
        ...

    async def add_reminder(
        self, event_id: int, notifier: str, title: str, body: str, notify_type: str, now: datetime, every: timedelta
    ) -> None:
        """Queue a reminder and note when, at once; nothing if another process just did."""
        ...

    async def claim_next_message(self, notifier: str, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """The oldest due message of this notifier that no live process holds, leased to this process."""
        ...

    async def orphaned_messages(self, notifiers: set[str]) -> list[tuple[int, str]]:
        """Pending messages of notifiers no longer configured."""
        ...

    async def mark_delivered(self, message_id: int, now: datetime) -> None: ...

    async def retry_message(self, message_id: int, due: datetime, error: str) -> None: ...

    async def expire_message(self, message_id: int, now: datetime, error: str) -> None: ...

    async def notifier_status(self, notifier: str) -> dict[str, Any]:
        """Messages waiting, expired, the last error and the last delivery of one notifier (`status`)."""
        ...

    # -- history (the HTML report: store/history.py)

    async def answer_counts(self, since: datetime, step: timedelta) -> list[AnswerCount]:
        """The requests since `since`, counted per model and time `step` (one of history.STEPS, a second to a day,
        aligned on the UTC clock), fingerprint, resolved model and success: a chart's worth, however many."""
        ...

    async def drift_screens(self, since: datetime, step: timedelta) -> list[DriftScreen]:
        """The drift screens of the checks finished since `since`, oldest first: per model and time `step`, the one
        nearest its threshold or furthest past it, on either channel (answers, logprobs)."""
        ...

    # -- the audit trail

    def observation_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        """Observations in export form (chain.py), oldest first, with seq, prev_hash and hash."""
        ...

    def event_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events in export form, oldest first: the event object with seq, prev_hash, hash, and `acks` (each
        acknowledgement with its time, comment and chain fields)."""
        ...

    def mode_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        """The chain's switch to keyed mode in export form (seq and from_row its position, key_id, set_at,
        prev_hash, hash), if it has one (made since `since`)."""
        ...

    async def chain_head(self) -> ChainHead:
        """The newest link of the audit chain and its mode: what fpwatch publishes (no key needed)."""
        ...

    async def verify_audit(self, head: str | None = None) -> Audit:
        """Walk the whole audit chain (chain.verify), noting the rows whose hash starts with `head`. Raises
        StateError when this store's key cannot verify it (keyed without the key, another key, or a key given
        for a chain with no keyed part). The walk takes where HMACs begin from the chain's own switch to keyed
        mode, and checks the database's record of the mode against it."""
        ...

    async def prune_outputs(self, before: datetime) -> int:
        """Drop raw outputs older than `before`; their digests stay, so the chain still verifies."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Instance:
    """A daemon sharing the state (a PostgreSQL one): its name is its lease owner's (host:pid)."""

    name: str
    version: str
    started: datetime
    seen: datetime  # its last heartbeat, on the database server's clock
    models: int
    alive: bool  # heartbeat within the shared store's instance TTL

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "started": iso(self.started),
            "seen": iso(self.seen),
            "models": self.models,
            "alive": self.alive,
        }


@dataclass(frozen=True)
class Claim:
    """Who took a model's latest scheduled check, and when (the database server's clock)."""

    owner: str
    at: datetime


@runtime_checkable
class Shared(Store, Protocol):
    """A state several daemons may share (PostgreSQL): who is alive, and which one checks a model when it is due.

    A SQLite state is not shared (its instance lock refuses a second daemon) and does not implement this."""

    async def heartbeat(self, name: str, version: str, started: datetime, models: int) -> None:
        """Register this daemon, or say it is still alive (the database server's clock)."""
        ...

    async def leave(self, name: str) -> None:
        """This daemon stops: it is no longer listed as live, and its leases are free at once."""
        ...

    async def claim_check(self, model: str, owner: str, anchor: float, period: float) -> bool:
        """Take the check of `model` for its schedule slot now: True for exactly one caller per slot. With a `period`
        (seconds), the slots are `anchor + k * period` (seconds since the epoch) and the one now is found on the
        database server's clock, so the hosts' clocks need not agree; with `period` 0 the slot is `anchor` itself (a
        cron time). A slot earlier than one already taken is never given."""
        ...

    async def instances(self) -> list[Instance]:
        """The daemons registered on this state, alive or lately gone, newest first."""
        ...

    async def claims(self) -> dict[str, Claim]:
        """Model -> who took its latest scheduled check."""
        ...
