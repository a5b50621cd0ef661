"""Moving a history: a SQLite state copied into PostgreSQL (`fpwatch state copy --to URL`, DESIGN section 11).

Every table, every row and every column as stored: ids, chain positions (`seq`), `prev_hash` and `hash` included.
The chain's contract (chain.py) hashes the same rows identically on both backends, so a faithful copy verifies on
the other side and ends at the source's head; the copy checks both before it counts as done.

- The source is read in one read transaction, from the first read to the last: one snapshot, whatever a daemon
  running on it writes meanwhile (what it writes after the snapshot is not in the copy).
- The destination must hold no fpwatch history: a copy never merges two chains. It is migrated first (its own
  schema, like any opener), then filled in one transaction that holds the chain's lock and locks every table it
  fills against writers: all or nothing.
- Rows stream in batches through COPY: memory stays flat for any history.
- An identity column's sequence (the outbox's id) is set past the ids copied, so later inserts do not collide.
  (Observations, events and acks take MAX(id) + 1: postgres_migrations.py.)
- Before the commit the chain is walked inside that transaction and its head compared with the source's: a copy
  that does not verify is rolled back whole and the destination stays empty. After the commit the destination is
  opened as a store, which verifies the chain again and reads its head, as every later fpwatch will see it.

An observation written before SQLite's migration 007 has no `seq`: its position is its id (sqlite_audit.py), and
it is copied with its id as its `seq`, as the export shows it (PostgreSQL's `seq` is never null).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from fpwatch.config.model import PostgresState, Secret
from fpwatch.errors import StateError
from fpwatch.store import chain, postgres_audit, sqlite_audit
from fpwatch.store.postgres import CONNECT_TIMEOUT, LOCK_TIMEOUT_MS, open_postgres
from fpwatch.store.postgres_audit import CHAIN_LOCK, SyncDb
from fpwatch.store.postgres_errors import Failures
from fpwatch.store.schema import require_known_migrations
from fpwatch.store.sqlite_migrations import MIGRATIONS

TABLES = (
    "model_state",
    "signals",
    "drift_checks",
    "checks",
    "drift_screens",
    "observations",
    "events",
    "acks",
    "audit_mode",
    "alerts",
    "outbox",
)  # every table of the schema but `migrations`: each backend records its own
BATCH_ROWS = 5000
VERIFYING = "verifying"  # the step `progress` names while the copy's chain is walked in its transaction
CHECKING = "checking"  # and once it is committed, while the store walks it again
Progress = Callable[[str, int, int], None]
"""progress(step, done, total): a table's name and its rows copied so far, VERIFYING and the links walked, or
CHECKING (0 of the links)."""


@dataclass(frozen=True)
class Copied:
    """What a copy wrote and found: rows per table, and the chain head both sides end at."""

    source: Path
    destination: str  # the URL without its password
    rows: Mapping[str, int]
    head: chain.ChainHead
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The object `state copy --json` prints (documented in the README)."""
        return {
            "source": str(self.source),
            "destination": self.destination,
            "rows": dict(self.rows),
            "audit": self.head.to_json(),
            "seconds": round(self.seconds, 3),
        }


async def copy_state(
    source: Path, destination: PostgresState, *, audit_key: Secret | None = None, progress: Progress | None = None
) -> Copied:
    """Copy the SQLite state at `source` into the PostgreSQL database `destination` (which must hold no fpwatch
    history), then verify the chain there with `audit_key` (`[fpwatch] audit_key_file`; a keyed chain needs it)."""
    started = time.monotonic()
    key = audit_key.reveal().encode() if audit_key is not None else None
    report = progress or (lambda step, done, total: None)
    snapshot = await asyncio.to_thread(Snapshot, source)
    try:
        if key is not None and snapshot.mode.keyed_from is None:
            raise StateError(
                f"the audit chain of {source} is plain although [fpwatch] audit_key_file is set: if the key is new, "
                "run `fpwatch check` once (it keys the chain from its next row on) and copy then; if the chain was "
                "keyed before, rows were rewritten (`fpwatch export --verify --head HASH` with a head published before)"
            )
        problem = chain.key_problem(snapshot.mode, key, source)
        if problem is not None:
            raise StateError(problem)
        target = Target(destination)
        await asyncio.to_thread(target.refuse_history)
        migrated = await open_postgres(destination)  # its own schema; no key: the chain's rows come from the source
        assert migrated is not None
        await migrated.close()
        filling = asyncio.ensure_future(asyncio.to_thread(target.fill, snapshot, key, report))
        try:
            await asyncio.shield(filling)
        except asyncio.CancelledError:  # Ctrl-C: the thread rolls the copy back at its next batch, then it ends
            target.stop.set()
            await asyncio.wait({filling})
            if not filling.cancelled():
                filling.exception()
            raise
    finally:
        await asyncio.to_thread(snapshot.close)
    report(CHECKING, 0, snapshot.head.rows)
    await _check_as_a_store(destination, audit_key, snapshot.head)
    return Copied(source, destination.url, snapshot.counts, snapshot.head, time.monotonic() - started)


