"""Anthropic's Messages API on the wire (``POST /v1/messages``): request checks, errors, faults and message bodies.

The route serves the same scenario models as the OpenAI dialect (``outputs``, ``long_outputs``,
``resolved``, ``route``, ``by_fingerprint`` replicas, latency, ``error_rate``, ``faults``, ``echo_key``),
answered as Anthropic answers: ``{"id": "msg_01...", "type": "message", "model": <resolved>, "content":
[{"type": "text", ...}], "stop_reason": "end_turn" | "max_tokens", "usage": {..., "service_tier":
"standard"}}`` (``echoes.service_tier`` sets another), and a ``request-id`` header (``req_011C...``) that the
request log records. What the Messages API has no field for is left out: no fingerprint (the pool is still
drawn, so ``by_fingerprint`` replicas keep answering as themselves, but it is never sent), no logprobs.

As the real API does:

- the key goes in ``x-api-key``, or ``Authorization: Bearer KEY`` (how the official Python SDK 2.15 sends
  an API key); a missing or wrong key gets 401 ``authentication_error`` ("x-api-key header is
  required", "invalid x-api-key"), which repeats nothing that was sent;
- ``anthropic-version`` is required: without it 400 "anthropic-version: header is required", an unknown
  one 400 "... is not a valid version" (``respond()`` in-process sends 2023-06-01);
- ``model``, ``max_tokens`` and ``messages`` are required, a field the API does not know (``seed``,
  ``logprobs``, ...) is "Extra inputs are not permitted", a ``system`` role among the messages is refused
  (it belongs in the top-level ``system``), ``temperature`` must be within 0..1, and a model whose
  ``rejects`` lists ``"temperature"`` answers one with 400 "`temperature` is deprecated for this model." (as
  Opus 4.7 and later do; the other ``rejects`` and ``ignores`` are OpenAI's and do not apply);
- every error is ``{"type": "error", "error": {"type", "message"}, "request_id"}``.

Faults in Anthropic's shapes: ``429`` ``rate_limit_error`` with ``anthropic-ratelimit-requests-*`` headers
(``retry_after``, ``retry_after_ms`` and ``should_retry`` as for OpenAI); ``529`` ``overloaded_error`` (the
same three options); ``500``/``502``/``503`` ``api_error``; ``quota``: Anthropic's 400 "Your credit balance
is too low"; ``malformed``, ``html``, ``error``, ``timeout`` and ``disconnect`` as for OpenAI. The 429,
529 and 5xx faults send ``x-should-retry: true`` unless ``should_retry`` is false.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fpwatch.sim.openai import _custom_error
from fpwatch.sim.scenario import JsonDict, _describe, _is_number
from fpwatch.sim.wire import _base62_id, _ChatRequest, _html_page, _Rejected, _Reply, _retry_headers, _Route

# The anthropic-version values accepted: 2023-06-01, what fpwatch and most clients send, its predecessor, and
# what the official Python SDK 2.15 sends.
VERSIONS = ("2023-06-01", "2023-01-01", "2026-10-21")
_BODY_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        # and what the official SDK 2.15 sends besides
        "cache_control",
        "container",
        "context_management",
        "diagnostics",
        "inference_geo",
        "mcp_servers",
        "output_config",
        "speed",
        "user_profile_id",
        "workspace_id",
    }
)
_ROLES = ("user", "assistant")


def _request_id() -> str:
    return "req_011C" + _base62_id(20)


# --------------------------------------------------------------------------- errors and faults


def _error(status: int, kind: str, message: str, request_id: str | None) -> _Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return _Reply(status, body, provider_headers=False)


def _invalid(message: str) -> _Rejected:
    return _Rejected(_error(400, "invalid_request_error", message, None))  # the request id is set by _precheck


def _not_found(model: str, request_id: str) -> _Reply:
    return _error(404, "not_found_error", f"model: {model}", request_id)


def _rate_limited(fault: JsonDict, request_id: str) -> _Reply:
    message = (
        "This request would exceed the rate limit for your organization (fpwatch-simulator) of 50 requests per "
        "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response "
        "headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try "
        "again later."
    )
    reply = _error(429, "rate_limit_error", message, request_id)
    wait = fault.get("retry_after")
    reset = datetime.now(UTC) + timedelta(seconds=wait if isinstance(wait, int | float) else 60)
    reply.headers.update(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    return reply


_SERVER_ERRORS = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}
_CREDIT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)


def _fault_reply(fault: JsonDict, model: str, request_id: str) -> _Reply:
    """The reply for every fault kind except `timeout`, which delays a normal answer."""
    kind = fault["kind"]
    if kind == "429":
        reply = _rate_limited(fault, request_id)
    elif kind == "529":
        reply = _error(529, "overloaded_error", "Overloaded", request_id)
    elif kind in ("500", "502", "503"):
        reply = _error(int(kind), "api_error", _SERVER_ERRORS[int(kind)], request_id)
    elif kind == "quota":
        reply = _error(400, "invalid_request_error", _CREDIT, request_id)
    elif kind == "malformed":
        reply = _malformed(model)
    elif kind == "html":
        reply = _html_page(fault.get("status", 502))
    elif kind == "error":
        reply = _custom_error(fault)
    else:  # disconnect
        reply = _Reply(0, disconnect=True)
    if kind in ("429", "529", "500", "502", "503"):
        _retry_headers(reply, {"should_retry": True, **fault})
    reply.fault = kind
    return reply


def _refusal(req: _ChatRequest, rejects: frozenset[str], request_id: str) -> _Reply | None:
    """A newer model's 400 for a temperature it no longer takes (Opus 4.7 and later), or None."""
    if "temperature" in rejects and req.temperature is not None:
        return _error(400, "invalid_request_error", "`temperature` is deprecated for this model.", request_id)
    return None


