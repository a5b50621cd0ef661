"""The HTTP/1.1 plumbing: a threading server that tracks its connections and the handler that feeds the simulator."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from fpwatch.sim.openai import _openai_error
from fpwatch.sim.wire import _reason, _Reply

_MAX_BODY_BYTES = 16 * 1024 * 1024


# --------------------------------------------------------------------------- HTTP plumbing


class _Backend(Protocol):
    """What the plumbing needs from the `Simulator` (server.py, which imports this module, so not the reverse)."""

    _stopping: threading.Event

    def _handle_admin(self, method: str, path: str, raw: bytes) -> _Reply: ...

    def _handle_api(
        self,
        method: str,
        target: str,
        authorization: str | None,
        api_key: str | None,
        raw: bytes,
        header: Callable[[str], str | None],
    ) -> _Reply: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request sleeping through a `timeout` fault must not block exit
    request_queue_size = 1024  # bursts of hundreds of concurrent connections must not be refused
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: _Backend) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, disconnect tests, stop()) are normal here, not errors.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with a real provider
    server_version = "fpwatch-simulator"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would delay the second
    timeout = 120  # idle keep-alive connections eventually free their thread
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the simulator is a test double: a line per request would drown test and demo output

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.monotonic()
        raw = self._read_body()
        if raw is None:
            return
        simulator = self.server.simulator
        try:
            reply = self._reply(simulator, raw)
        except Exception:  # a simulator bug: answer 500 rather than hang the client, and show it
            traceback.print_exc()
            reply = _openai_error(500, "fpwatch simulator internal error", "server_error")
        if reply.delay > 0 and simulator._stopping.wait(reply.delay):
            self.close_connection = True  # stopping: drop the request rather than answer late
            return
        if reply.disconnect:
            self.close_connection = True
            return
        self._send(reply, started)

    def _reply(self, simulator: _Backend, raw: bytes) -> _Reply:
        path = urlsplit(self.path).path
        if path.startswith("/_sim/"):
            return simulator._handle_admin(self.command, path, raw)
        authorization, api_key = self.headers.get("Authorization"), self.headers.get("api-key")
        # `header`: any other request header a dialect reads (Anthropic's x-api-key and anthropic-version).
        return simulator._handle_api(self.command, self.path, authorization, api_key, raw, self.headers.get)

    def _read_body(self) -> bytes | None:
        """The request body; None when the request was refused (and the connection closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._refuse(413 if length > 0 else 400, "bad or too large Content-Length")
            return None
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int, message: str) -> None:
        # The unread body would be parsed as the next request, so the connection must close.
        self.close_connection = True
        self._send(_openai_error(status, message, "invalid_request_error"), time.monotonic())

    def _send(self, reply: _Reply, started: float) -> None:
        body = reply.encoded()
        self.send_response(reply.status, _reason(reply.status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        if reply.provider_headers:
            self.send_header("openai-version", "2020-10-01")
            self.send_header("openai-processing-ms", str(int((time.monotonic() - started) * 1000)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
