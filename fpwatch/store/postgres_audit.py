"""The audit chain in PostgreSQL (store/chain.py is the contract; sqlite_audit.py the same for SQLite): appending
links inside a transaction, reading the head, the export form, and the walk for `export --verify`.

Appending is serialised across processes and hosts by a transaction-level advisory lock (`CHAIN_LOCK`) that every
appending transaction takes before it reads the chain's end: positions and ids cannot race, and the lock goes
with the transaction (a dropped connection releases it). Every row has its `seq`, so the walk and the head read
each table by it.

The reads that follow one another without needing each other's answers are all sent before the first is read, so
that on a connection in pipeline mode (PostgresStore.record_check) they cost one round trip; each is still a
statement of its own, run in order: in READ COMMITTED a statement sees what was committed before it started, so the
chain's end must be read by a statement after the one that waited for the lock, never by the same one.

The export form and the walk's links are built from the rows exactly as sqlite_audit builds them, so the same
history exports, hashes and verifies identically on both backends.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from fpwatch.clock import iso
from fpwatch.detect.events import Event
from fpwatch.detect.observation import Observation
from fpwatch.errors import StateError
from fpwatch.store import chain, codec
from fpwatch.store.protocol import StoredEvent

CHAIN_LOCK = 0x6670_7761_7463_6801  # pg_advisory_xact_lock(bigint) key of the chain's end ("fpwatch" 01)
ROWS_PER_FETCH = 1000
Db = AsyncConnection[tuple[Any, ...]]
SyncDb = psycopg.Connection[tuple[Any, ...]]

OBSERVATION_COLUMNS = (
    "id", "check_id", "time", "model", "canary", "sample", "seed", "ok", "system_fingerprint", "fingerprint_state",
    "response_model", "output", "output_sha256", "finish_reason", "first_token", "input_tokens", "output_tokens",
    "reasoning_tokens", "latency_ms", "request_id", "response_id", "http_status", "attempts", "error_kind", "error",
    "prev_hash", "hash", "seq",
)  # fmt: skip
_EVENT_LINK = ("id", "time", "model", "type", "severity", "summary", "details", "check_id", "acked_at", "ack_comment")
_ACK_COLUMNS = ("id", "event_id", "time", "comment", "seq", "prev_hash", "hash")
_MODE_COLUMNS = ("from_row", "key_id", "set_at", "prev_hash", "hash")
_MARKS = ", ".join(["%s"] * len(OBSERVATION_COLUMNS))
_OBSERVATION_INSERT = f"INSERT INTO observations ({', '.join(OBSERVATION_COLUMNS)}) VALUES ({_MARKS})"
_LAST = """SELECT seq, hash FROM (
    (SELECT seq, hash FROM observations ORDER BY seq DESC LIMIT 1)
    UNION ALL (SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1)
    UNION ALL (SELECT seq, hash FROM acks ORDER BY seq DESC LIMIT 1)
    UNION ALL (SELECT from_row, hash FROM audit_mode ORDER BY from_row DESC LIMIT 1)
) newest ORDER BY seq DESC LIMIT 1"""
_MODE = "SELECT from_row, key_id, set_at FROM audit_mode ORDER BY from_row LIMIT 1"
_IDS = "(SELECT COALESCE(MAX(id), 0) FROM observations), (SELECT COALESCE(MAX(id), 0) FROM events)"
# What an appender starts from, in one statement: the chain's mode, its end and the newest ids.
_START = f"""SELECT mode.from_row, mode.key_id, mode.set_at, newest.seq, newest.hash, {_IDS}
FROM (SELECT 1) AS one LEFT JOIN ({_MODE}) AS mode ON true LEFT JOIN ({_LAST}) AS newest ON true"""


async def lock_chain(db: Db) -> None:
    """Hold the chain's end until this transaction ends (every appender waits here for the one before)."""
    await db.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))


def _mode(row: Sequence[Any] | None) -> chain.Mode:
    return chain.Mode(row[0], row[1], row[2]) if row else chain.Mode()


def _end(row: Sequence[Any] | None) -> tuple[int, str]:
    """(seq, hash) of the newest link; (0, GENESIS) for an empty chain."""
    return (int(row[0]), row[1]) if row is not None else (0, chain.GENESIS)


async def mode(db: Db) -> chain.Mode:
    return _mode(await (await db.execute(_MODE)).fetchone())


async def last(db: Db) -> tuple[int, str]:
    return _end(await (await db.execute(_LAST)).fetchone())


async def head(db: Db) -> chain.ChainHead:
    async with db.pipeline():  # its end brings both answers: one round trip
        newest, modes = await db.execute(_LAST), await db.execute(_MODE)
    seq, digest = _end(await newest.fetchone())
    found = _mode(await modes.fetchone())
    return chain.ChainHead(digest if seq else None, seq, found.name, found.keyed_from)


