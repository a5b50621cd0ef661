"""The daemon's HTTP endpoint (`[fpwatch] listen`): /metrics, /healthz, /api/v1/status, and the live report: /
(every model), /model/NAME (one) and /feed.atom (the events), read-only (service/live.py).

A small threaded WSGI server from the standard library, as prometheus-client's own exporter uses;
/metrics is the Prometheus text format (exposition.py), gzipped when asked for. Loopback by default.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fpwatch.logs import get_logger
from fpwatch.service import exposition
from fpwatch.service.live import LivePages, Source

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


def app(
    metrics_page: Callable[[], bytes],
    health: Callable[[], list[str]],
    status: Callable[[], dict[str, Any]],
    report: Source | None = None,
) -> App:
    """The endpoint from what it serves: the /metrics page, the health reasons, the status summary, and the daemon
    whose models the live report shows (on its event loop, the one running now)."""
    pages = LivePages(report, asyncio.get_running_loop()) if report is not None else None

    def respond(start: StartResponse, code: str, body: Any) -> list[bytes]:
        payload = json.dumps(body, indent=2).encode()
        start(code, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def handle(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body, headers = exposition.response(metrics_page(), environ.get("HTTP_ACCEPT_ENCODING", ""))
            start("200 OK", headers)
            return [body]
        if path == "/healthz":
            reasons = health()
            if reasons:
                return respond(start, "503 Service Unavailable", {"status": "unhealthy", "reasons": reasons})
            return respond(start, "200 OK", {"status": "ok"})
        if path == "/api/v1/status":
            return respond(start, "200 OK", status())
        if pages is not None and pages.handles(path):
            host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
            reply = pages.respond(path, parse_qs(environ.get("QUERY_STRING", "")), host)
            headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
            start(reply.status, [*headers, ("Cache-Control", "no-cache")])
            return [reply.body]
        known = ("/, /model/NAME, /feed.atom, " if pages else "") + "/metrics, /healthz, /api/v1/status"
        return respond(start, "404 Not Found", {"error": f"no such path {path}; try {known}"})

    return handle


def serve(host: str, port: int, handler: App) -> _Server:
    """Start serving `handler` in a daemon thread; the caller shuts it down with server.shutdown()."""
    server_class = _Server6 if ":" in host else _Server
    server = make_server(host, port, handler, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="fpwatch-http", daemon=True).start()
    return server
