"""The state database: the only SQL in fpwatch (DESIGN section 9).

SQLite in WAL mode with a busy timeout, so the daemon and a concurrent `fpwatch check` share one
file. A check's read-modify-write (load the model's state, apply the pure tracker, append the
observations, save the state and the events) runs in one `BEGIN IMMEDIATE` transaction: two
processes checking the same model serialise instead of double-counting.

Migrations are an ordered list of named functions, recorded in `migrations` as they run on open.

Observations are append-only and hash-chained. Each row's hash is
    sha256("fpwatch-obs-v1\\n" + previous hash + "\\n" + canonical JSON of the row)
where the canonical JSON has sorted keys, no spaces, and the output replaced by its sha256
(`output_sha256`), so raw outputs can be pruned after the retention period without breaking the
chain. The first row's previous hash is 64 zeros. `fpwatch export` carries `prev_hash` and `hash`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fpwatch.clock import iso, iso_or_none, parse_iso, parse_iso_or_none
from fpwatch.drift import DriftState
from fpwatch.errors import StateError
from fpwatch.observation import Observation
from fpwatch.tracking import Event, ModelState, Signal, SignalSet

GENESIS = "0" * 64
HASH_TAG = "fpwatch-obs-v1"
BUSY_TIMEOUT_MS = 30_000


# --- migrations -------------------------------------------------------------------------------------------


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run DDL statement by statement: executescript() would COMMIT the migration's transaction."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE observations (
            id INTEGER PRIMARY KEY,
            check_id TEXT NOT NULL,
            time TEXT NOT NULL,
            model TEXT NOT NULL,
            canary TEXT NOT NULL,
            sample INTEGER NOT NULL,
            seed INTEGER,
            ok INTEGER NOT NULL,
            system_fingerprint TEXT,
            fingerprint_state TEXT,
            response_model TEXT,
            output TEXT,
            output_sha256 TEXT,
            finish_reason TEXT,
            first_token TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            reasoning_tokens INTEGER,
            latency_ms REAL,
            request_id TEXT,
            response_id TEXT,
            http_status INTEGER,
            attempts INTEGER NOT NULL,
            error_kind TEXT,
            error TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE
        );
        CREATE INDEX observations_model_time ON observations (model, time);
        CREATE INDEX observations_time ON observations (time);

        CREATE TABLE checks (
            id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            started TEXT NOT NULL,
            finished TEXT NOT NULL,
            ok INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            error TEXT
        );
        CREATE INDEX checks_model_started ON checks (model, started);

        CREATE TABLE model_state (
            model TEXT PRIMARY KEY,
            checks INTEGER NOT NULL,
            first_check TEXT,
            last_check TEXT,
            last_ok TEXT,
            consecutive_failures INTEGER NOT NULL,
            down INTEGER NOT NULL,
            down_since TEXT,
            last_error TEXT,
            fingerprint_missing INTEGER NOT NULL,
            expect_failing TEXT NOT NULL,
            behaviour_fingerprint TEXT,
            fingerprint_samples INTEGER NOT NULL,
            response_model_samples INTEGER NOT NULL
        );

        CREATE TABLE signals (
            model TEXT NOT NULL,
            kind TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            count INTEGER NOT NULL,
            misses INTEGER NOT NULL,
            retired_at TEXT,
            since INTEGER NOT NULL,
            PRIMARY KEY (model, kind, value)
        );

        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            model TEXT NOT NULL,
            type TEXT NOT NULL,
            severity TEXT NOT NULL,
            summary TEXT NOT NULL,
            details TEXT NOT NULL,
            check_id TEXT,
            acked_at TEXT,
            ack_comment TEXT
        );
        CREATE INDEX events_time ON events (time);
        CREATE INDEX events_model_time ON events (model, time);
        """,
    )