async def take_key(db: Db, key: bytes | None, where: str, now: datetime) -> int | None:
    """sqlite_audit.take_key, in PostgreSQL (inside a transaction: it takes the chain's lock to append the
    switch). Returns the row a plain chain that had rows becomes keyed from; None when nothing switched."""
    switched = None
    if key is not None and (await mode(db)).keyed_from is None:
        await lock_chain(db)
        if (await mode(db)).keyed_from is None:  # another process may have switched it while this one waited
            switched, _, _ = await _switch(db, key, *(await last(db)), now)
    _refuse(await mode(db), key, where)
    return switched


async def _switch(db: Db, key: bytes, seq: int, prev: str, now: datetime) -> tuple[int | None, int, str]:
    """Append the mode link after (seq, prev), the chain's lock held: (the row a chain that had rows becomes keyed
    from, else None; the new end's seq and hash)."""
    fields = {"from_row": seq + 1, "key_id": chain.key_id(key), "set_at": iso(now)}
    digest = chain.link_hash("mode", prev, fields, key)
    await db.execute(
        "INSERT INTO audit_mode (from_row, key_id, set_at, prev_hash, hash) VALUES (%s, %s, %s, %s, %s)",
        (*fields.values(), prev, digest),
    )
    return (seq + 1 if seq else None), seq + 1, digest


def _refuse(found: chain.Mode, key: bytes | None, where: str) -> None:
    problem = chain.key_problem(found, key, where)
    if problem is not None:
        raise StateError(problem)


