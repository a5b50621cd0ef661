"""OpenAI's Responses API (`POST {base_url}/responses`): the models served only there, and every other one.

Version signals (research/provider-facts.md 2.2): a Response has no `system_fingerprint` and the API takes
no `seed`, but the resolved `model` is a dated snapshot (gpt-5.5 -> gpt-5.5-2026-04-23) and the body echoes
the sampling settings the server chose and used: `temperature`, `top_p` (0.98 where the request set none),
`service_tier` and `reasoning.effort`. A change of those is a change of the backend, so they are read as a
derived fingerprint, `temperature=0;top_p=0.98;service_tier=default` (`echoed_settings`): the fingerprint
history, its grace period and overlap, rollbacks and `fingerprint.changed` (a warning, exit 1) then hold
for them exactly as for a `system_fingerprint`, and the value says in words what changed. Logprobs come
through `top_logprobs` and `include: ["message.output_text.logprobs"]`; the answer is the `output_text`
parts of the `message` items (reasoning items are not the answer). Errors use OpenAI's envelope and are
read by the Chat Completions parser's `error_from`; a 200 whose `status` is `failed` carries its error in
`error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fpwatch.config import Canary, ModelConfig, ProviderType
from fpwatch.detect.observation import FingerprintState, FirstToken
from fpwatch.errors import ProbeError
from fpwatch.providers.base import Parsed, Request
from fpwatch.providers.http import Exchange

# Private helpers of the Chat Completions format that this one shares (the same envelope, the same
# logprob entries): shared rather than copied.
from fpwatch.providers.openai import (
    OpenAIAdapter,
    _decode,
    _first_token,
    _int,
    _json_type,
    _malformed,
    error_from,
    refuse_redirect,
)

# The Responses API refuses max_output_tokens below 16 ("integer below minimum value. Expected a value >= 16");
# a canary's 2-4 tokens are sent as 16 and its prompt asks for a short answer anyway.
MIN_OUTPUT_TOKENS = 16
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# The echoed settings that make up the derived fingerprint, in this order, by their name in it.
ECHOED = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("service_tier", "service_tier"),
    ("effort", "reasoning"),  # reasoning.effort
)
# incomplete_details.reason -> the finish reason the rest of fpwatch knows (Chat Completions' words)
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


class ResponsesAdapter(OpenAIAdapter):
    """api.openai.com's /responses: Bearer auth as for Chat Completions, `input` and `max_output_tokens`."""

    spec: ClassVar[ProviderType] = ProviderType(
        "openai-responses",
        default_base_url="https://api.openai.com/v1",
        key_variable="OPENAI_API_KEY",
        key_required=True,
        unsupported=frozenset({"seed"}),  # response_create_params has none
    )
    top_logprobs = 5  # the alternatives fpwatch keeps (README "Drift"); the API allows 0-20

    def url(self, model: ModelConfig) -> tuple[str, Mapping[str, str] | None]:
        return f"{self.provider.base_url}/responses", None

    def build_request(self, model: ModelConfig, canary: Canary) -> Request:
        payload: dict[str, Any] = {
            "model": model.model,
            "input": [{"role": m.role, "content": m.content} for m in canary.messages],
            "store": False,  # a canary is not worth keeping for 30 days in the account's logs
        }
        if canary.temperature is not None:
            payload["temperature"] = canary.temperature
        if "max_output_tokens" not in model.params:
            payload["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, canary.max_tokens)
        logprobs = self.asks_logprobs(canary)
        if logprobs:
            top = canary.top_logprobs
            payload["top_logprobs"] = self.top_logprobs if top is None else top
            payload["include"] = [LOGPROBS_INCLUDE]
        payload.update(model.params)  # e.g. reasoning = { effort = "low" }, service_tier = "flex"
        given = model.params.get("include")  # e.g. ["reasoning.encrypted_content"]: the logprobs are still wanted
        if logprobs and isinstance(given, list):
            payload["include"] = [*given, *([] if LOGPROBS_INCLUDE in given else [LOGPROBS_INCLUDE])]
        url, params = self.url(model)
        return Request(url, self.headers(), payload, params)

    def parse(self, exchange: Exchange) -> Parsed:
        return parse_response(exchange)


# --- responses ------------------------------------------------------------------------------------------


def parse_response(exchange: Exchange) -> Parsed:
    """Read a Response object into Parsed, or raise ProbeError explaining what went wrong."""
    refuse_redirect(exchange)
    body = _decode(exchange)
    if exchange.status >= 400 or (isinstance(body, dict) and "error" in body and "output" not in body):
        raise error_from(exchange, body, "max_output_tokens")  # OpenAI's envelope, or a proxy's error with HTTP 200
    if not isinstance(body, dict):
        raise ProbeError("malformed", f"unexpected response: a JSON {type(body).__name__}, not an object")
    status = body.get("status")
    if status == "failed" or isinstance(body.get("error"), dict):
        raise _failed(body)
    if "output" not in body:
        raise ProbeError(
            "malformed",
            f"unexpected response shape: no output (keys: {', '.join(sorted(body))[:200]}); "
            "is this OpenAI's Responses API? check the provider's type and base_url",
        )
    if status in ("queued", "in_progress"):
        raise ProbeError(
            "malformed",
            f"the response is not finished (status {status}): remove background from the model's params",
            permanent=True,
        )
    text, first = _answer(body["output"])
    if not text and status in ("incomplete", "cancelled"):
        spent = ""
        details = body["usage"].get("output_tokens_details") if isinstance(body.get("usage"), dict) else None
        if isinstance(details, dict) and _int(details.get("reasoning_tokens")):
            spent = f" after {details['reasoning_tokens']} reasoning tokens"
        raise ProbeError(
            "bad_request",
            f"the response ended without an answer{spent} (status {status}, {_finish_reason(body)})",
            "a reasoning model's reasoning counts against max_tokens: raise the canary's max_tokens, or set "
            'params = { reasoning = { effort = "minimal" } } on the model where it takes that',
            permanent=True,
        )
    fingerprint, state = echoed_settings(body)
    usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
    details = usage.get("output_tokens_details")
    return Parsed(
        fingerprint=fingerprint,
        fingerprint_state=state,
        response_model=_text(body.get("model")),
        output=text,
        finish_reason=_finish_reason(body),
        first_token=first,
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),  # reasoning included: what is billed
        reasoning_tokens=_int(details.get("reasoning_tokens")) if isinstance(details, dict) else None,
        response_id=_text(body.get("id")),
    )


