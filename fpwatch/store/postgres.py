"""The PostgreSQL `Store` (DESIGN section 9): `[fpwatch] state = "postgresql://user@host:5432/db"`.

psycopg 3, async, with a connection pool. A connection is not checked on every checkout (a trip to the server each
time): the first statement on one a server restart killed fails as a lost connection, and then the pool checks all
its idle ones, replacing the dead, before the transaction is retried (below). Each method is one transaction on a
connection of the pool. What SQLite gets from its one write lock, PostgreSQL gets from transaction-level advisory
locks, which go with the transaction (a dropped connection releases them):
- a model's read-modify-write (load the state, conclude, save) holds that model's lock, so two processes checking
  the same model serialise instead of double-counting;
- every append to the audit chain holds the chain's lock (postgres_audit.CHAIN_LOCK) from reading its end to the
  commit, so positions never race across processes or hosts; a model's lock is always taken before the chain's;
- migrations run under a lock of their own, so openers of a new database do not race.
The outbox is claimed with `FOR UPDATE SKIP LOCKED`; leases name their owner (host:pid), a daemon's lease is free
once its heartbeat stops (postgres_instances.py), anyone else's when it runs out.

A check costs few round trips: its transaction runs in pipeline mode, where statements go out without waiting for
the answers before them, and the client waits only where it needs an answer: for the model's state (behind the
model's lock, the BEGIN sent with them), for the chain's end (behind the chain's lock), and at the COMMIT, sent with
every write of the check. The server still runs them one by one, in order, so each lock is held before what it
guards is read. The reads of a model's state, and of the chain's head, are one round trip each.

A connection lost in the middle (a server restart) rolls its transaction back whole: the transaction is retried
once on a fresh connection, else the caller gets a StateError. Errors are one line, say what to do, and never hold
the password (the URL fpwatch prints has none).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from fpwatch.clock import iso, utcnow
from fpwatch.config.model import PostgresState, Secret
from fpwatch.detect.observation import Observation
from fpwatch.detect.signals import Signal
from fpwatch.detect.state import ModelState, acknowledged
from fpwatch.errors import StateError
from fpwatch.logs import get_logger
from fpwatch.store import chain, codec, history, postgres_audit
from fpwatch.store.drift_rows import RowCache
from fpwatch.store.postgres_audit import Appender, Db
from fpwatch.store.postgres_errors import Failures, lost
from fpwatch.store.postgres_history import PostgresHistory
from fpwatch.store.postgres_instances import PostgresInstances
from fpwatch.store.postgres_migrations import MIGRATIONS
from fpwatch.store.postgres_outbox import PostgresOutbox
from fpwatch.store.protocol import CheckRecord, Conclude, Route, StoredEvent
from fpwatch.store.schema import UPGRADE, require_known_migrations

LOCK_TIMEOUT_MS = 30_000  # a lock held by another process longer than this: a StateError (SQLite's busy timeout)
CONNECT_TIMEOUT = 10.0  # seconds to reach the server (and to wait for a connection of the pool)
CLOSE_GRACE = 3.0  # seconds writes still running get once the store closes
POOL_SIZE = 8
DIAGNOSIS_KEPT = 5.0  # seconds one diagnosis of a pool timeout answers for every other waiter that timed out
MIGRATION_LOCK = postgres_audit.CHAIN_LOCK + 1
MODEL_LOCKS = 0x66707701  # pg_advisory_xact_lock(int, int) class of the per-model locks: (MODEL_LOCKS, hashtext)
T = TypeVar("T")
# The pool's own reconnect attempts while the server is away are a warning each, several lines long: not news, since
# the store's errors (and the daemon's /healthz) say once and in one line that the database is out of reach.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
_STATE_SELECT = f"SELECT {', '.join(codec.STATE_COLUMNS)} FROM model_state WHERE model = %s"
_SIGNAL_SELECT = "SELECT kind, value, first_seen, last_seen, count, misses, retired_at, since FROM signals"
_EVENT_SELECT = f"SELECT {', '.join(codec.EVENT_COLUMNS)} FROM events"
# A model's drift rows: each one's seq and length, and its body unless this process keeps it parsed (arrays of the
# seqs and lengths kept): one statement, whatever another process wrote since.
_DRIFT_SELECT = """SELECT d.seq, length(d.body), CASE WHEN k.size = length(d.body) THEN NULL ELSE d.body END
FROM drift_checks d LEFT JOIN unnest(%s::bigint[], %s::bigint[]) AS k (seq, size) ON k.seq = d.seq
WHERE d.model = %s"""


@functools.cache
def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...], rows: int = 1) -> str:
    """INSERT OR REPLACE of `rows` rows (each key once), in PostgreSQL's words: one statement, whatever the rows."""
    marks = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * rows)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks} {conflict}"


