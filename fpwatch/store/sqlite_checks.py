"""A model's state and its checks in the SQLite store's rows: loading and saving the state, and recording a batch
of finished checks inside one write transaction (the store's group commit), each check in a savepoint of its own.

Each check is a read-modify-write of its model's state: load it, conclude, append the observations and events
to the audit chain, save the state, queue the alerts. In a batch, a later check of the same model sees what the
earlier one wrote, as if each had its own transaction one after the other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from fpwatch.clock import iso
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import ModelState
from fpwatch.store import codec, history, sqlite_audit
from fpwatch.store.drift_rows import RowCache
from fpwatch.store.protocol import CheckRecord, Conclude, Route, StoredEvent

SIGNAL_SELECT = "SELECT kind, value, first_seen, last_seen, count, misses, retired_at, since FROM signals"
_STATE_SELECT = f"SELECT {', '.join(codec.STATE_COLUMNS)} FROM model_state WHERE model = ?"
Recorded = tuple[ModelState, list[StoredEvent]]


@dataclass(frozen=True)
class Finished:
    """A finished check, queued for the writer."""

    check: CheckRecord
    observations: Sequence[Observation]
    conclude: Conclude
    route: Route | None
    deadline: float  # time.monotonic() by which it gives up on another process's lock


def load_state(db: sqlite3.Connection, rows: RowCache, model: str) -> ModelState:
    row = db.execute(_STATE_SELECT, (model,)).fetchone()
    signals = db.execute(f"{SIGNAL_SELECT} WHERE model = ?", (model,)).fetchall()
    checks = rows.load(db, model)
    return codec.state_from(row, model, ((r[0], codec.signal_from(r[1:])) for r in signals), checks)


def save_state(db: sqlite3.Connection, state: ModelState) -> None:
    marks = ",".join("?" * len(codec.STATE_COLUMNS))
    db.execute(
        f"INSERT OR REPLACE INTO model_state ({', '.join(codec.STATE_COLUMNS)}) VALUES ({marks})",
        codec.state_row(state),
    )
    db.executemany("INSERT OR REPLACE INTO signals VALUES (?,?,?,?,?,?,?,?,?)", codec.signal_rows(state))
    new, gone = codec.drift_rows(state)
    db.executemany("INSERT OR REPLACE INTO drift_checks VALUES (?, ?, ?)", [(state.model, s, b) for s, b in new])
    db.executemany("DELETE FROM drift_checks WHERE model = ? AND seq = ?", [(state.model, s) for s in gone])


def record(
    db: sqlite3.Connection,
    chained: sqlite_audit.Appender,
    rows: RowCache,
    batch: Sequence[Finished],
    guard: Callable[[], AbstractContextManager[None]],
) -> list[Recorded | Exception]:
    """Each check of the batch in a savepoint: one that fails (its error as `guard` words it) is rolled back alone,
    the chain continuing from the last link kept, and the others stay, to be committed by the caller."""
    outcomes: list[Recorded | Exception] = []
    for item in batch:
        db.execute("SAVEPOINT one_check")
        link = chained.position()
        try:
            with guard():
                outcomes.append(_record_one(db, chained, rows, item))
        except Exception as exc:  # this check's alone: the others commit
            if not db.in_transaction:
                raise  # SQLite rolled the whole transaction back (a full disk, an I/O error): the batch's, in its words
            db.execute("ROLLBACK TO one_check")
            chained.rewind(link)
            outcomes.append(exc)
        db.execute("RELEASE one_check")
    return outcomes


def _record_one(db: sqlite3.Connection, chained: sqlite_audit.Appender, rows: RowCache, item: Finished) -> Recorded:
    check = item.check
    state = load_state(db, rows, check.model)
    new_state, events = item.conclude(state)
    chained.observations(check.id, item.observations)
    db.execute(
        "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            check.id,
            check.model,
            iso(check.started),
            iso(check.finished),
            int(check.failures < check.requests),
            check.requests,
            check.failures,
            check.error,
        ),
    )
    if (screen := history.screen_row(check)) is not None:
        db.execute(history.insert_screen_sql("?"), screen)
    save_state(db, new_state)
    stored = [chained.event(event, check.id) for event in events]
    for event in stored:
        for notifier in item.route(new_state, event) if item.route is not None else ():
            db.execute(
                "INSERT OR IGNORE INTO alerts (event_id, notifier, created) VALUES (?, ?, ?)",
                (event.id, notifier, iso(check.finished)),
            )
    return new_state, stored
