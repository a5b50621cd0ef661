"""Gemini's ``generateContent`` on the wire: request checks, google.rpc errors, faults and response bodies.

The route ``POST /v1beta/models/{model}:generateContent`` (and ``/v1/...``, where the google-genai SDK 3.x
goes by default) serves the same scenario models as the OpenAI dialect, answered as the Gemini API answers:
``{"candidates": [{"content": {"parts": [{"text": ...}], "role": "model"}, "finishReason": "STOP" |
"MAX_TOKENS", "logprobsResult": ..., "avgLogprobs": ...}], "usageMetadata": {...}, "modelVersion":
<resolved>, "responseId": ...}``. No fingerprint: the pool is still drawn (``by_fingerprint`` replicas keep
answering as themselves), but never sent. Logprobs come as ``logprobsResult.chosenCandidates`` and
``topCandidates`` when ``generationConfig.responseLogprobs`` is true (``logprobs``: how many alternatives),
and, as proto3 JSON does, a log probability of exactly 0 is left out.

As the real API does:

- the key goes in ``x-goog-api-key`` or the ``key`` query parameter (``Authorization`` is not read); no key
  gets 403 ``PERMISSION_DENIED``, a wrong one 400 ``INVALID_ARGUMENT`` "API key not valid" with an
  ``ErrorInfo`` of reason ``API_KEY_INVALID``, which repeats nothing that was sent;
- a field the API does not know, at the top or in ``generationConfig``, is 400 'Invalid JSON payload
  received. Unknown name "x" ...: Cannot find field.' with a ``BadRequest`` field violation; a value of the
  wrong type is 'Invalid value at ...' naming the field; lowerCamel and snake_case names are both taken;
- every error is ``{"error": {"code", "message", "status", "details"?}}``.

``rejects``: ``logprobs``/``top_logprobs`` answer 400 "Logprobs is not enabled for models/{model}" (what
current Gemini models say), ``seed`` the unknown-field error for ``generation_config.seed``, ``temperature``
(no Gemini model does this; for symmetry) 400 "temperature is not supported for models/{model}".

Faults in Google's shapes: ``429`` ``RESOURCE_EXHAUSTED`` with a per-minute ``QuotaFailure``, and
``retry_after`` (seconds, or a string sent as it is) or ``retry_after_ms`` as ``RetryInfo.retryDelay`` in
the body (``"2s"``, ``"1.5s"``), never as a header; ``should_retry`` does not apply. ``quota``: a 429 for
the per-day quota (``GenerateRequestsPerDayPerProjectPerModel-FreeTier``, with a RetryInfo that waiting
does not help). ``500`` ``INTERNAL``, ``502``/``503``/``529`` ``UNAVAILABLE`` ("The model is overloaded");
``malformed``, ``html``, ``error`` (default body: a 400 INVALID_ARGUMENT), ``timeout`` and ``disconnect``
as for OpenAI.

The request log's ``seed``, ``temperature``, ``max_tokens``, ``logprobs`` and ``top_logprobs`` come from
``generationConfig`` (``seed``, ``temperature``, ``maxOutputTokens``, ``responseLogprobs``, ``logprobs``);
``body_keys`` lists its fields as ``generationConfig.NAME`` after the top-level keys.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qs

from fpwatch.sim.scenario import JsonDict, _describe, _is_number
from fpwatch.sim.wire import (
    _base62_id,
    _ChatRequest,
    _html_page,
    _new_entry,
    _Rejected,
    _Reply,
    _Route,
    _seconds_header,
)

_RPC = "type.googleapis.com/google.rpc."
_MAX_LOGPROBS = 20
# proto3 JSON takes a field's lowerCamel name or its original snake_case one.
_TOP_KEYS = {
    "contents": "contents",
    "systemInstruction": "systemInstruction",
    "system_instruction": "systemInstruction",
    "generationConfig": "generationConfig",
    "generation_config": "generationConfig",
    "safetySettings": "safetySettings",
    "safety_settings": "safetySettings",
    "tools": "tools",
    "toolConfig": "toolConfig",
    "tool_config": "toolConfig",
    "cachedContent": "cachedContent",
    "cached_content": "cachedContent",
    "labels": "labels",
}
_CONFIG_KEYS = (
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "seed",
    "responseLogprobs",
    "logprobs",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "thinkingConfig",
    "mediaResolution",
    "speechConfig",
    "imageConfig",
    "enableEnhancedCivicAnswers",
)
_SNAKE = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key): key for key in _CONFIG_KEYS}
_CONFIG = {**{key: key for key in _CONFIG_KEYS}, **_SNAKE}
# What a wrongly typed value is called in Google's 'Invalid value at ...' message.
_PROTO_TYPES = {"temperature": "TYPE_FLOAT", "seed": "TYPE_INT32", "maxOutputTokens": "TYPE_INT32"}
_PROTO_TYPES |= {"responseLogprobs": "TYPE_BOOL", "logprobs": "TYPE_INT32"}


def _response_id() -> str:
    return _base62_id(22)


# --------------------------------------------------------------------------- errors and faults


def _error(code: int, status: str, message: str, details: list[JsonDict] | None = None) -> _Reply:
    error: JsonDict = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return _Reply(code, {"error": error}, provider_headers=False)


def _invalid(message: str, field: str | None = None) -> _Rejected:
    """400 INVALID_ARGUMENT; with `field`, the google.rpc.BadRequest field violation that names it."""
    details = None
    if field is not None:
        violation = {"field": field, "description": message} if field else {"description": message}
        details = [{"@type": _RPC + "BadRequest", "fieldViolations": [violation]}]
    return _Rejected(_error(400, "INVALID_ARGUMENT", message, details))


def _unknown_name(name: str, at: str | None = None) -> _Rejected:
    where = f" at '{at}'" if at else ""
    return _invalid(f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.', at or "")


def _wrong_value(field: str, value: object) -> _Rejected:
    kind = _PROTO_TYPES.get(field.rpartition(".")[2], "TYPE_MESSAGE")
    shown = json.dumps(value) if isinstance(value, str) else _describe(value)
    return _invalid(f"Invalid value at '{field}' ({kind}), {shown}", field)


def _not_found(model: str, version: str = "v1beta") -> _Reply:
    message = (
        f"models/{model} is not found for API version {version}, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    return _error(404, "NOT_FOUND", message)


def _auth_error(auth: str) -> _Reply:
    if auth == "missing":
        message = (
            "Method doesn't allow unregistered callers (callers without established identity). Please use API "
            "Key or other form of API consumer identity to call this API."
        )
        return _error(403, "PERMISSION_DENIED", message)
    message = "API key not valid. Please pass a valid API key."
    details: list[JsonDict] = [
        {
            "@type": _RPC + "ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": _RPC + "LocalizedMessage", "locale": "en-US", "message": message},
    ]
    return _error(400, "INVALID_ARGUMENT", message, details)


def _exhausted(model: str, per: str, limit: int, delay: str | None) -> _Reply:
    metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information on "
        f"this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: "
        f"{metric}, limit: {limit}, model: {model}"
    )
    quota = {
        "quotaMetric": metric,
        "quotaId": f"GenerateRequestsPer{per}PerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    details: list[JsonDict] = [
        {"@type": _RPC + "QuotaFailure", "violations": [quota]},
        {
            "@type": _RPC + "Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if delay is not None:
        message += f"\nPlease retry in {delay}."
        details.append({"@type": _RPC + "RetryInfo", "retryDelay": delay})
    return _error(429, "RESOURCE_EXHAUSTED", message, details)


def _retry_delay(fault: JsonDict) -> str | None:
    """The fault's wait as protobuf's JSON Duration ("2s", "1.5s"); a string `retry_after` is sent as it is."""
    if "retry_after" in fault:
        value = fault["retry_after"]
        return value if isinstance(value, str) else f"{_seconds_header(value)}s"
    if "retry_after_ms" in fault:
        return f"{_seconds_header(fault['retry_after_ms'] / 1000)}s"
    return None


_INTERNAL = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)


def _fault_reply(fault: JsonDict, model: str, request_id: str) -> _Reply:
    """The reply for every fault kind except `timeout`, which delays a normal answer."""
    kind = fault["kind"]
    if kind == "429":
        reply = _exhausted(model, "Minute", 10, _retry_delay(fault))
    elif kind == "quota":
        reply = _exhausted(model, "Day", 250, "19s")  # the wait Google names; the quota resets only at midnight
    elif kind == "500":
        reply = _error(500, "INTERNAL", _INTERNAL)
    elif kind in ("502", "503", "529"):
        reply = _error(int(kind), "UNAVAILABLE", "The model is overloaded. Please try again later.")
    elif kind == "malformed":
        reply = _malformed(model)
    elif kind == "html":
        reply = _html_page(fault.get("status", 502))
    elif kind == "error":
        default = {"error": {"code": 400, "message": "Simulated error.", "status": "INVALID_ARGUMENT"}}
        body = copy.deepcopy(fault.get("body", default))
        reply = _Reply(fault["status"], body, headers=dict(fault.get("headers", {})))
    else:  # disconnect
        reply = _Reply(0, disconnect=True)
    reply.fault = kind
    return reply


def _malformed(model: str) -> _Reply:
    # Cut off mid-string, as a body is when a proxy or the connection gives up half-way.
    body = '{"candidates":[{"content":{"parts":[{"text":"Hel'
    return _Reply(200, raw=body.encode("utf-8"))


def _refusal(req: _ChatRequest, rejects: frozenset[str]) -> _Reply | None:
    """The 400 for an option this model does not take (scenario `rejects`), or None."""
    temperature = req.temperature
    if "temperature" in rejects and temperature is not None and not (_is_number(temperature) and temperature == 1):
        return _error(400, "INVALID_ARGUMENT", f"temperature is not supported for models/{req.model}")
    logprobs = req.logprobs or req.top_logprobs_sent
    if {"logprobs", "top_logprobs"} & rejects and logprobs:
        return _error(400, "INVALID_ARGUMENT", f"Logprobs is not enabled for models/{req.model}")
    if "seed" in rejects and req.seed is not None:
        return _unknown_name("seed", "generation_config").reply
    return None


# --------------------------------------------------------------------------- requests


def _credential(header: Callable[[str], str | None], url: SplitResult) -> str | None:
    """The key a request sent: the x-goog-api-key header, else the `key` query parameter (as the API takes both)."""
    key = header("x-goog-api-key")
    if key:
        return key
    sent = parse_qs(url.query).get("key")
    return sent[0] if sent else None


def _precheck(route: _Route, body: object, auth: str) -> _Reply | _ChatRequest:
    """Auth, then the body: an error reply, or the parsed request."""
    if route.kind == "gemini_not_found":
        return _error(404, "NOT_FOUND", "Method not found.")
    if auth in ("missing", "wrong"):
        return _auth_error(auth)
    try:
        return _parse(body, route)
    except _Rejected as rejected:
        return rejected.reply


def _texts(content: object, where: str) -> list[str]:
    """The text parts of a Content ({"parts": [{"text": ...}, ...]}) at `where`."""
    if not isinstance(content, dict):
        raise _wrong_value(where, content)
    parts = content.get("parts", [])
    if not isinstance(parts, list):
        raise _wrong_value(f"{where}.parts", parts)
    texts: list[str] = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _wrong_value(f"{where}.parts[{i}]", part)
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise _wrong_value(f"{where}.parts[{i}].text", text)
        if text is not None:
            texts.append(text)
    return texts


def _config(value: object) -> JsonDict:
    """generationConfig with lowerCamel names, its values type-checked as the API does."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _wrong_value("generation_config", value)
    config: JsonDict = {}
    for name, item in value.items():
        if name not in _CONFIG:
            raise _unknown_name(name, "generation_config")
        config[_CONFIG[name]] = item
    field = {key: f"generation_config.{snake}" for snake, key in _SNAKE.items()}
    for key in ("seed", "maxOutputTokens", "logprobs"):
        item = config.get(key)
        if item is not None and (not isinstance(item, int) or isinstance(item, bool)):
            raise _wrong_value(field.get(key, f"generation_config.{key}"), item)
    if config.get("temperature") is not None and not _is_number(config["temperature"]):
        raise _wrong_value("generation_config.temperature", config["temperature"])
    if config.get("responseLogprobs") is not None and not isinstance(config["responseLogprobs"], bool):
        raise _wrong_value("generation_config.response_logprobs", config["responseLogprobs"])
    if config.get("maxOutputTokens") is not None and config["maxOutputTokens"] < 1:
        raise _invalid("max_output_tokens must be positive.", "generation_config.max_output_tokens")
    logprobs = config.get("logprobs")
    if logprobs is not None and not 0 <= logprobs <= _MAX_LOGPROBS:
        raise _invalid(f"logprobs must be in the range [0, {_MAX_LOGPROBS}].", "generation_config.logprobs")
    if logprobs is not None and config.get("responseLogprobs") is not True:
        raise _invalid("logprobs is only supported when response_logprobs is true.", "generation_config.logprobs")
    return config


