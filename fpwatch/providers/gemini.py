"""The Gemini API's native wire format: `generateContent` on generativelanguage.googleapis.com.

Version signals read here (research/provider-facts.md 2.11, anchors-2026-12.md section 4): no fingerprint
at all, so `modelVersion` (the model that answered; it changes when Google re-points a name) is the resolved
model and `responseId` the response id; the first token's logprobs where the model gives them. The key goes
in the `x-goog-api-key` header, never in the URL (the API also takes `?key=`, which would put it in every
proxy's access log). Errors are google.rpc statuses, `{"error": {"code", "message", "status", "details"}}`:
a 429's wait is in the body (`RetryInfo.retryDelay`, read by `retry_delay` for the retry loop), a bad
request's field violations and a bad key's reason are in `details`. Vertex AI (the same body under another
URL and OAuth) is not this adapter's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from fpwatch.config import Canary, ModelConfig, ProviderConfig, ProviderType, Secret
from fpwatch.detect.observation import FirstToken
from fpwatch.errors import ProbeError
from fpwatch.providers.base import Parsed, Request
from fpwatch.providers.http import Exchange, server_delay
from fpwatch.providers.openai import _decode, _int, _json_type, refuse_redirect

API_VERSION = "v1beta"  # where responseLogprobs, seed and thinking models all are
_ROLES = {"user": "user", "assistant": "model"}  # system and developer messages go to systemInstruction
# A candidate that ends like this and carries no text was withheld by Google's filters, not left empty.
_BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
_RPC = "type.googleapis.com/google.rpc."
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)s\s*")  # protobuf's JSON Duration: "2s", "1.5s", "0.250s"


class GeminiAdapter:
    """Gemini API keys (Google AI Studio): `generationConfig` carries seed, temperature, token limit and logprobs."""

    spec: ClassVar[ProviderType] = ProviderType(
        "gemini",
        default_base_url="https://generativelanguage.googleapis.com",
        # Google's docs name GEMINI_API_KEY; the google-genai SDK reads GOOGLE_API_KEY first, then this one.
        key_variable="GEMINI_API_KEY",
        key_required=True,
    )
    top_logprobs = 5  # the top-5 alternatives fpwatch keeps anyway (README "Drift")

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider

    def url(self, model: ModelConfig) -> str:
        base = self.provider.base_url
        if not re.search(r"/v1(alpha|beta)?$", base):  # a base URL copied from the docs carries the version
            base = f"{base}/{API_VERSION}"
        name = model.model.removeprefix("models/")
        if name.startswith("tunedModels/"):
            resource = "tunedModels/" + quote(name.removeprefix("tunedModels/"), safe="")
        else:
            resource = "models/" + quote(name, safe="")
        return f"{base}/{resource}:generateContent"

    def build_request(self, model: ModelConfig, canary: Canary) -> Request:
        system = [{"text": m.content} for m in canary.messages if m.role not in _ROLES]
        turns = [m for m in canary.messages if m.role in _ROLES]
        contents = [{"role": _ROLES[m.role], "parts": [{"text": m.content}]} for m in turns]
        config: dict[str, Any] = {"maxOutputTokens": canary.max_tokens}
        if canary.temperature is not None:
            config["temperature"] = canary.temperature
        if canary.seed is not None:
            config["seed"] = canary.seed
        if self.asks_logprobs(canary):
            config["responseLogprobs"] = True
            top = self.top_logprobs if canary.top_logprobs is None else canary.top_logprobs
            if top:  # 0: the chosen tokens' logprobs only
                config["logprobs"] = top
        # `params` go into the body as they are; a generationConfig table among them into generationConfig
        # (thinkingConfig, topK, ...), over fpwatch's own fields.
        params = dict(model.params)
        extra = params.pop("generationConfig", None)
        if isinstance(extra, Mapping):
            config.update(extra)
        payload: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if system:
            payload["systemInstruction"] = {"parts": system}
        payload.update(params)
        headers = {"content-type": "application/json"}
        if self.provider.api_key is not None:
            headers["x-goog-api-key"] = self.provider.api_key.reveal()
        for name, value in self.provider.headers.items():
            headers[name] = value.reveal() if isinstance(value, Secret) else value
        return Request(self.url(model), headers, payload, body_delay=retry_delay)

    def asks_logprobs(self, canary: Canary) -> bool:
        return True if canary.logprobs == "auto" else canary.logprobs

    def parse(self, exchange: Exchange) -> Parsed:
        return parse_generate_content(exchange)


# --- responses ------------------------------------------------------------------------------------------


def parse_generate_content(exchange: Exchange) -> Parsed:
    """Read a GenerateContentResponse into Parsed, or raise ProbeError with Google's words and what to do."""
    refuse_redirect(exchange)
    body = _decode(exchange)
    if exchange.status >= 400 or _status_of(body) is not None:
        raise error_from(exchange, body)
    if not isinstance(body, dict):
        raise _malformed(f"a JSON {type(body).__name__}, not an object")
    usage: dict[str, Any] = body["usageMetadata"] if isinstance(body.get("usageMetadata"), dict) else {}
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise _no_candidate(body)
    candidate = candidates[0]
    if not isinstance(candidate, dict):
        raise _malformed(f"candidates[0] is {_json_type(candidate)}, not an object")
    finish = candidate.get("finishReason") if isinstance(candidate.get("finishReason"), str) else None
    output = _text(candidate)
    thoughts = _int(usage.get("thoughtsTokenCount"))
    if not output and finish in _BLOCKED:
        raise ProbeError(
            "content_filter",
            f"Gemini withheld the answer (finishReason {finish})",
            "Google's safety filters blocked the canary's answer; change its prompt",
            permanent=True,
            status=exchange.status,
        )
    if not output and finish == "MAX_TOKENS" and thoughts:
        raise ProbeError(
            "bad_request",
            f"the model thought for {thoughts} tokens and ran out before answering (finishReason MAX_TOKENS)",
            "a thinking model's thoughts count against max_tokens: raise the canary's max_tokens, or turn thinking "
            "down with params = { generationConfig = { thinkingConfig = { thinkingBudget = 0 } } } where the model "
            "allows it",
            permanent=True,
            status=exchange.status,
        )
    answered = _int(usage.get("candidatesTokenCount"))
    version = body.get("modelVersion")
    return Parsed(
        fingerprint=None,
        fingerprint_state="absent",  # the Gemini API has no fingerprint: modelVersion is the version signal
        response_model=version.removeprefix("models/") if isinstance(version, str) and version else None,
        output=output,
        finish_reason=finish,
        first_token=_first_token(candidate.get("logprobsResult")),
        input_tokens=_int(usage.get("promptTokenCount")),
        # As OpenAI's completion_tokens: the thoughts are output too (and billed as such).
        output_tokens=None if answered is None and thoughts is None else (answered or 0) + (thoughts or 0),
        reasoning_tokens=thoughts,
        response_id=body.get("responseId") if isinstance(body.get("responseId"), str) else None,
    )


