"""Recording (DESIGN section 9): the `Store` protocol in domain verbs, the SQLite store and its migrations,
the codec between state objects and rows, and the hash chain over observations (a documented contract)."""

from __future__ import annotations

from pathlib import Path

from fpwatch.store.protocol import CheckRecord, Conclude, OutboxMessage, Route, Store, StoredEvent
from fpwatch.store.sqlite import BUSY_TIMEOUT_MS, SqliteStore, open_sqlite


async def open_store(path: Path, *, readonly: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Store:
    """The store at `[fpwatch] state` (created and migrated unless `readonly`)."""
    return await open_sqlite(path, readonly=readonly, busy_timeout_ms=busy_timeout_ms)


__all__ = [
    "BUSY_TIMEOUT_MS",
    "CheckRecord",
    "Conclude",
    "OutboxMessage",
    "Route",
    "SqliteStore",
    "Store",
    "StoredEvent",
    "open_sqlite",
    "open_store",
]
