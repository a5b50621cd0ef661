"""The retry loop against the real simulator: what it waits for, what it refuses to retry, what it records."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trustme

from fpwatch.providers import sockets
from fpwatch.providers.http import ClientPool, Exchange, TransportFailure, new_transport, post_json
from fpwatch.sim import Simulator

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=3) as simulator:
        yield simulator


def post(sim: Simulator, timeout: float = 10.0) -> tuple[int, list[float], float]:
    """One POST through a real client; returns (final status, waits before each attempt, seconds)."""

    async def go() -> tuple[int, list[float], float]:
        pool = ClientPool(2, tls=False)
        try:
            async with pool.lease() as client:
                started = time.monotonic()
                exchange = await post_json(client, sim.base_url + "/chat/completions", BODY, {}, timeout=timeout)
                return exchange.status, [a.waited for a in exchange.attempts], time.monotonic() - started
        finally:
            await pool.aclose()

    return asyncio.run(go())


def chat_requests(sim: Simulator) -> list[dict]:
    return [r for r in sim.requests() if r["path"].endswith("/chat/completions")]


def test_retry_after_ms_is_preferred_to_retry_after(sim: Simulator) -> None:
    """retry-after-ms: 300 beats Retry-After: 5: the retry comes after 0.3 s."""
    sim.push_faults("m", [{"kind": "429", "retry_after_ms": 300, "retry_after": 5}])
    status, waits, _seconds = post(sim)
    assert status == 200 and waits == [0, 0.3]
    log = chat_requests(sim)
    assert 0.3 <= log[1]["monotonic"] - log[0]["monotonic"] < 2


def test_a_server_asking_for_more_than_a_minute_is_not_waited_for(sim: Simulator) -> None:
    """Retry-After: 120 is reported at once instead of sleeping through it."""
    sim.push_faults("m", [{"kind": "429", "retry_after": 120}])
    status, waits, seconds = post(sim)
    assert status == 429 and waits == [0] and seconds < 2


def test_a_dropped_connection_is_retried(sim: Simulator) -> None:
    """The server closing the connection without answering is retried, then succeeds."""
    sim.push_faults("m", [{"kind": "disconnect"}])
    status, waits, _ = post(sim)
    assert status == 200 and len(waits) == 2


def test_x_should_retry_true_retries_even_a_4xx(sim: Simulator) -> None:
    """The server's x-should-retry: true overrides the status (a 400 is normally final)."""
    body = {"error": {"message": "try again"}}
    sim.push_faults("m", [{"kind": "error", "status": 400, "body": body, "headers": {"x-should-retry": "true"}}])
    status, waits, _ = post(sim)
    assert status == 200 and len(waits) == 2


def test_other_4xx_are_not_retried(sim: Simulator) -> None:
    """A 400 without x-should-retry is final: one request."""
    sim.push_faults("m", [{"kind": "error", "status": 400, "body": {"error": {"message": "bad"}}}])
    status, _waits, _ = post(sim)
    assert status == 400 and len(chat_requests(sim)) == 1


def test_retries_stop_at_the_deadline(sim: Simulator) -> None:
    """Endless 503s: the loop gives up within the request timeout, not after a fixed count of sleeps."""
    sim.update_model("m", {"error_rate": 1.0, "error_kinds": ["503"]})
    status, _waits, seconds = post(sim, timeout=1.5)
    assert status == 503 and seconds < 2.5


def test_nothing_listening_is_a_connection_failure() -> None:
    """A refused connection becomes a TransportFailure that says so, after retries."""

    async def go() -> None:
        pool = ClientPool(1, tls=False)
        try:
            async with pool.lease() as client:
                await post_json(client, "http://127.0.0.1:9/v1/chat/completions", BODY, {}, timeout=3)
        finally:
            await pool.aclose()

    with pytest.raises(TransportFailure) as caught:
        asyncio.run(go())
    assert caught.value.kind == "connection" and "cannot connect" in str(caught.value)
    assert len(caught.value.attempts) >= 2


# -- the sockets under httpx (providers/sockets.py): TLS, idle connections the server closed, a silent server


def test_clients_run_on_the_asyncio_backend() -> None:
    """The pool httpx builds is swapped for one on fpwatch's asyncio sockets; an httpx that moved its pool fails
    here instead of quietly costing a third of each request's CPU again."""
    transport = new_transport(2, False)
    assert isinstance(transport._pool._network_backend, sockets.Backend)  # type: ignore[attr-defined]


