"""The SQLite schema, as an ordered list of named migrations recorded in `migrations` as they run on open.

Each step runs inside the opening transaction; a database from every earlier schema migrates forward
(tested), and one with a migration this fpwatch does not know is refused (a newer fpwatch wrote it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from fpwatch.store import sqlite_audit


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


def _m005_drift_checks(db: sqlite3.Connection) -> None:
    """The drift reference as one row per check (written once) instead of one JSON rewritten every check; the
    JSON of an earlier fpwatch is converted when its model is next saved."""
    db.execute(
        "CREATE TABLE drift_checks (model TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, "
        "PRIMARY KEY (model, seq))"
    )


def _m006_borders(db: sqlite3.Connection) -> None:
    """Border inputs discovered per model (detect.borders.Borders as JSON; '{}': not discovered yet)."""
    db.execute("ALTER TABLE model_state ADD COLUMN borders TEXT NOT NULL DEFAULT '{}'")


UPGRADED = "fpwatch was upgraded (audit chain v2): restart every fpwatch process that uses this database"


def _m007_audit_chain(db: sqlite3.Connection) -> None:
    """One hash chain through observations, events and acks (store/chain.py): each row takes its position `seq`;
    an ack becomes a row of its own; the switch to keyed mode is a link of its own, in `audit_mode`. The rows
    already there are chained as they are (sqlite_audit.chain_upgrade), so an upgraded database verifies. No
    observation is rewritten (their position is their id): the migration's time grows with the events, not with
    the observations, and a big database upgrades well within a service's start timeout.

    An fpwatch of before, still running (a daemon not restarted yet), would go on writing observations without a
    position and acknowledgements without a link, breaking the chain for good: the triggers refuse both, and
    its error says what to do. (It cannot write an event alone: it records one only after its check's
    observations, in the same transaction, which the first refused insert rolls back.)"""
    _script(
        db,
        """
        ALTER TABLE observations ADD COLUMN seq INTEGER;
        ALTER TABLE events ADD COLUMN seq INTEGER;
        ALTER TABLE events ADD COLUMN prev_hash TEXT;
        ALTER TABLE events ADD COLUMN hash TEXT;
        CREATE TABLE acks (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL,
            time TEXT NOT NULL,
            comment TEXT,
            seq INTEGER NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX acks_event ON acks (event_id);
        CREATE TABLE audit_mode (
            from_row INTEGER PRIMARY KEY,
            key_id TEXT NOT NULL,
            set_at TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """,
    )
    sqlite_audit.chain_upgrade(db)
    _script(
        db,
        """
        CREATE UNIQUE INDEX events_seq ON events (seq);
        CREATE UNIQUE INDEX acks_seq ON acks (seq)
        """,
    )
    # One statement each: a trigger's body holds semicolons, which _script would split.
    db.execute(
        "CREATE TRIGGER observations_chained BEFORE INSERT ON observations WHEN NEW.seq IS NULL "
        f"BEGIN SELECT RAISE(ABORT, '{UPGRADED}'); END"
    )
    db.execute(
        "CREATE TRIGGER events_ack_chained BEFORE UPDATE OF acked_at ON events WHEN NEW.acked_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM acks WHERE acks.event_id = NEW.id AND acks.time = NEW.acked_at) "
        f"BEGIN SELECT RAISE(ABORT, '{UPGRADED}'); END"
    )


def _m008_drift_screens(db: sqlite3.Connection) -> None:
    """The drift screen each check ran, for the report's chart (store/history.py). A table of its own, not columns
    of `checks`: an fpwatch of before, still running, goes on inserting its checks as it did (without screens)."""
    _script(
        db,
        """
        CREATE TABLE drift_screens (
            check_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            time TEXT NOT NULL,
            surprise REAL NOT NULL,
            threshold REAL NOT NULL,
            logprob_change REAL,
            logprob_threshold REAL NOT NULL,
            samples INTEGER NOT NULL
        );
        CREATE INDEX drift_screens_time ON drift_screens (time)
        """,
    )


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_outbox", _m002_outbox),
    ("003_flap_damping", _m003_flap_damping),
    ("004_drift", _m004_drift),
    ("005_drift_checks", _m005_drift_checks),
    ("006_borders", _m006_borders),
    ("007_audit_chain", _m007_audit_chain),
    ("008_drift_screens", _m008_drift_screens),
]