def _parse(body: object, route: _Route) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received. Unexpected token.")
    fields: JsonDict = {}
    for name, value in body.items():
        if name not in _TOP_KEYS:
            raise _unknown_name(name)
        fields[_TOP_KEYS[name]] = value
    contents = fields.get("contents")
    if not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified\n")
    if not isinstance(contents, list):
        raise _wrong_value("contents", contents)
    turns: list[tuple[str, str]] = []
    for i, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else "user"
        if role not in ("user", "model"):
            raise _invalid("Please use a valid role: user, model.")
        turns.append((role, " ".join(_texts(content, f"contents[{i}]"))))
    system = fields.get("systemInstruction")
    system_text = " ".join(_texts(system, "system_instruction")) if system is not None else ""
    config = _config(fields.get("generationConfig"))
    words = len(system_text.split()) + sum(len(text.split()) for _, text in turns)
    assert route.deployment is not None  # the Gemini route always has the model from its path
    return _ChatRequest(
        model=route.deployment,
        prompt=next((text for role, text in reversed(turns) if role == "user"), ""),
        prompt_tokens=max(1, words),
        limit=config.get("maxOutputTokens"),
        logprobs=config.get("responseLogprobs") is True,
        top_logprobs=config.get("logprobs") or 0,
        route=route,
        temperature=config.get("temperature"),
        seed=config.get("seed"),
        top_logprobs_sent="logprobs" in config,
    )


