"""The OpenAI Chat Completions wire format: OpenAI, Azure OpenAI and every OpenAI-compatible server.

Version signals read here (research/provider-facts.md): `system_fingerprint` with null, empty and
absent kept distinct; the resolved `model`; `x-request-id`; the first token's logprobs. Error bodies
come in many shapes (OpenAI's envelope, Azure's string codes, OpenRouter's integer codes and raw
upstream errors, xAI's plain strings, Gemini's JSON array); each becomes one readable message with
the provider's own words and the hint that fixes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fpwatch.config import Canary, ModelConfig, ProviderConfig, ProviderType, Secret
from fpwatch.detect.observation import FingerprintState, FirstToken
from fpwatch.errors import ProbeError
from fpwatch.providers.base import Parsed, Request
from fpwatch.providers.http import Exchange, server_delay


class OpenAIAdapter:
    """api.openai.com: Bearer auth, `max_completion_tokens`, logprobs by default (top 20)."""

    spec: ClassVar[ProviderType] = ProviderType(
        "openai", default_base_url="https://api.openai.com/v1", key_variable="OPENAI_API_KEY", key_required=True
    )
    auto_logprobs = True
    top_logprobs = 20
    token_field = "max_completion_tokens"

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider

    def url(self, model: ModelConfig) -> tuple[str, Mapping[str, str] | None]:
        return f"{self.provider.base_url}/chat/completions", None

    def auth_headers(self) -> dict[str, str]:
        key = self.provider.api_key
        return {"authorization": f"Bearer {key.reveal()}"} if key else {}

    def build_request(self, model: ModelConfig, canary: Canary) -> Request:
        payload: dict[str, Any] = {
            "model": model.model,
            "messages": [{"role": m.role, "content": m.content} for m in canary.messages],
        }
        if canary.seed is not None:
            payload["seed"] = canary.seed
        if canary.temperature is not None:
            payload["temperature"] = canary.temperature
        if not {"max_tokens", "max_completion_tokens"} & set(model.params):
            payload[self.token_field] = canary.max_tokens
        if self.asks_logprobs(canary):
            payload["logprobs"] = True
            top = canary.top_logprobs
            payload["top_logprobs"] = self.top_logprobs if top is None else top
        payload.update(model.params)
        url, params = self.url(model)
        return Request(url, self.headers(), payload, params)

    def headers(self) -> dict[str, str]:
        """JSON, the key, and the provider's own headers (which may be secrets)."""
        headers = {"content-type": "application/json", **self.auth_headers()}
        for name, value in self.provider.headers.items():
            headers[name] = value.reveal() if isinstance(value, Secret) else value
        return headers

    def asks_logprobs(self, canary: Canary) -> bool:
        return self.auto_logprobs if canary.logprobs == "auto" else canary.logprobs

    def parse(self, exchange: Exchange) -> Parsed:
        return parse_chat_completion(exchange)


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Any server speaking the format (xAI, Groq, vLLM, llama.cpp, Ollama, OpenRouter, ...).

    `max_tokens` because many servers do not know `max_completion_tokens`; logprobs with the top 5 (what
    most hosts allow): a server that rejects the field, or ignores it, is adapted once per model id.
    """

    spec: ClassVar[ProviderType] = ProviderType("openai-compatible", base_url_example="http://127.0.0.1:8000/v1")
    top_logprobs = 5
    token_field = "max_tokens"


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: `api-key` header; the classic deployment path with `api-version`, or the v1 path."""

    spec: ClassVar[ProviderType] = ProviderType(
        "azure",
        base_url_example="https://myres.openai.azure.com",
        key_variable="AZURE_OPENAI_API_KEY",
        key_required=True,
        extra_keys=("api_version",),  # the classic deployment path; without it, Azure's v1 path
    )
    top_logprobs = 5
    token_field = "max_tokens"

    def url(self, model: ModelConfig) -> tuple[str, Mapping[str, str] | None]:
        base = self.provider.base_url
        version = self.provider.extra.get("api_version")
        if version and not base.endswith("/openai/v1"):
            return f"{base}/openai/deployments/{model.model}/chat/completions", {"api-version": version}
        root = base if base.endswith("/openai/v1") else f"{base}/openai/v1"
        return f"{root}/chat/completions", None

    def auth_headers(self) -> dict[str, str]:
        key = self.provider.api_key
        return {"api-key": key.reveal()} if key else {}


# --- responses ------------------------------------------------------------------------------------------


def refuse_redirect(exchange: Exchange) -> None:
    """A 3xx is not followed (the client sets follow_redirects=False): the base URL is not the final one."""
    if 300 <= exchange.status < 400:
        where = exchange.headers.get("location", "somewhere else")
        raise ProbeError(
            "redirect",
            f"the server redirected (HTTP {exchange.status}) to {where}; set the provider's base_url to the final URL",
            permanent=True,
            status=exchange.status,
        )


