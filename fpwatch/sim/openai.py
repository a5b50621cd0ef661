"""OpenAI (and Azure OpenAI) chat completions on the wire: request parsing, errors, faults, refusals, bodies."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from fpwatch.sim.scenario import JsonDict, _describe, _is_number
from fpwatch.sim.wire import (
    _ChatRequest,
    _hex_id,
    _html_page,
    _Rejected,
    _Reply,
    _retry_headers,
    _Route,
    _seconds_header,
)

_MAX_TOP_LOGPROBS = 20
_NULL, _ABSENT = "<null>", "<absent>"


# --------------------------------------------------------------------------- errors and faults


def _openai_error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> _Reply:
    return _Reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _Rejected:
    return _Rejected(_openai_error(400, message, "invalid_request_error", param, code))


def _azure_resource_not_found() -> _Reply:
    return _Reply(404, {"error": {"code": "404", "message": "Resource not found"}})


def _model_not_found(model: str, azure_deployment: bool) -> _Reply:
    if azure_deployment:
        message = (
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again."
        )
        return _Reply(
            404,
            {"error": {"type": "invalid_request_error", "code": "DeploymentNotFound", "message": message}},
        )
    message = f"The model `{model}` does not exist or you do not have access to it."
    return _openai_error(404, message, "invalid_request_error", None, "model_not_found")


def _auth_error(auth: str, sent_key: str | None) -> _Reply:
    if auth == "missing":
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
            "blank username) if you're accessing the API from your browser and are prompted for a "
            "username. You can obtain an API key from https://platform.openai.com/account/api-keys."
        )
        return _openai_error(401, message, "invalid_request_error")
    # The real API masks most of the key; echoing all of it is the worst case fpwatch must redact.
    message = (
        f"Incorrect API key provided: {sent_key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return _openai_error(401, message, "invalid_request_error", None, "invalid_api_key")


def _rate_limited(fault: JsonDict, model: str) -> _Reply:
    retry_after = fault.get("retry_after", 20)
    wait = f"in {_seconds_header(retry_after)}s" if not isinstance(retry_after, str) else "later"
    message = (
        f"Rate limit reached for {model} in organization org-fpwatchsimulator on requests per min "
        f"(RPM): Limit 60, Used 60, Requested 1. Please try again {wait}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )
    reply = _openai_error(429, message, "requests", None, "rate_limit_exceeded")
    reply.headers["x-ratelimit-remaining-requests"] = "0"
    _retry_headers(reply, fault)
    return reply


def _quota_exceeded() -> _Reply:
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
    return _openai_error(429, message, "insufficient_quota", None, "insufficient_quota")


def _server_error(status: int, request_id: str) -> _Reply:
    if status == 529:
        return _openai_error(529, "Overloaded", "overloaded_error", None, "overloaded")
    messages = {
        500: (
            "The server had an error processing your request. Sorry about that! You can retry your "
            "request, or contact us through our help center at help.openai.com if you keep seeing "
            f"this error. (Please include the request ID {request_id} in your email.)"
        ),
        502: "Bad gateway.",
        503: "The server is overloaded or not ready yet.",
    }
    return _openai_error(status, messages[status], "server_error")


def _malformed(model: str) -> _Reply:
    # Cut off mid-string, as a body is when a proxy or the connection gives up half-way.
    body = (
        f'{{"id":"chatcmpl-{_hex_id(29)}","object":"chat.completion","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"choices":[{{"index":0,"message":{{"role":"assistant","content":"Hel'
    )
    return _Reply(200, raw=body.encode("utf-8"))


def _custom_error(fault: JsonDict) -> _Reply:
    body = fault.get("body", {"error": {"message": "Simulated error.", "type": "invalid_request_error"}})
    return _Reply(fault["status"], copy.deepcopy(body), headers=dict(fault.get("headers", {})))


def _fault_reply(fault: JsonDict, model: str, request_id: str) -> _Reply:
    """The reply for every fault kind except `timeout`, which delays a normal answer."""
    kind = fault["kind"]
    if kind == "429":
        reply = _rate_limited(fault, model)
    elif kind == "quota":
        reply = _quota_exceeded()
    elif kind in ("500", "502", "503", "529"):
        reply = _server_error(int(kind), request_id)
        _retry_headers(reply, fault)  # only 529 takes the options
    elif kind == "malformed":
        reply = _malformed(model)
    elif kind == "html":
        reply = _html_page(fault.get("status", 502))
    elif kind == "error":
        reply = _custom_error(fault)
    else:  # disconnect
        reply = _Reply(0, disconnect=True)
    reply.fault = kind
    return reply


# --------------------------------------------------------------------------- requests


def _message_text(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def _last_user_text(messages: list[JsonDict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def _prompt_tokens(messages: list[JsonDict]) -> int:
    return max(1, sum(len(_message_text(m.get("content")).split()) for m in messages))


def _wrong_type(param: str, expected: str, value: object) -> _Rejected:
    message = f"Invalid type for '{param}': expected {expected}, but got {_describe(value)} instead."
    return _invalid(message, param, "invalid_type")


def _optional_int(body: JsonDict, param: str, low: int, high: int | None = None) -> int | None:
    """The integer `param` of the body, or None; out of range: OpenAI's 400 in its words (both APIs use them)."""
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(param, "an integer", value)
    if value < low:
        message = f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, but got {value} instead."
        raise _invalid(message, param, "integer_below_min_value")
    if high is not None and value > high:
        message = (
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, but got {value} instead."
        )
        raise _invalid(message, param, "integer_above_max_value")
    return value