def _log_entry(method: str, url: SplitResult, body: object, auth: str, request_id: str, model: str | None) -> JsonDict:
    """The request log entry, its sampling fields read from generationConfig; query parameter names only."""
    top: JsonDict = body if isinstance(body, dict) else {}
    raw = top.get("generationConfig", top.get("generation_config"))
    config = {_CONFIG.get(k, k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    entry = _new_entry(method, url.path, model, {}, auth, request_id)
    entry.update(
        seed=config.get("seed"),
        temperature=config.get("temperature"),
        max_tokens=config.get("maxOutputTokens"),
        logprobs=config.get("responseLogprobs"),
        top_logprobs=config.get("logprobs"),
        body_keys=(*sorted(str(k) for k in top), *sorted(f"generationConfig.{k}" for k in config)),
        # Which parameters the URL carried (`key` would be the API key): names, never values.
        query=sorted({part.partition("=")[0] for part in url.query.split("&") if part}),
    )
    return entry


# --------------------------------------------------------------------------- responses


def _candidate_logprobs(logprobs: JsonDict) -> JsonDict:
    """OpenAI-shaped token logprobs (the simulator draws them once for every dialect) as a logprobsResult."""

    def candidate(token: str, value: float) -> JsonDict:
        entry: JsonDict = {"token": token}
        if value != 0.0:  # proto3 JSON leaves a field at its default out
            entry["logProbability"] = value
        return entry

    content = logprobs["content"]
    return {
        "topCandidates": [
            {"candidates": [candidate(alt["token"], alt["logprob"]) for alt in step["top_logprobs"]]}
            for step in content
        ],
        "chosenCandidates": [candidate(step["token"], step["logprob"]) for step in content],
    }


def _content_body(
    req: _ChatRequest, answer: str, tokens: int, truncated: bool, resolved: str, logprobs: JsonDict | None
) -> JsonDict:
    candidate: JsonDict = {
        "content": {"parts": [{"text": answer}], "role": "model"},
        "finishReason": "MAX_TOKENS" if truncated else "STOP",
        "index": 0,
    }
    if logprobs is not None:
        chosen = [step["logprob"] for step in logprobs["content"]]
        candidate["avgLogprobs"] = sum(chosen) / len(chosen) if chosen else 0.0
        candidate["logprobsResult"] = _candidate_logprobs(logprobs)
    usage: JsonDict = {
        "promptTokenCount": req.prompt_tokens,
        "candidatesTokenCount": tokens,
        "totalTokenCount": req.prompt_tokens + tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": req.prompt_tokens}],
    }
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": resolved, "responseId": _response_id()}


def _echoed(body: JsonDict, key: str, places: frozenset[str]) -> JsonDict:
    """The answer repeating the request's key in `places` (scenario `echo_key`), as a leaky proxy might."""
    candidate = body["candidates"][0]
    if "content" in places:
        parts = candidate["content"]["parts"]
        parts[-1]["text"] = f"{parts[-1]['text']} {key}"
    result = candidate.get("logprobsResult")
    if "logprobs" in places and result and result["topCandidates"]:
        result["topCandidates"][0]["candidates"].append({"token": key, "logProbability": -30.0})
    if "finish_reason" in places:
        candidate["finishReason"] = f"{candidate['finishReason']} {key}"
    if "model" in places:
        body["modelVersion"] = f"{body['modelVersion']}@{key}"
    if "id" in places:
        body["responseId"] = key
    return body