def echoed_settings(body: Mapping[str, Any]) -> tuple[str | None, FingerprintState]:
    """The derived fingerprint: the echoed sampling settings as `name=value` joined by `;`, those the body has.

    None and "absent" when it echoes none of them; "invalid" when one is not a string or a number (a broken
    version signal, as a non-string system_fingerprint is).
    """
    parts = []
    for name, field in ECHOED:
        value = body.get(field)
        if field == "reasoning":
            value = value.get("effort") if isinstance(value, dict) else value
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None, "invalid"
        shown = format(value, "g") if isinstance(value, int | float) else " ".join(value.split())
        parts.append(f"{name}={shown}")
    return (";".join(parts), "present") if parts else (None, "absent")


def _answer(output: Any) -> tuple[str, FirstToken | None]:
    """The output_text (or refusal) parts of the message items, joined, and the first text part's first token."""
    if not isinstance(output, list):
        raise _malformed(f"output is {_json_type(output)}, not a list of items")
    texts: list[str] = []
    first: FirstToken | None = None
    for i, item in enumerate(output):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _malformed(f"output[{i}] is {_json_type(item)}, not an output item")
        if item["type"] != "message":
            continue  # reasoning, tool calls: not the answer
        content = item.get("content")
        if not isinstance(content, list):
            raise _malformed(f"output[{i}].content is {_json_type(content)}, not a list of parts")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"output[{i}].content[{j}]"
            if not isinstance(kind, str):
                raise _malformed(f"{where} is {_json_type(part)}, not a content part")
            field = {"output_text": "text", "refusal": "refusal"}.get(kind)
            if field is None:
                continue
            if not isinstance(part.get(field), str):
                raise _malformed(f"{where}.{field} is {_json_type(part.get(field))}, not a string")
            texts.append(part[field])  # a refusal is the model's answer to the canary: record its text
            if first is None and kind == "output_text":
                first = _first_token({"content": part.get("logprobs")})
    return "".join(texts), first


def _finish_reason(body: Mapping[str, Any]) -> str | None:
    status = body.get("status")
    if status == "completed":
        return "stop"
    details = body.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if status == "incomplete" and isinstance(reason, str):
        return _INCOMPLETE.get(reason, reason)
    return status if isinstance(status, str) else None


def _failed(body: Mapping[str, Any]) -> ProbeError:
    """A response that failed while it was generated: HTTP 200, `status: failed` and the reason in `error`."""
    given = body.get("error")
    err: Mapping[str, Any] = given if isinstance(given, dict) else {}
    code = err.get("code") if isinstance(err.get("code"), str) else None
    said = " ".join(str(err.get("message") or "no error message").split())
    words = f"{said} ({code}, HTTP 200 with status failed)" if code else f"{said} (HTTP 200 with status failed)"
    if code == "rate_limit_exceeded":
        return ProbeError("rate_limited", words, "lower max_concurrency or raise the interval", status=200)
    if code in ("server_error", "vector_store_timeout") or code is None:  # the provider's, passing: next check
        hint = "the provider failed; fpwatch will try again at the next check"
        return ProbeError("server_error", words, hint, status=200)
    return ProbeError("bad_request", words, "the request was refused; check the canary", permanent=True, status=200)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
