"""What every wire format shares: routes, auth, the parsed chat request, log entries and the reply to send."""

from __future__ import annotations

import functools
import hmac
import json
import random
import re
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from fpwatch.sim.scenario import JsonDict

# --------------------------------------------------------------------------- replies

# Request and completion ids only need to be unique, not secret: a urandom-seeded generator of its
# own is ten times faster than uuid4 and leaves the scenario's seeded RNG stream alone.
_ids = random.Random(random.SystemRandom().getrandbits(64))


def _hex_id(digits: int) -> str:
    return f"{_ids.getrandbits(digits * 4):0{digits}x}"


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62_id(digits: int) -> str:
    """Letters and digits, as Anthropic's ids (msg_01..., req_011C...) are written."""
    return "".join(_ids.choices(_BASE62, k=digits))


@dataclass
class _Reply:
    """What to send back; built under the lock, encoded and sent (after `delay`) outside it."""

    status: int
    payload: object = None
    raw: bytes | None = None  # when set, sent verbatim instead of `payload` as JSON
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    disconnect: bool = False
    fault: str | None = None
    provider_headers: bool = True  # openai-* headers; admin replies do not pretend to be OpenAI

    def encoded(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")


class _Rejected(Exception):
    """Raised while parsing a request that gets an error reply instead of a completion."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _seconds_header(value: object) -> str:
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]  # validated as a number
    return str(int(number)) if number.is_integer() else f"{number:g}"


def _retry_headers(reply: _Reply, fault: JsonDict) -> None:
    """The headers a fault's retry options ask for (Retry-After, retry-after-ms, x-should-retry), none otherwise."""
    if "retry_after" in fault:
        reply.headers["Retry-After"] = _seconds_header(fault["retry_after"])
    if "retry_after_ms" in fault:
        reply.headers["retry-after-ms"] = _seconds_header(fault["retry_after_ms"])
    if "should_retry" in fault:
        reply.headers["x-should-retry"] = "true" if fault["should_retry"] else "false"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Site is overloaded" if status == 529 else "Error"


def _html_page(status: int) -> _Reply:
    # What a CDN or reverse proxy in front of a provider sends: fpwatch must not try to parse it.
    title = f"{status} {_reason(status)}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return _Reply(status, raw=page.encode("utf-8"), content_type="text/html")


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class _Route:
    kind: str  # "chat" | "models" | "not_found" | "azure_not_found" | "anthropic" (fpwatch/sim/anthropic.py)
    # | "gemini" | "gemini_not_found" (fpwatch/sim/gemini.py) | "responses" (fpwatch/sim/responses.py)
    azure: bool = False
    deployment: str | None = None  # Azure classic and Gemini: the model id comes from the path


_AZURE_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
_GEMINI_PATH = re.compile(r"^/(v1beta|v1)/models/([^/:]+):generateContent$")  # the SDK 3.x defaults to v1


@functools.lru_cache(maxsize=256)
def _split_target(target: str) -> SplitResult:
    return urlsplit(target)


@functools.lru_cache(maxsize=256)
def _match_route(method: str, url: SplitResult) -> _Route:
    path = url.path.rstrip("/") or "/"
    if method == "POST" and path == "/v1/chat/completions":
        return _Route("chat")
    if method == "POST" and path == "/v1/messages":
        return _Route("anthropic")
    if method == "POST" and path == "/v1/responses":
        return _Route("responses")
    if method == "POST" and path == "/openai/v1/chat/completions":
        return _Route("chat", azure=True)
    if method == "GET" and path in ("/v1/models", "/openai/v1/models"):
        return _Route("models")
    gemini = _GEMINI_PATH.match(path)
    if gemini:
        return _Route("gemini", deployment=unquote(gemini[2])) if method == "POST" else _Route("gemini_not_found")
    if path.startswith("/v1beta/") or ":" in path:
        return _Route("gemini_not_found")
    match = _AZURE_DEPLOYMENT_PATH.match(path)
    if method == "POST" and match:
        if not parse_qs(url.query).get("api-version"):
            return _Route("azure_not_found")  # Azure answers a missing api-version with a bare 404
        return _Route("chat", azure=True, deployment=unquote(match[1]))
    return _Route("azure_not_found" if path.startswith("/openai/") else "not_found")


def _authenticate(expected: str | None, authorization: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Return ("ok" | "missing" | "wrong" | "none-required", the key that was sent when wrong)."""
    if expected is None:
        return "none-required", None
    sent: list[str] = []
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        sent.append(credentials.strip() if scheme.lower() == "bearer" else authorization.strip())
    if api_key:
        sent.append(api_key.strip())
    sent = [key for key in sent if key]
    if any(hmac.compare_digest(key.encode(), expected.encode()) for key in sent):
        return "ok", None
    return ("wrong", sent[0]) if sent else ("missing", None)


def _credential(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request sent, right or wrong: the Authorization bearer value, else the api-key header."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


_INVALID_JSON = object()


def _parse_json(raw: bytes) -> object:
    if not raw:
        return _INVALID_JSON
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return _INVALID_JSON


@dataclass(slots=True)  # not frozen: built once per request, and a frozen __init__ costs ~1 us here
class _ChatRequest:
    model: str
    prompt: str
    prompt_tokens: int
    limit: int | None
    logprobs: bool
    top_logprobs: int
    route: _Route
    temperature: object = None  # as sent; None when not sent (checked only against `rejects`)
    seed: object = None
    top_logprobs_sent: bool = False
    credential: str | None = None  # the key the request sent, for `echo_key`; never logged
    sent: JsonDict = field(default_factory=dict)  # Responses API: the sampling settings sent, echoed as sent


def _new_entry(method: str, path: str, model: str | None, body: object, auth: str, request_id: str) -> JsonDict:
    fields: JsonDict = body if isinstance(body, dict) else {}
    return {
        "time": time.time(),
        "monotonic": time.monotonic(),
        "method": method,
        "path": path,
        "model": model,
        "status": None,
        "fault": None,
        "auth": auth,
        "request_id": request_id,
        "seed": fields.get("seed"),
        "temperature": fields.get("temperature"),
        "max_tokens": fields.get("max_tokens"),
        "max_completion_tokens": fields.get("max_completion_tokens"),
        "logprobs": fields.get("logprobs"),
        "top_logprobs": fields.get("top_logprobs"),
        # A tuple, so that the garbage collector can stop tracking an entry of plain values: a full
        # log of 100,000 tracked entries made every request ~10 us slower. requests() gives a list.
        "body_keys": tuple(sorted(str(key) for key in fields)),
    }
