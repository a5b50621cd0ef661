"""The daemon's HTTP endpoint (`[fpwatch] listen`): /metrics, /healthz and /api/v1/status.

A small threaded WSGI server from the standard library, as prometheus-client's own exporter uses;
/metrics is prometheus-client's WSGI app (content negotiation, gzip). Loopback by default.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from fpwatch.logs import get_logger

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Through the log pipeline (JSON, redaction), not raw to stderr.
        get_logger("fpwatch.endpoint").exception("HTTP endpoint request failed", client=str(client_address[0]))


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every 15 s would drown the journal


def app(registry: CollectorRegistry, health: Callable[[], list[str]], status: Callable[[], dict[str, Any]]) -> App:
    """The endpoint from what it serves: the metrics registry, the health reasons, the status summary."""
    metrics = make_wsgi_app(registry)

    def respond(start: StartResponse, code: str, body: Any) -> list[bytes]:
        payload = json.dumps(body, indent=2).encode()
        start(code, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def handle(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start)  # type: ignore[no-any-return]
        if path == "/healthz":
            reasons = health()
            if reasons:
                return respond(start, "503 Service Unavailable", {"status": "unhealthy", "reasons": reasons})
            return respond(start, "200 OK", {"status": "ok"})
        if path == "/api/v1/status":
            return respond(start, "200 OK", status())
        return respond(
            start, "404 Not Found", {"error": f"no such path {path}; try /metrics, /healthz, /api/v1/status"}
        )

    return handle


def serve(host: str, port: int, handler: App) -> _Server:
    """Start serving `handler` in a daemon thread; the caller shuts it down with server.shutdown()."""
    server_class = _Server6 if ":" in host else _Server
    server = make_server(host, port, handler, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="fpwatch-http", daemon=True).start()
    return server
