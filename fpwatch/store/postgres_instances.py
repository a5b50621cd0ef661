"""Several daemons on one PostgreSQL state (issue 13): who is alive, and which one checks a model when it is due.

Why rows, not advisory locks: a session advisory lock lives as long as one connection, and the pool replaces
connections (a server restart drops them all, every lock with them), so "who holds model X" would change under a
running check and be invisible to `status`. Rows with conditional updates, as healthchecks does it, outlive
connections and restarts, show in `status`, and keep working through a transaction-pooling proxy.

- `instances`: one row per daemon (its name is its outbox lease owner's, host:pid), heartbeat on the database
  server's clock every few seconds; alive while the heartbeat is under INSTANCE_TTL old. A daemon that stops
  cleanly deletes its row; a killed one's row goes stale, and is removed a day later.
- `check_claims`: per model, the latest schedule slot taken and by whom. Every daemon schedules every model; when
  a model's job fires, the daemon asks for the slot it falls in (`INSERT .. ON CONFLICT DO UPDATE .. WHERE` the
  stored slot is earlier): one statement, the row lock serialises two daemons asking at once, and exactly one gets
  it. The others skip the check. The slot is computed on the server's clock, so hosts whose clocks disagree still
  agree on it. The daemon whose own phase comes first after a slot starts checks the model every interval; if it
  dies, the next one takes the next slot: a model is taken over within one interval, with no lease to run out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fpwatch.clock import iso, parse_iso
from fpwatch.store.postgres_audit import Db
from fpwatch.store.protocol import Claim, Instance

T = TypeVar("T")
INSTANCE_TTL = timedelta(seconds=30)  # a daemon whose heartbeat is older than this is not alive
FORGET_AFTER = timedelta(days=1)  # a stale instance row is removed after this

_NOW = "clock_timestamp()"
ALIVE = f"(heartbeat > {_NOW} - make_interval(secs => {INSTANCE_TTL.total_seconds()}))"
_SLOT = (
    "(CASE WHEN %(period)s > 0 THEN %(anchor)s + floor((extract(epoch FROM clock_timestamp()) - %(anchor)s) "
    "/ %(period)s) * %(period)s ELSE %(anchor)s END)"
)


class PostgresInstances:
    """The `Shared` methods of PostgresStore, which gives them its transactions (`_run`, `_write`)."""

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, transaction: bool = True) -> T:
        raise NotImplementedError

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        raise NotImplementedError

    async def heartbeat(self, name: str, version: str, started: datetime, models: int) -> None:
        async def write(db: Db) -> None:
            await db.execute(
                "INSERT INTO instances (name, version, started, heartbeat, models) "
                f"VALUES (%s, %s, %s, {_NOW}, %s) ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, "
                "started = EXCLUDED.started, heartbeat = EXCLUDED.heartbeat, models = EXCLUDED.models",
                (name, version, iso(started), models),
            )

        await self._run(write, transaction=False)

    async def leave(self, name: str) -> None:
        async def write(db: Db) -> None:
            await db.execute("DELETE FROM instances WHERE name = %s", (name,))
            await db.execute(
                f"DELETE FROM instances WHERE heartbeat < {_NOW} - make_interval(secs => %s)",
                (FORGET_AFTER.total_seconds(),),
            )
            # What it was delivering when it stopped is free for the others now, not when the lease ends.
            await db.execute(
                "UPDATE outbox SET lease_until = NULL WHERE lease_owner = %s AND status = 'pending'", (name,)
            )

        await self._write(write)

    async def claim_check(self, model: str, owner: str, anchor: float, period: float) -> bool:
        async def write(db: Db) -> bool:
            row = await (
                await db.execute(
                    f"INSERT INTO check_claims (model, slot, owner, claimed) VALUES (%(model)s, {_SLOT}, %(owner)s, "
                    f"{_NOW}) ON CONFLICT (model) DO UPDATE SET slot = EXCLUDED.slot, owner = EXCLUDED.owner, "
                    "claimed = EXCLUDED.claimed WHERE check_claims.slot < EXCLUDED.slot RETURNING owner",
                    {"model": model, "owner": owner, "anchor": anchor, "period": period},
                )
            ).fetchone()
            return row is not None

        return await self._run(write, transaction=False)

    async def instances(self) -> list[Instance]:
        async def read(db: Db) -> list[Instance]:
            rows = await (
                await db.execute(
                    f"SELECT name, version, started, heartbeat, models, {ALIVE} FROM instances ORDER BY started DESC"
                )
            ).fetchall()
            return [
                Instance(name, version, parse_iso(started), _utc(seen), int(models), bool(alive))
                for name, version, started, seen, models, alive in rows
            ]

        return await self._run(read, transaction=False)

    async def claims(self) -> dict[str, Claim]:
        async def read(db: Db) -> dict[str, Claim]:
            rows = await (await db.execute("SELECT model, owner, claimed FROM check_claims")).fetchall()
            return {model: Claim(owner, _utc(at)) for model, owner, at in rows}

        return await self._run(read, transaction=False)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