async def _check_as_a_store(destination: PostgresState, audit_key: Secret | None, expected: chain.ChainHead) -> None:
    """The destination as every later fpwatch opens it: its walk holds, and its head is the source's."""
    store = await open_postgres(destination, readonly=True, audit_key=audit_key)
    assert store is not None
    try:
        audit = await store.verify_audit()
        head = await store.chain_head()
    finally:
        await store.close()
    kept = "the copy was written: drop that database's fpwatch tables (or the database) before copying again"
    if not audit.ok:
        where = f" at {audit.broken.name()}" if audit.broken is not None else ""
        raise StateError(f"the copy in {destination.url} does not verify{where}: {audit.problem}; {kept}")
    if head != expected:
        raise StateError(
            f"the copy in {destination.url} ends at another head ({head.line()}) than its source ({expected.line()}); "
            f"{kept}"
        )


class Snapshot:
    """The SQLite state, read-only, in one read transaction from the first read to `close`: every read sees the
    same snapshot (WAL lets a daemon go on writing meanwhile). Used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StateError(f"there is no SQLite state at {path}; name the file to copy with --from PATH")
        try:
            self.db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state database {path}: {exc}; check its permissions") from None
        try:
            self.db.execute("BEGIN")  # the snapshot is taken at the first read, and kept until close()
            self._check_schema()
            self.counts = {
                table: int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in TABLES
            }
            self.head = sqlite_audit.head(self.db)
            self.mode = sqlite_audit.mode(self.db)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StateError(
                f"{path} is not a usable fpwatch database ({exc}); name the SQLite state with --from PATH"
            ) from None
        except BaseException:
            self.db.close()
            raise

    def _check_schema(self) -> None:
        done = {row[0] for row in self.db.execute("SELECT name FROM migrations")}
        upgrade = "run `fpwatch check` on it once, then copy"
        require_known_migrations(done, (name for name, _ in MIGRATIONS), str(self.path), upgrade)
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        extra = {row[0] for row in self.db.execute(tables)} - {*TABLES, "migrations"}
        if extra:
            raise StateError(f"{self.path} holds tables fpwatch does not know ({', '.join(sorted(extra))})")

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self.db.execute(f"PRAGMA table_info({table})")]

    def batches(self, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in batches of BATCH_ROWS, as stored (an observation's missing seq is its id)."""
        picked = ["COALESCE(seq, id)" if (table, c) == ("observations", "seq") else c for c in columns]
        cursor = self.db.execute(f"SELECT {', '.join(picked)} FROM {table} ORDER BY rowid")
        while batch := cursor.fetchmany(BATCH_ROWS):
            yield batch

    def verify(self, key: bytes | None) -> chain.Audit:
        return chain.verify(sqlite_audit.links(self.db), self.mode, key)

    def close(self) -> None:
        self.db.close()  # ends the read transaction