def _text(candidate: Mapping[str, Any]) -> str:
    """The answer: the text parts, without thoughts (a part marked `thought: true`) or tool calls."""
    content = candidate.get("content")
    if content is None:  # a blocked answer, or one that ran out of tokens while thinking, has no content
        return ""
    if not isinstance(content, dict):
        raise _malformed(f"candidates[0].content is {_json_type(content)}, not an object")
    parts = content.get("parts", [])
    if not isinstance(parts, list):
        raise _malformed(f"candidates[0].content.parts is {_json_type(parts)}, not a list")
    texts: list[str] = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _malformed(f"candidates[0].content.parts[{i}] is {_json_type(part)}, not a part")
        if "text" not in part or part.get("thought") is True:
            continue
        if not isinstance(part["text"], str):
            raise _malformed(f"candidates[0].content.parts[{i}].text is {_json_type(part['text'])}, not a string")
        texts.append(part["text"])
    return "".join(texts)


def _first_token(result: Any) -> FirstToken | None:
    """The first chosen token and its top alternatives, from `logprobsResult`."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    if not isinstance(chosen, list) or not chosen or not isinstance(chosen[0], dict):
        return None
    token, logprob = chosen[0].get("token"), _logprob(chosen[0])
    if not isinstance(token, str) or logprob is None:
        return None
    top: dict[str, float] = {}
    steps = result.get("topCandidates")
    first = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else {}
    for alt in first.get("candidates") or []:
        value = _logprob(alt) if isinstance(alt, dict) else None
        if value is not None and isinstance(alt.get("token"), str):
            top.setdefault(alt["token"], value)
    return FirstToken(token, logprob, top)


def _logprob(entry: Mapping[str, Any]) -> float | None:
    # proto3 JSON leaves out fields at their default: a certain token (log probability 0) has no logProbability.
    value = entry.get("logProbability", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _no_candidate(body: Mapping[str, Any]) -> ProbeError:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(reason, str):
        said = f"Gemini blocked the prompt (promptFeedback.blockReason {reason})"
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReasonMessage"), str):
            said = f"{said}: {feedback['blockReasonMessage']}"
        return ProbeError("content_filter", said, "Google's safety filters blocked the canary; change its prompt")
    return ProbeError(
        "malformed",
        f"unexpected response shape: no candidates[0] (keys: {', '.join(sorted(body))[:200]})",
        "is this the Gemini API? check the provider's type and base_url",
    )


def _malformed(what: str) -> ProbeError:
    return ProbeError(
        "malformed",
        f"unexpected response shape: {what}",
        "the provider, or a proxy in between, answered with a broken generateContent response",
    )


# --- errors ---------------------------------------------------------------------------------------------


def _status_of(body: Any) -> Mapping[str, Any] | None:
    """The google.rpc status of an error body (an object, or a list of one as some Google front ends send)."""
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _details(status: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    details = status.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == _RPC + kind]


def _daily_quota(status: Mapping[str, Any]) -> str | None:
    """The quota id of a per-day quota the request ran into: that wait is hours, not seconds."""
    for failure in _details(status, "QuotaFailure"):
        for violation in failure.get("violations") or []:
            quota = violation.get("quotaId") if isinstance(violation, dict) else None
            if isinstance(quota, str) and "PerDay" in quota:
                return quota
    return None


def retry_delay(body: bytes) -> float | None:
    """Seconds a Gemini error body asks to wait (`RetryInfo.retryDelay`); math.inf for a daily quota, which
    no retry within a check can outwait; None when it does not say. The retry loop's `BodyDelay`."""
    try:
        status = _status_of(json.loads(body))
    except (UnicodeDecodeError, ValueError):
        return None
    if status is None:
        return None
    if _daily_quota(status):
        return math.inf
    for info in _details(status, "RetryInfo"):
        delay = info.get("retryDelay")
        match = _DURATION.fullmatch(delay) if isinstance(delay, str) else None
        if match:
            return float(match.group(1))
    return None