_STATE_UPSERT = _upsert("model_state", tuple(codec.STATE_COLUMNS), ("model",))


async def open_postgres(
    state: PostgresState,
    *,
    readonly: bool = False,
    audit_key: Secret | None = None,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    connect_timeout: float = CONNECT_TIMEOUT,
    missing_ok: bool = False,
) -> PostgresStore | None:
    """Open (migrating unless `readonly`) the state in this database. A read-only open of a database fpwatch has not
    written to is an error, or None with `missing_ok` (the reading commands then show an empty history)."""
    store = PostgresStore(
        state, readonly=readonly, audit_key=audit_key, lock_timeout_ms=lock_timeout_ms, connect_timeout=connect_timeout
    )
    try:
        if not await store.open(missing_ok=missing_ok):
            await store.close()
            return None
    except BaseException:
        await store.close()
        raise
    return store


class PostgresStore(PostgresOutbox, PostgresInstances, PostgresHistory):
    """fpwatch's state in a PostgreSQL database. Methods speak the domain's words; callers never see SQL. (The
    outbox's methods are in postgres_outbox.py, those of the daemons sharing it in postgres_instances.py, the report's
    reads in postgres_history.py.)"""

    def __init__(
        self,
        state: PostgresState,
        *,
        readonly: bool = False,
        audit_key: Secret | None = None,
        lock_timeout_ms: int = LOCK_TIMEOUT_MS,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.state = state
        self.readonly = readonly
        self.lock_timeout_ms = lock_timeout_ms
        self.connect_timeout = connect_timeout
        self._key = audit_key.reveal().encode() if audit_key is not None else None
        self._password = state.password.reveal() if state.password is not None else None
        options = f"-c lock_timeout={int(lock_timeout_ms)}"
        if readonly:  # the server refuses every write, whatever a caller asks
            options += " -c default_transaction_read_only=on"
        self._kwargs: dict[str, Any] = {
            "autocommit": True,  # a transaction is always explicit: `db.transaction()`
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "fpwatch",
            "options": options,
        }
        if self._password is not None:
            self._kwargs["password"] = self._password
        self._say = Failures(state, self._password, lock_timeout_ms)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            state.url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            timeout=connect_timeout,
            name="fpwatch-state",
        )
        self._writes: set[asyncio.Future[Any]] = set()
        self._diagnosing = asyncio.Lock()
        self._diagnosis: tuple[float, str] | None = None  # (time.monotonic(), the words) of the last diagnosis
        self._rows = RowCache()  # parsed drift check rows (the conclude thread and the loop share it)

    def __str__(self) -> str:
        return self.state.url

    # -- connections and errors

    async def open(self, *, missing_ok: bool = False) -> bool:
        """Connect once directly (so that a server out of reach, a refused password or a missing database is said
        as such), migrate or check the schema on that connection, then open the pool. False: no state (readonly)."""
        try:
            first = await psycopg.AsyncConnection.connect(self.state.url, **self._kwargs)
        except psycopg.ProgrammingError as exc:  # libpq refused the URL itself (an unknown option, a bad value)
            raise StateError(
                f"invalid [fpwatch] state URL {self.state.url}: {self._say.scrub(str(exc))}; fix the URL's options"
            ) from None
        except psycopg.Error as exc:
            raise self._say.unreachable(exc) from None
        try:
            async with first:
                if self.readonly:
                    if not await self._check_schema(first, missing_ok):
                        return False
                else:
                    await self._migrate(first)
        except psycopg.Error as exc:
            raise self._say.error(exc) from None
        await self._pool.open(wait=False)
        return True

    async def close(self) -> None:
        """Let writes already asked for finish (at most CLOSE_GRACE more), then close the pool."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=CLOSE_GRACE)
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Db]:
        """A connection of the pool (checked first); none in time is said as the server's reason."""
        try:
            async with self._pool.connection() as db:
                yield db
        except PoolTimeout:  # only ever raised while waiting for the connection
            raise await self._diagnose() from None

    async def _diagnose(self) -> StateError:
        """The pool found no connection in time: a direct attempt says why (out of reach, or the pool was busy).
        One attempt at a time, its words kept DIAGNOSIS_KEPT seconds: an overloaded pool times out many waiters at
        once, and a connection of its own for each would exhaust the server's limit ("too many clients already")."""
        async with self._diagnosing:
            if self._diagnosis is None or time.monotonic() - self._diagnosis[0] > DIAGNOSIS_KEPT:
                self._diagnosis = (time.monotonic(), await self._attempt())
            return StateError(self._diagnosis[1])

    async def _attempt(self) -> str:
        try:
            probe = await psycopg.AsyncConnection.connect(self.state.url, **{**self._kwargs, "connect_timeout": 3})
        except psycopg.Error as exc:
            return str(self._say.unreachable(exc))
        await probe.close()
        return (
            f"no free connection to PostgreSQL at {self.state.address} within {self.connect_timeout:g}s; is the "
            "server overloaded?"
        )

    async def _run(
        self, fn: Callable[..., Awaitable[T]], *args: Any, transaction: bool = True, pipeline: bool = False
    ) -> T:
        """fn(connection, *args), in one transaction; a connection lost while the body ran is retried once on a fresh
        one (the server rolled that transaction back whole). One lost while committing is not: the server may have
        committed what the client never heard of, and a second run would write it twice. `pipeline`: the whole
        transaction is one pipeline, so the body's statements are sent without waiting for their answers (the body
        reads an answer only where it needs one), the BEGIN goes with its first statements and the COMMIT with its
        last writes. (psycopg's transaction() in a pipeline would sync on entering and leaving: two more trips.)"""
        for attempt in (1, 2):
            committing = False
            try:
                async with self._connection() as db:
                    if not transaction:
                        return await fn(db, *args)
                    if not pipeline:
                        async with db.transaction():
                            result = await fn(db, *args)
                            committing = True  # the COMMIT is sent as the block ends
                        return result
                    # Should the body fail, the pool's connection block rolls the transaction back.
                    async with db.pipeline():  # its end waits for every answer, the COMMIT's too
                        await db.execute("BEGIN")
                        result = await fn(db, *args)
                        committing = True
                        await db.execute("COMMIT")
                    return result
            except psycopg.Error as exc:
                if attempt == 2 or committing or not lost(exc):
                    raise self._say.error(exc) from None
                get_logger("fpwatch.store").warning(
                    "lost the connection to PostgreSQL; retrying on a fresh one", reason=self._say.scrub(str(exc))
                )
                await self._pool.check()  # a restart killed the idle ones too: they are replaced, not handed out
        raise AssertionError("unreachable")

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any, pipeline: bool = False) -> T:
        """A write, asked for, runs to its end even if its caller is cancelled meanwhile (a delivery already sent
        must be marked delivered); close() waits for it."""
        task = asyncio.ensure_future(self._run(fn, *args, pipeline=pipeline))
        self._writes.add(task)
        task.add_done_callback(_finished(self._writes))
        return await asyncio.shield(task)

    # -- schema

    async def _check_schema(self, db: Db, missing_ok: bool) -> bool:
        """A read-only open cannot migrate: make sure the schema is the one this fpwatch knows."""
        table = await (await db.execute("SELECT to_regclass('migrations')")).fetchone()
        if table is None or table[0] is None:
            if missing_ok:
                return False
            raise StateError(
                f"the PostgreSQL database {self.state.url} holds no fpwatch state yet; run `fpwatch check` once "
                "without --dry-run"
            )
        done = {row[0] for row in await (await db.execute("SELECT name FROM migrations")).fetchall()}
        require_known_migrations(done, (name for name, _ in MIGRATIONS), self.state.url, UPGRADE)
        return True

    async def _migrate(self, db: Db) -> list[str]:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await db.execute(
                'CREATE TABLE IF NOT EXISTS migrations (name TEXT COLLATE "C" PRIMARY KEY, applied_at TEXT NOT NULL)'
            )
            done = {row[0] for row in await (await db.execute("SELECT name FROM migrations")).fetchall()}
            known = {name for name, _ in MIGRATIONS}
            if done - known:
                raise StateError(
                    f"the state database {self.state.url} was written by a newer fpwatch "
                    f"(migrations {', '.join(sorted(done - known))}); upgrade fpwatch"
                )
            ran = []
            for name, step in MIGRATIONS:
                if name not in done:
                    await step(db)
                    await db.execute("INSERT INTO migrations VALUES (%s, %s)", (name, iso(utcnow())))
                    ran.append(name)
            await self._take_key(db)  # a wrong or missing key: refused at open
        return ran

    async def migrate(self) -> list[str]:
        """Run the migrations this database has not seen yet; return their names."""
        async with self._connection() as db:
            return await self._migrate(db)

    async def _take_key(self, db: Db) -> None:
        switched = await postgres_audit.take_key(db, self._key, self.state.url, utcnow())
        if switched is not None:
            _said_switched(self.state.url, switched)

    async def _appender(self, db: Db) -> Appender:
        """Links appended in this transaction: the chain takes this store's key first (or refuses it)."""
        chained = await Appender.start(db, self._key, self.state.url, utcnow())
        if chained.switched is not None:
            _said_switched(self.state.url, chained.switched)
        return chained

    # -- checks and model state

    @staticmethod
    async def _lock_model(db: Db, model: str) -> None:
        await db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MODEL_LOCKS, model))

    async def record_check(
        self,
        check: CheckRecord,
        observations: Sequence[Observation],
        conclude: Conclude,
        route: Route | None = None,
    ) -> tuple[ModelState, list[StoredEvent]]:
        async def write(db: Db) -> tuple[ModelState, list[StoredEvent]]:
            await self._lock_model(db, check.model)  # sent with the reads after it, which the server runs after it
            state = await (await self._ask_state(db, check.model))()  # the first wait: BEGIN, lock, reads
            new_state, events = await asyncio.to_thread(conclude, state)  # the drift tests may take a second
            chained = await self._appender(db)
            await chained.observations(check.id, observations)
            await db.execute(
                "INSERT INTO checks VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
                await db.execute(history.insert_screen_sql("%s"), screen)
            await self._save_state(db, new_state)
            stored = [await chained.event(event, check.id) for event in events]
            alerts = [
                (event.id, notifier, iso(check.finished))
                for event in stored
                for notifier in (route(new_state, event) if route is not None else ())
            ]
            if alerts:
                async with db.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO alerts (event_id, notifier, created) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        alerts,
                    )
            return new_state, stored

        return await self._write(write, pipeline=True)

    async def load_state(self, model: str) -> ModelState:
        async def read(db: Db) -> ModelState:
            # One snapshot for the state, its signals and drift rows (a check committing between the reads would
            # otherwise pair an old state with newer signals), and still one round trip: the BEGIN, the reads and the
            # COMMIT go in one pipeline, whose end brings every answer. (Inside record_check the model's lock does it.)
            async with db.pipeline():
                await db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                answer = await self._ask_state(db, model)
                await db.execute("COMMIT")
            return await answer()

        return await self._run(read, transaction=False)

    async def _load_state(self, db: Db, model: str) -> ModelState:
        return await (await self._ask_state(db, model))()

    async def _ask_state(self, db: Db, model: str) -> Callable[[], Awaitable[ModelState]]:
        """Send the reads of a model's state; awaiting what this returns reads their answers (in a pipeline, the first
        read waits for all of them: one round trip)."""
        states = await db.execute(_STATE_SELECT, (model,))
        signal_rows = await db.execute(f"{_SIGNAL_SELECT} WHERE model = %s", (model,))
        # The drift rows are written once and never changed: only the bodies this process has not parsed are read.
        kept = self._rows.kept(model)
        drift = await db.execute(_DRIFT_SELECT, (list(kept), [size for size, _ in kept.values()], model))

        async def answer() -> ModelState:
            row = await states.fetchone()
            signals = await signal_rows.fetchall()
            rows = await drift.fetchall()
            stored: dict[int, int] = {seq: size for seq, size, _ in rows}
            bodies: dict[int, str] = {seq: body for seq, _, body in rows if body is not None}
            checks = self._rows.merge(model, stored, bodies, kept)
            return codec.state_from(row, model, ((r[0], codec.signal_from(r[1:])) for r in signals), checks)

        return answer

    @staticmethod
    async def _save_state(db: Db, state: ModelState) -> None:
        await db.execute(_STATE_UPSERT, codec.state_row(state))
        new, gone = codec.drift_rows(state)
        async with db.cursor() as cursor:
            if signals := codec.signal_rows(state):
                upsert = _upsert("signals", tuple(codec.SIGNAL_COLUMNS), ("model", "kind", "value"), len(signals))
                await cursor.execute(upsert, [value for row in signals for value in row])
            if new:
                await cursor.executemany(
                    "INSERT INTO drift_checks VALUES (%s, %s, %s) ON CONFLICT (model, seq) DO UPDATE SET body = "
                    "EXCLUDED.body",
                    [(state.model, seq, body) for seq, body in new],
                )
        if gone:
            await db.execute("DELETE FROM drift_checks WHERE model = %s AND seq = ANY(%s)", (state.model, gone))

    async def update_state(self, model: str, change: Callable[[ModelState], ModelState]) -> ModelState:
        async def write(db: Db) -> ModelState:
            await self._lock_model(db, model)
            state = change(await self._load_state(db, model))
            await self._save_state(db, state)
            return state

        return await self._write(write)

    async def signal_history(self, model: str, kind: str) -> list[Signal]:
        async def read(db: Db) -> list[Signal]:
            sql = f"{_SIGNAL_SELECT} WHERE model = %s AND kind = %s ORDER BY first_seen, value"
            rows = await (await db.execute(sql, (model, kind))).fetchall()
            return [codec.signal_from(r[1:]) for r in rows]

        return await self._run(read, transaction=False)

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
        where, args = ["TRUE"], list[Any]()
        for column, value in (("time >=", iso(since) if since else None), ("model =", model)):
            if value is not None:
                where.append(f"{column} %s")
                args.append(value)
        for column, values in (("severity", severities), ("type", types)):
            if values:
                where.append(f"{column} = ANY(%s)")
                args.append(list(values))
        sql = f"{_EVENT_SELECT} WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def read(db: Db) -> list[StoredEvent]:
            rows = await (await db.execute(sql, args)).fetchall()
            return [codec.event_from(row) for row in reversed(rows)]

        return await self._run(read, transaction=False)

    async def events_by_id(self, ids: Sequence[int]) -> list[StoredEvent]:
        async def read(db: Db) -> list[StoredEvent]:
            rows = await (await db.execute(f"{_EVENT_SELECT} WHERE id = ANY(%s)", (list(ids),))).fetchall()
            found = {row[0]: codec.event_from(row) for row in rows}
            return [found[i] for i in ids if i in found]

        return await self._run(read, transaction=False) if ids else []

    async def event(self, event_id: int) -> StoredEvent | None:
        found = await self.events_by_id([event_id])
        return found[0] if found else None

    async def ack(self, event_id: int, comment: str | None, now: datetime) -> StoredEvent | None:
        async def write(db: Db) -> None:
            row = await (await db.execute(f"{_EVENT_SELECT} WHERE id = %s", (event_id,))).fetchone()
            if row is None:
                return
            event = codec.event_from(row).event
            await self._lock_model(db, event.model)  # the model's lock before the chain's, as a check takes them
            await (await self._appender(db)).ack(event_id, iso(now), comment)
            state = await self._load_state(db, event.model)
            signed = acknowledged(state, event)
            if signed is not state:
                await self._save_state(db, signed)

        await self._write(write)
        return await self.event(event_id)

    # -- the audit trail (store/chain.py, postgres_audit.py)

    async def observation_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._exported(postgres_audit.observation_rows, since):
            yield item

    async def event_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._exported(postgres_audit.event_rows, since):
            yield item

    async def mode_rows(self, since: datetime | None = None) -> AsyncIterator[dict[str, Any]]:
        async for item in self._exported(postgres_audit.mode_rows, since):
            yield item

    async def _exported(
        self, rows: Callable[[Db, datetime | None], AsyncIterator[dict[str, Any]]], since: datetime | None
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._connection() as db, db.transaction():
                async for item in rows(db, since):
                    yield item
        except psycopg.Error as exc:
            raise self._say.error(exc) from None

    async def chain_head(self) -> chain.ChainHead:
        return await self._run(postgres_audit.head, transaction=False)  # after every check: one round trip

    async def verify_audit(self, head: str | None = None) -> chain.Audit:
        """The walk hashes every row: it runs in a thread, on a blocking connection of its own, in one snapshot."""

        def walk() -> chain.Audit:
            try:
                with psycopg.connect(self.state.url, **self._kwargs) as db:
                    db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                    db.read_only = True
                    with db.transaction():
                        mode = postgres_audit.sync_mode(db)
                        problem = chain.key_problem(mode, self._key, self.state.url)
                        if problem is not None:
                            raise StateError(problem)
                        return chain.verify(postgres_audit.links(db), mode, self._key, head)
            except psycopg.OperationalError as exc:
                raise (self._say.error(exc) if exc.sqlstate else self._say.unreachable(exc)) from None
            except psycopg.Error as exc:
                raise self._say.error(exc) from None

        return await asyncio.to_thread(walk)

    async def prune_outputs(self, before: datetime) -> int:
        async def write(db: Db) -> int:
            sql = "UPDATE observations SET output = NULL WHERE time < %s AND output IS NOT NULL"
            return (await db.execute(sql, (iso(before),))).rowcount

        return await self._write(write)


def _said_switched(url: str, row: int) -> None:
    get_logger("fpwatch.store").warning(
        f"the audit chain of {url} becomes keyed from row {row} on; if it was keyed before, its plain part was "
        "rewritten"
    )


def _finished(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        pending.discard(future)
        if not future.cancelled():
            future.exception()  # a caller that went away will not ask for the outcome

    return done