def parse_chat_completion(exchange: Exchange) -> Parsed:
    """Read a chat.completion body into Parsed, or raise ProbeError explaining what went wrong."""
    refuse_redirect(exchange)
    body = _decode(exchange)
    if exchange.status >= 400 or _is_error_body(body):
        raise error_from(exchange, body)
    if not isinstance(body, dict):
        raise ProbeError("malformed", f"unexpected response: a JSON {type(body).__name__}, not an object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProbeError(
            "malformed",
            f"unexpected response shape: no choices[0] (keys: {', '.join(sorted(body))[:200]}); "
            "is this an OpenAI-compatible endpoint? check the provider's type and base_url",
        )
    choice = choices[0]
    output = _output(choice)
    fingerprint, state = _fingerprint(body)
    usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
    details = usage.get("completion_tokens_details")
    return Parsed(
        fingerprint=fingerprint,
        fingerprint_state=state,
        response_model=body.get("model") if isinstance(body.get("model"), str) else None,
        output=output,
        finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        first_token=_first_token(choice.get("logprobs")),
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(details.get("reasoning_tokens")) if isinstance(details, dict) else None,
        response_id=body.get("id") if isinstance(body.get("id"), str) else None,
    )


def _output(choice: Mapping[str, Any]) -> str:
    """The answer's text; a message or content of the wrong type is a malformed answer, not an empty one."""
    field = next((f for f in ("message", "delta") if f in choice), None)  # a stream chunk has a delta
    if field is None:
        raise _malformed(f"choices[0] has no message (keys: {', '.join(sorted(choice))[:200]})")
    where, message = f"choices[0].{field}", choice[field]
    if not isinstance(message, dict):
        raise _malformed(f"{where} is {_json_type(message)}, not an object")
    content = message.get("content")
    if content is None and isinstance(message.get("refusal"), str):
        return str(message["refusal"])  # a refusal is the model's answer to the canary; record its text
    if content is None or isinstance(content, str):  # null: no text (an empty stream chunk, a tool call)
        return content or ""
    if not isinstance(content, list):
        raise _malformed(f"{where}.content is {_json_type(content)}, not a string")
    return joined_text(content, f"{where}.content", untyped="text")  # content parts, as some servers send


def joined_text(parts: list[Any], where: str, *, untyped: str | None = None, noun: str = "content part") -> str:
    """The `text` parts of a list of typed parts, joined (thinking, tool and image parts are not the answer); a part
    that is not an object with a string `type` (`untyped`: the type a part without one has) or a text part whose
    `text` is not a string is malformed, named by its place."""
    texts: list[str] = []
    for i, part in enumerate(parts):
        kind = part.get("type", untyped) if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise _malformed(f"{where}[{i}] is {_json_type(part)}, not a {noun}")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _malformed(f"{where}[{i}].text is {_json_type(part.get('text'))}, not a string")
            texts.append(part["text"])
    return "".join(texts)


def _malformed(what: str) -> ProbeError:
    return ProbeError(
        "malformed",
        f"unexpected response shape: {what}",
        "the provider, or a proxy in between, answered with a broken completion",
    )