def _words(status: Mapping[str, Any]) -> str:
    """Google's message, with each field violation it does not already say (as `field: description`)."""
    message = " ".join(str(status.get("message") or "").split())
    extra: list[str] = []
    for request in _details(status, "BadRequest"):
        for violation in request.get("fieldViolations") or []:
            if not isinstance(violation, dict):
                continue
            description = " ".join(str(violation.get("description") or "").split())
            text = f"{violation['field']}: {description}" if violation.get("field") else description
            if description and description not in message and text not in extra:
                extra.append(text)
    return "; ".join(filter(None, [message, *extra])) or "no error message"


def error_from(exchange: Exchange, body: Any) -> ProbeError:
    """A ProbeError carrying Google's own message and the hint that fixes it."""
    http = exchange.status
    status = _status_of(body) or {}
    name = status.get("status") if isinstance(status.get("status"), str) else None
    reasons = {d.get("reason") for d in _details(status, "ErrorInfo")}
    said = _words(status)
    attempts = len(exchange.attempts)
    tag = " ".join(filter(None, [f"HTTP {http}", name])) + (f" after {attempts} attempts" if attempts > 1 else "")

    def err(kind: str, hint: str, *, permanent: bool, canary_setting: str | None = None) -> ProbeError:
        return ProbeError(
            kind, f"{said} ({tag})", hint, permanent=permanent, status=http, canary_setting=canary_setting
        )

    lowered = said.lower()
    if "API_KEY_INVALID" in reasons or http in (401, 403) or name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        hint = "check the provider's api_key: a Gemini API key (from Google AI Studio), sent as x-goog-api-key"
        if "SERVICE_DISABLED" in reasons:
            hint = "enable the Generative Language API for the key's Google Cloud project"
        return err("auth", hint, permanent=True)
    if http == 404 or name == "NOT_FOUND":
        hint = "check the model id (e.g. gemini-2.5-flash; GET /v1beta/models lists them) and the provider's base_url"
        return err("not_found", hint, permanent=True)
    if http == 429 or name == "RESOURCE_EXHAUSTED":
        daily = _daily_quota(status)
        if daily:
            hint = f"the daily quota {daily} is used up until it resets at midnight Pacific time; not retried"
            return err("quota", hint, permanent=False)
        delay = server_delay(exchange.headers)
        delay = retry_delay(exchange.body) if delay is None else delay
        wait = f"; the server asked to wait {delay:g}s" if delay is not None else ""
        return err("rate_limited", f"rate limited{wait}: lower max_concurrency or raise the interval", permanent=False)
    if http >= 500:
        hint = "the provider failed; fpwatch retried within the timeout and will try next check"
        return err("server_error", hint, permanent=False)
    if http == 400 or name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE") or http == 200:
        if "location is not supported" in lowered:
            return err("bad_request", "the Gemini API does not serve the region fpwatch runs in", permanent=True)
        for option, hint in _OPTION_HINTS:
            if option in lowered:
                return err("bad_request", hint, permanent=True, canary_setting=_SETTINGS.get(option))
        hint = "the request was refused; check the model's params and the canary's settings"
        return err("bad_request", hint, permanent=True)
    return err("http_error", "", permanent=False)


# In the order they are looked for in Google's words: the hint for the first one found.
_OPTION_HINTS = (
    ("logprobs", "this model rejects logprobs: set logprobs = false on the canary"),
    ("temperature", 'this model rejects temperature: set temperature = "default" on the canary'),
    ("seed", 'this model rejects seed: set seed = "none" on the canary'),
    ("generation_config", "check the model's params: generationConfig takes Gemini's own field names"),
)
_SETTINGS = {"logprobs": "logprobs", "temperature": "temperature", "seed": "seed"}