def _malformed(model: str) -> _Reply:
    # Cut off mid-string, as a body is when a proxy or the connection gives up half-way.
    body = (
        f'{{"id":"msg_01{_base62_id(22)}","type":"message","role":"assistant","model":{json.dumps(model)},'
        '"content":[{"type":"text","text":"Hel'
    )
    return _Reply(200, raw=body.encode("utf-8"))


# --------------------------------------------------------------------------- requests


def _precheck(route: _Route, body: object, auth: str, version: str | None, request_id: str) -> _Reply | _ChatRequest:
    """Auth, the version header and the body, in that order: an error reply, or the parsed request."""
    if auth == "missing":
        return _error(401, "authentication_error", "x-api-key header is required", request_id)
    if auth == "wrong":
        return _error(401, "authentication_error", "invalid x-api-key", request_id)
    if not version:
        return _error(400, "invalid_request_error", "anthropic-version: header is required", request_id)
    if version not in VERSIONS:
        message = f"anthropic-version: {json.dumps(version)} is not a valid version"
        return _error(400, "invalid_request_error", message, request_id)
    try:
        return _parse(body, route)
    except _Rejected as rejected:
        rejected.reply.payload["request_id"] = request_id  # type: ignore[index]  # _invalid built a dict
        return rejected.reply


def _text_of(content: object, where: str) -> str:
    """A message's (or the system prompt's) text: a string, or the text blocks of a block list."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"{where}: Input should be a valid string or a list of content blocks")
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where}.{i}: Input should be a valid content block")
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise _invalid(f"{where}.{i}.text: Input should be a valid string")
            texts.append(block["text"])
    return " ".join(texts)


def _messages(body: JsonDict) -> list[tuple[str, str]]:
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid(f"messages: Input should be a valid list, got {_describe(messages)}")
    if not messages:
        raise _invalid("messages: at least one message is required")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise _invalid(
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        if role not in _ROLES:
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        turns.append((role, _text_of(message.get("content"), f"messages.{i}.content")))
    return turns


def _parse(body: object, route: _Route) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _invalid("The request body is not valid JSON.")
    for key in sorted(body):
        if key not in _BODY_KEYS:
            raise _invalid(f"{key}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _invalid(f"{key}: Field required")
    model, limit = body["model"], body["max_tokens"]
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise _invalid("max_tokens: Input should be a valid integer")
    if limit < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    temperature = body.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 1):
        raise _invalid("temperature: Input should be a number between 0 and 1")
    if body.get("stream") is True:  # a JSON answer to a streaming request would mislead the client
        raise _invalid("stream: the fpwatch simulator does not support streaming")
    turns = _messages(body)
    system = _text_of(body["system"], "system") if "system" in body else ""
    words = len(system.split()) + sum(len(text.split()) for _, text in turns)
    prompt = next((text for role, text in reversed(turns) if role == "user"), "")
    return _ChatRequest(
        model=model,
        prompt=prompt,
        prompt_tokens=max(1, words),
        limit=limit,
        logprobs=False,
        top_logprobs=0,
        route=route,
        temperature=temperature,
    )


# --------------------------------------------------------------------------- messages


def _message_body(req: _ChatRequest, answer: str, tokens: int, truncated: bool, resolved: str, tier: str) -> JsonDict:
    return {
        "id": "msg_01" + _base62_id(22),
        "type": "message",
        "role": "assistant",
        "model": resolved,
        "content": [{"type": "text", "text": answer}] if answer else [],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": req.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": tokens,
            "service_tier": tier,
        },
    }


def _echoed(body: JsonDict, key: str, places: frozenset[str]) -> JsonDict:
    """The message repeating the request's key in `places` (scenario `echo_key`), as a leaky proxy might."""
    if "content" in places:
        text = "".join(block["text"] for block in body["content"])
        body["content"] = [{"type": "text", "text": f"{text} {key}"}]
    if "finish_reason" in places:
        body["stop_reason"] = f"{body['stop_reason']} {key}"
    if "model" in places:
        body["model"] = f"{body['model']}@{key}"
    if "id" in places:
        body["id"] = f"msg_{key}"
    return body
