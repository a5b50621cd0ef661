"""OpenAI's Responses API on the wire (``POST /v1/responses``): request checks, errors, faults and Response bodies.

The route serves the same scenario models as the Chat Completions dialect (``outputs``, ``long_outputs``,
``resolved``, ``route``, ``by_fingerprint`` replicas, latency, ``error_rate``, ``faults``, ``rejects``,
``ignores``, ``echo_key``), answered as the Responses API answers: ``{"id": "resp_...", "object":
"response", "status": "completed" | "incomplete", "model": <resolved>, "output": [{"type": "message",
"content": [{"type": "output_text", "text", "logprobs"}]}], "temperature", "top_p", "service_tier",
"reasoning": {"effort"}, "usage": {...}}`` and an ``x-request-id`` header. There is no fingerprint on this
wire (the pool is still drawn, so ``by_fingerprint`` replicas answer as themselves): the version signals
are the resolved model and the echoed settings. A setting the request sent is echoed as sent; one it left
out comes from the model's ``echoes`` (scenario.py): ``temperature`` 1, ``top_p`` 1, ``service_tier``
"default" (also for a request's "auto") and ``reasoning_effort`` null unless set, so a test changes the
backend's settings by changing ``echoes``.

As the real API does:

- Bearer auth and OpenAI's 401s, as for Chat Completions;
- ``model`` and ``input`` (a string, or a list of ``{"role", "content"}`` messages whose content is a
  string or ``input_text`` parts) are required; a field the API does not know (``seed``, ``messages``,
  ``max_tokens``) is 400 ``unknown_parameter`` ("Unknown parameter: 'seed'."); ``max_output_tokens``
  below 16 is 400 ``integer_below_min_value``; ``top_logprobs`` is 0..20 and the logprobs come only
  with ``include: ["message.output_text.logprobs"]``;
- ``rejects`` answers a ``temperature`` or ``top_logprobs`` with 400 ``unsupported_parameter``
  ("Unsupported parameter: 'temperature' is not supported with this model."), as GPT-5 does;
- faults are OpenAI's (429 with its headers, quota, 5xx, 529, html, error, disconnect, timeout), and
  ``malformed`` is a Response cut off half-way.
"""

from __future__ import annotations

import json
import time

from fpwatch.sim.openai import _auth_error, _openai_error, _optional_int, _wrong_type
from fpwatch.sim.openai import _fault_reply as _chat_fault_reply
from fpwatch.sim.scenario import JsonDict, _describe, _is_number
from fpwatch.sim.wire import _ChatRequest, _hex_id, _Rejected, _Reply, _Route

MIN_OUTPUT_TOKENS = 16
_MAX_TOP_LOGPROBS = 20
LOGPROBS_INCLUDE = "message.output_text.logprobs"
_INCLUDABLE = frozenset(
    {
        LOGPROBS_INCLUDE,
        "reasoning.encrypted_content",
        "file_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
    }
)
_BODY_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_logprobs",
        "include",
        "stream",
        "store",
        "reasoning",
        "service_tier",
        "text",
        "truncation",
        "user",
        "metadata",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "previous_response_id",
        "background",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "max_tool_calls",
        "conversation",
        "prompt",
    }
)
_ROLES = ("user", "assistant", "system", "developer")
_TIERS = ("auto", "default", "flex", "scale", "priority")
ECHO_DEFAULTS: JsonDict = {"temperature": 1.0, "top_p": 1.0, "service_tier": "default", "reasoning_effort": None}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _Rejected:
    return _Rejected(_openai_error(400, message, "invalid_request_error", param, code))


# --------------------------------------------------------------------------- requests


def _precheck(route: _Route, body: object, auth: str, sent_key: str | None) -> _Reply | _ChatRequest:
    if auth in ("missing", "wrong"):
        return _auth_error(auth, sent_key)
    try:
        return _parse(body, route)
    except _Rejected as rejected:
        return rejected.reply


