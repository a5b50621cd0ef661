"""A dedicated worker thread with its own database connection, awaited from the event loop.

sqlite3 connections belong to the thread that made them; the event loop must never wait on one. A
`Worker` opens its connection lazily on its thread and runs every call there, one at a time.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Worker:
    """A dedicated thread with its own connection: `await worker.run(fn, ...)` runs fn(connection, ...) there."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._db: sqlite3.Connection | None = None  # opened, used and closed on the worker thread only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            self._db = self._connect()
        return fn(self._db, *args)

    async def run(self, fn: Callable[..., T], *args: Any, finish: bool = False) -> T:
        """Run fn(connection, *args) on the worker thread. With `finish`, a caller cancelled meanwhile does not
        take the call back: once asked for, it runs (a write whose caller already acted on it, such as marking
        a sent message delivered, must not be dropped from the queue)."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(self._call, fn, *args))
        if not finish:
            return await future
        future.add_done_callback(_retrieved)  # a caller that went away will not ask for the outcome
        return await asyncio.shield(future)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
