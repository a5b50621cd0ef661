"""The audit chain in SQLite (store/chain.py is the contract): appending links inside a write transaction,
reading the head, and walking the chain in seq order for `export --verify`.

Observations, events and acks each carry `seq`, `prev_hash` and `hash`; the switch to keyed mode is the row of
`audit_mode`, a link of its own whose position is `from_row`. An event's `acked_at` / `ack_comment` are a copy of
its newest row in `acks` (reminders and `events` read them), which the walk compares with that row.

An observation written before the chain took in events (migration 007) has no `seq`: its position is its id, as
the old chain ran through observations in id order from 1, so the upgrade rewrites none of them however many
there are. Within observations id order is chain order (both grow with every insert under the write lock), so
the walk and the head read observations by id, and no index on their seq is needed.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fpwatch.clock import iso
from fpwatch.detect.events import Event
from fpwatch.detect.observation import Observation
from fpwatch.errors import StateError
from fpwatch.store import chain, codec
from fpwatch.store.protocol import StoredEvent

_EVENT_LINK = "id, time, model, type, severity, summary, details, check_id, acked_at, ack_comment, seq, prev_hash, hash"
_ACK_COLUMNS = ("id", "event_id", "time", "comment", "seq", "prev_hash", "hash")
_MODE_COLUMNS = ("from_row", "key_id", "set_at", "prev_hash", "hash")
_OBSERVATION_INSERT = """INSERT INTO observations (check_id, time, model, canary, sample, seed, ok, system_fingerprint,
    fingerprint_state, response_model, output, output_sha256, finish_reason, first_token, input_tokens, output_tokens,
    reasoning_tokens, latency_ms, request_id, response_id, http_status, attempts, error_kind, error, seq, prev_hash,
    hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"""


def mode(db: sqlite3.Connection) -> chain.Mode:
    row = db.execute("SELECT from_row, key_id, set_at FROM audit_mode ORDER BY from_row LIMIT 1").fetchone()
    return chain.Mode(row[0], row[1], row[2]) if row else chain.Mode()


def last(db: sqlite3.Connection) -> tuple[int, str]:
    """(seq, hash) of the newest link; (0, GENESIS) for an empty chain."""
    newest = (0, chain.GENESIS)
    for sql in (
        "SELECT COALESCE(seq, id), hash FROM observations ORDER BY id DESC LIMIT 1",
        "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
        "SELECT seq, hash FROM acks ORDER BY seq DESC LIMIT 1",
        "SELECT from_row, hash FROM audit_mode ORDER BY from_row DESC LIMIT 1",
    ):
        row = db.execute(sql).fetchone()
        if row is not None and row[0] > newest[0]:
            newest = (row[0], row[1])
    return newest


def head(db: sqlite3.Connection) -> chain.ChainHead:
    seq, digest = last(db)
    found = mode(db)
    return chain.ChainHead(digest if seq else None, seq, found.name, found.keyed_from)


def take_key(db: sqlite3.Connection, key: bytes | None, path: Path, now: datetime) -> int | None:
    """Before a store writes: a key turns a plain chain keyed, by appending the switch (the mode link, keyed
    itself) once; a keyed chain needs its own key, so no fpwatch extends it with plain or wrongly keyed links.
    Returns the row a plain chain that had rows becomes keyed from (for the caller to warn: that is also what a
    keyed chain rewritten as plain would look like); None when nothing switched or the chain was empty."""
    if key is not None and mode(db).keyed_from is None:
        seq, prev = last(db)
        fields = {"from_row": seq + 1, "key_id": chain.key_id(key), "set_at": iso(now)}
        db.execute(
            "INSERT INTO audit_mode (from_row, key_id, set_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
            (*fields.values(), prev, chain.link_hash("mode", prev, fields, key)),
        )
        switched = seq + 1 if seq else None
    else:
        switched = None
    problem = chain.key_problem(mode(db), key, path)
    if problem is not None:
        raise StateError(problem)
    return switched


class Appender:
    """Links appended in one write transaction (which holds the write lock: positions cannot race)."""

    def __init__(self, db: sqlite3.Connection, key: bytes | None) -> None:
        """`take_key` first: then a writer with a key keys every link it writes (the chain is keyed by then)."""
        self.db = db
        self.key = key
        self.seq, self.prev = last(db)
        self.next_event: int | None = None  # the next event's id, read once a transaction (a batch has hundreds)

    def position(self) -> tuple[int, str]:
        """Where the chain stands: (seq, hash) of the newest link appended."""
        return self.seq, self.prev

    def rewind(self, position: tuple[int, str]) -> None:
        """Back to an earlier `position`, once the links appended since are rolled back (a savepoint's)."""
        self.seq, self.prev = position
        self.next_event = None  # the rolled-back events' ids are free again

    def link(self, kind: str, fields: dict[str, Any]) -> tuple[int, str, str]:
        """(seq, prev_hash, hash) of the next link."""
        self.seq += 1
        digest = chain.link_hash(kind, self.prev, fields, self.key)
        prev, self.prev = self.prev, digest
        return self.seq, prev, digest

    def observations(self, check_id: str, observations: Sequence[Observation]) -> None:
        for obs in observations:
            fields = chain.observation_fields(obs, check_id)
            seq, prev, digest = self.link("observation", fields)
            first_token = json.dumps(fields["first_token"]) if obs.first_token else None
            self.db.execute(
                _OBSERVATION_INSERT,
                (
                    check_id,
                    fields["time"],
                    obs.model,
                    obs.canary,
                    obs.sample,
                    obs.seed,
                    int(obs.ok),
                    obs.system_fingerprint,
                    obs.fingerprint_state,
                    obs.response_model,
                    obs.output,
                    fields["output_sha256"],
                    obs.finish_reason,
                    first_token,
                    obs.input_tokens,
                    obs.output_tokens,
                    obs.reasoning_tokens,
                    obs.latency_ms,
                    obs.request_id,
                    obs.response_id,
                    obs.http_status,
                    obs.attempts,
                    obs.error_kind,
                    obs.error,
                    seq,
                    prev,
                    digest,
                ),
            )

    def event(self, event: Event, check_id: str | None) -> StoredEvent:
        values = codec.event_values(event, check_id)
        if self.next_event is None:
            self.next_event = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
        event_id, self.next_event = self.next_event, self.next_event + 1
        self.db.execute(
            "INSERT INTO events (id, time, model, type, severity, summary, details, check_id, seq, prev_hash, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (event_id, *values, *self.event_link(event_id, values)),
        )
        return StoredEvent(event_id, event, check_id)

    def event_link(self, event_id: int, values: Sequence[Any]) -> tuple[int, str, str]:
        """The link of an event row from its (time, model, type, severity, summary, details JSON, check_id)."""
        row = dict(zip(("time", "model", "type", "severity", "summary", "details", "check_id"), values, strict=True))
        return self.link("event", chain.event_fields({**row, "id": event_id, "details": codec.stored_json(values[5])}))

    def ack(self, event_id: int, time: str, comment: str | None) -> None:
        """An acknowledgement is a link of its own; the event's acked_at / ack_comment show the newest."""
        seq, prev, digest = self.link("ack", {"event_id": event_id, "time": time, "comment": comment})
        self.db.execute(
            "INSERT INTO acks (event_id, time, comment, seq, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (event_id, time, comment, seq, prev, digest),
        )
        self.db.execute("UPDATE events SET acked_at = ?, ack_comment = ? WHERE id = ?", (time, comment, event_id))


# -- export form and the walk


def observation_rows(db: sqlite3.Connection, since: datetime | None) -> Iterator[dict[str, Any]]:
    """Observations in export form, in chain order (the columns, `ok` a bool, `first_token` an object, `seq` the
    id of a row written before 007)."""
    where, args = "", []
    if since is not None:
        where, args = "WHERE time >= ?", [iso(since)]
    cursor = db.execute(f"SELECT * FROM observations {where} ORDER BY id", args)
    names = [d[0] for d in cursor.description]
    for row in cursor:
        item = dict(zip(names, row, strict=True))
        item["seq"] = item["id"] if item["seq"] is None else item["seq"]
        item["ok"] = bool(item["ok"])
        item["first_token"] = codec.stored_json(item["first_token"]) if item["first_token"] else None
        yield item


def event_rows(db: sqlite3.Connection, since: datetime | None) -> Iterator[dict[str, Any]]:
    """Events in export form: the event object, its `seq`, `prev_hash`, `hash`, and its `acks` (each with its
    `time`, `comment` and chain fields), oldest first."""
    acks: dict[int, list[dict[str, Any]]] = {}
    for row in db.execute(f"SELECT {', '.join(_ACK_COLUMNS)} FROM acks ORDER BY seq"):
        ack = dict(zip(_ACK_COLUMNS, row, strict=True))
        acks.setdefault(ack.pop("event_id"), []).append(ack)
    sql, args = f"SELECT {', '.join(codec.EVENT_COLUMNS)}, seq, prev_hash, hash FROM events", []
    if since is not None:
        sql += " WHERE time >= ?"
        args.append(iso(since))
    for row in db.execute(sql + " ORDER BY id", args):
        chained = dict(zip(("seq", "prev_hash", "hash"), row[-3:], strict=True))
        yield {**codec.event_from(row[:-3]).to_dict(), **chained, "acks": acks.get(row[0], [])}


def mode_rows(db: sqlite3.Connection, since: datetime | None) -> Iterator[dict[str, Any]]:
    """The switch to keyed mode in export form (`seq` is `from_row`), if the chain has one (made since `since`)."""
    where, args = ("WHERE set_at >= ?", [iso(since)]) if since is not None else ("", [])
    for row in db.execute(f"SELECT {', '.join(_MODE_COLUMNS)} FROM audit_mode {where} ORDER BY from_row", args):
        item = dict(zip(_MODE_COLUMNS, row, strict=True))
        yield {"seq": item["from_row"], **item}


def links(db: sqlite3.Connection) -> Iterator[chain.Link]:
    """Every row of the audit trail as a link: first any event that has no place in the chain, then the chain in
    seq order (the tables merged)."""
    for (row_id,) in db.execute("SELECT id FROM events WHERE seq IS NULL OR hash IS NULL ORDER BY id"):
        yield chain.Link("event", row_id, None, {}, None, None)
    yield from heapq.merge(
        (chain.observation_link(row) for row in observation_rows(db, None)),
        _event_links(db),
        _ack_links(db),
        (chain.mode_link(row) for row in mode_rows(db, None)),
        key=lambda link: link.seq or 0,
    )


def _event_links(db: sqlite3.Connection) -> Iterator[chain.Link]:
    names = [name.strip() for name in _EVENT_LINK.split(",")]
    for row in db.execute(f"SELECT {_EVENT_LINK} FROM events WHERE seq IS NOT NULL ORDER BY seq"):
        item = dict(zip(names, row, strict=True))
        item["details"] = codec.stored_json(item["details"])
        yield chain.event_link(item)


def _ack_links(db: sqlite3.Connection) -> Iterator[chain.Link]:
    for row in db.execute(f"SELECT {', '.join(_ACK_COLUMNS)} FROM acks WHERE seq IS NOT NULL ORDER BY seq"):
        yield chain.ack_link(dict(zip(_ACK_COLUMNS, row, strict=True)))


def chain_upgrade(db: sqlite3.Connection) -> None:
    """The upgrade to one chain (migration 007): observations stay as they are, hashes and all (no seq: their
    position is their id); the events an earlier fpwatch wrote follow in id order, then their acks (the newest of
    each event, the only one kept) in time order. A keyed mode begins only after this: these rows are plain.
    Its time grows with the events and acks, not with the observations (10^6 observations: well under 1 s)."""
    appender = Appender(db, None)
    events = db.execute("SELECT id, time, model, type, severity, summary, details, check_id FROM events ORDER BY id")
    chained = [(*appender.event_link(row[0], row[1:]), row[0]) for row in events.fetchall()]
    db.executemany("UPDATE events SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?", chained)
    acked = "SELECT id, acked_at, ack_comment FROM events WHERE acked_at IS NOT NULL ORDER BY acked_at, id"
    acks = [
        (event_id, time, comment, *appender.link("ack", {"event_id": event_id, "time": time, "comment": comment}))
        for event_id, time, comment in db.execute(acked).fetchall()
    ]
    db.executemany("INSERT INTO acks (event_id, time, comment, seq, prev_hash, hash) VALUES (?,?,?,?,?,?)", acks)
