"""Recording (DESIGN section 9): the `Store` protocol in domain verbs, the SQLite store and its migrations, the
PostgreSQL store (postgres*.py; psycopg is imported only for a postgresql:// state), the codec between state
objects and rows, and the audit chain through observations, events and acks (a documented contract, chain.py)."""

from __future__ import annotations

from typing import Any

from fpwatch.config.model import PostgresState, Secret, State
from fpwatch.errors import StateError
from fpwatch.store.chain import Audit, ChainHead
from fpwatch.store.protocol import CheckRecord, Conclude, OutboxMessage, Route, Shared, Store, StoredEvent
from fpwatch.store.sqlite import BUSY_TIMEOUT_MS, SqliteStore, open_sqlite


async def open_store(
    state: State,
    *,
    readonly: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    audit_key: Secret | None = None,
) -> Store:
    """The store at `[fpwatch] state`, a SQLite file or a postgresql:// database (created and migrated unless
    `readonly`); `audit_key` is `[fpwatch] audit_key_file`, which keys the audit chain (needed to write to a keyed
    chain, and to verify one). `busy_timeout_ms`: how long a write waits for another process's lock."""
    if isinstance(state, PostgresState):
        store = await _open_postgres(state, readonly=readonly, lock_timeout_ms=busy_timeout_ms, audit_key=audit_key)
        assert store is not None  # only `missing_ok` opens come back empty
        return store
    return await open_sqlite(state, readonly=readonly, busy_timeout_ms=busy_timeout_ms, audit_key=audit_key)


async def open_existing(state: State, *, audit_key: Secret | None = None) -> Store | None:
    """The store, read-only, for the commands that only read: None when there is no state yet (no SQLite file, or a
    PostgreSQL database fpwatch has not written to), which they show as an empty history."""
    if isinstance(state, PostgresState):
        return await _open_postgres(state, readonly=True, audit_key=audit_key, missing_ok=True)
    if not state.exists():
        return None
    return await open_sqlite(state, readonly=True, audit_key=audit_key)


async def _open_postgres(state: PostgresState, **options: Any) -> Store | None:
    """The PostgreSQL store, imported when a state asks for it: its driver is an optional extra."""
    try:
        from fpwatch.store.postgres import open_postgres
    except ImportError as exc:
        raise StateError(
            f"a postgresql:// state needs the PostgreSQL driver ({exc}): pip install 'fpwatch[postgresql]'"
        ) from None
    return await open_postgres(state, **options)


__all__ = [
    "BUSY_TIMEOUT_MS",
    "Audit",
    "ChainHead",
    "CheckRecord",
    "Conclude",
    "OutboxMessage",
    "Route",
    "Shared",
    "SqliteStore",
    "Store",
    "StoredEvent",
    "open_existing",
    "open_sqlite",
    "open_store",
]
