"""The PostgreSQL schema, as an ordered list of named migrations recorded in `migrations` as they run on open.

Its own list, not SQLite's: it starts from the schema SQLite reached in seven steps (the audit chain through
observations, events and acks, with `seq` on every row). The opener runs them in one transaction under a
transaction-level advisory lock, so two fpwatch processes opening a new database at once do not race; one with a
migration this fpwatch does not know is refused (a newer fpwatch wrote it). Later parts add their tables (the
instances sharing the database, the claims on due checks: 002; the drift screens: 003) as migrations of
their own.

Types, and why:
- times are text in fpwatch's one ISO form ("2026-11-22T20:42:48.092829Z"), as in SQLite: the chain covers the
  strings as stored, so a row reads back (and is copied between backends) byte for byte, and the codec is shared;
- every text column collates "C" (bytewise, as SQLite compares): time ranges, `ORDER BY` and the chain's merge
  order never depend on the server's locale;
- JSON (event details, the model's drift state) is text too: `jsonb` reorders keys and `json` would be parsed by
  the driver, while the audit trail shows details exactly as stored;
- columns in SQLite's order (an export's keys come out in the same order on both backends);
- integers are bigint (SQLite's are 64-bit); flags are smallint 0/1 as the codec writes them; a latency is
  `double precision` (PostgreSQL's `real` is 32-bit, and the chain covers the value to the last bit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection

TEXT = 'TEXT COLLATE "C"'


def _sql(template: str) -> list[str]:
    return [s.strip() for s in template.replace("TEXT", TEXT).split(";") if s.strip()]


_INITIAL = _sql(
    """
    CREATE TABLE observations (
        id BIGINT PRIMARY KEY,
        check_id TEXT NOT NULL,
        time TEXT NOT NULL,
        model TEXT NOT NULL,
        canary TEXT NOT NULL,
        sample BIGINT NOT NULL,
        seed BIGINT,
        ok SMALLINT NOT NULL,
        system_fingerprint TEXT,
        fingerprint_state TEXT,
        response_model TEXT,
        output TEXT,
        output_sha256 TEXT,
        finish_reason TEXT,
        first_token TEXT,
        input_tokens BIGINT,
        output_tokens BIGINT,
        reasoning_tokens BIGINT,
        latency_ms DOUBLE PRECISION,
        request_id TEXT,
        response_id TEXT,
        http_status BIGINT,
        attempts BIGINT NOT NULL,
        error_kind TEXT,
        error TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        seq BIGINT NOT NULL UNIQUE
    );
    CREATE INDEX observations_model_time ON observations (model, time);
    CREATE INDEX observations_time ON observations (time);

    CREATE TABLE checks (
        id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT NOT NULL,
        ok SMALLINT NOT NULL,
        requests BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        error TEXT
    );
    CREATE INDEX checks_model_started ON checks (model, started);

    CREATE TABLE model_state (
        model TEXT PRIMARY KEY,
        checks BIGINT NOT NULL,
        first_check TEXT,
        last_check TEXT,
        last_ok TEXT,
        consecutive_failures BIGINT NOT NULL,
        down SMALLINT NOT NULL,
        down_since TEXT,
        last_error TEXT,
        fingerprint_missing SMALLINT NOT NULL,
        expect_failing TEXT NOT NULL,
        behaviour_fingerprint TEXT,
        fingerprint_samples BIGINT NOT NULL,
        response_model_samples BIGINT NOT NULL,
        recent_downs TEXT NOT NULL DEFAULT '[]',
        drift TEXT NOT NULL DEFAULT '{}',
        unsupported TEXT NOT NULL DEFAULT '[]',
        borders TEXT NOT NULL DEFAULT '{}'
    );

    CREATE TABLE signals (
        model TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        count BIGINT NOT NULL,
        misses BIGINT NOT NULL,
        retired_at TEXT,
        since BIGINT NOT NULL,
        PRIMARY KEY (model, kind, value)
    );

    CREATE TABLE drift_checks (
        model TEXT NOT NULL,
        seq BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (model, seq)
    );

    CREATE TABLE events (
        id BIGINT PRIMARY KEY,
        time TEXT NOT NULL,
        model TEXT NOT NULL,
        type TEXT NOT NULL,
        severity TEXT NOT NULL,
        summary TEXT NOT NULL,
        details TEXT NOT NULL,
        check_id TEXT,
        acked_at TEXT,
        ack_comment TEXT,
        seq BIGINT UNIQUE,
        prev_hash TEXT,
        hash TEXT
    );
    CREATE INDEX events_time ON events (time);
    CREATE INDEX events_model_time ON events (model, time);

    CREATE TABLE acks (
        id BIGINT PRIMARY KEY,
        event_id BIGINT NOT NULL,
        time TEXT NOT NULL,
        comment TEXT,
        seq BIGINT NOT NULL UNIQUE,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX acks_event ON acks (event_id);

    CREATE TABLE audit_mode (
        from_row BIGINT PRIMARY KEY,
        key_id TEXT NOT NULL,
        set_at TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );

    CREATE TABLE alerts (
        event_id BIGINT NOT NULL,
        notifier TEXT NOT NULL,
        created TEXT NOT NULL,
        message_id BIGINT,
        last_reminded TEXT,
        PRIMARY KEY (event_id, notifier)
    );
    CREATE INDEX alerts_pending ON alerts (notifier, message_id);

    CREATE TABLE outbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        notifier TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        notify_type TEXT NOT NULL,
        created TEXT NOT NULL,
        due TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        lease_until TEXT,
        lease_owner TEXT,
        status TEXT NOT NULL,
        finished TEXT
    );
    CREATE INDEX outbox_due ON outbox (notifier, status, due)
    """
)
# Observations, events and acks take their ids as MAX(id) + 1 under the chain's lock, not from a sequence: a
# rolled-back (or retried) transaction leaves no gap, so the same history has the same ids on both backends (an
# event's id is covered by its hash). The outbox is not in the chain: an identity column is enough there.


async def _m001_initial(db: AsyncConnection[tuple[object, ...]]) -> None:
    for statement in _INITIAL:
        await db.execute(statement)


_INSTANCES = _sql(
    """
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        started TEXT NOT NULL,
        heartbeat TIMESTAMPTZ NOT NULL,
        models BIGINT NOT NULL
    );

    CREATE TABLE check_claims (
        model TEXT PRIMARY KEY,
        slot DOUBLE PRECISION NOT NULL,
        owner TEXT NOT NULL,
        claimed TIMESTAMPTZ NOT NULL
    )
    """
)
# Not in the chain, and on the server's clock (timestamptz): the daemons sharing the database agree on it whatever
# their own clocks say (postgres_instances.py).


async def _m002_instances(db: AsyncConnection[tuple[object, ...]]) -> None:
    for statement in _INSTANCES:
        await db.execute(statement)


_DRIFT_SCREENS = _sql(
    """
    CREATE TABLE drift_screens (
        check_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        time TEXT NOT NULL,
        surprise DOUBLE PRECISION NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        logprob_change DOUBLE PRECISION,
        logprob_threshold DOUBLE PRECISION NOT NULL,
        samples BIGINT NOT NULL
    );
    CREATE INDEX drift_screens_time ON drift_screens (time)
    """
)
# The drift screen each check ran, for the report's chart (store/history.py); SQLite's 008.


async def _m003_drift_screens(db: AsyncConnection[tuple[object, ...]]) -> None:
    for statement in _DRIFT_SCREENS:
        await db.execute(statement)


Step = Callable[[AsyncConnection[tuple[object, ...]]], Awaitable[None]]
MIGRATIONS: list[tuple[str, Step]] = [
    ("001_initial", _m001_initial),
    ("002_instances", _m002_instances),
    ("003_drift_screens", _m003_drift_screens),
]
