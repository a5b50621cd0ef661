"""httpcore's locks, events and cancellation shields on asyncio's own, while nothing in the process uses anyio.

Under asyncio, httpcore 1.0 builds the locks and events of its pools, and a cancellation shield around every
response's close, from anyio (encode/httpcore#922, open since 2024, makes the same change upstream). In a process
on asyncio alone they add nothing: anyio's shield does not hold off asyncio's own cancellation (`task.cancel()`,
`asyncio.timeout`; tests/test_http.py shows it), which is the only kind fpwatch's tasks meet. They only cost: the
first one imports anyio's asyncio backend (some 20 ms before a check's first request), and each request passes
locks that checkpoint and shields that register with anyio. Measured side by side with bench/check.py (200
models, concurrency 50, in a first form that replaced them unconditionally): the check's CPU fell by 85 ms
and its wall by 65 ms.

`install()` gives httpcore's primitives asyncio's own only while anyio's asyncio backend is not loaded. Once
something in the process runs on anyio (an anyio task group, whose level-triggered cancellation the shields are
for), every primitive made from then on is anyio's again, exactly as httpcore builds it; under trio, trio's. It
changes httpcore 1.0.x alone, whose `_synchronization` has the shape checked here; any other httpcore is left as
it is (the pools work either way, only slower).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpcore
from httpcore import _synchronization as sync
from httpcore._exceptions import map_exceptions

ANYIO_ON_ASYNCIO = "anyio._backends._asyncio"  # loaded by the first anyio primitive made on asyncio
_SHAPE = {
    "AsyncLock": ("setup", "__aenter__", "__aexit__"),
    "AsyncEvent": ("setup", "set", "wait"),
    "AsyncSemaphore": ("setup", "acquire", "release"),
    "AsyncShieldCancellation": ("__init__", "__enter__", "__exit__"),
}
_installed: dict[str, Any] = {}  # httpcore's own methods, once replaced


def install() -> bool:
    """Replace the primitives' set-up (once per process); False when this httpcore is not one it knows."""
    if _installed:
        return True
    if not httpcore.__version__.startswith("1.0.") or not all(
        all(hasattr(getattr(sync, cls, None), method) for method in methods) for cls, methods in _SHAPE.items()
    ):
        return False
    replacements: list[tuple[type, str, Any]] = [
        (sync.AsyncLock, "setup", _lock_setup),
        (sync.AsyncEvent, "setup", _event_setup),
        (sync.AsyncEvent, "wait", _event_wait),
        (sync.AsyncSemaphore, "setup", _semaphore_setup),
        (sync.AsyncShieldCancellation, "__init__", _shield_init),
    ]
    for cls, name, replacement in replacements:
        _installed[f"{cls.__name__}.{name}"] = getattr(cls, name)
        setattr(cls, name, replacement)
    return True


def native() -> bool:
    """Whether a primitive made now is asyncio's: under asyncio, with anyio's asyncio backend not loaded."""
    return ANYIO_ON_ASYNCIO not in sys.modules and sync.current_async_library() == "asyncio"


def _lock_setup(self: sync.AsyncLock) -> None:
    if not native():
        return _installed["AsyncLock.setup"](self)  # type: ignore[no-any-return]
    self._backend = "asyncio"
    self._anyio_lock = asyncio.Lock()  # type: ignore[assignment]  # acquire() and release() as anyio's


def _event_setup(self: sync.AsyncEvent) -> None:
    if not native():
        return _installed["AsyncEvent.setup"](self)  # type: ignore[no-any-return]
    self._backend = "asyncio"
    self._anyio_event = asyncio.Event()  # type: ignore[assignment]  # set() and wait() as anyio's


async def _event_wait(self: sync.AsyncEvent, timeout: float | None = None) -> None:
    if not self._backend:
        self.setup()
    event = getattr(self, "_anyio_event", None)
    if not isinstance(event, asyncio.Event):
        return await _installed["AsyncEvent.wait"](self, timeout)  # type: ignore[no-any-return]
    with map_exceptions({TimeoutError: httpcore.PoolTimeout}):  # as httpcore maps anyio's fail_after
        async with asyncio.timeout(timeout):
            await event.wait()


def _semaphore_setup(self: sync.AsyncSemaphore) -> None:
    if not native():
        return _installed["AsyncSemaphore.setup"](self)  # type: ignore[no-any-return]
    self._backend = "asyncio"
    self._anyio_semaphore = asyncio.BoundedSemaphore(self._bound)  # type: ignore[assignment]


def _shield_init(self: sync.AsyncShieldCancellation) -> None:
    if not native():
        return _installed["AsyncShieldCancellation.__init__"](self)  # type: ignore[no-any-return]
    self._backend = ""  # neither "asyncio" nor "trio": entering and leaving do nothing