def _json_type(value: Any) -> str:
    """A JSON value's type for a person: "null", "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _fingerprint(body: Mapping[str, Any]) -> tuple[str | None, FingerprintState]:
    if "system_fingerprint" not in body:
        return None, "absent"
    value = body["system_fingerprint"]
    if value is None:
        return None, "null"
    if not isinstance(value, str):  # a broken version signal, not a missing one: its own state
        return None, "invalid"
    if not value.strip():
        return None, "empty"
    return value.strip(), "present"


def _first_token(logprobs: Any) -> FirstToken | None:
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    token, logprob = first.get("token"), first.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, int | float):
        return None
    top: dict[str, float] = {}
    for alt in first.get("top_logprobs") or []:
        if isinstance(alt, dict) and isinstance(alt.get("token"), str) and isinstance(alt.get("logprob"), int | float):
            top.setdefault(alt["token"], float(alt["logprob"]))
    return FirstToken(token, float(logprob), top)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decode(exchange: Exchange) -> Any:
    text = exchange.body.decode("utf-8", errors="replace")
    content_type = exchange.headers.get("content-type", "")
    stripped = text.lstrip()
    if "html" in content_type or stripped[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        what = f' titled "{" ".join(title.group(1).split())[:80]}"' if title else ""
        raise ProbeError(
            "malformed",
            f"the server answered HTTP {exchange.status} with an HTML page{what} instead of JSON; "
            "check the provider's base_url, or a proxy in between",
            status=exchange.status,
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if exchange.status >= 400:  # e.g. a 429 with headers only: the status says enough
            return {"error": {"message": " ".join(stripped[:200].split()) or "(empty body)"}}
        excerpt = " ".join(stripped[:60].split())
        raise ProbeError(
            "malformed",
            f"the server answered HTTP {exchange.status} with a body that is not valid JSON "
            f"({len(exchange.body)} bytes, starting {excerpt!r}); the provider or a proxy is misbehaving",
            status=exchange.status,
        ) from None


def _is_error_body(body: Any) -> bool:
    if isinstance(body, list):
        return bool(body) and isinstance(body[0], dict) and "error" in body[0]
    if not isinstance(body, dict):
        return False
    if body.get("object") == "error" or body.get("type") == "error":
        return True
    return "error" in body and "choices" not in body  # OpenRouter and Azure filters answer 200 with an error


@dataclass(frozen=True)
class _Error:
    message: str
    type: str | None
    code: str | None
    param: str | None


def _error_fields(body: Any) -> _Error:
    """Normalise the error envelopes seen in the wild into one shape."""
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, dict):
        return _Error("", None, None, None)
    err = body.get("error")
    if isinstance(err, str):  # xAI: {"code": "<grpc status text>", "error": "<message>"}
        code = body.get("code")
        return _Error(err, None, str(code) if code is not None else None, None)
    if not isinstance(err, dict):  # Mistral: {"object": "error", "message": ..., "type": ..., "code": ...}
        err = body
    message = str(err.get("message") or "")
    metadata = err.get("metadata")
    if isinstance(metadata, dict):
        raw = metadata.get("raw")
        upstream = None
        if isinstance(raw, str):
            try:
                upstream = _error_fields(json.loads(raw)).message or raw
            except json.JSONDecodeError:
                upstream = raw
        elif isinstance(raw, dict):
            upstream = _error_fields(raw).message
        who = metadata.get("provider_name")
        if upstream:
            message = f"{message}: {upstream}" if message else upstream
        if who:
            message = f"{message} (upstream provider {who})"
        if metadata.get("remedy_hint"):
            message = f"{message}; {metadata['remedy_hint']}"
    code = err.get("code")
    type_ = err.get("type") or err.get("status")
    param = err.get("param")
    return _Error(
        " ".join(message.split()),
        str(type_) if type_ is not None else None,
        str(code) if code is not None else None,
        str(param) if param is not None else None,
    )


def error_from(exchange: Exchange, body: Any, token_field: str = "max_completion_tokens") -> ProbeError:
    """A ProbeError carrying the provider's own message and the hint that fixes it (`token_field`: what the API
    calls the output-token limit, which a refused `max_tokens` is told to use)."""
    status = exchange.status
    fields = _error_fields(body)
    said = fields.message or "no error message"
    tag = f"HTTP {status}"
    if status == 200:
        tag = "HTTP 200 with an error body"
    words = " ".join(filter(None, [fields.type, fields.code, fields.param, said])).lower()
    attempts = len(exchange.attempts)
    retried = f" after {attempts} attempts" if attempts > 1 else ""

    def err(kind: str, hint: str, *, permanent: bool, canary_setting: str | None = None) -> ProbeError:
        said_at = f"{said} ({tag}{retried})"
        return ProbeError(
            kind, said_at, hint, param=fields.param, permanent=permanent, status=status, canary_setting=canary_setting
        )

    if "insufficient_quota" in words or status == 402:
        hint = "the account is out of quota or credits; fpwatch does not retry this: check billing"
        return err("quota", hint, permanent=True)
    if "content_filter" in words or "responsibleaipolicyviolation" in words:
        return err(
            "content_filter", "the provider's content filter blocked the canary; change its prompt", permanent=True
        )
    if status in (401, 403) or "api_key" in words or "invalid api key" in words:
        hint = "check the provider's api_key (or api_key_file) and that the key is active"
        return err("auth", hint, permanent=True)
    if status == 404:
        hint = "check the model id (for Azure: the deployment name), and the provider's base_url and api_version"
        return err("not_found", hint, permanent=True)
    if status == 429 or "rate_limit" in words or "overloaded" in words:
        delay = server_delay(exchange.headers)
        wait = f"; the server asked to wait {delay:.0f}s" if delay else ""
        return err("rate_limited", f"rate limited{wait}: lower max_concurrency or raise the interval", permanent=False)
    if status >= 500:
        hint = "the provider failed; fpwatch retried within the timeout and will try next check"
        return err("server_error", hint, permanent=False)
    if status in (400, 422) or status == 200:
        hint, setting = _bad_request_hint(fields, words, token_field)
        return err("bad_request", hint, permanent=True, canary_setting=setting)
    return err("http_error", "", permanent=False)


def _bad_request_hint(fields: _Error, words: str, token_field: str) -> tuple[str, str | None]:
    """The hint, and the canary setting it asks to change (None: the fix is elsewhere)."""
    param = (fields.param or "").lower()
    if "temperature" in param or "temperature" in words:
        return 'this model rejects temperature: set temperature = "default" on the canary', "temperature"
    if "logprobs" in param or "logprobs" in words:
        return "this model rejects logprobs: set logprobs = false on the canary", "logprobs"
    if "max_tokens" in param or "max_tokens" in words:
        return f"this model wants {token_field}: set params = {{ {token_field} = N }} on the model", None
    if "seed" in param or "seed" in words:
        return 'this model rejects seed: set seed = "none" on the canary', "seed"
    if "role" in param or "system" in words:
        return "this model rejects a message role: use a single user message (prompt = ...) in the canary", None
    return "the request was refused; check the model's params and the canary's settings", None
