"""A provider session (one HTTP client pool, concurrency limit and adapter per provider) and `probe`: one
canary request sent and recorded as an `Observation`, success or failure, never an exception.

Every string of an observation that came from the provider (the answer, its first tokens, fingerprint,
resolved model, ids, finish reason, error) passes through the redactor here, success or not: a provider
or a proxy that echoes the key in a 200 answer must not put it into the database, events or exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from fpwatch.config import Canary, ModelConfig, ProviderConfig, display_url
from fpwatch.detect.observation import FirstToken, Observation
from fpwatch.errors import ProbeError
from fpwatch.providers.base import Adapter
from fpwatch.providers.capabilities import CAPABILITIES, adapt, rejected_option
from fpwatch.providers.http import ClientPool, TransportFailure, post_json
from fpwatch.providers.registry import ADAPTERS


class ProviderSession:
    """One provider's HTTP connections, concurrency limit and adapter, shared by every check."""

    def __init__(
        self,
        provider: ProviderConfig,
        adapter: Adapter,
        global_limit: contextlib.AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        self.provider = provider
        self.global_limit = global_limit or contextlib.nullcontext()
        self.adapter = adapter
        self.clients = ClientPool(provider.max_concurrency, tls=provider.base_url.startswith("https://"))
        self.active = 0  # requests in flight: a replaced session is closed once this reaches 0
        self.limit = asyncio.Semaphore(provider.max_concurrency)

    async def aclose(self) -> None:
        await self.clients.aclose()


class Providers:
    """Sessions by provider name, opened lazily, closed together; an optional limit across all of them."""

    def __init__(self, max_concurrency: int | None = None) -> None:
        self._sessions: dict[str, ProviderSession] = {}
        self._replaced: list[ProviderSession] = []
        self.limit = asyncio.Semaphore(max_concurrency) if max_concurrency else contextlib.nullcontext()

    def session(self, provider: ProviderConfig) -> ProviderSession:
        current = self._sessions.get(provider.name)
        if current is None or current.provider != provider:
            if current is not None:
                self._replaced.append(current)  # a reload changed it; checks in flight may still use it
            current = ProviderSession(provider, ADAPTERS[provider.type](provider), self.limit)
            self._sessions[provider.name] = current
        return current

    async def prune(self, keep: set[str]) -> None:
        """Close sessions a reload replaced or removed, once no request uses them."""
        for name in [n for n in self._sessions if n not in keep]:
            self._replaced.append(self._sessions.pop(name))
        idle = [s for s in self._replaced if s.active == 0]
        self._replaced = [s for s in self._replaced if s.active > 0]
        for session in idle:
            await session.aclose()

    async def aclose(self) -> None:
        sessions, self._sessions = [*self._sessions.values(), *self._replaced], {}
        self._replaced = []
        for session in sessions:
            await session.aclose()

    async def __aenter__(self) -> Providers:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def probe(
    session: ProviderSession,
    model: ModelConfig,
    canary: Canary,
    sample: int,
    *,
    redact: Callable[[str], str],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    rejected: dict[str, str] | None = None,
) -> Observation:
    """Send one canary request and record what came back, success or failure, as an Observation.

    With `rejected` given, a 400 that says the model does not support temperature, logprobs or seed
    is not the end: the option is recorded there (option -> the provider's words), the canary is
    adapted (capabilities.adapt) and the request sent again without it. Options the provider type has no
    field for (`ProviderType.unsupported`: Anthropic's seed and logprobs) are left out from the start.
    """
    canary = adapt(canary, session.adapter.spec.unsupported)
    for _ in range(len(CAPABILITIES) + 1):
        observation, option = await _probe_once(session, model, canary, sample, redact=redact, clock=clock)
        if option is None or rejected is None:
            return observation
        rejected[option] = observation.error or option
        canary = adapt(canary, frozenset({option}))
    return observation


async def _probe_once(
    session: ProviderSession,
    model: ModelConfig,
    canary: Canary,
    sample: int,
    *,
    redact: Callable[[str], str],
    clock: Callable[[], datetime],
) -> tuple[Observation, str | None]:
    request = session.adapter.build_request(model, canary)
    sent = clock()
    started = time.monotonic()

    def observed(**values: Any) -> Observation:
        built = Observation(time=sent, model=model.name, canary=canary.name, sample=sample, seed=canary.seed, **values)
        return _scrubbed(built, redact)

    session.active += 1
    try:
        async with session.limit, session.global_limit, session.clients.lease() as transport:
            try:
                exchange = await post_json(
                    transport,
                    request.url,
                    request.payload,
                    request.headers,
                    params=request.params,
                    timeout=model.timeout.total_seconds(),
                    body_delay=request.body_delay,
                )
            except TransportFailure as failure:
                failed = observed(
                    ok=False,
                    latency_ms=(time.monotonic() - started) * 1000,
                    attempts=max(1, len(failure.attempts)),
                    error_kind=failure.kind,
                    error=f"{failure} ({_where(model)})",
                )
                return failed, None
    finally:
        session.active -= 1
    request_id = exchange.attempts[-1].request_id if exchange.attempts else None
    try:
        parsed = session.adapter.parse(exchange)
    except ProbeError as error:
        option = rejected_option(error, canary) if error.kind == "bad_request" else None
        message = str(error)
        if canary.builtin and option is None and error.canary_setting is not None:
            # The built-in set cannot be edited: say how to replace it instead.
            hint = (
                f"the built-in canary {canary.name} cannot be changed: define your own canary with the "
                "setting the provider asks for (see the README) and list it in this model's canaries"
            )
            message = str(ProbeError(error.kind, error.provider_words, hint))
        rejected = observed(
            ok=False,
            latency_ms=exchange.latency * 1000,
            request_id=request_id,
            http_status=exchange.status,
            attempts=len(exchange.attempts),
            error_kind=error.kind,
            error=message,
        )
        return rejected, option
    answered = observed(
        ok=True,
        system_fingerprint=parsed.fingerprint,
        fingerprint_state=parsed.fingerprint_state,
        response_model=parsed.response_model,
        output=parsed.output,
        finish_reason=parsed.finish_reason,
        first_token=parsed.first_token,
        input_tokens=parsed.input_tokens,
        output_tokens=parsed.output_tokens,
        reasoning_tokens=parsed.reasoning_tokens,
        latency_ms=exchange.latency * 1000,
        request_id=request_id,
        response_id=parsed.response_id,
        http_status=exchange.status,
        attempts=len(exchange.attempts),
    )
    return answered, None


# Every field but the names from the config, which a check matches its canaries and state by.
_FROM_ANSWER = tuple(f.name for f in fields(Observation) if f.name not in ("model", "canary"))


def _scrubbed(observation: Observation, redact: Callable[[str], str]) -> Observation:
    """The observation with every string the provider sent passed through `redact` (logprob tokens too)."""
    texts = {name: value for name in _FROM_ANSWER if isinstance(value := getattr(observation, name), str)}
    first = observation.first_token
    tokens = [first.token, *first.top] if first is not None else []
    # One pass over all of them first, as nearly every answer holds no secret: a secret or key in any one
    # string is in the joined text too, so an unchanged join means there is nothing to scrub.
    everything = "\0".join([*texts.values(), *tokens])
    if redact(everything) == everything:
        return observation
    changes: dict[str, Any] = {name: redact(value) for name, value in texts.items()}
    if first is not None:
        top: dict[str, float] = {}
        for token, logprob in first.top.items():
            top.setdefault(redact(token), logprob)  # two masked alternatives: the first (likelier) one stays
        changes["first_token"] = FirstToken(redact(first.token), first.logprob, top)
    return replace(observation, **changes)


def _where(model: ModelConfig) -> str:
    return f"provider {model.provider.name} at {display_url(model.provider.base_url)}"
