"""The retry loop against the real simulator: what it waits for, what it refuses to retry, what it records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from fpwatch.providers.http import ClientPool, TransportFailure, post_json
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
