"""A dedicated worker thread with its own database connection, awaited from the event loop.

sqlite3 connections belong to the thread that made them; the event loop must never wait on one. A
`Worker` opens its connection lazily on its thread and runs every call there, one at a time. `Batched`
calls go to it in batches: the many small calls of a pass (a state loaded, a check recorded per model)
cost one trip to the thread, and one wake-up of the event loop, per batch instead of per call.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")  # what one call asks for


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

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue fn(connection, *args) for the worker thread; the future (of the running loop) holds the outcome."""
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(self._call, fn, *args))

    async def run(self, fn: Callable[..., T], *args: Any, finish: bool = False) -> T:
        """Run fn(connection, *args) on the worker thread. With `finish`, a caller cancelled meanwhile does not
        take the call back: once asked for, it runs (a write whose caller already acted on it, such as marking
        a sent message delivered, must not be dropped from the queue)."""
        future = self.submit(fn, *args)
        if not finish:
            return await future
        future.add_done_callback(_retrieved)  # a caller that went away will not ask for the outcome
        return await asyncio.shield(future)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        await asyncio.sleep(0)  # a `Batched` call asked for already goes to the worker at the end of this round
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class _Call(Generic[Item, T]):
    item: Item
    done: asyncio.Future[T]  # what its caller awaits


class Batched(Generic[Item, T]):
    """`await batched.run(item)`: items asked for until the worker gets to them go together, as one call of
    fn(connection, items) there, which returns each item's result or exception, in order. A batch goes to the
    worker once the event loop has run what was ready with its first item (a pass starting every check asks for
    every state in one go); a call is never taken back: a caller cancelled meanwhile only stops waiting for it."""

    def __init__(self, worker: Worker, fn: Callable[[sqlite3.Connection, list[Item]], list[T | Exception]]) -> None:
        self._worker = worker
        self._fn = fn
        self._open: list[_Call[Item, T]] = []  # the next batch: filled on the event loop, closed on the worker thread
        self._lock = threading.Lock()

    async def run(self, item: Item) -> T:
        call: _Call[Item, T] = _Call(item, asyncio.get_running_loop().create_future())
        with self._lock:
            batch = self._open
            batch.append(call)
            first = len(batch) == 1
        if first:  # a new batch: one job takes it, with whatever joins it before the job starts
            asyncio.get_running_loop().call_soon(self._submit, batch)
        return await call.done

    def _submit(self, batch: list[_Call[Item, T]]) -> None:
        try:
            job = self._worker.submit(self._take, batch)
        except RuntimeError as exc:  # the worker was closed: the batch fails, the next one fails alike
            self._seal(batch)
            job = asyncio.get_running_loop().create_future()
            job.set_exception(exc)
        job.add_done_callback(functools.partial(_settle, batch))

    def _take(self, db: sqlite3.Connection, batch: list[_Call[Item, T]]) -> list[T | Exception]:
        self._seal(batch)
        return self._fn(db, [call.item for call in batch])

    def _seal(self, batch: list[_Call[Item, T]]) -> None:
        """No more calls join this batch: those from now on make the next one."""
        with self._lock:
            if self._open is batch:
                self._open = []


def _settle(batch: list[_Call[Item, T]], job: asyncio.Future[list[T | Exception]]) -> None:
    """Each caller of a batch gets its outcome (on the event loop); all of them the job's error if it failed."""
    error = job.exception()
    outcomes: list[T | BaseException] = [error] * len(batch) if error is not None else [*job.result()]
    for call, outcome in zip(batch, outcomes, strict=True):
        if call.done.done():
            continue  # its caller was cancelled
        if isinstance(outcome, BaseException):
            call.done.set_exception(outcome)
        else:
            call.done.set_result(outcome)
