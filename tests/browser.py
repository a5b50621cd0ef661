"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): no port to find, no
package to install, only Debian's `chromium`. The browser tests (tests/test_report_html.py) and the report's
benchmark (bench/report.py) load pages with it, read what a person would see, collect what the console says, and
take screenshots.

The protocol: JSON messages separated by NUL bytes, the browser reading them on its fd 3 and answering on its fd 4;
each page is a target attached in "flat" mode (its messages carry a session id).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser's path, or None where none is installed ($FPWATCH_CHROMIUM names one elsewhere)."""
    named = os.environ.get("FPWATCH_CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


class BrowserError(Exception):
    pass


@dataclass
class Message:
    """A line the page's console showed, or an uncaught exception (`level` "error" for both kinds of failure)."""

    level: str
    text: str
    source: str

    def __str__(self) -> str:
        return f"[{self.source} {self.level}] {self.text}"


@dataclass
class Page:
    browser: Chromium
    session: str
    target: str
    console: list[Message] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (the page's own included)
    loaded: bool = False

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait for the load event."""
        self.loaded = False
        reply = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if reply.get("errorText"):
            raise BrowserError(f"cannot load {url}: {reply['errorText']}")
        self.browser.pump_until(lambda: self.loaded, timeout, f"the load event of {url}")

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} raised: {_exception_text(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout}s waiting for {what or expression}")
            self.browser.pump(0.05)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page), written to `path`."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[Message]:
        return [m for m in self.console if m.level == "error"]

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


class Chromium:
    """One headless browser process; `open()` gives pages. Use as a context manager."""

    def __init__(self, binary: str, width: int = 1400, height: int = 2000) -> None:
        self.binary = binary
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="fpwatch-chromium-")
        self._next = 0
        self._buffer = b""
        self._replies: dict[int, dict[str, Any]] = {}
        self._pages: dict[str, Page] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Chromium:
        # The browser reads fd 3 and writes fd 4: our pipes are moved there in the child (pass_fds keeps 3 and 4).
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def place() -> None:
            high_in, high_out = os.dup(to_child), os.dup(from_child)  # never clobber one with the other
            os.dup2(high_in, 3, inheritable=True)
            os.dup2(high_out, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=place,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self.call("Target.setDiscoverTargets", {"discover": False})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                with suppress(BrowserError):
                    self.call("Browser.close", timeout=5)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    # -- the protocol

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Send one command and wait for its reply (events arriving meanwhile are handled)."""
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        self.pump_until(lambda: ident in self._replies, timeout, f"the reply to {method}")
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return dict(reply.get("result", {}))

    def pump_until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out after {timeout}s waiting for {what}")
            self.pump(min(left, 0.5))

    def pump(self, timeout: float) -> None:
        """Read and handle whatever the browser sent within `timeout` seconds."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        if not ready:
            return
        chunk = os.read(self._read, 1 << 20)
        if not chunk:
            raise BrowserError(f"the browser exited (code {self.proc.poll() if self.proc else None})")
        self._buffer += chunk
        while b"\0" in self._buffer:
            raw, _, self._buffer = self._buffer.partition(b"\0")
            self._handle(json.loads(raw))

    def _handle(self, message: dict[str, Any]) -> None:
        if "id" in message:
            self._replies[message["id"]] = message
            return
        page = self._pages.get(message.get("sessionId", ""))
        if page is None:
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Page.loadEventFired":
            page.loaded = True
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            page.console.append(Message(_level(params.get("type", "log")), text, "console"))
        elif method == "Runtime.exceptionThrown":
            page.console.append(Message("error", _exception_text(params["exceptionDetails"]), "exception"))
        elif method == "Network.requestWillBeSent":
            page.requests.append(params["request"]["url"])
        elif method == "Log.entryAdded":
            entry = params["entry"]
            page.console.append(Message(_level(entry["level"]), f"{entry['text']} {entry.get('url', '')}", "log"))

    # -- pages

    def open(self, url: str | None = None, timeout: float = 30) -> Page:
        """A new page (tab), its console collected from the start; navigated to `url` if given."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        if url is not None:
            page.goto(url, timeout)
        return page


def _level(kind: str) -> str:
    return {"error": "error", "assert": "error", "warning": "warning", "warn": "warning"}.get(kind, kind)


def _exception_text(details: dict[str, Any]) -> str:
    exception = details.get("exception", {})
    return str(exception.get("description") or details.get("text") or exception)


@contextmanager
def chromium(width: int = 1400, height: int = 2000) -> Iterator[Chromium]:
    """A browser for the `with` block; BrowserError where none is installed."""
    binary = find_chromium()
    if binary is None:
        raise BrowserError("no chromium on the PATH")
    with Chromium(binary, width, height) as browser:
        yield browser
