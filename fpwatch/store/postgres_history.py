"""What the HTML report reads from the PostgreSQL store (the SQL and rows of store/history.py, as SQLite's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fpwatch.clock import iso
from fpwatch.store import history
from fpwatch.store.postgres_audit import Db
from fpwatch.store.protocol import AnswerCount, DriftScreen

T = TypeVar("T")


class PostgresHistory:
    """The history methods of PostgresStore, which gives them its transactions (`_run`)."""

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, transaction: bool = True) -> T:
        raise NotImplementedError

    async def answer_counts(self, since: datetime, step: timedelta) -> list[AnswerCount]:
        sql = history.answer_sql(step, "%s")

        async def read(db: Db) -> list[AnswerCount]:
            return history.answer_counts(await (await db.execute(sql, (iso(since),))).fetchall())

        return await self._run(read, transaction=False)

    async def drift_screens(self, since: datetime, step: timedelta) -> list[DriftScreen]:
        sql = history.screen_sql(step, "%s")

        async def read(db: Db) -> list[DriftScreen]:
            return history.drift_screens(await (await db.execute(sql, (iso(since),))).fetchall())

        return await self._run(read, transaction=False)
