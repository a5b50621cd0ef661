"""The sockets under httpx: an httpcore network backend on asyncio's own streams.

Under asyncio httpcore talks to sockets through anyio, whose wrappers (a cancel scope around every read and
write, typed-attribute lookups for every idle-connection check) cost about a third of a request's CPU; at
50 connections that delayed every batch of a check (bench/check.py). httpcore takes any
`AsyncNetworkBackend` (its documented extension point, encode.io/httpcore/network-backends): this one is
asyncio's StreamReader / StreamWriter with `asyncio.timeout`, and TLS is asyncio's, upgraded in place
(`StreamWriter.start_tls`). Errors become httpcore's own exceptions, as its anyio backend raises them, so
httpx maps them to the same httpx errors as before.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before trying the next address of a host (anyio's and RFC 8305's)


class Stream(httpcore.AsyncNetworkStream):
    """One connection: reads and writes with a deadline each, as httpcore asks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)  # b"" at the end: httpcore reads it as a disconnect
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {_seconds(timeout)}") from None
        except OSError as exc:  # ssl.SSLError included
            raise httpcore.ReadError(_words(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {_seconds(timeout)}") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: written after the transport closed
            raise httpcore.WriteError(_words(exc)) from exc

    async def aclose(self) -> None:
        # No TLS close_notify to wait for (httpcore's anyio backend sends none either): a server that never
        # answers one cannot hold a check. The socket closes on the loop's next turn, which this awaits.
        self._writer.transport.abort()
        await asyncio.sleep(0)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {_seconds(timeout)}") from None
        except OSError as exc:  # ssl.SSLError (a bad certificate) and a reset connection included
            await self.aclose()
            raise httpcore.ConnectError(_words(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle keep-alive connection: anything there means the server is done with it. The loop
            # reads sockets as data comes, so "readable" is the reader's end, its error, or a closed transport.
            return self._reader.at_eof() or self._reader.exception() is not None or self._writer.is_closing()
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if name in ("ssl_object", "sockname", "peername", "socket"):
            return self._writer.get_extra_info(name)
        return None


class Backend(httpcore.AsyncNetworkBackend):
    """Connections for httpcore's pool, on the running asyncio loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    # An IP address has no other address to race (the race costs 0.15 ms a connection).
                    happy_eyeballs_delay=None if _ip_literal(host) else HAPPY_EYEBALLS_DELAY,
                )  # asyncio sets TCP_NODELAY on TCP sockets, as anyio does
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection within {_seconds(timeout)}") from None
        except OSError as exc:
            raise httpcore.ConnectError(_words(exc)) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address (not a name to resolve)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def _seconds(timeout: float | None) -> str:
    return f"{timeout:g}s" if timeout is not None else "the time the system allows"  # ETIMEDOUT, no timeout set


def _words(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