def _chat_model(body: JsonDict, route: _Route) -> str:
    if route.deployment is not None:
        return route.deployment
    model = body.get("model")
    if model is None or model == "":
        raise _invalid("you must provide a model parameter", "model")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    return model


def _chat_messages(body: JsonDict) -> list[JsonDict]:
    messages = body.get("messages")
    if messages is None:
        raise _invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        message = "Invalid 'messages': empty array. Expected an array with minimum length 1."
        raise _invalid(message, "messages", "empty_array")
    for i, item in enumerate(messages):
        if not isinstance(item, dict):
            raise _wrong_type(f"messages[{i}]", "an object", item)
    return messages


def _parse_chat(body: object, route: _Route) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON.)"
        )
    model = _chat_model(body, route)
    messages = _chat_messages(body)
    if body.get("stream") is True:  # a JSON answer to a streaming request would mislead the client
        raise _invalid("The fpwatch simulator does not support stream=true.", "stream", "unsupported_value")
    if _optional_int(body, "n", 1) not in (None, 1):
        raise _invalid("Invalid 'n': the fpwatch simulator only supports n=1.", "n", "unsupported_value")
    limits = [_optional_int(body, p, 1) for p in ("max_tokens", "max_completion_tokens")]
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _wrong_type("logprobs", "a boolean", logprobs)
    top_logprobs = _optional_int(body, "top_logprobs", 0, _MAX_TOP_LOGPROBS)
    if top_logprobs is not None and logprobs is not True:
        raise _invalid(
            "Invalid value for 'top_logprobs': logprobs must be set to true if this parameter is used.",
            "top_logprobs",
            "invalid_value",
        )
    return _ChatRequest(
        model=model,
        prompt=_last_user_text(messages),
        prompt_tokens=_prompt_tokens(messages),
        limit=min((limit for limit in limits if limit is not None), default=None),
        logprobs=logprobs is True,
        top_logprobs=top_logprobs or 0,
        route=route,
        temperature=body.get("temperature"),
        seed=body.get("seed"),
        top_logprobs_sent=top_logprobs is not None,
    )


def _format_value(value: object) -> str:
    """A sent value as OpenAI's messages show it: 0.0 as "0", 0.2 as "0.2"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value)


def _refusal(req: _ChatRequest, rejects: frozenset[str]) -> _Reply | None:
    """OpenAI's 400 for a parameter a reasoning model does not take, or None."""
    temperature = req.temperature
    if "temperature" in rejects and temperature is not None and not (_is_number(temperature) and temperature == 1):
        message = (
            f"Unsupported value: 'temperature' does not support {_format_value(temperature)} with this model. "
            "Only the default (1) value is supported."
        )
        return _openai_error(400, message, "invalid_request_error", "temperature", "unsupported_value")
    sent = {"logprobs": req.logprobs, "top_logprobs": req.top_logprobs_sent, "seed": req.seed is not None}
    for param in ("logprobs", "top_logprobs", "seed"):
        if param in rejects and sent[param]:
            message = f"Unsupported parameter: '{param}' is not supported with this model."
            return _openai_error(400, message, "invalid_request_error", param, "unsupported_parameter")
    return None