def _m002_outbox(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE alerts (
            event_id INTEGER NOT NULL,
            notifier TEXT NOT NULL,
            created TEXT NOT NULL,
            message_id INTEGER,
            last_reminded TEXT,
            PRIMARY KEY (event_id, notifier)
        );
        CREATE INDEX alerts_pending ON alerts (notifier, message_id);

        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            notifier TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            notify_type TEXT NOT NULL,
            created TEXT NOT NULL,
            due TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            lease_until TEXT,
            lease_owner TEXT,
            status TEXT NOT NULL,
            finished TEXT
        );
        CREATE INDEX outbox_due ON outbox (status, due);
        """,
    )


def _m003_flap_damping(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE model_state ADD COLUMN recent_downs TEXT NOT NULL DEFAULT '[]'")


def _m004_drift(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE model_state ADD COLUMN drift TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE model_state ADD COLUMN unsupported TEXT NOT NULL DEFAULT '[]'")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_outbox", _m002_outbox),
    ("003_flap_damping", _m003_flap_damping),
    ("004_drift", _m004_drift),
]


# --- values -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    id: int | None  # None for an event of a dry run, which is never stored
    event: Event
    check_id: str | None
    acked_at: datetime | None = None
    ack_comment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        return {
            "id": self.id,
            "time": iso(e.time),
            "model": e.model,
            "type": e.type,
            "severity": e.severity,
            "summary": e.summary,
            "details": e.details,
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


def _lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Is the process holding a lease still running? (Owners on other hosts are assumed alive.)"""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


def _not_ours(path: Path | None, exc: Exception) -> StateError:
    return StateError(
        f"{path} is not a usable fpwatch database ({exc}); move it aside or point [fpwatch] state at another file"
    )


def canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{HASH_TAG}\n{prev}\n{canonical(row)}".encode()).hexdigest()


def hashed_fields(obs: Observation, check_id: str) -> dict[str, Any]:
    """The fields of an observation the chain covers (the output by its digest)."""
    row = obs.to_dict()
    output = row.pop("output")
    row["output_sha256"] = hashlib.sha256(output.encode()).hexdigest() if output is not None else None
    row["check_id"] = check_id
    return row


# --- the store --------------------------------------------------------------------------------------------


