"""The SQLite `Store` (DESIGN section 9): the default state, one file, shared by the daemon and `fpwatch check`.

WAL mode with a busy timeout. A check's read-modify-write (load the model's state, conclude, append the
observations, save the state and the events, queue the alerts) happens inside one `BEGIN IMMEDIATE`
transaction: two processes checking the same model serialise instead of double-counting. Checks that finish
while the writer is busy share that transaction (a group commit, `record_check`), each in a savepoint of its own.

The event loop never waits on the file: every statement runs on one of two worker threads, each with
its own connection, and is awaited. Writes go to the writer; reads to the reader, so that a write
waiting (up to the busy timeout) on another process's lock holds back neither the next check's load
nor `status`. Errors become one-line `StateError`s that say what to do.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fpwatch.clock import iso, parse_iso, utcnow
from fpwatch.config.model import Secret
from fpwatch.detect.observation import Observation
from fpwatch.detect.signals import Signal
from fpwatch.detect.state import ModelState, acknowledged
from fpwatch.errors import StateError
from fpwatch.logs import get_logger
from fpwatch.store import chain, codec, history, sqlite_audit, sqlite_checks
from fpwatch.store.drift_rows import RowCache
from fpwatch.store.leases import lease_owner, owner_alive
from fpwatch.store.protocol import AnswerCount, CheckRecord, Conclude, DriftScreen, OutboxMessage, Route, StoredEvent
from fpwatch.store.schema import UPGRADE, require_known_migrations
from fpwatch.store.sqlite_checks import SIGNAL_SELECT, Finished, Recorded
from fpwatch.store.sqlite_migrations import MIGRATIONS
from fpwatch.store.worker import Batched, Worker

BUSY_TIMEOUT_MS = 30_000
CLOSE_GRACE = 3.0  # seconds queued writes still get once the store closes (the daemon's stop budget is 30 s)
ROWS_PER_BATCH = 500
T = TypeVar("T")
_EVENT_SELECT = f"SELECT {', '.join(codec.EVENT_COLUMNS)} FROM events"


def _not_ours(path: Path, exc: Exception) -> StateError:
    return StateError(
        f"{path} is not a usable fpwatch database ({exc}); move it aside or point [fpwatch] state at another file"
    )


async def open_sqlite(
    path: Path | str,
    *,
    readonly: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    audit_key: Secret | None = None,
) -> SqliteStore:
    """Open (creating and migrating) the database; `readonly` opens an existing file and writes nothing.
    `audit_key` (`[fpwatch] audit_key_file`) keys the audit chain (store/chain.py) from the next row on."""
    store = SqliteStore(Path(path), readonly=readonly, busy_timeout_ms=busy_timeout_ms, audit_key=audit_key)
    try:
        if readonly:
            await store._reader.run(store._check_schema)
        else:
            await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


class SqliteStore:
    """fpwatch's state in one SQLite file. Methods speak the domain's words; callers never see SQL."""

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        audit_key: Secret | None = None,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.busy_timeout_ms = busy_timeout_ms
        self._key = audit_key.reveal().encode() if audit_key is not None else None
        self._closing_by = math.inf  # after close(): queued writes give up on a lock by then
        self._writer = Worker(self._connect, "fpwatch-db-writer")
        # A read-only store has one connection; otherwise reads never queue behind a write waiting on a lock.
        self._reader = self._writer if readonly else Worker(self._connect, "fpwatch-db-reader")
        self._rows = RowCache()  # parsed drift check rows, shared by both threads
        self._loads = Batched(self._reader, self._load_states)
        self._checks = Batched(self._writer, self._record_batch)

    # -- connections (on a worker thread)

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if not self.readonly:
                self._switch_to_wal(db)
                db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            fix = (
                f"another process held it for {self.busy_timeout_ms / 1000:g}s; is another fpwatch stuck?"
                if "locked" in str(exc)
                else "check [fpwatch] state and the folder's permissions"
            )
            raise StateError(f"cannot open the state database {self.path}: {exc}; {fix}") from None
        except sqlite3.DatabaseError as exc:
            raise _not_ours(self.path, exc) from None
        return db

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """WAL mode, waiting like any write: two processes opening a new file at once race for the switch, and SQLite
        answers the loser "database is locked" at once, without its busy handler."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """sqlite3 errors become one-line StateErrors that say what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise self._locked(exc) from None
            raise StateError(f"state database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise _not_ours(self.path, exc) from None

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so read-modify-write cannot interleave."""
        with self._guard():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # the body failed, or COMMIT did (a full disk): leave no transaction open
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def _locked(self, exc: Exception | None) -> StateError:
        return StateError(
            f"the state database {self.path} stayed locked by another process for "
            f"{self.busy_timeout_ms / 1000:g}s; is another fpwatch stuck?" + (f" ({exc})" if exc else "")
        )

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def guarded(db: sqlite3.Connection, *inner: Any) -> T:
            with self._guard():
                return fn(db, *inner)

        return await self._reader.run(guarded, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """One transaction on the writer thread. It waits for another process's lock at most `busy_timeout_ms`
        from when it was asked for (writes queue behind each other: the wait is not per statement), and less
        once the store is closing; asked for, it runs even if its caller is cancelled meanwhile."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        return await self._writer.run(self._transacted, deadline, fn, *args, finish=True)

    def _transacted(self, db: sqlite3.Connection, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """fn(db, *args) in one transaction, waiting for another process's lock until `deadline` at most."""
        left = min(deadline, self._closing_by) - time.monotonic()
        if left <= 0:
            raise self._locked(None)
        db.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")
        with self._transaction(db):
            return fn(db, *args)

    async def close(self) -> None:
        """Finish what was asked for (writes still queued get at most CLOSE_GRACE more), then close."""
        self._closing_by = min(self._closing_by, time.monotonic() + CLOSE_GRACE)
        await self._writer.close()
        if self._reader is not self._writer:
            await self._reader.close()

    # -- schema

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """A read-only open cannot migrate: make sure the schema is the one this fpwatch knows."""
        with self._guard():
            done = {row[0] for row in db.execute("SELECT name FROM migrations")}
        require_known_migrations(done, (name for name, _ in MIGRATIONS), str(self.path), UPGRADE)

    async def migrate(self) -> list[str]:
        """Run the migrations this database has not seen yet; return their names."""
        return await self._write(self._migrate)

    def _migrate(self, db: sqlite3.Connection) -> list[str]:
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in db.execute("SELECT name FROM migrations")}
        known = {name for name, _ in MIGRATIONS}
        if done - known:
            raise StateError(
                f"the state database {self.path} was written by a newer fpwatch "
                f"(migrations {', '.join(sorted(done - known))}); upgrade fpwatch"
            )
        ran = []
        for name, step in MIGRATIONS:
            if name not in done:
                step(db)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso(utcnow())))
                ran.append(name)
        self._take_key(db)  # a wrong or missing key: refused at open
        return ran

    # -- checks and model state

    async def record_check(
        self,
        check: CheckRecord,
        observations: Sequence[Observation],
        conclude: Conclude,
        route: Route | None = None,
    ) -> Recorded:
        """Queued for the writer, which records every check queued by the time it starts in one transaction (a
        group commit): a pass's answers arrive together, and a batch costs one trip to the writer thread, one
        reading of the chain's head and one commit instead of one per check. Each check is a savepoint of its
        own, so one that fails (its conclude raises) is rolled back alone and the others commit; a caller hears
        its outcome only after the commit, so a process killed meanwhile leaves none of them, never part of one.
        The batch waits for another process's lock until the busy timeout of the longest-waiting check in it."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        return await self._checks.run(Finished(check, observations, conclude, route, deadline))

    def _record_batch(self, db: sqlite3.Connection, batch: list[Finished]) -> list[Recorded | Exception]:
        def record(db: sqlite3.Connection) -> list[Recorded | Exception]:
            return sqlite_checks.record(db, self._appender(db), self._rows, batch, self._guard)

        try:
            return self._transacted(db, min(item.deadline for item in batch), record)
        except BaseException:
            self._rows.forget(item.check.model for item in batch)  # it may hold rows that were never committed
            raise

    def _appender(self, db: sqlite3.Connection) -> sqlite_audit.Appender:
        """Links appended in this write transaction: the chain takes this store's key first (or refuses it)."""
        self._take_key(db)
        return sqlite_audit.Appender(db, self._key)

    def _take_key(self, db: sqlite3.Connection) -> None:
        """A key switches a plain chain to keyed; one that has rows already, only with a warning: that is how a
        key is added to an install, and also what a keyed chain cut off and rewritten as plain would look like."""
        switched = sqlite_audit.take_key(db, self._key, self.path, utcnow())
        if switched is not None:
            get_logger("fpwatch.store").warning(
                f"the audit chain of {self.path} becomes keyed from row {switched} on; if it was keyed before, "
                "its plain part was rewritten"
            )

    async def load_state(self, model: str) -> ModelState:
        """Loads asked for while the reader is busy (a pass starting every check at once) go in one batch."""
        return await self._loads.run(model)

    def _load_states(self, db: sqlite3.Connection, models: list[str]) -> list[ModelState | Exception]:
        outcomes: list[ModelState | Exception] = []
        for model in models:
            try:
                with self._guard():
                    outcomes.append(sqlite_checks.load_state(db, self._rows, model))
            except Exception as exc:  # this model's alone: the others load
                outcomes.append(exc)
        return outcomes

    async def update_state(self, model: str, change: Callable[[ModelState], ModelState]) -> ModelState:
        def write(db: sqlite3.Connection) -> ModelState:
            state = change(sqlite_checks.load_state(db, self._rows, model))
            sqlite_checks.save_state(db, state)
            return state

        return await self._write(write)

    async def signal_history(self, model: str, kind: str) -> list[Signal]:
        def read(db: sqlite3.Connection) -> list[Signal]:
            rows = db.execute(
                f"{SIGNAL_SELECT} WHERE model = ? AND kind = ? ORDER BY first_seen, value", (model, kind)
            ).fetchall()
            return [codec.signal_from(r[1:]) for r in rows]

        return await self._read(read)

    # -- history (the report)

    async def answer_counts(self, since: datetime, step: timedelta) -> list[AnswerCount]:
        sql = history.answer_sql(step, "?")
        return await self._read(lambda db: history.answer_counts(db.execute(sql, (iso(since),))))

    async def drift_screens(self, since: datetime, step: timedelta) -> list[DriftScreen]:
        sql = history.screen_sql(step, "?")
        return await self._read(lambda db: history.drift_screens(db.execute(sql, (iso(since),))))

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
        where, args = ["1=1"], []
        if since is not None:
            where.append("time >= ?")
            args.append(iso(since))
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if severities:
            where.append(f"severity IN ({','.join('?' * len(severities))})")
            args.extend(severities)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        sql = f"{_EVENT_SELECT} WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def read(db: sqlite3.Connection) -> list[StoredEvent]:
            return [codec.event_from(row) for row in reversed(db.execute(sql, args).fetchall())]

        return await self._read(read)

    async def events_by_id(self, ids: Sequence[int]) -> list[StoredEvent]:
        def read(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute(f"{_EVENT_SELECT} WHERE id IN ({','.join('?' * len(ids))})", tuple(ids)).fetchall()
            found = {row[0]: codec.event_from(row) for row in rows}
            return [found[i] for i in ids if i in found]

        return await self._read(read) if ids else []

    async def event(self, event_id: int) -> StoredEvent | None:
        found = await self.events_by_id([event_id])
        return found[0] if found else None

    async def ack(self, event_id: int, comment: str | None, now: datetime) -> StoredEvent | None:
        def write(db: sqlite3.Connection) -> None:
            row = db.execute(f"{_EVENT_SELECT} WHERE id = ?", (event_id,)).fetchone()
            if row is not None:
                self._appender(db).ack(event_id, iso(now), comment)
                event = codec.event_from(row).event
                state = sqlite_checks.load_state(db, self._rows, event.model)
                signed = acknowledged(state, event)
                if signed is not state:
                    sqlite_checks.save_state(db, signed)

        await self._write(write)
        return await self.event(event_id)

    # -- the outbox

    async def pending_alerts(self, notifier: str) -> list[tuple[int, datetime]]:
        def read(db: sqlite3.Connection) -> list[tuple[int, datetime]]:
            rows = db.execute(
                "SELECT event_id, created FROM alerts WHERE notifier = ? AND message_id IS NULL ORDER BY event_id",
                (notifier,),
            ).fetchall()
            return [(event_id, parse_iso(created)) for event_id, created in rows]

        return await self._read(read)

    async def compose_message(
        self, notifier: str, event_ids: Sequence[int], title: str, body: str, notify_type: str, now: datetime
    ) -> int | None:
        def write(db: sqlite3.Connection) -> int | None:
            marks = ",".join("?" * len(event_ids))
            free = db.execute(
                f"SELECT COUNT(*) FROM alerts WHERE notifier = ? AND message_id IS NULL AND event_id IN ({marks})",
                (notifier, *event_ids),
            ).fetchone()[0]
            if free != len(event_ids):
                return None
            message_id = self._insert_message(db, notifier, title, body, notify_type, now)
            db.execute(
                f"UPDATE alerts SET message_id = ? WHERE notifier = ? AND event_id IN ({marks})",
                (message_id, notifier, *event_ids),
            )
            return message_id

        return await self._write(write)

    @staticmethod
    def _insert_message(
        db: sqlite3.Connection, notifier: str, title: str, body: str, notify_type: str, now: datetime
    ) -> int:
        cursor = db.execute(
            "INSERT INTO outbox (notifier, title, body, notify_type, created, due, status) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (notifier, title, body, notify_type, iso(now), iso(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def due_reminders(self, event_types: Sequence[str], every: timedelta, now: datetime) -> list[tuple[int, str]]:
        def read(db: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = db.execute(
                f"""SELECT a.event_id, a.notifier, COALESCE(a.last_reminded, o.finished)
                    FROM alerts a JOIN events e ON e.id = a.event_id JOIN outbox o ON o.id = a.message_id
                    WHERE e.type IN ({",".join("?" * len(event_types))}) AND e.acked_at IS NULL
                    AND o.status = 'delivered'""",
                tuple(event_types),
            ).fetchall()
            return [(event_id, notifier) for event_id, notifier, last in rows if now - parse_iso(last) >= every]

        return await self._read(read)

    async def add_reminder(
        self, event_id: int, notifier: str, title: str, body: str, notify_type: str, now: datetime, every: timedelta
    ) -> None:
        def write(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT a.last_reminded, o.finished FROM alerts a JOIN outbox o ON o.id = a.message_id "
                "WHERE a.event_id = ? AND a.notifier = ?",
                (event_id, notifier),
            ).fetchone()
            if row is None or now - parse_iso(row[0] or row[1]) < every:
                return
            self._insert_message(db, notifier, title, body, notify_type, now)
            db.execute(
                "UPDATE alerts SET last_reminded = ? WHERE event_id = ? AND notifier = ?",
                (iso(now), event_id, notifier),
            )

        await self._write(write)

    async def claim_next_message(self, notifier: str, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """A lease names its owner (host:pid), so one left by a process killed mid-send is taken over at once
        instead of when it runs out."""
        due = "FROM outbox WHERE notifier = ? AND status = 'pending' AND due <= ?"

        def anything_due(db: sqlite3.Connection) -> bool:
            return db.execute(f"SELECT 1 {due} LIMIT 1", (notifier, iso(now))).fetchone() is not None

        def write(db: sqlite3.Connection) -> OutboxMessage | None:
            rows = db.execute(
                f"SELECT id, notifier, title, body, notify_type, created, attempts, lease_until, lease_owner {due} "
                "ORDER BY id",
                (notifier, iso(now)),
            ).fetchall()
            free = next((r for r in rows if r[7] is None or r[7] < iso(now) or not owner_alive(r[8])), None)
            if free is None:
                return None
            db.execute(
                "UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (iso(now + lease), lease_owner(), free[0]),
            )
            return OutboxMessage(free[0], free[1], free[2], free[3], free[4], parse_iso(free[5]), free[6])

        # Most seconds nothing is due: look first, and take the write lock only when there is something to claim.
        return await self._write(write) if await self._read(anything_due) else None

    async def orphaned_messages(self, notifiers: set[str]) -> list[tuple[int, str]]:
        def read(db: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = db.execute("SELECT id, notifier FROM outbox WHERE status = 'pending'").fetchall()
            return [(message_id, name) for message_id, name in rows if name not in notifiers]

        return await self._read(read)

    async def _finish(self, sql: str, args: tuple[Any, ...]) -> None:
        """Apply one outcome to a message still pending: a finished message is never rewritten."""
        await self._write(lambda db: db.execute(sql + " WHERE id = ? AND status = 'pending'", args))

    async def mark_delivered(self, message_id: int, now: datetime) -> None:
        await self._finish(
            "UPDATE outbox SET status = 'delivered', finished = ?, attempts = attempts + 1, last_error = NULL, "
            "lease_until = NULL",
            (iso(now), message_id),
        )

    async def retry_message(self, message_id: int, due: datetime, error: str) -> None:
        await self._finish(
            "UPDATE outbox SET due = ?, attempts = attempts + 1, last_error = ?, lease_until = NULL",
            (iso(due), error, message_id),
        )

    async def expire_message(self, message_id: int, now: datetime, error: str) -> None:
        await self._finish(
            "UPDATE outbox SET status = 'expired', finished = ?, attempts = attempts + 1, last_error = ?, "
            "lease_until = NULL",
            (iso(now), error, message_id),
        )

    async def notifier_status(self, notifier: str) -> dict[str, Any]:
        def read(db: sqlite3.Connection) -> dict[str, Any]:
            def one(sql: str) -> Any:
                return db.execute(sql, (notifier,)).fetchone()

            failed = one(
                "SELECT last_error, status FROM outbox WHERE notifier = ? AND last_error IS NOT NULL "
                "ORDER BY id DESC LIMIT 1"
            )
            return {
                "name": notifier,
                "pending_messages": one("SELECT COUNT(*) FROM outbox WHERE notifier = ? AND status = 'pending'")[0],
                "queued_alerts": one("SELECT COUNT(*) FROM alerts WHERE notifier = ? AND message_id IS NULL")[0],
                "expired_messages": one("SELECT COUNT(*) FROM outbox WHERE notifier = ? AND status = 'expired'")[0],
                "last_error": failed[0] if failed else None,
                "last_delivered": one("SELECT MAX(finished) FROM outbox WHERE notifier = ? AND status = 'delivered'")[
                    0
                ],
            }

        return await self._read(read)

    # -- the audit trail (store/chain.py, sqlite_audit.py)

    async def observation_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._batched(lambda db: sqlite_audit.observation_rows(db, since)):
            yield item

    async def event_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._batched(lambda db: sqlite_audit.event_rows(db, since)):
            yield item

    async def mode_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._batched(lambda db: sqlite_audit.mode_rows(db, since)):
            yield item

    async def _batched(self, rows: Callable[[sqlite3.Connection], Iterator[T]]) -> AsyncIterator[T]:
        cursor = await self._read(rows)
        while batch := await self._read(lambda db: list(itertools.islice(cursor, ROWS_PER_BATCH))):
            for item in batch:
                yield item

    async def chain_head(self) -> chain.ChainHead:
        return await self._read(sqlite_audit.head)

    async def verify_audit(self, head: str | None = None) -> chain.Audit:
        def read(db: sqlite3.Connection) -> chain.Audit:
            db.execute("BEGIN")  # one snapshot for the three tables the walk merges
            try:
                mode = sqlite_audit.mode(db)
                problem = chain.key_problem(mode, self._key, self.path)
                if problem is not None:
                    raise StateError(problem)
                return chain.verify(sqlite_audit.links(db), mode, self._key, head)
            finally:
                db.execute("COMMIT")

        return await self._read(read)

    async def prune_outputs(self, before: datetime) -> int:
        def write(db: sqlite3.Connection) -> int:
            sql = "UPDATE observations SET output = NULL WHERE time < ? AND output IS NOT NULL"
            return db.execute(sql, (iso(before),)).rowcount

        return await self._write(write)