class _Json(http.server.BaseHTTPRequestHandler):
    """POST -> 200 {"ok": true} on HTTP/1.1 (keep-alive); the server counts connections and may drop idle ones."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # A server that is done with a connection after one answer but does not say so (no Connection: close),
        # as a proxy timing out idle connections does: the client finds out only once it is idle in the pool.
        self.close_connection = self.server.drop_idle  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def json_server(tls: ssl.SSLContext | None = None, drop_idle: bool = False) -> Iterator[http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Json)
    server.connections, server.drop_idle = 0, drop_idle  # type: ignore[attr-defined]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def exchanges(url: str, count: int, tls: bool | ssl.SSLContext = False, pause: float = 0.0) -> list[Exchange]:
    """`count` POSTs one after the other through one client of one connection."""

    async def go() -> list[Exchange]:
        pool = ClientPool(1, tls=tls)
        out = []
        try:
            for _ in range(count):
                async with pool.lease() as client:
                    out.append(await post_json(client, url, BODY, {}, timeout=5))
                await asyncio.sleep(pause)
        finally:
            await pool.aclose()
        return out

    return asyncio.run(go())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_https_through_the_asyncio_backend(ca: trustme.CA) -> None:
    """A TLS handshake upgraded in place, the certificate checked against the client's CA, the connection kept
    alive for the next request."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with json_server(tls=server_context) as server:
        url = f"https://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
        answers = exchanges(url, 3, tls=client_context)
        assert [(e.status, e.body, len(e.attempts)) for e in answers] == [(200, b'{"ok": true}', 1)] * 3
        assert server.connections == 1  # type: ignore[attr-defined]


def test_an_untrusted_certificate_is_refused_in_words(ca: trustme.CA) -> None:
    """A server whose certificate the client's CAs do not vouch for: no exchange, a connection failure that says
    why (the system's CAs do not know the throwaway one)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with json_server(tls=server_context) as server, pytest.raises(TransportFailure) as caught:
        exchanges(f"https://127.0.0.1:{server.server_address[1]}/v1/chat/completions", 1, tls=True)
    assert caught.value.kind == "connection"
    assert "certificate verify failed" in str(caught.value)


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """The server drops each connection after its answer: the pool sees the idle one ended and opens a new one,
    so the next request goes out once, not into the dead socket and a retry."""
    with json_server(drop_idle=True) as server:
        answers = exchanges(f"http://127.0.0.1:{server.server_address[1]}/v1/x", 3, pause=0.2)
        assert [(e.status, len(e.attempts)) for e in answers] == [(200, 1)] * 3
        assert server.connections == 3  # type: ignore[attr-defined]


def test_a_server_that_never_answers_is_a_timeout() -> None:
    """Connected, request sent, nothing back: a timeout within the request's own, in words."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"

        async def go() -> None:
            pool = ClientPool(1, tls=False)
            try:
                async with pool.lease() as client:
                    await post_json(client, url, BODY, {}, timeout=1.0, max_attempts=1)
            finally:
                await pool.aclose()

        started = time.monotonic()
        with pytest.raises(TransportFailure) as caught:
            asyncio.run(go())
        assert caught.value.kind == "timeout" and "no answer within" in str(caught.value)
        assert time.monotonic() - started < 3
    finally:
        listener.close()


# -- httpcore's locks, events and shields on asyncio's own (providers/primitives.py)


def test_anyio_shield_does_not_hold_off_asyncio_cancellation() -> None:
    """Why fpwatch may drop anyio's shields while nothing runs on anyio: the task is cancelled inside one all the
    same, promptly. If anyio starts shielding against asyncio's own cancellation, this fails, and primitives.py
    must keep anyio's shields."""
    import anyio

    async def go() -> tuple[bool, float]:
        async def shielded() -> None:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(2)

        task = asyncio.create_task(shielded())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled(), time.monotonic() - started

    cancelled, took = asyncio.run(go())
    assert cancelled and took < 1


