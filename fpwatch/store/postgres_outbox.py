"""The outbox of the PostgreSQL store (DESIGN section 7; the SQLite store's semantics): alerts tied to messages
once, reminders queued once, and messages claimed with `FOR UPDATE SKIP LOCKED` under a lease that names its
owner (store/leases.py). Where SQLite has its one write lock, these statements lock the rows they change: two
processes composing the same alerts, or queueing the same reminder, serialise on those rows, and the second finds
the work done."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fpwatch.clock import iso, parse_iso
from fpwatch.store.leases import lease_owner, owner_alive
from fpwatch.store.postgres_audit import Db
from fpwatch.store.postgres_instances import ALIVE
from fpwatch.store.protocol import OutboxMessage

T = TypeVar("T")
_DUE = "FROM outbox WHERE notifier = %s AND status = 'pending' AND due <= %s"


async def _daemon_alive(db: Db, owner: str | None) -> bool | None:
    """Is the owner a daemon sharing the state, and alive? None when it is not a daemon (postgres_instances.py)."""
    if owner is None:
        return None
    row = await (await db.execute(f"SELECT {ALIVE} FROM instances WHERE name = %s", (owner,))).fetchone()
    return bool(row[0]) if row is not None else None


async def _insert_message(db: Db, notifier: str, title: str, body: str, notify_type: str, now: datetime) -> int:
    row = await (
        await db.execute(
            "INSERT INTO outbox (notifier, title, body, notify_type, created, due, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'pending') RETURNING id",
            (notifier, title, body, notify_type, iso(now), iso(now)),
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


class PostgresOutbox:
    """The outbox's methods of PostgresStore, which gives them its transactions (`_run`, `_write`)."""

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, transaction: bool = True) -> T:
        raise NotImplementedError

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        raise NotImplementedError

    async def pending_alerts(self, notifier: str) -> list[tuple[int, datetime]]:
        async def read(db: Db) -> list[tuple[int, datetime]]:
            sql = "SELECT event_id, created FROM alerts WHERE notifier = %s AND message_id IS NULL ORDER BY event_id"
            rows = await (await db.execute(sql, (notifier,))).fetchall()
            return [(event_id, parse_iso(created)) for event_id, created in rows]

        return await self._run(read, transaction=False)

    async def compose_message(
        self, notifier: str, event_ids: Sequence[int], title: str, body: str, notify_type: str, now: datetime
    ) -> int | None:
        async def write(db: Db) -> int | None:
            # Locks these alerts; a composer that waited on them sees them taken (rechecked after the wait).
            free = await (
                await db.execute(
                    "SELECT event_id FROM alerts WHERE notifier = %s AND message_id IS NULL AND event_id = ANY(%s) "
                    "FOR UPDATE",
                    (notifier, list(event_ids)),
                )
            ).fetchall()
            if len(free) != len(set(event_ids)):
                return None
            message_id = await _insert_message(db, notifier, title, body, notify_type, now)
            await db.execute(
                "UPDATE alerts SET message_id = %s WHERE notifier = %s AND event_id = ANY(%s)",
                (message_id, notifier, list(event_ids)),
            )
            return message_id

        return await self._write(write)

    async def due_reminders(self, event_types: Sequence[str], every: timedelta, now: datetime) -> list[tuple[int, str]]:
        async def read(db: Db) -> list[tuple[int, str]]:
            rows = await (
                await db.execute(
                    """SELECT a.event_id, a.notifier, COALESCE(a.last_reminded, o.finished)
                    FROM alerts a JOIN events e ON e.id = a.event_id JOIN outbox o ON o.id = a.message_id
                    WHERE e.type = ANY(%s) AND e.acked_at IS NULL AND o.status = 'delivered'""",
                    (list(event_types),),
                )
            ).fetchall()
            return [(event_id, notifier) for event_id, notifier, last in rows if now - parse_iso(last) >= every]

        return await self._run(read, transaction=False)

    async def add_reminder(
        self, event_id: int, notifier: str, title: str, body: str, notify_type: str, now: datetime, every: timedelta
    ) -> None:
        async def write(db: Db) -> None:
            row = await (
                await db.execute(
                    "SELECT a.last_reminded, o.finished FROM alerts a JOIN outbox o ON o.id = a.message_id "
                    "WHERE a.event_id = %s AND a.notifier = %s FOR UPDATE OF a",
                    (event_id, notifier),
                )
            ).fetchone()
            if row is None or now - parse_iso(row[0] or row[1]) < every:
                return
            await _insert_message(db, notifier, title, body, notify_type, now)
            await db.execute(
                "UPDATE alerts SET last_reminded = %s WHERE event_id = %s AND notifier = %s",
                (iso(now), event_id, notifier),
            )

        await self._write(write)

    async def claim_next_message(self, notifier: str, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """The oldest due message no live process holds. Rows another claimer has locked are skipped, not waited
        for. Whether a lease's owner lives: a daemon sharing the state is alive while its heartbeat is (on any host,
        postgres_instances.py); any other process (a `check`, `notify test`) on this host while its pid runs, on
        another host until its lease ends."""

        async def anything_due(db: Db) -> bool:
            return await (await db.execute(f"SELECT 1 {_DUE} LIMIT 1", (notifier, iso(now)))).fetchone() is not None

        async def free(db: Db, until: str | None, owner: str | None) -> bool:
            if until is None or until < iso(now):
                return True
            daemon = await _daemon_alive(db, owner)
            return not daemon if daemon is not None else not owner_alive(owner)

        async def write(db: Db) -> OutboxMessage | None:
            # The candidates unlocked, then each locked on its own: `FOR UPDATE` over them all would hold every due
            # message of the notifier and leave a claimer beside this one nothing to take.
            due = await (
                await db.execute(f"SELECT id, lease_until, lease_owner {_DUE} ORDER BY id", (notifier, iso(now)))
            ).fetchall()
            for message_id, until, owner in due:
                if not await free(db, until, owner):
                    continue
                row = await (
                    await db.execute(
                        "SELECT id, notifier, title, body, notify_type, created, attempts, lease_until, lease_owner "
                        "FROM outbox WHERE id = %s AND status = 'pending' AND due <= %s FOR UPDATE SKIP LOCKED",
                        (message_id, iso(now)),
                    )
                ).fetchone()
                if row is None or not await free(db, row[7], row[8]):
                    continue  # another claimer has it, or just took it
                await db.execute(
                    "UPDATE outbox SET lease_until = %s, lease_owner = %s WHERE id = %s",
                    (iso(now + lease), lease_owner(), message_id),
                )
                return OutboxMessage(row[0], row[1], row[2], row[3], row[4], parse_iso(row[5]), row[6])
            return None

        # Most seconds nothing is due: look first (one statement), and open a transaction only to claim.
        return await self._write(write) if await self._run(anything_due, transaction=False) else None

    async def orphaned_messages(self, notifiers: set[str]) -> list[tuple[int, str]]:
        async def read(db: Db) -> list[tuple[int, str]]:
            rows = await (await db.execute("SELECT id, notifier FROM outbox WHERE status = 'pending'")).fetchall()
            return [(message_id, name) for message_id, name in rows if name not in notifiers]

        return await self._run(read, transaction=False)

    async def _finish(self, sql: str, args: tuple[Any, ...]) -> None:
        """Apply one outcome to a message still pending: a finished message is never rewritten."""

        async def write(db: Db) -> None:
            await db.execute(sql + " WHERE id = %s AND status = 'pending'", args)

        await self._write(write)

    async def mark_delivered(self, message_id: int, now: datetime) -> None:
        await self._finish(
            "UPDATE outbox SET status = 'delivered', finished = %s, attempts = attempts + 1, last_error = NULL, "
            "lease_until = NULL",
            (iso(now), message_id),
        )

    async def retry_message(self, message_id: int, due: datetime, error: str) -> None:
        await self._finish(
            "UPDATE outbox SET due = %s, attempts = attempts + 1, last_error = %s, lease_until = NULL",
            (iso(due), error, message_id),
        )

    async def expire_message(self, message_id: int, now: datetime, error: str) -> None:
        await self._finish(
            "UPDATE outbox SET status = 'expired', finished = %s, attempts = attempts + 1, last_error = %s, "
            "lease_until = NULL",
            (iso(now), error, message_id),
        )

    async def notifier_status(self, notifier: str) -> dict[str, Any]:
        async def read(db: Db) -> dict[str, Any]:
            row = await (
                await db.execute(
                    """SELECT
                    (SELECT COUNT(*) FROM outbox WHERE notifier = %(n)s AND status = 'pending'),
                    (SELECT COUNT(*) FROM alerts WHERE notifier = %(n)s AND message_id IS NULL),
                    (SELECT COUNT(*) FROM outbox WHERE notifier = %(n)s AND status = 'expired'),
                    (SELECT last_error FROM outbox WHERE notifier = %(n)s AND last_error IS NOT NULL
                        ORDER BY id DESC LIMIT 1),
                    (SELECT MAX(finished) FROM outbox WHERE notifier = %(n)s AND status = 'delivered')""",
                    {"n": notifier},
                )
            ).fetchone()
            assert row is not None
            return {
                "name": notifier,
                "pending_messages": row[0],
                "queued_alerts": row[1],
                "expired_messages": row[2],
                "last_error": row[3],
                "last_delivered": row[4],
            }

        return await self._run(read, transaction=False)