def _text_of(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _wrong_type(where, "a string or an array of input parts", content)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise _invalid(f"Invalid value for '{where}[{i}]': expected an input_text part.", f"{where}[{i}]")
        if not isinstance(part.get("text"), str):
            raise _wrong_type(f"{where}[{i}].text", "a string", part.get("text"))
        texts.append(part["text"])
    return " ".join(texts)


def _turns(body: JsonDict) -> list[tuple[str, str]]:
    given = body["input"]
    if isinstance(given, str):
        return [("user", given)]
    if not isinstance(given, list):
        raise _wrong_type("input", "a string or an array", given)
    if not given:
        raise _invalid("Invalid 'input': empty array. Expected an array with minimum length 1.", "input", "empty_array")
    turns = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise _wrong_type(f"input[{i}]", "an object", item)
        role = item.get("role")
        if role not in _ROLES:
            message = f"Invalid value: {json.dumps(role)}. Supported values are: {', '.join(map(repr, _ROLES))}."
            raise _invalid(message, f"input[{i}].role", "invalid_value")
        turns.append((role, _text_of(item.get("content"), f"input[{i}].content")))
    return turns


def _number_in(body: JsonDict, param: str, high: float) -> None:
    value = body.get(param)
    if value is not None and not (_is_number(value) and 0 <= value <= high):
        message = f"Invalid '{param}': expected a number between 0 and {high:g}, but got {_describe(value)}."
        raise _invalid(message, param, "invalid_value")


def _include(body: JsonDict) -> list[str]:
    include = body.get("include") or []
    if not isinstance(include, list):
        raise _wrong_type("include", "an array of strings", include)
    for i, item in enumerate(include):
        if item not in _INCLUDABLE:
            message = f"Invalid value: {json.dumps(item)}. Supported values are: {', '.join(sorted(_INCLUDABLE))}."
            raise _invalid(message, f"include[{i}]", "invalid_value")
    return include


def _parse(body: object, route: _Route) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _invalid("We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.")
    for key in sorted(body):
        if key not in _BODY_KEYS:
            raise _invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    for key in ("model", "input"):
        if body.get(key) is None:
            raise _invalid(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise _wrong_type("model", "a string", model)
    if body.get("stream") is True or body.get("background") is True:  # a finished JSON answer would mislead
        raise _invalid("The fpwatch simulator supports neither stream nor background.", "stream", "unsupported_value")
    limit = _optional_int(body, "max_output_tokens", MIN_OUTPUT_TOKENS)
    top_logprobs = _optional_int(body, "top_logprobs", 0, _MAX_TOP_LOGPROBS)
    _number_in(body, "temperature", 2)
    _number_in(body, "top_p", 1)
    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        message = f"Invalid value: {json.dumps(tier)}. Supported values are: {', '.join(map(repr, _TIERS))}."
        raise _invalid(message, "service_tier", "invalid_value")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise _wrong_type("reasoning", "an object", reasoning)
    turns = _turns(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _wrong_type("instructions", "a string", instructions)
    words = len((instructions or "").split()) + sum(len(text.split()) for _, text in turns)
    sent = {
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "service_tier": tier if tier != "auto" else None,
        "reasoning_effort": reasoning.get("effort") if reasoning else None,
    }
    return _ChatRequest(
        model=model,
        prompt=next((text for role, text in reversed(turns) if role == "user"), ""),
        prompt_tokens=max(1, words),
        limit=limit,
        logprobs=LOGPROBS_INCLUDE in _include(body),
        top_logprobs=top_logprobs or 0,
        route=route,
        temperature=body.get("temperature"),
        top_logprobs_sent=top_logprobs is not None,
        sent={key: value for key, value in sent.items() if value is not None},
    )


def _refusal(req: _ChatRequest, rejects: frozenset[str]) -> _Reply | None:
    """GPT-5's 400 for a sampling parameter it does not take, or None."""
    sent = {"temperature": req.temperature is not None, "top_logprobs": req.top_logprobs_sent or req.logprobs}
    for param, refused in (
        ("temperature", "temperature"),
        ("logprobs", "top_logprobs"),
        ("top_logprobs", "top_logprobs"),
    ):
        if param in rejects and sent[refused]:
            message = f"Unsupported parameter: '{refused}' is not supported with this model."
            return _openai_error(400, message, "invalid_request_error", refused, "unsupported_parameter")
    return None


# --------------------------------------------------------------------------- faults and bodies


def _fault_reply(fault: JsonDict, model: str, request_id: str) -> _Reply:
    if fault["kind"] != "malformed":
        return _chat_fault_reply(fault, model, request_id)
    # Cut off mid-string, as a body is when a proxy or the connection gives up half-way.
    body = (
        f'{{"id":"resp_{_hex_id(48)}","object":"response","created_at":{int(time.time())},"status":"completed",'
        f'"model":{json.dumps(model)},"output":[{{"type":"message","content":[{{"type":"output_text","text":"Hel'
    )
    return _Reply(200, raw=body.encode("utf-8"), fault="malformed")


def _response_body(
    req: _ChatRequest,
    answer: str,
    tokens: int,
    truncated: bool,
    resolved: str,
    logprobs: JsonDict | None,
    echoes: JsonDict,
) -> JsonDict:
    settings = {**ECHO_DEFAULTS, **echoes, **req.sent}
    status = "incomplete" if truncated else "completed"
    text: JsonDict = {"type": "output_text", "annotations": [], "text": answer}
    if logprobs is not None:
        text["logprobs"] = logprobs["content"]
    return {
        "id": "resp_" + _hex_id(48),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": None,
        "max_output_tokens": req.limit,
        "model": resolved,
        "output": [
            {
                "id": "msg_" + _hex_id(48),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [text] if answer else [],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": settings["reasoning_effort"], "summary": None},
        "service_tier": settings["service_tier"],
        "store": False,
        "temperature": settings["temperature"],
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": req.top_logprobs,
        "top_p": settings["top_p"],
        "truncation": "disabled",
        "usage": {
            "input_tokens": req.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": req.prompt_tokens + tokens,
        },
        "user": None,
        "metadata": {},
    }


def _echoed(body: JsonDict, key: str, places: frozenset[str]) -> JsonDict:
    """The Response repeating the request's key in `places` (scenario `echo_key`), as a leaky proxy might."""
    content = body["output"][0]["content"]
    if "content" in places and content:
        content[0]["text"] = f"{content[0]['text']} {key}"
    if "logprobs" in places and content and content[0].get("logprobs"):
        alternative = {"token": key, "logprob": -30.0, "bytes": list(key.encode("utf-8"))}
        content[0]["logprobs"][0]["top_logprobs"].append(alternative)
    if "fingerprint" in places:  # the echoed settings are this wire's fingerprint
        body["service_tier"] = f"{body['service_tier']}_{key}"
    if "finish_reason" in places:
        body["status"] = f"{body['status']} {key}"
    if "model" in places:
        body["model"] = f"{body['model']}@{key}"
    if "id" in places:
        body["id"] = f"resp_{key}"
    return body
