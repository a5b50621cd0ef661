"""Anthropic's Messages API (`POST {base_url}/v1/messages`): Claude, with `x-api-key` and `anthropic-version`.

Version signals read here (research/provider-facts.md 2.13, anchors-2026-12.md 4): the resolved `model`
(a dated snapshot such as claude-sonnet-4-5-20250929), the message `id` and the `request-id` header, and
`usage.service_tier` (standard, priority, batch: the pool that served the request), kept as a derived
fingerprint `service_tier=standard` as the Responses API's echoed settings are (openai_responses.py).
There is no system fingerprint, no seed and no logprobs: the type declares seed and logprobs unsupported,
so canaries are sent without them and its checks rest on the answers, the behaviour fingerprint and the
resolved model. Errors come as `{"type": "error", "error": {"type", "message"}, "request_id"}`; each
becomes one message with the provider's words and a hint per error type. Retries (429 with
`retry-after`, 529 `overloaded_error`, `x-should-retry`) are http.py's, which already follows these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fpwatch.config import Canary, ModelConfig, ProviderConfig, ProviderType, Secret
from fpwatch.errors import ProbeError
from fpwatch.providers.base import Parsed, Request
from fpwatch.providers.http import Exchange, server_delay

# Private helpers of the OpenAI format that every JSON wire format needs alike (HTML pages and broken JSON
# explained, JSON types named for people): shared rather than copied.
from fpwatch.providers.openai import _decode, _int, _json_type, joined_text, refuse_redirect
from fpwatch.providers.openai_responses import echoed_settings

DEFAULT_VERSION = "2023-06-01"  # what the official SDKs send; Anthropic has published no newer one
_SYSTEM_ROLES = ("system", "developer")  # the top-level `system` field: the Messages API has no such role


class AnthropicAdapter:
    """api.anthropic.com (base URL without /v1, as the official SDK takes it); the key in `x-api-key`."""

    spec: ClassVar[ProviderType] = ProviderType(
        "anthropic",
        default_base_url="https://api.anthropic.com",
        key_variable="ANTHROPIC_API_KEY",
        key_required=True,
        extra_keys=("anthropic_version",),  # the anthropic-version header; default DEFAULT_VERSION
        unsupported=frozenset({"seed", "logprobs"}),  # message_create_params has neither
    )

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider

    def build_request(self, model: ModelConfig, canary: Canary) -> Request:
        system = [m.content for m in canary.messages if m.role in _SYSTEM_ROLES]
        turns = [{"role": m.role, "content": m.content} for m in canary.messages if m.role not in _SYSTEM_ROLES]
        payload: dict[str, Any] = {"model": model.model, "max_tokens": canary.max_tokens, "messages": turns}
        if system:
            payload["system"] = "\n\n".join(system)
        if canary.temperature is not None:
            payload["temperature"] = canary.temperature
        payload.update(model.params)  # e.g. top_k, thinking, or a max_tokens of the model's own
        headers = {
            "content-type": "application/json",
            "anthropic-version": self.provider.extra.get("anthropic_version", DEFAULT_VERSION),
        }
        key = self.provider.api_key
        if key is not None:
            headers["x-api-key"] = key.reveal()
        for name, value in self.provider.headers.items():  # e.g. anthropic-beta
            headers[name] = value.reveal() if isinstance(value, Secret) else value
        # A base URL copied with /v1 (as OpenAI's are written) still reaches /v1/messages.
        return Request(f"{self.provider.base_url.removesuffix('/v1')}/v1/messages", headers, payload)

    def asks_logprobs(self, canary: Canary) -> bool:
        return False  # the Messages API has none to give

    def parse(self, exchange: Exchange) -> Parsed:
        return parse_message(exchange)


# --- responses ------------------------------------------------------------------------------------------


def parse_message(exchange: Exchange) -> Parsed:
    """Read a Messages API body into Parsed, or raise ProbeError explaining what went wrong."""
    refuse_redirect(exchange)
    body = _decode(exchange)
    if exchange.status >= 400 or (isinstance(body, dict) and body.get("type") == "error"):
        raise error_from(exchange, body)
    if not isinstance(body, dict):
        raise ProbeError("malformed", f"unexpected response: a JSON {type(body).__name__}, not an object")
    if "content" not in body:
        raise ProbeError(
            "malformed",
            f"unexpected response shape: no content (keys: {', '.join(sorted(body))[:200]}); "
            "is this Anthropic's Messages API? check the provider's type and base_url",
        )
    usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
    details = usage.get("output_tokens_details")
    fingerprint, state = echoed_settings({"service_tier": usage.get("service_tier")})
    return Parsed(
        fingerprint=fingerprint,
        fingerprint_state=state,
        response_model=_text(body.get("model")),
        output=_answer(body["content"]),
        finish_reason=_text(body.get("stop_reason")),
        input_tokens=_input_tokens(usage),
        output_tokens=_int(usage.get("output_tokens")),  # thinking included: what is billed
        reasoning_tokens=_int(details.get("thinking_tokens")) if isinstance(details, dict) else None,
        response_id=_text(body.get("id")),
    )


def _answer(content: Any) -> str:
    """The text blocks, joined: thinking, redacted thinking and tool blocks are not the answer."""
    if not isinstance(content, list):
        raise _malformed(f"content is {_json_type(content)}, not a list of blocks")
    return joined_text(content, "content", noun="content block")


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    """All the prompt's tokens: Anthropic counts the cached ones apart from `input_tokens`."""
    counts = [_int(usage.get(f)) for f in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    return None if counts[0] is None else sum(c for c in counts if c is not None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _malformed(what: str) -> ProbeError:
    return ProbeError(
        "malformed",
        f"unexpected response shape: {what}",
        "the provider, or a proxy in between, answered with a broken message",
    )


# --- errors ---------------------------------------------------------------------------------------------

_RETRIED = "fpwatch retried within the timeout and will try again at the next check"
# Anthropic's error.type (types/shared/error_type.py) -> fpwatch's kind, the hint, and whether only a person can fix it.
_ERRORS: dict[str, tuple[str, str, bool]] = {
    "authentication_error": (
        "auth",
        "check the provider's api_key (or api_key_file): an Anthropic API key, sent as x-api-key, that is active",
        True,
    ),
    "permission_error": (
        "auth",
        "the key may not use this model or feature: check its workspace's access in the Anthropic console",
        True,
    ),
    "not_found_error": (
        "not_found",
        "check the model id (an alias such as claude-sonnet-4-5, or a dated snapshot) and the provider's base_url",
        True,
    ),
    "billing_error": ("quota", "the account's billing needs attention; fpwatch does not retry this", True),
    "request_too_large": ("bad_request", "the request is over Anthropic's size limit; shorten the canary", True),
    "api_error": ("server_error", f"Anthropic's API failed; {_RETRIED}", False),
    "overloaded_error": (
        "server_error",
        f"Anthropic's API is overloaded (for everyone: this is not your rate limit); {_RETRIED}",
        False,
    ),
    "timeout_error": ("server_error", f"the request timed out inside Anthropic's API; {_RETRIED}", False),
}
_BY_STATUS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "request_too_large"}


def error_from(exchange: Exchange, body: Any) -> ProbeError:
    """A ProbeError carrying Anthropic's own message and error type, and the hint that fixes it."""
    status = exchange.status
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    said = " ".join(str(err.get("message") or "").split()) or "no error message"
    named = err.get("type") if isinstance(err.get("type"), str) else None
    attempts = len(exchange.attempts)
    retried = f" after {attempts} attempts" if attempts > 1 else ""
    tag = "HTTP 200 with an error body" if status == 200 else f"HTTP {status}"
    words = f"{said} ({named}, {tag}{retried})" if named else f"{said} ({tag}{retried})"
    kind_of = named or _BY_STATUS.get(status)
    if kind_of is None and (status == 429 or status >= 500):
        kind_of = "rate_limit_error" if status == 429 else "overloaded_error" if status == 529 else "api_error"

    def err_(kind: str, hint: str, *, permanent: bool, canary_setting: str | None = None) -> ProbeError:
        return ProbeError(kind, words, hint, permanent=permanent, status=status, canary_setting=canary_setting)

    if kind_of == "rate_limit_error":
        return err_("rate_limited", _rate_limit_hint(exchange.headers), permanent=False)
    if kind_of in _ERRORS:
        kind, hint, permanent = _ERRORS[kind_of]
        return err_(kind, hint, permanent=permanent)
    if "credit balance" in said.lower():  # a 400 invalid_request_error, but only billing can fix it
        hint = "the account is out of credits: buy more under Plans & Billing; fpwatch does not retry this"
        return err_("quota", hint, permanent=True)
    if kind_of == "invalid_request_error" or 400 <= status < 500 or status == 200:
        hint, setting = _bad_request_hint(said.lower())
        return err_("bad_request", hint, permanent=True, canary_setting=setting)
    return err_("http_error", "", permanent=False)


def _rate_limit_hint(headers: Mapping[str, str]) -> str:
    """Which of Anthropic's limits ran out (anthropic-ratelimit-* headers) and how long the server asked to wait."""
    spent = []
    for limit in ("requests", "tokens", "input-tokens", "output-tokens"):
        if headers.get(f"anthropic-ratelimit-{limit}-remaining") == "0":
            reset = headers.get(f"anthropic-ratelimit-{limit}-reset")
            spent.append(f"{limit} until {reset}" if reset else limit)
    used = f" ({', '.join(spent)} used up)" if spent else ""
    delay = server_delay(headers)
    wait = f"; the server asked to wait {delay:.0f}s" if delay else ""
    return f"rate limited{used}{wait}: lower max_concurrency or raise the interval"


def _bad_request_hint(said: str) -> tuple[str, str | None]:
    """The hint for an invalid_request_error, and the canary setting it asks to change (None: the fix is elsewhere)."""
    if "top_p" in said and "temperature" in said:  # newer models: "cannot both be specified"
        return "this model takes temperature or top_p, not both: remove top_p from the model's params", None
    if "temperature" in said and "thinking" in said:  # "may only be set to 1 when thinking is enabled"
        return 'with thinking enabled the model takes no other temperature: set temperature = "default"', "temperature"
    if "temperature" in said and ("less than or equal to 1" in said or "between 0 and 1" in said):
        return "Anthropic takes a temperature from 0 to 1: lower the canary's temperature", None
    if "temperature" in said:
        return 'this model rejects the temperature: set temperature = "default" on the canary', "temperature"
    if "extra inputs are not permitted" in said:
        return "the Messages API does not take that field: remove it from the model's params", None
    if "max_tokens" in said or "budget_tokens" in said:
        hint = "raise the canary's max_tokens (or set params = { max_tokens = N }): with thinking, above its budget"
        return hint, None
    if "role" in said or "system" in said:
        return "check the canary's messages: user and assistant turns (system messages go to the system field)", None
    return "the request was refused; check the model's params and the canary's settings", None
