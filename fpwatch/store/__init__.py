"""Recording (DESIGN section 9): the `Store` protocol in domain verbs, the SQLite store and its migrations,
the codec between state objects and rows, and the audit chain through observations, events and acks (a
documented contract, chain.py)."""

from __future__ import annotations

from pathlib import Path

from fpwatch.config.model import Secret
from fpwatch.store.chain import Audit, ChainHead
from fpwatch.store.protocol import CheckRecord, Conclude, OutboxMessage, Route, Store, StoredEvent
from fpwatch.store.sqlite import BUSY_TIMEOUT_MS, SqliteStore, open_sqlite


async def open_store(
    path: Path,
    *,
    readonly: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    audit_key: Secret | None = None,
) -> Store:
    """The store at `[fpwatch] state` (created and migrated unless `readonly`); `audit_key` is
    `[fpwatch] audit_key_file`, which keys the audit chain (needed to write to a keyed chain, and to verify one)."""
    return await open_sqlite(path, readonly=readonly, busy_timeout_ms=busy_timeout_ms, audit_key=audit_key)


__all__ = [
    "BUSY_TIMEOUT_MS",
    "Audit",
    "ChainHead",
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