class Target:
    """The PostgreSQL database a copy fills, on a blocking connection of its own (the copy runs in a thread)."""

    def __init__(self, state: PostgresState) -> None:
        self.state = state
        password = state.password.reveal() if state.password is not None else None
        self.say = Failures(state, password, LOCK_TIMEOUT_MS)
        self.kwargs: dict[str, Any] = {
            "autocommit": True,  # the one transaction is explicit
            "connect_timeout": round(CONNECT_TIMEOUT),
            "application_name": "fpwatch",
            "options": f"-c lock_timeout={LOCK_TIMEOUT_MS}",
        }
        if password is not None:
            self.kwargs["password"] = password
        self.stop = threading.Event()  # set: the copy is given up (rolled back) at its next batch

    def _going_on(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def connect(self) -> SyncDb:
        try:
            return psycopg.connect(self.state.url, **self.kwargs)
        except psycopg.ProgrammingError as exc:  # libpq refused the URL itself
            raise StateError(f"invalid state URL {self.state.url}: {self.say.scrub(str(exc))}; fix the URL") from None
        except psycopg.Error as exc:
            raise self.say.unreachable(exc) from None

    def refuse_history(self) -> None:
        """Before the destination is migrated (a migration with a key would switch a chain found there)."""
        try:
            with self.connect() as db:
                self._refuse_history(db)
        except psycopg.Error as exc:
            raise self.say.error(exc) from None

    def _refuse_history(self, db: SyncDb) -> None:
        found = {}
        for table in TABLES:
            exists = db.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists is not None and exists[0] is not None:
                row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                if row is not None and row[0]:
                    found[table] = int(row[0])
        if found:
            held = ", ".join(f"{count} in {table}" for table, count in found.items())
            raise StateError(
                f"the PostgreSQL database {self.state.url} holds fpwatch history already (rows: {held}); a copy "
                "never merges two histories: copy into a new, empty database (createdb)"
            )

    def fill(self, source: Snapshot, key: bytes | None, progress: Progress) -> None:
        """Every table in one transaction, verified before it commits; anything wrong rolls it all back."""
        try:
            with self.connect() as db, db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))  # fpwatch writers wait for it
                db.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")  # any other writer too
                self._refuse_history(db)  # again, under the locks: another copy may have won the race
                for table in TABLES:
                    self._copy_table(db, source, table, progress)
                self._reset_sequences(db)
                audit = self._walk(db, key, source.head.rows, progress)
                self._going_on()
                if not audit.ok or _head_of(audit, postgres_audit.sync_mode(db)) != source.head:
                    raise _Unfaithful(audit)
        except _Unfaithful as unfaithful:
            raise self._why(source, key, unfaithful.audit) from None
        except psycopg.Error as exc:
            raise self.say.error(exc) from None

    def _copy_table(self, db: SyncDb, source: Snapshot, table: str, progress: Progress) -> None:
        columns = source.columns(table)
        sql = "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND "
        there = {row[0] for row in db.execute(sql + "table_name = %s", (table,)).fetchall()}
        if missing := [c for c in columns if c not in there]:
            raise StateError(
                f"the table {table} of {self.state.url} has no column {', '.join(missing)}: is it an fpwatch database "
                "of another version? Copy into a new, empty database"
            )
        total, done = source.counts[table], 0
        progress(table, done, total)
        try:
            with db.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as out:
                for batch in source.batches(table, columns):
                    for row in batch:
                        out.write_row(row)
                    done += len(batch)
                    self._going_on()
                    progress(table, done, total)
        except psycopg.Error as exc:
            raise StateError(
                f"copying {table} into {self.state.url} failed ({self.say.scrub(str(exc))}); nothing was written"
            ) from None

    @staticmethod
    def _reset_sequences(db: SyncDb) -> None:
        """Past the ids copied: each identity (or serial) column's next value is its MAX + 1."""
        for table in TABLES:
            sql = (
                "SELECT column_name, pg_get_serial_sequence(%s, column_name) FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s"
            )
            for column, sequence in db.execute(sql, (table, table)).fetchall():
                if sequence is not None:
                    next_id = f"(SELECT COALESCE(MAX({column}), 0) + 1 FROM {table})"
                    db.execute(f"SELECT setval(%s, {next_id}, false)", (sequence,))

    def _walk(self, db: SyncDb, key: bytes | None, total: int, progress: Progress) -> chain.Audit:
        """The chain as the store walks it (postgres_audit.links), inside the copy's own transaction."""
        mode = postgres_audit.sync_mode(db)
        problem = chain.key_problem(mode, key, self.state.url)
        if problem is not None:
            raise StateError(problem)

        def counted() -> Iterator[chain.Link]:
            for walked, link in enumerate(postgres_audit.links(db), 1):
                if walked % BATCH_ROWS == 0 or walked == total:
                    self._going_on()
                    progress(VERIFYING, walked, total)
                yield link

        progress(VERIFYING, 0, total)
        return chain.verify(counted(), mode, key)

    def _why(self, source: Snapshot, key: bytes | None, audit: chain.Audit) -> StateError:
        """A copy that did not verify was rolled back: the source's chain says whose fault it was."""
        own = source.verify(key)
        if not own.ok:
            where = f" at {own.broken.name()}" if own.broken is not None else ""
            return StateError(
                f"the audit chain of {source.path} is broken{where} ({own.problem}), so no copy of it can verify; "
                "nothing was copied (`fpwatch export --verify` shows the same)"
            )
        where = f" at {audit.broken.name()}" if audit.broken is not None else ""
        said = audit.problem or f"it ends at row {audit.rows}, the source at row {source.head.rows}"
        return StateError(
            f"the copy in {self.state.url} does not verify{where} ({said}) although its source does; nothing was "
            "copied; please report this"
        )


class _Stopped(Exception):
    """Raised inside the copy's transaction to roll it back: the copy was given up (Ctrl-C)."""


class _Unfaithful(Exception):
    """Raised inside the copy's transaction to roll it back: the chain copied does not hold, or ends elsewhere."""

    def __init__(self, audit: chain.Audit) -> None:
        super().__init__("the copy does not verify")
        self.audit = audit


def _head_of(audit: chain.Audit, mode: chain.Mode) -> chain.ChainHead:
    """The head a walk that held ends at (ChainHead's form: None for an empty chain)."""
    return chain.ChainHead(audit.head if audit.rows else None, audit.rows, mode.name, mode.keyed_from)
