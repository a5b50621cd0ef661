"""The daemon's live report (`[fpwatch] listen`): `/` (every model), `/model/NAME` (one), `/feed.atom` (the events).

The endpoint answers on its own thread; the store belongs to the daemon's event loop (the SQLite store's threads
are fed from it, PostgreSQL's pool lives on it). So a page is built on that loop: the request's thread hands it the
work (`asyncio.run_coroutine_threadsafe`) and waits, at most BUILD_TIMEOUT; the store's reads are awaited there like
any check's, and the page is drawn on a worker thread (report.html.build), so neither holds up the checks. A
built page is kept for CACHE_SECONDS: a wall of browsers reloading it, or a feed reader polling, cost one build a
while, not one each. (The daemon's memory has each model's state, not its history: the page needs the store.)
The pages only read; the daemon's own config (reloaded on SIGHUP) says which models there are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from fpwatch.clock import Clock
from fpwatch.config import Config, ModelConfig
from fpwatch.detect.events import SEVERITIES
from fpwatch.durations import parse_duration
from fpwatch.errors import FpwatchError
from fpwatch.logs import get_logger
from fpwatch.report import atom
from fpwatch.report.html import available, build
from fpwatch.store import Store

BUILD_TIMEOUT = 60.0  # seconds a request waits for its page
CACHE_SECONDS = 30.0  # a page built is served this long (the page itself reloads every REFRESH)
REFRESH = 60  # seconds between the page's own reloads
DEFAULT_SINCE = timedelta(days=30)
HTML = "text/html; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"


class Source(Protocol):
    """What the pages read from the daemon: its config (reloads replace it), its clock, and its store once open."""

    config: Config
    clock: Clock


@dataclass(frozen=True)
class Reply:
    status: str
    content_type: str
    body: bytes


class LivePages:
    """The live report's pages, built on the daemon's loop from its store (see the module's docstring)."""

    def __init__(self, source: Source, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.loop = loop
        self._cache: dict[tuple[str, ...], tuple[float, Reply]] = {}
        self._lock = threading.Lock()  # one build at a time; the requests waiting meanwhile find it cached

    def handles(self, path: str) -> bool:
        return path in ("/", "/feed.atom") or path.startswith("/model/")

    def respond(self, path: str, query: Mapping[str, Sequence[str]], host: str) -> Reply:
        """The reply to GET `path` (on the endpoint's thread)."""
        try:
            if path == "/feed.atom":
                key: tuple[str, ...] = ("feed", host, urlencode(sorted((k, v) for k, vs in query.items() for v in vs)))
                return self._cached(key, lambda: self._feed(query, host))
            name = _text(path.removeprefix("/model/")) if path.startswith("/model/") else None
            models, since = self._models(name), _since(query)
            return self._cached(("page", name or "", str(since)), lambda: self._page(models, since, name))
        except FpwatchError as exc:
            return _message(getattr(exc, "status", "503 Service Unavailable"), str(exc))

    # -- building

    def _cached(self, key: tuple[str, ...], make: Callable[[], Coroutine[Any, Any, Reply]]) -> Reply:
        with self._lock:
            kept = self._cache.get(key)
            if kept is not None and time.monotonic() - kept[0] < CACHE_SECONDS:
                return kept[1]
            future = asyncio.run_coroutine_threadsafe(make(), self.loop)
            try:
                reply = future.result(timeout=BUILD_TIMEOUT)
            except FutureTimeout:
                future.cancel()
                raise FpwatchError(
                    f"the page took longer than {BUILD_TIMEOUT:g}s to build; `fpwatch report` writes it as a file"
                ) from None
            for old in [k for k, (at, _) in self._cache.items() if time.monotonic() - at >= CACHE_SECONDS]:
                del self._cache[old]
            self._cache[key] = (time.monotonic(), reply)
            return reply

    def _store(self) -> Store:
        store: Store | None = getattr(self.source, "store", None)
        if store is None:
            raise FpwatchError("the daemon is starting: its state is not open yet; try again in a moment")
        return store

    def _models(self, name: str | None) -> list[ModelConfig]:
        config = self.source.config
        if name is None:
            return list(config.models)
        model = config.model(name)
        if model is None:
            raise UnknownPage(f"no model named {name!r} in this daemon's config; see / for every model")
        return [model]

    async def _page(self, models: list[ModelConfig], since: timedelta, name: str | None) -> Reply:
        now = self.source.clock.now()
        available()  # without the report extra (Bokeh) a 503 says what to install; the rest of the endpoint works
        from fpwatch.report.page import Live  # imports Bokeh: only for a page, never at the daemon's start

        try:
            title = f"fpwatch: {name}" if name else "fpwatch"
            html = await build(self._store(), models, now - since, now, title=title, live=Live(refresh=REFRESH))
        except FpwatchError:
            raise
        except Exception:
            get_logger("fpwatch.endpoint").exception("the live report failed", model=name)
            raise FpwatchError("the report could not be built (the daemon's log says why)") from None
        return Reply("200 OK", HTML, html.encode())

    async def _feed(self, query: Mapping[str, Sequence[str]], host: str) -> Reply:
        config = self.source.config
        names = [n for value in query.get("model", []) for n in value.split(",") if n]
        chosen = _select(config, names) if names else None
        severity = next(iter(query.get("severity", [])), None) or None
        if severity is not None and severity not in SEVERITIES:
            raise BadRequest(f"severity is one of {', '.join(SEVERITIES)}, not {severity!r}")
        since = self.source.clock.now() - _since(query) if query.get("since") else None
        events = await atom.newest_events(self._store(), chosen, severity, since, _limit(query))
        base = f"http://{host}"
        filters = f"models={','.join(chosen or [])} severity={severity or ''}"
        body = atom.feed(
            events,
            ident=atom.feed_id(str(config.settings.state), filters),
            title="fpwatch events" + (f": {', '.join(chosen)}" if chosen else ""),
            now=self.source.clock.now(),
            self_url=base + "/feed.atom" + (f"?{urlencode(_flat(query))}" if query else ""),
            page_of=lambda model: f"{base}/model/{quote(model, safe='')}",
        )
        return Reply("200 OK", ATOM, body)


class UnknownPage(FpwatchError):
    """A model or tag the request names that is not there."""

    status = "404 Not Found"


class BadRequest(FpwatchError):
    """A parameter that makes no sense."""

    status = "400 Bad Request"


def _text(path: str) -> str:
    """A path as WSGI gives it (decoded from %-escapes already, as Latin-1: PEP 3333) back in UTF-8."""
    return path.encode("latin-1").decode("utf-8", "replace")


def _select(config: Config, names: Sequence[str]) -> list[str]:
    """Model names from names or tags, as the CLI takes them."""
    chosen: dict[str, None] = {}
    for name in names:
        matches = [m.name for m in config.models if m.name == name or name in m.tags]
        if not matches:
            raise UnknownPage(f"no model or tag named {name!r} in this daemon's config")
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


def _since(query: Mapping[str, Sequence[str]]) -> timedelta:
    text = (query.get("since") or [""])[0]
    if not text:
        return DEFAULT_SINCE
    try:
        return parse_duration(text)
    except ValueError:
        raise BadRequest(f'since is a duration like "7d", not {text!r}') from None


def _limit(query: Mapping[str, Sequence[str]]) -> int:
    text = (query.get("limit") or [""])[0]
    if not text:
        return atom.LIMIT
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise BadRequest(f"limit is a number from 1 to 1000, not {text!r}")
    return int(text)


def _flat(query: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, values in query.items() for v in values]


def _message(status: str, text: str) -> Reply:
    body = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>fpwatch</title></head>'
        f'<body style="font-family: system-ui, sans-serif; margin: 2em"><p>{escape(text)}</p>'
        '<p><a href="/">every model</a> · <a href="/feed.atom">events (Atom)</a> · '
        '<a href="/api/v1/status">status (JSON)</a></p></body></html>'
    )
    return Reply(status, HTML, body.encode())