class Appender:
    """Links appended in one transaction that holds the chain's lock (`start` takes it). The ids of observations and
    events are counted on from those read under the lock: every writer of those tables holds it."""

    def __init__(
        self, db: Db, key: bytes | None, seq: int, prev: str, ids: Sequence[int], switched: int | None = None
    ) -> None:
        self.db = db
        self.key = key
        self.seq, self.prev = seq, prev
        self.last_observation, self.last_event = ids
        self.switched = switched  # as take_key says it: the row this appender's switch to keyed made the first keyed

    @classmethod
    async def start(cls, db: Db, key: bytes | None, where: str, now: datetime) -> Appender:
        """Take the chain's lock, then read its mode, its end and the newest ids (one statement, sent with the lock
        in a pipeline). A writer with a key switches a plain chain to keyed first (as take_key does), so that it keys
        every link it writes; a key that does not fit the chain is refused."""
        await lock_chain(db)
        row = await (await db.execute(_START)).fetchone()
        assert row is not None
        found = _mode(row[0:3] if row[0] is not None else None)
        seq, prev = _end(row[3:5] if row[3] is not None else None)
        switched = None
        if key is not None and found.keyed_from is None:
            switched, seq, prev = await _switch(db, key, seq, prev, now)
            found = await mode(db)
        _refuse(found, key, where)
        return cls(db, key, seq, prev, (int(row[5]), int(row[6])), switched)

    def link(self, kind: str, fields: dict[str, Any]) -> tuple[int, str, str]:
        """(seq, prev_hash, hash) of the next link."""
        self.seq += 1
        digest = chain.link_hash(kind, self.prev, fields, self.key)
        prev, self.prev = self.prev, digest
        return self.seq, prev, digest

    async def _next_id(self, table: str) -> int:
        row = await (await self.db.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")).fetchone()
        assert row is not None
        return int(row[0])

    async def observations(self, check_id: str, observations: Sequence[Observation]) -> None:
        if not observations:
            return
        first_id = self.last_observation + 1
        self.last_observation += len(observations)
        rows = []
        for offset, obs in enumerate(observations):
            fields = chain.observation_fields(obs, check_id)
            seq, prev, digest = self.link("observation", fields)
            first_token = json.dumps(fields["first_token"]) if obs.first_token else None
            rows.append(
                (
                    first_id + offset, check_id, fields["time"], obs.model, obs.canary, obs.sample, obs.seed,
                    int(obs.ok), obs.system_fingerprint, obs.fingerprint_state, obs.response_model, obs.output,
                    fields["output_sha256"], obs.finish_reason, first_token, obs.input_tokens, obs.output_tokens,
                    obs.reasoning_tokens, obs.latency_ms, obs.request_id, obs.response_id, obs.http_status,
                    obs.attempts, obs.error_kind, obs.error, prev, digest, seq,
                )
            )  # fmt: skip
        async with self.db.cursor() as cursor:
            await cursor.executemany(_OBSERVATION_INSERT, rows)  # pipelined: one round trip, not one per row

    async def event(self, event: Event, check_id: str | None) -> StoredEvent:
        values = codec.event_values(event, check_id)
        self.last_event += 1
        event_id = self.last_event
        row = dict(zip(("time", "model", "type", "severity", "summary", "details", "check_id"), values, strict=True))
        link = self.link("event", chain.event_fields({**row, "id": event_id, "details": codec.stored_json(values[5])}))
        await self.db.execute(
            "INSERT INTO events (id, time, model, type, severity, summary, details, check_id, seq, prev_hash, hash) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (event_id, *values, *link),
        )
        return StoredEvent(event_id, event, check_id)

    async def ack(self, event_id: int, time: str, comment: str | None) -> None:
        """An acknowledgement is a link of its own; the event's acked_at / ack_comment show the newest."""
        seq, prev, digest = self.link("ack", {"event_id": event_id, "time": time, "comment": comment})
        await self.db.execute(
            "INSERT INTO acks (id, event_id, time, comment, seq, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (await self._next_id("acks"), event_id, time, comment, seq, prev, digest),
        )
        await self.db.execute(
            "UPDATE events SET acked_at = %s, ack_comment = %s WHERE id = %s", (time, comment, event_id)
        )


# -- the export form (rows as sqlite_audit shapes them)

_OBSERVATION_SELECT = f"SELECT {', '.join(OBSERVATION_COLUMNS)} FROM observations"
_EVENT_SELECT = f"SELECT {', '.join(codec.EVENT_COLUMNS)}, seq, prev_hash, hash FROM events"
_ACK_SELECT = f"SELECT {', '.join(_ACK_COLUMNS)} FROM acks"
_MODE_SELECT = f"SELECT {', '.join(_MODE_COLUMNS)} FROM audit_mode"


def _since(since: datetime | None, column: str = "time") -> tuple[str, list[Any]]:
    return (f" WHERE {column} >= %s", [iso(since)]) if since is not None else ("", [])


def observation_item(row: Sequence[Any]) -> dict[str, Any]:
    item = dict(zip(OBSERVATION_COLUMNS, row, strict=True))
    item["ok"] = bool(item["ok"])
    item["first_token"] = codec.stored_json(item["first_token"]) if item["first_token"] else None
    return item


def event_item(row: Sequence[Any], acks: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    chained = dict(zip(("seq", "prev_hash", "hash"), row[-3:], strict=True))
    return {**codec.event_from(row[:-3]).to_dict(), **chained, "acks": acks.get(row[0], [])}


def _ack_item(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_ACK_COLUMNS, row, strict=True))


def mode_item(row: Sequence[Any]) -> dict[str, Any]:
    item = dict(zip(_MODE_COLUMNS, row, strict=True))
    return {"seq": item["from_row"], **item}


async def _stream(db: Db, sql: str, args: Sequence[Any]) -> AsyncIterator[tuple[Any, ...]]:
    """Rows through a server-side cursor (the caller holds a transaction): memory stays flat for any history."""
    async with db.cursor(name="fpwatch_export") as cursor:
        cursor.itersize = ROWS_PER_FETCH
        await cursor.execute(sql, args)
        async for row in cursor:
            yield row


async def observation_rows(db: Db, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    where, args = _since(since)
    async for row in _stream(db, f"{_OBSERVATION_SELECT}{where} ORDER BY seq", args):
        yield observation_item(row)


async def event_rows(db: Db, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    acks: dict[int, list[dict[str, Any]]] = {}
    for row in await (await db.execute(f"{_ACK_SELECT} ORDER BY seq")).fetchall():
        ack = _ack_item(row)
        acks.setdefault(ack.pop("event_id"), []).append(ack)
    where, args = _since(since)
    async for row in _stream(db, f"{_EVENT_SELECT}{where} ORDER BY id", args):
        yield event_item(row, acks)


async def mode_rows(db: Db, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    where, args = _since(since, "set_at")
    for row in await (await db.execute(f"{_MODE_SELECT}{where} ORDER BY from_row", args)).fetchall():
        yield mode_item(row)


# -- the walk, on a blocking connection of its own in a worker thread (hashing a long chain takes a while)


def sync_mode(db: SyncDb) -> chain.Mode:
    row = db.execute(_MODE).fetchone()
    return chain.Mode(row[0], row[1], row[2]) if row else chain.Mode()


def _walk(db: SyncDb, name: str, sql: str) -> Iterator[tuple[Any, ...]]:
    with db.cursor(name=name) as cursor:
        cursor.itersize = ROWS_PER_FETCH
        cursor.execute(sql)
        yield from cursor


def links(db: SyncDb) -> Iterator[chain.Link]:
    """Every row of the audit trail as a link, as sqlite_audit.links gives them: first any event that has no place
    in the chain, then the chain in seq order (the tables merged)."""
    for (row_id,) in db.execute("SELECT id FROM events WHERE seq IS NULL OR hash IS NULL ORDER BY id").fetchall():
        yield chain.Link("event", row_id, None, {}, None, None)
    names = (*_EVENT_LINK, "seq", "prev_hash", "hash")
    events = _walk(db, "walk_events", f"SELECT {', '.join(names)} FROM events WHERE seq IS NOT NULL ORDER BY seq")
    observations = _walk(db, "walk_obs", f"{_OBSERVATION_SELECT} ORDER BY seq")
    yield from heapq.merge(
        (chain.observation_link(observation_item(row)) for row in observations),
        (chain.event_link(_event_link_item(dict(zip(names, row, strict=True)))) for row in events),
        (chain.ack_link(_ack_item(row)) for row in _walk(db, "walk_acks", f"{_ACK_SELECT} ORDER BY seq")),
        (chain.mode_link(mode_item(row)) for row in db.execute(f"{_MODE_SELECT} ORDER BY from_row").fetchall()),
        key=lambda link: link.seq or 0,
    )  # fmt: skip


def _event_link_item(item: dict[str, Any]) -> dict[str, Any]:
    item["details"] = codec.stored_json(item["details"])
    return item