FRESH = """
import asyncio, json, sys
from fpwatch.providers.http import ClientPool, TransportFailure, post_json
from fpwatch.providers.primitives import ANYIO_ON_ASYNCIO
URL, BODY = sys.argv[1], json.loads(sys.argv[2])
async def one(pool, timeout=10.0):
    async with pool.lease() as client:
        try:
            return (await post_json(client, URL, BODY, {}, timeout=timeout, max_attempts=1)).status
        except TransportFailure as exc:
            return exc.kind
async def go():
    pool = ClientPool(int(sys.argv[3]), tls=False)
    try:
        out = await SCENARIO(pool)
        lock = pool.transports[0]._pool.connections[0]._connection._state_lock._anyio_lock
        return {"out": out, "lock": type(lock).__module__, "anyio": ANYIO_ON_ASYNCIO in sys.modules}
    finally:
        await pool.aclose()
print(json.dumps(asyncio.run(go())))
"""


def fresh_process(scenario: str, url: str, connections: int) -> dict:
    """`SCENARIO(pool)` (async, a function of the script above) run in a new interpreter, as `fpwatch check` runs:
    no test before it has loaded anyio, so httpcore's primitives there are asyncio's."""
    script = FRESH.replace("SCENARIO", "scenario").replace("async def go", scenario + "\nasync def go")
    out = subprocess.run(
        [sys.executable, "-c", script, url, json.dumps(BODY), str(connections)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["lock"] == "asyncio.locks" and result["anyio"] is False  # asyncio's, anyio never loaded
    return result


def test_a_check_process_runs_httpcore_on_asyncios_primitives(sim: Simulator) -> None:
    """20 requests over 4 connections (most wait for one): all answered."""
    scenario = """
async def scenario(pool):
    return await asyncio.gather(*(one(pool) for _ in range(20)))
"""
    assert fresh_process(scenario, sim.base_url + "/chat/completions", 4)["out"] == [200] * 20


def test_a_request_cancelled_mid_flight_gives_its_connection_back() -> None:
    """One connection, a slow server: the first request is cancelled while it waits for its answer (as a check's
    deadline or a stopping daemon cancels it); the next one gets the connection and its answer."""
    scenario = """
async def scenario(pool):
    first = asyncio.create_task(one(pool))
    await asyncio.sleep(0.15)
    first.cancel()
    try:
        await first
    except asyncio.CancelledError:
        pass
    return [first.cancelled(), await asyncio.wait_for(one(pool), timeout=5)]
"""
    with Simulator({"models": {"*": {"latency": 0.4}}}, seed=3) as slow:
        assert fresh_process(scenario, slow.base_url + "/chat/completions", 1)["out"] == [True, 200]


def test_waiting_for_a_busy_connection_ends_in_a_timeout() -> None:
    """The pool's wait for a free connection (an event with a deadline) still ends as httpx's pool timeout,
    which fpwatch reports as a timeout; the request that held the connection is answered."""
    scenario = """
async def scenario(pool):
    return await asyncio.gather(one(pool), one(pool, timeout=0.3))
"""
    with Simulator({"models": {"*": {"latency": 1.0}}}, seed=3) as slow:
        assert fresh_process(scenario, slow.base_url + "/chat/completions", 1)["out"] == [200, "timeout"]


def test_under_anyio_httpcore_keeps_anyios_primitives() -> None:
    """Once anyio runs on asyncio (its task groups cancel level-triggered, which the shields are for), what
    httpcore makes is anyio's again."""
    import anyio
    from httpcore import _synchronization

    from fpwatch.providers import primitives

    assert primitives.install()

    async def go() -> tuple[bool, type, type]:
        lock, event = _synchronization.AsyncLock(), _synchronization.AsyncEvent()
        lock.setup()
        event.setup()
        return primitives.native(), type(lock._anyio_lock), type(event._anyio_event)

    native, lock_type, event_type = anyio.run(go)
    assert not native
    assert issubclass(lock_type, anyio.Lock) and issubclass(event_type, anyio.Event)


@pytest.mark.parametrize(
    ("host", "literal"),
    [("127.0.0.1", True), ("::1", True), ("localhost", False), ("api.openai.com", False), ("10.0.0.300", False)],
)
def test_only_an_ip_address_skips_the_happy_eyeballs_race(host: str, literal: bool) -> None:
    """A name may resolve to several addresses, raced as RFC 8305 says; an IP address is the only one."""
    assert sockets._ip_literal(host) is literal