def _precheck(
    method: str, path: str, route: _Route, body: object, auth: str, sent_key: str | None
) -> _Reply | _ChatRequest | None:
    """Everything decidable without state: 404 routes, auth, request validation.

    Returns an error reply, a parsed chat request, or None for the model list.
    """
    if route.kind == "not_found":
        return _openai_error(404, f"Invalid URL ({method} {path})", "invalid_request_error")
    if route.kind == "azure_not_found":
        return _azure_resource_not_found()
    if auth in ("missing", "wrong"):
        return _auth_error(auth, sent_key)
    if route.kind == "models":
        return None
    try:
        return _parse_chat(body, route)
    except _Rejected as rejected:
        return rejected.reply


# --------------------------------------------------------------------------- completions


def _token_logprob(token: str, logprob: float, top: list[tuple[str, float]]) -> JsonDict:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode("utf-8")),
        "top_logprobs": [{"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))} for text, value in top],
    }


_AZURE_FILTER_OK = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}


def _completion_body(
    req: _ChatRequest,
    content: str,
    finish: str,
    completion_tokens: int,
    logprobs: JsonDict | None,
    resolved: str,
    fingerprint: str,
) -> JsonDict:
    choice: JsonDict = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
        "logprobs": logprobs,
        "finish_reason": finish,
    }
    body: JsonDict = {
        "id": "chatcmpl-" + _hex_id(29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resolved,
        "choices": [choice],
        "usage": {
            "prompt_tokens": req.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": req.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
    }
    if fingerprint != _ABSENT:
        body["system_fingerprint"] = None if fingerprint == _NULL else fingerprint
    if req.route.azure:  # Azure adds content-filter annotations that parsers must tolerate
        choice["content_filter_results"] = copy.deepcopy(_AZURE_FILTER_OK)
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": copy.deepcopy(_AZURE_FILTER_OK)}]
    return body


def _echoed(body: JsonDict, key: str, places: frozenset[str]) -> JsonDict:
    """The answer repeating the request's key in `places` (scenario `echo_key`), as a leaky proxy might."""
    choice = body["choices"][0]
    if "content" in places:
        choice["message"]["content"] = f"{choice['message']['content']} {key}"
    logprobs = choice["logprobs"]
    if "logprobs" in places and logprobs and logprobs["content"]:
        alternative = {"token": key, "logprob": -30.0, "bytes": list(key.encode("utf-8"))}
        logprobs["content"][0]["top_logprobs"].append(alternative)
    if "finish_reason" in places:
        choice["finish_reason"] = f"{choice['finish_reason']} {key}"
    if "fingerprint" in places and isinstance(body.get("system_fingerprint"), str):
        body["system_fingerprint"] += f"_{key}"
    if "model" in places:
        body["model"] = f"{body['model']}@{key}"
    if "id" in places:
        body["id"] = f"chatcmpl-{key}"
    return body


def _replaced(body: JsonDict, replace: JsonDict) -> JsonDict:
    """The answer with the fields at these dotted paths set (or removed: "<absent>"), for a malformed fault.

    A path through something that is not there creates objects; one through a value or past a list's end
    changes nothing.
    """
    for path, value in replace.items():
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = _child(node, part)
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = copy.deepcopy(value)
        elif isinstance(node, dict) and value == _ABSENT:
            node.pop(last, None)
        elif isinstance(node, dict):
            node[last] = copy.deepcopy(value)
    return body


def _child(node: Any, part: str) -> Any:
    if isinstance(node, list):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else None
    return node.setdefault(part, {}) if isinstance(node, dict) else None
