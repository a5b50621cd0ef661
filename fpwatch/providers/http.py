"""HTTP to providers: each one's connections in small pools, retries that honour the server, a whole-request deadline.

The only module that imports httpx (import-linter keeps it so, and httpcore behind it, providers/sockets.py, the
asyncio sockets its pools run on, and providers/primitives.py, their locks), so a move to the maintained fork
(httpx2) is a one-line change.
Retries follow the official OpenAI SDK's rules (research/library-practice.md section 4.2): retry
408/409/429/5xx/529 and connection errors with exponential backoff and jitter, prefer
`retry-after-ms`, then `Retry-After` (seconds or an HTTP date), then the wait a wire format states in
its error body (`BodyDelay`: Gemini's `RetryInfo.retryDelay`), obey `x-should-retry`, and never wait
past the request's deadline. Every attempt is recorded: retries hide exactly the degradation a
monitor exists to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from fpwatch import __version__
from fpwatch.backoff import backoff

RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
MAX_SERVER_DELAY = 60.0  # a server asking for longer is reported, not waited for
MAX_ATTEMPTS = 4
RETRY_BASE, RETRY_CAP = 0.5, 8.0  # seconds: full-jitter backoff between attempts
MAX_BODY = 4 * 1024 * 1024  # canary answers are tiny; anything bigger is a misbehaving server
# A 429 that needs a person (no credits left) is final however it is dressed: retrying cannot help.
FINAL_MARKERS = (b"insufficient_quota",)
# Seconds an error body asks to wait before trying again, for wire formats that say it there rather than in
# Retry-After (an adapter's `Request.body_delay`); None: the body does not say; above MAX_SERVER_DELAY (even
# math.inf, "not before a daily quota resets"): reported, not waited for.
BodyDelay = Callable[[bytes], float | None]


class TransportFailure(Exception):
    """No usable HTTP response: timeout, refused connection, oversized body. Message is for people."""

    def __init__(self, kind: str, message: str, attempts: list[Attempt]) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


@dataclass(frozen=True)
class Attempt:
    status: int | None
    error: str | None
    waited: float  # seconds slept before this attempt
    retry_after: float | None
    request_id: str | None


@dataclass
class Exchange:
    status: int
    headers: Mapping[str, str]
    body: bytes
    latency: float  # seconds, whole exchange including retries
    attempts: list[Attempt] = field(default_factory=list)


# httpcore's pool does work quadratic in its connections on every request start and close
# (encode/httpcore#1035): at 50 connections a check spent most of its CPU there. Several small
# pools per provider keep each one small; bench/check.py measures the difference.
CONNECTIONS_PER_POOL = 2
# What every request carries (an httpx client's defaults, with fpwatch named); the adapter's headers go on top.
HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": f"fpwatch/{__version__}"}


class ClientPool:
    """A provider's HTTP connections: `max_connections` spread over small httpx transports, least busy first.

    Requests go to the transport itself (httpx's transport API), not through an httpx client: fpwatch uses none of
    what a client adds (auth flows, redirects, cookies, event hooks), and its cookie jar alone built a
    urllib request and an email message for every answer (a tenth of a request's CPU)."""

    def __init__(self, max_connections: int, *, tls: bool | ssl.SSLContext = True) -> None:
        sizes = [CONNECTIONS_PER_POOL] * (max_connections // CONNECTIONS_PER_POOL)
        if max_connections % CONNECTIONS_PER_POOL:
            sizes.append(max_connections % CONNECTIONS_PER_POOL)
        # One TLS context for all (building one reads the CA bundle: ~30 ms), or the caller's (a private CA).
        verify = tls if isinstance(tls, ssl.SSLContext) else _tls_context() if tls else _plain_context()
        self.transports = [new_transport(size, verify) for size in sizes]
        self.busy = [0] * len(self.transports)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncHTTPTransport]:
        index = min(range(len(self.transports)), key=self.busy.__getitem__)
        self.busy[index] += 1
        try:
            yield self.transports[index]
        finally:
            self.busy[index] -= 1

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


@functools.cache
def _plain_context() -> ssl.SSLContext:
    """For a provider on plain http, which never uses it: httpx would build one per transport (0.2 ms each)."""
    return httpx.create_ssl_context(verify=False)


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """An endpoint parsed once (a provider's differ at most by model): parsing was half of building a request."""
    return httpx.URL(text)


def new_transport(max_connections: int, verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """Connections to one provider, at most `max_connections`, kept alive between requests."""
    import httpcore  # as httpx does: only once a transport is built (about 20 ms with h11 and anyio)

    from fpwatch.providers import primitives, sockets

    primitives.install()  # its locks, events and shields on asyncio's own (providers/primitives.py)

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(verify=verify, retries=0, limits=limits)  # our own loop retries
    if isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        # The same pool on asyncio's sockets instead of anyio's (providers/sockets.py: a third of a request's
        # CPU). httpx builds its pool without a backend argument, so it is rebuilt as httpx builds it; an httpx
        # that keeps its pool elsewhere keeps its own (tests/test_http.py checks that this one is used).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else transport._pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=0,
            network_backend=sockets.Backend(),
        )
    return transport


def new_client(max_connections: int = 1) -> httpx.AsyncClient:
    """A whole httpx client on such a transport, for the odd request that is not a provider's (a dead man's ping)."""
    return httpx.AsyncClient(
        transport=new_transport(max_connections, _tls_context()),
        headers={"user-agent": HEADERS["user-agent"]},
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=False,
    )


def server_delay(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or Retry-After; None if it did not say."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    return None


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id") or headers.get("apim-request-id")


async def post_json(
    transport: httpx.AsyncBaseTransport,
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    timeout: float,
    params: Mapping[str, str] | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    max_body: int = MAX_BODY,
    body_delay: BodyDelay | None = None,
) -> Exchange:
    """POST JSON with retries inside `timeout` seconds in all; return the final response.

    A retryable status that is still failing at the end is returned (the caller explains it);
    a failure with no response at all raises TransportFailure.
    """
    start = time.monotonic()
    deadline = start + timeout
    attempts: list[Attempt] = []
    waited = 0.0
    for number in range(max_attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            status, response_headers, body = await _send_once(
                transport, url, payload, headers, params, remaining, max_body
            )
        except TransportFailure as failure:
            attempts.append(Attempt(None, str(failure), waited, None, None))
            if failure.kind == "too_large":
                raise TransportFailure(failure.kind, str(failure), attempts) from None
            delay = backoff(number, RETRY_BASE, RETRY_CAP)
            if number + 1 >= max_attempts or time.monotonic() + delay >= deadline:
                raise TransportFailure(failure.kind, str(failure), attempts) from None
            await asyncio.sleep(delay)
            waited = delay
            continue
        asked = server_delay(response_headers)
        if asked is None and body_delay is not None and status >= 400:
            asked = body_delay(body)  # headers first: a server that sends both means the same wait
        attempts.append(Attempt(status, None, waited, asked, _request_id(response_headers)))
        should = response_headers.get("x-should-retry", "").lower()
        retryable = should == "true" or (should != "false" and status in RETRYABLE)
        if any(marker in body for marker in FINAL_MARKERS):
            retryable = False
        delay = asked if asked is not None else backoff(number, RETRY_BASE, RETRY_CAP)
        last = number + 1 >= max_attempts
        if not retryable or last or (asked is not None and asked > MAX_SERVER_DELAY):
            return Exchange(status, response_headers, body, time.monotonic() - start, attempts)
        if time.monotonic() + delay >= deadline:
            return Exchange(status, response_headers, body, time.monotonic() - start, attempts)
        await asyncio.sleep(delay)
        waited = delay
    raise TransportFailure(
        "timeout", f"no answer within the {timeout:g}s request timeout ({len(attempts)} attempts)", attempts
    )


async def _send_once(
    transport: httpx.AsyncBaseTransport,
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    params: Mapping[str, str] | None,
    remaining: float,
    max_body: int,
) -> tuple[int, dict[str, str], bytes]:
    # httpx timeouts are per operation; asyncio.timeout bounds a server that trickles bytes.
    per_op = httpx.Timeout(remaining, connect=min(10.0, remaining))
    try:
        async with asyncio.timeout(remaining + 0.5):
            request = httpx.Request(
                "POST",
                _url(url),
                params=params,
                json=payload,
                headers={**HEADERS, **{k.lower(): v for k, v in headers.items()}},
                extensions={"timeout": per_op.as_dict()},
            )
            response = await transport.handle_async_request(request)
            try:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_body:
                        raise TransportFailure(
                            "too_large",
                            f"response body over {max_body // 1024} KiB; refused to read more",
                            [],
                        )
                    chunks.append(chunk)
                return (
                    response.status_code,
                    {k.lower(): v for k, v in response.headers.items()},
                    b"".join(chunks),
                )
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise TransportFailure("timeout", f"no answer within {remaining:.1f}s (request timeout)", []) from None
    except httpx.ConnectError as exc:
        raise TransportFailure("connection", f"cannot connect: {_reason(exc)}", []) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise TransportFailure("connection", f"connection broken: {_reason(exc)}", []) from None
    except httpx.HTTPError as exc:
        raise TransportFailure("connection", f"HTTP error: {_reason(exc)}", []) from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
