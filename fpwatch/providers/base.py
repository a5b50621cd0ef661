"""What every wire format provides: an `Adapter` that maps a canary to a request and a response to `Parsed`.

An adapter also declares its `ProviderType` (the `type` users write, its default base URL, the key
variable, its own config keys), which the config reader validates providers against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from fpwatch.config import Canary, ModelConfig, ProviderConfig, ProviderType
from fpwatch.detect.observation import FingerprintState, FirstToken
from fpwatch.providers.http import BodyDelay, Exchange


@dataclass(frozen=True)
class Request:
    url: str
    headers: Mapping[str, str]
    payload: Mapping[str, Any]
    params: Mapping[str, str] | None = None
    body_delay: BodyDelay | None = None  # the wait an error body asks for (Gemini's RetryInfo); None: headers only


@dataclass(frozen=True)
class Parsed:
    """What an adapter reads out of a successful response body."""

    fingerprint: str | None
    fingerprint_state: FingerprintState
    response_model: str | None
    output: str
    finish_reason: str | None = None
    first_token: FirstToken | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    response_id: str | None = None


class Adapter(Protocol):
    """One wire format. `parse` raises `ProbeError` with the provider's words and the hint that fixes it."""

    spec: ClassVar[ProviderType]

    def __init__(self, provider: ProviderConfig) -> None: ...

    def build_request(self, model: ModelConfig, canary: Canary) -> Request: ...

    def asks_logprobs(self, canary: Canary) -> bool:
        """Does this canary's request ask for the first token's logprobs?"""
        ...

    def parse(self, exchange: Exchange) -> Parsed: ...