class Store:
    """fpwatch's state in one SQLite file. Methods speak the domain's words; callers never see SQL."""

    def __init__(self, db: sqlite3.Connection, path: Path | None, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.db = db
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """sqlite3 errors become one-line StateErrors that say what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StateError(
                    f"the state database {self.path} stayed locked by another process for "
                    f"{self.busy_timeout_ms / 1000:g}s; is another fpwatch stuck? ({exc})"
                ) from None
            raise StateError(f"state database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise _not_ours(self.path, exc) from None

    @classmethod
    def open(cls, path: Path | str, *, readonly: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Store:
        """Open (creating and migrating) the database; readonly opens an existing file without writing.

        `busy_timeout_ms`: how long to wait for another process's write lock before giving up (the
        daemon waits less than the CLI: its event loop waits with it).
        """
        path = Path(path)
        try:
            if readonly:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not readonly:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise StateError(
                f"cannot open the state database {path}: {exc}; check [fpwatch] state and the folder's permissions"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise _not_ours(path, exc) from None
        store = cls(db, path, busy_timeout_ms)
        if readonly:
            store._check_schema()
        else:
            store.migrate()
        return store

    def _check_schema(self) -> None:
        """A read-only open cannot migrate: make sure the schema is the one this fpwatch knows."""
        with self._guard():
            done = {row[0] for row in self.db.execute("SELECT name FROM migrations")}
        known = [name for name, _ in MIGRATIONS]
        if done - set(known):
            raise StateError(f"the state database {self.path} was written by a newer fpwatch; upgrade fpwatch")
        if set(known) - done:
            raise StateError(
                f"the state database {self.path} needs an upgrade; run `fpwatch check` once without --dry-run"
            )

    @classmethod
    def memory(cls) -> Store:
        db = sqlite3.connect(":memory:", isolation_level=None)
        store = cls(db, None)
        store.migrate()
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so read-modify-write cannot interleave."""
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Run the migrations this database has not seen yet; return their names."""
        with self.transaction() as db:
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
                    db.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso(datetime.now(UTC))))
                    ran.append(name)
            return ran

    # -- checks

    def record_check(
        self,
        check: CheckRecord,
        observations: Sequence[Observation],
        apply: Callable[[ModelState], tuple[ModelState, list[Event]]],
        route: Callable[[ModelState, StoredEvent], list[str]] | None = None,
    ) -> tuple[ModelState, list[StoredEvent]]:
        """Atomically: load the model's state, apply the tracker, append observations, save state and events,
        and queue each event for the notifiers `route` names (so no concluded event is ever lost)."""
        with self.transaction() as db:
            state = self._load_state(db, check.model)
            new_state, events = apply(state)
            self._append_observations(db, check.id, observations)
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
            self._save_state(db, new_state)
            stored = [self._insert_event(db, event, check.id) for event in events]
            for event in stored:
                for notifier in route(new_state, event) if route is not None else ():
                    db.execute(
                        "INSERT OR IGNORE INTO alerts (event_id, notifier, created) VALUES (?, ?, ?)",
                        (event.id, notifier, iso(check.finished)),
                    )
        return new_state, stored

    def _append_observations(self, db: sqlite3.Connection, check_id: str, observations: Sequence[Observation]) -> None:
        row = db.execute("SELECT hash FROM observations ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        for obs in observations:
            fields = hashed_fields(obs, check_id)
            digest = chain_hash(prev, fields)
            db.execute(
                """INSERT INTO observations (check_id, time, model, canary, sample, seed, ok, system_fingerprint,
                   fingerprint_state, response_model, output, output_sha256, finish_reason, first_token,
                   input_tokens, output_tokens, reasoning_tokens, latency_ms, request_id, response_id,
                   http_status, attempts, error_kind, error, prev_hash, hash)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
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
                    json.dumps(fields["first_token"]) if obs.first_token else None,
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
                    prev,
                    digest,
                ),
            )
            prev = digest

    # -- model state

    def load_state(self, model: str) -> ModelState:
        with self._guard():
            return self._load_state(self.db, model)

    def _load_state(self, db: sqlite3.Connection, model: str) -> ModelState:
        row = db.execute(
            """SELECT checks, first_check, last_check, last_ok, consecutive_failures, down, down_since,
                      last_error, fingerprint_missing, expect_failing, behaviour_fingerprint,
                      fingerprint_samples, response_model_samples, recent_downs, drift, unsupported
               FROM model_state WHERE model = ?""",
            (model,),
        ).fetchone()
        if row is None:
            return ModelState(model)
        signals: dict[str, dict[str, Signal]] = {"fingerprint": {}, "response_model": {}}
        for kind, value, first, last, count, misses, retired, since in db.execute(
            "SELECT kind, value, first_seen, last_seen, count, misses, retired_at, since FROM signals WHERE model = ?",
            (model,),
        ):
            signals[kind][value] = Signal(
                value, parse_iso(first), parse_iso(last), count, misses, parse_iso_or_none(retired), since
            )
        return ModelState(
            model=model,
            checks=row[0],
            first_check=parse_iso_or_none(row[1]),
            last_check=parse_iso_or_none(row[2]),
            last_ok=parse_iso_or_none(row[3]),
            consecutive_failures=row[4],
            down=bool(row[5]),
            down_since=parse_iso_or_none(row[6]),
            last_error=row[7],
            fingerprint_missing=bool(row[8]),
            expect_failing=frozenset(json.loads(row[9])),
            behaviour_fingerprint=row[10],
            fingerprints=SignalSet("fingerprint", signals["fingerprint"], row[11]),
            response_models=SignalSet("response_model", signals["response_model"], row[12]),
            recent_downs=tuple(parse_iso(t) for t in json.loads(row[13])),
            drift=DriftState.from_json(json.loads(row[14])),
            unsupported=frozenset(json.loads(row[15])),
        )

    def _save_state(self, db: sqlite3.Connection, s: ModelState) -> None:
        db.execute(
            """INSERT OR REPLACE INTO model_state VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                s.model,
                s.checks,
                iso_or_none(s.first_check),
                iso_or_none(s.last_check),
                iso_or_none(s.last_ok),
                s.consecutive_failures,
                int(s.down),
                iso_or_none(s.down_since),
                s.last_error,
                int(s.fingerprint_missing),
                json.dumps(sorted(s.expect_failing)),
                s.behaviour_fingerprint,
                s.fingerprints.samples,
                s.response_models.samples,
                json.dumps([iso(t) for t in s.recent_downs]),
                json.dumps(s.drift.to_json(), separators=(",", ":")),
                json.dumps(sorted(s.unsupported)),
            ),
        )
        for signal_set in (s.fingerprints, s.response_models):
            db.executemany(
                "INSERT OR REPLACE INTO signals VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        s.model,
                        signal_set.kind,
                        sig.value,
                        iso(sig.first_seen),
                        iso(sig.last_seen),
                        sig.count,
                        sig.misses,
                        iso_or_none(sig.retired_at),
                        sig.since,
                    )
                    for sig in signal_set.signals.values()
                ],
            )

    # -- events

    def _insert_event(self, db: sqlite3.Connection, event: Event, check_id: str | None) -> StoredEvent:
        cursor = db.execute(
            "INSERT INTO events (time, model, type, severity, summary, details, check_id) VALUES (?,?,?,?,?,?,?)",
            (
                iso(event.time),
                event.model,
                event.type,
                event.severity,
                event.summary,
                json.dumps(event.details, sort_keys=True),
                check_id,
            ),
        )
        assert cursor.lastrowid is not None
        return StoredEvent(cursor.lastrowid, event, check_id)

    def events(
        self,
        *,
        since: datetime | None = None,
        model: str | None = None,
        severities: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Events oldest first (the newest `limit` of them when limited)."""
        with self._guard():
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
            sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id DESC"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return [self._event(row) for row in reversed(self.db.execute(sql, args).fetchall())]

    def event(self, event_id: int) -> StoredEvent | None:
        with self._guard():
            row = self.db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
            return self._event(row) if row else None

    def ack(self, event_id: int, comment: str | None, now: datetime) -> StoredEvent | None:
        """Record a person's acknowledgement. Acking the latest canary.drift signs off the new behaviour:
        the model leaves the `drift` state (its reference already follows the new behaviour)."""
        with self.transaction() as db:
            db.execute("UPDATE events SET acked_at = ?, ack_comment = ? WHERE id = ?", (iso(now), comment, event_id))
            row = db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is not None and row[3] == "canary.drift":
                state = self._load_state(db, row[2])
                opened = state.drift.open_since
                if opened is not None and parse_iso(row[1]) >= opened:
                    self._save_state(db, replace(state, drift=replace(state.drift, open_since=None)))
        return self.event(event_id)

    @staticmethod
    def _event(row: Sequence[Any]) -> StoredEvent:
        event = Event(parse_iso(row[1]), row[2], row[3], row[5], json.loads(row[6]), row[4])
        return StoredEvent(row[0], event, row[7], parse_iso_or_none(row[8]), row[9])

    # -- notifications

    def pending_alerts(self, notifier: str) -> list[tuple[int, datetime]]:
        """(event id, queued at) of this notifier's alerts not yet in a message, oldest first."""
        with self._guard():
            rows = self.db.execute(
                "SELECT event_id, created FROM alerts WHERE notifier = ? AND message_id IS NULL ORDER BY event_id",
                (notifier,),
            ).fetchall()
        return [(event_id, parse_iso(created)) for event_id, created in rows]

    def compose_message(
        self, notifier: str, event_ids: Sequence[int], title: str, body: str, notify_type: str, now: datetime
    ) -> int | None:
        """Write one outbox message for these alerts and tie them to it; None if another process got there first."""
        with self.transaction() as db:
            marks = ",".join("?" * len(event_ids))
            free = db.execute(
                f"SELECT COUNT(*) FROM alerts WHERE notifier = ? AND message_id IS NULL AND event_id IN ({marks})",
                (notifier, *event_ids),
            ).fetchone()[0]
            if free != len(event_ids):
                return None
            cursor = db.execute(
                "INSERT INTO outbox (notifier, title, body, notify_type, created, due, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (notifier, title, body, notify_type, iso(now), iso(now)),
            )
            message_id = cursor.lastrowid
            db.execute(
                f"UPDATE alerts SET message_id = ? WHERE notifier = ? AND event_id IN ({marks})",
                (message_id, notifier, *event_ids),
            )
        return message_id

    def due_reminders(self, event_types: Sequence[str], every: timedelta, now: datetime) -> list[tuple[int, str]]:
        """(event id, notifier) of unacked alerts of these types, delivered, last sent over `every` ago."""
        marks = ",".join("?" * len(event_types))
        with self._guard():
            rows = self.db.execute(
                f"""SELECT a.event_id, a.notifier, COALESCE(a.last_reminded, o.finished)
                    FROM alerts a JOIN events e ON e.id = a.event_id JOIN outbox o ON o.id = a.message_id
                    WHERE e.type IN ({marks}) AND e.acked_at IS NULL AND o.status = 'delivered'""",
                tuple(event_types),
            ).fetchall()
        return [(event_id, notifier) for event_id, notifier, last in rows if now - parse_iso(last) >= every]

    def add_reminder(
        self, event_id: int, notifier: str, title: str, body: str, notify_type: str, now: datetime, every: timedelta
    ) -> None:
        """Queue a reminder and note when, in one transaction; a no-op if another process just did."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT a.last_reminded, o.finished FROM alerts a JOIN outbox o ON o.id = a.message_id "
                "WHERE a.event_id = ? AND a.notifier = ?",
                (event_id, notifier),
            ).fetchone()
            if row is None or now - parse_iso(row[0] or row[1]) < every:
                return
            db.execute(
                "INSERT INTO outbox (notifier, title, body, notify_type, created, due, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (notifier, title, body, notify_type, iso(now), iso(now)),
            )
            db.execute(
                "UPDATE alerts SET last_reminded = ? WHERE event_id = ? AND notifier = ?",
                (iso(now), event_id, notifier),
            )

    def claim_next_message(self, notifier: str, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """The oldest due message of this notifier not leased by another live process, leased to us.

        A lease names its owner (host:pid), so one left by a process killed mid-send is taken over at
        once instead of when it runs out.
        """
        me = _lease_owner()
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, notifier, title, body, notify_type, created, attempts, lease_until, lease_owner "
                "FROM outbox WHERE notifier = ? AND status = 'pending' AND due <= ? ORDER BY id",
                (notifier, iso(now)),
            ).fetchall()
            free = next((r for r in rows if r[7] is None or r[7] < iso(now) or not _owner_alive(r[8])), None)
            if free is None:
                return None
            db.execute(
                "UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id = ?", (iso(now + lease), me, free[0])
            )
        return OutboxMessage(free[0], free[1], free[2], free[3], free[4], parse_iso(free[5]), free[6])

    def orphaned_messages(self, notifiers: set[str]) -> list[tuple[int, str]]:
        """Pending messages of notifiers no longer configured."""
        with self._guard():
            rows = self.db.execute("SELECT id, notifier FROM outbox WHERE status = 'pending'").fetchall()
        return [(message_id, name) for message_id, name in rows if name not in notifiers]

    # Each outcome applies only to a message still pending: a finished one is never rewritten.

    def mark_delivered(self, message_id: int, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'delivered', finished = ?, attempts = attempts + 1, last_error = NULL, "
                "lease_until = NULL WHERE id = ? AND status = 'pending'",
                (iso(now), message_id),
            )

    def retry_message(self, message_id: int, due: datetime, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET due = ?, attempts = attempts + 1, last_error = ?, lease_until = NULL "
                "WHERE id = ? AND status = 'pending'",
                (iso(due), error, message_id),
            )

    def expire_message(self, message_id: int, now: datetime, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'expired', finished = ?, attempts = attempts + 1, last_error = ?, "
                "lease_until = NULL WHERE id = ? AND status = 'pending'",
                (iso(now), error, message_id),
            )

    def notifier_status(self, notifier: str) -> dict[str, Any]:
        """Messages waiting, the last error and the last delivery of one notifier."""
        with self._guard():
            waiting = self.db.execute(
                "SELECT COUNT(*) FROM outbox WHERE notifier = ? AND status = 'pending'", (notifier,)
            ).fetchone()[0]
            queued = self.db.execute(
                "SELECT COUNT(*) FROM alerts WHERE notifier = ? AND message_id IS NULL", (notifier,)
            ).fetchone()[0]
            failed = self.db.execute(
                "SELECT last_error, status FROM outbox WHERE notifier = ? AND last_error IS NOT NULL "
                "ORDER BY id DESC LIMIT 1",
                (notifier,),
            ).fetchone()
            delivered = self.db.execute(
                "SELECT MAX(finished) FROM outbox WHERE notifier = ? AND status = 'delivered'", (notifier,)
            ).fetchone()[0]
            expired = self.db.execute(
                "SELECT COUNT(*) FROM outbox WHERE notifier = ? AND status = 'expired'", (notifier,)
            ).fetchone()[0]
        return {
            "name": notifier,
            "pending_messages": waiting,
            "queued_alerts": queued,
            "expired_messages": expired,
            "last_error": failed[0] if failed else None,
            "last_delivered": delivered,
        }

    # -- audit trail

    def observation_rows(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Observations as dicts (export form), oldest first, with prev_hash and hash."""
        with self._guard():
            sql = "SELECT * FROM observations"
            args: list[Any] = []
            if since is not None:
                sql += " WHERE time >= ?"
                args.append(iso(since))
            cursor = self.db.execute(sql + " ORDER BY id", args)
            names = [d[0] for d in cursor.description]
            for row in cursor:
                item = dict(zip(names, row, strict=True))
                item["ok"] = bool(item["ok"])
                item["first_token"] = json.loads(item["first_token"]) if item["first_token"] else None
                yield item

    def verify_chain(self) -> tuple[int, int | None]:
        """Recompute the hash chain; return (rows checked, id of the first broken row or None)."""
        prev, count = GENESIS, 0
        for item in self.observation_rows():
            if item["prev_hash"] != prev or chain_hash(prev, row_fields(item)) != item["hash"]:
                return count, item["id"]
            if (
                item["output"] is not None
                and hashlib.sha256(item["output"].encode()).hexdigest() != item["output_sha256"]
            ):
                return count, item["id"]
            prev = item["hash"]
            count += 1
        return count, None

    def prune_outputs(self, before: datetime) -> int:
        """Drop raw outputs older than `before` (their digests stay, so the chain still verifies)."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE observations SET output = NULL WHERE time < ? AND output IS NOT NULL", (iso(before),)
            )
            return cursor.rowcount

    def signal_history(self, model: str, kind: str) -> list[Signal]:
        with self._guard():
            return [
                Signal(v, parse_iso(f), parse_iso(last), c, m, parse_iso_or_none(r), since)
                for v, f, last, c, m, r, since in self.db.execute(
                    "SELECT value, first_seen, last_seen, count, misses, retired_at, since FROM signals "
                    "WHERE model = ? AND kind = ? ORDER BY first_seen, value",
                    (model, kind),
                )
            ]


def row_fields(item: dict[str, Any]) -> dict[str, Any]:
    """Rebuild, from an exported or stored row, the exact fields its hash covers."""
    keys = set(Observation.__dataclass_fields__) - {"output"} | {"output_sha256", "check_id"}
    return {k: item.get(k) for k in keys}
