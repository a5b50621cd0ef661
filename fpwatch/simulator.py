"""A simulated OpenAI-compatible chat API on loopback, scriptable while it runs.

`fpwatch simulate --scenario FILE` serves it for trying configs and alert routing; `fpwatch demo`,
the test suite and the detection benchmark drive it from Python (`Simulator`) or over HTTP (the
`/_sim/` admin endpoints). It is a real HTTP/1.1 server, so fpwatch's own HTTP client, retries,
timeouts and parsers run exactly as they do against a provider.

Routes
------
- ``POST /v1/chat/completions``: OpenAI and OpenAI-compatible providers (model from the body).
- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``: Azure OpenAI (classic);
  the deployment name is the model id. Without ``api-version`` the answer is Azure's 404.
- ``POST /openai/v1/chat/completions``: Azure OpenAI v1 (model from the body).
- ``GET /v1/models``: the models the scenario names.

When the simulator has an API key, requests must send ``Authorization: Bearer KEY`` or
``api-key: KEY``. A wrong key gets OpenAI's 401 whose message *repeats the key that was sent*, so
fpwatch's tests can prove that fpwatch redacts secrets a provider echoes back.

Scenario format
---------------
A scenario is a JSON object or a TOML file with the same structure. Every key is optional; an
unknown key is an error that names the key and where it is. With no scenario (or no ``models``
key) every model id is served with the defaults below.

.. code-block:: toml

    seed = 7                                  # RNG seed; else the simulator's own seed; else random

    [models."gpt-4o"]
    resolved = "gpt-4o-2024-08-06"            # the response's "model"; default: the requested id
    fingerprints = { fp_44709d6fcb = 0.5, fp_6ca29cf396 = 0.5 }
    latency = 0.05                            # seconds before answering
    latency_jitter = 0.02                     # plus uniform(0, latency_jitter)
    logprob_jitter = 0.01                     # gaussian sd added to every reported logprob
    error_rate = 0.01                         # share of requests that get a random fault ...
    error_kinds = ["500", "503"]              # ... drawn from these
    faults = [{ kind = "429", retry_after = 2 }]   # one-shot faults for the next requests

    [models."gpt-4o".outputs]
    "What is 17*23? Answer with the number only." = { "391" = 0.97, "392" = 0.03 }
    "*" = "Hello!"

    [models."*"]                              # any model id not listed above
    latency = 0.01

    [[phases]]                                # at 5 s after start, patch gpt-4o's settings
    at = 5.0
    [phases.models."gpt-4o"]
    fingerprints = { fp_44709d6fcb = 0.5, fp_new0000000 = 0.5 }

Model settings (all optional):

``resolved``
    A model name, or a weighted pool ``{"gpt-4o-2024-08-06": 0.7, "gpt-4o-2024-11-20": 0.3}``
    drawn per request. Default (or ``null``): the requested model id.
``fingerprints``
    A weighted pool of ``system_fingerprint`` values, drawn per request (a single string means
    always that value). Special values: ``"<null>"`` sends JSON ``null``, ``"<absent>"`` leaves the
    key out, ``""`` sends an empty string. Default (or ``null``): ``fp_`` + 10 hex characters
    derived from the model id.
``outputs``
    Answer distributions keyed by prompt. A key matches when it equals the last user message's
    text; otherwise the longest key that is a substring of it wins; ``"*"`` is the fallback. Each
    value is a weighted pool of answers (or one answer string). A prompt nothing matches gets one
    deterministic short answer derived from the model id and the prompt.
``latency``, ``latency_jitter``, ``logprob_jitter``
    Non-negative seconds / standard deviation, default 0.
``error_rate``, ``error_kinds``
    Probability (0..1, default 0) that a request gets a fault drawn uniformly from ``error_kinds``
    (default ``["500"]``).
``faults``
    One-shot faults, consumed in order by that model's next requests (before ``error_rate``).

Weights are non-negative numbers and need not sum to 1. Models listed by name do not inherit from
``"*"``; a model created later by ``update_model``, a phase or ``PATCH /_sim/models/NAME`` starts
from ``"*"``'s settings.

Phases are timed patches: ``at`` seconds after the scenario was installed (or the server started),
each model's settings are shallow-merged into its current ones, exactly like ``update_model``.
Setting ``faults`` this way replaces that model's pending one-shot faults.

Faults
------
Each fault is an object with a ``kind`` (a bare string such as ``"500"`` is shorthand for
``{"kind": "500"}``):

- ``{"kind": "429", "retry_after": 2, "retry_after_ms": 1500, "should_retry": false}``: HTTP 429
  ``rate_limit_exceeded``; each option adds its header (``Retry-After``, ``retry-after-ms``,
  ``x-should-retry``), and none is sent unless asked for.
- ``{"kind": "quota"}``: 429 ``insufficient_quota``, no ``Retry-After``.
- ``{"kind": "500"}``, ``"502"``, ``"503"``: OpenAI ``server_error`` bodies; ``"529"``: overloaded.
- ``{"kind": "timeout", "delay": 30}``: wait ``delay`` seconds (default 30), then answer normally.
- ``{"kind": "malformed"}``: HTTP 200 with a truncated JSON body.
- ``{"kind": "html", "status": 502}``: an HTML error page from a "proxy" (default 502).
- ``{"kind": "error", "status": 400, "body": {...}, "headers": {...}}``: exactly that response.
- ``{"kind": "disconnect"}``: close the connection without answering.

Admin endpoints (no auth)
-------------------------
``GET /_sim/scenario`` (the current state as a scenario: settings after updates and phases,
pending faults, phases still to come), ``PUT /_sim/scenario``, ``PATCH /_sim/models/NAME`` (body:
settings), ``POST /_sim/models/NAME/faults`` (body: list of faults), ``GET /_sim/requests``,
``DELETE /_sim/requests``. Bad input gets 400 ``{"error": "..."}``. The request log never holds a
key, only whether auth was ``ok``, ``missing``, ``wrong`` or ``none-required``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import hashlib
import hmac
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import tomllib
import traceback
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

__all__ = ["Simulator", "load_scenario", "serve", "validate_scenario"]

JsonDict = dict[str, Any]

_DEFAULT_FAULT_DELAY = 30.0
_MAX_BODY_BYTES = 16 * 1024 * 1024
_MAX_LOG_ENTRIES = 100_000  # a long `fpwatch simulate` session must not grow without bound
_MAX_TOP_LOGPROBS = 20

_SCENARIO_KEYS = ("seed", "models", "phases")
_PHASE_KEYS = ("at", "models")
_MODEL_KEYS = (
    "resolved",
    "fingerprints",
    "latency",
    "latency_jitter",
    "outputs",
    "logprob_jitter",
    "error_rate",
    "error_kinds",
    "faults",
)
_FAULT_OPTIONS: dict[str, tuple[str, ...]] = {
    "429": ("retry_after", "retry_after_ms", "should_retry"),
    "quota": (),
    "500": (),
    "502": (),
    "503": (),
    "529": (),
    "timeout": ("delay",),
    "malformed": (),
    "html": ("status",),
    "error": ("status", "body", "headers"),
    "disconnect": (),
}
_NULL, _ABSENT = "<null>", "<absent>"


# --------------------------------------------------------------------------- validation


def _describe(value: object) -> str:
    """Name a value's JSON type for error messages ("a list", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _key_loc(parent: str, key: str) -> str:
    """`models["gpt-3.5-turbo"]`: quoted, because model ids and prompts contain dots and spaces."""
    return f"{parent}[{json.dumps(key)}]"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(obj: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; expected one of: {', '.join(allowed)}")


def _as_object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"{where}: keys must be strings, got {key!r}")
    return value


def _number(value: object, where: str, *, high: float | None = None) -> float:
    if not _is_number(value):
        raise ValueError(f"{where}: expected a number, got {_describe(value)}")
    number = float(value)  # type: ignore[arg-type]  # _is_number checked it
    if number < 0 or (high is not None and number > high):
        limit = f"between 0 and {high:g}" if high is not None else ">= 0"
        raise ValueError(f"{where}: must be {limit}, got {number:g}")
    return number


def _weights(value: object, where: str, what: str) -> dict[str, float]:
    """A weighted pool: `{value: weight}`, or one string meaning `{string: 1}`."""
    if isinstance(value, str):
        return {value: 1.0}
    pool = _as_object(value, where)
    if not pool:
        raise ValueError(f"{where}: expected {what} -> weight pairs, got an empty object")
    weights = {key: _number(weight, _key_loc(where, key)) for key, weight in pool.items()}
    if sum(weights.values()) <= 0:
        raise ValueError(f"{where}: at least one weight must be greater than 0")
    return weights


def _optional_weights(value: object, where: str, what: str) -> dict[str, float] | None:
    # null restores the default, which is the only way to undo a pool with update_model.
    return None if value is None else _weights(value, where, what)


def _outputs(value: object, where: str) -> dict[str, dict[str, float]]:
    prompts = _as_object(value, where)
    return {prompt: _weights(dist, _key_loc(where, prompt), "answer") for prompt, dist in prompts.items()}


def _fault_kind(value: object, where: str) -> str:
    # TOML users naturally write `kind = 500`; status-like kinds are accepted as integers too.
    kind = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(kind, str) or kind not in _FAULT_OPTIONS:
        close = difflib.get_close_matches(str(kind), list(_FAULT_OPTIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{where}.kind: unknown fault kind {value!r}{hint}; expected one of: {', '.join(_FAULT_OPTIONS)}"
        )
    return kind


def _status(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 599:
        raise ValueError(f"{where}: expected an HTTP status between 200 and 599, got {value!r}")
    return value


def _fault_option(name: str, value: object, where: str) -> object:
    if name == "retry_after":
        # A string is sent verbatim, e.g. an HTTP-date, to test that form of the header.
        if isinstance(value, str) and value:
            return value
        return _number(value, where)
    if name in ("retry_after_ms", "delay"):
        return _number(value, where)
    if name == "should_retry":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if name == "status":
        return _status(value, where)
    if name == "headers":
        headers = _as_object(value, where)
        for header, text in headers.items():
            if not isinstance(text, str):
                raise ValueError(f"{_key_loc(where, header)}: expected a string, got {_describe(text)}")
        return dict(headers)
    try:  # "body": anything JSON can carry
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not JSON-serialisable: {exc}") from None
    return copy.deepcopy(value)


def _fault(value: object, where: str) -> JsonDict:
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = {"kind": value}
    spec = _as_object(value, where)
    if "kind" not in spec:
        raise ValueError(f"{where}: a fault needs a 'kind'")
    kind = _fault_kind(spec["kind"], where)
    _check_keys(spec, ("kind", *_FAULT_OPTIONS[kind]), where)
    if kind == "error" and "status" not in spec:
        raise ValueError(f"{where}: an 'error' fault needs a 'status'")
    fault: JsonDict = {"kind": kind}
    for name in _FAULT_OPTIONS[kind]:
        if name in spec:
            fault[name] = _fault_option(name, spec[name], f"{where}.{name}")
    return fault


def _faults(value: object, where: str, *, non_empty: bool = False) -> list[JsonDict]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of faults, got {_describe(value)}")
    if non_empty and not value:
        raise ValueError(f"{where}: must list at least one fault kind")
    return [_fault(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _validate_setting(key: str, value: object, where: str) -> object:
    if key == "resolved":
        return _optional_weights(value, where, "model name")
    if key == "fingerprints":
        return _optional_weights(value, where, "fingerprint")
    if key == "outputs":
        return _outputs(value, where)
    if key == "error_rate":
        return _number(value, where, high=1.0)
    if key == "error_kinds":
        return _faults(value, where, non_empty=True)
    if key == "faults":
        return _faults(value, where)
    return _number(value, where)  # latency, latency_jitter, logprob_jitter


def _validate_settings(value: object, where: str) -> JsonDict:
    """Check one model's settings and return a fresh, normalised copy the caller cannot mutate."""
    settings = _as_object(value, where)
    _check_keys(settings, _MODEL_KEYS, where)
    return {key: _validate_setting(key, item, f"{where}.{key}") for key, item in settings.items()}


def _check_model_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a model name must be a non-empty string, got {name!r}")
    return name


def _validate_models(value: object, where: str) -> dict[str, JsonDict]:
    models = _as_object(value, where)
    for name in models:
        _check_model_name(name, where)
    return {name: _validate_settings(settings, _key_loc(where, name)) for name, settings in models.items()}


def _validate_phase(value: object, where: str) -> JsonDict:
    phase = _as_object(value, where)
    _check_keys(phase, _PHASE_KEYS, where)
    for key in _PHASE_KEYS:
        if key not in phase:
            raise ValueError(f"{where}: a phase needs {key!r}")
    return {
        "at": _number(phase["at"], f"{where}.at"),
        "models": _validate_models(phase["models"], f"{where}.models"),
    }


def validate_scenario(scenario: object) -> JsonDict:
    """Check a scenario and return a normalised deep copy; ValueError names the first problem."""
    spec = _as_object(scenario, "scenario")
    _check_keys(spec, _SCENARIO_KEYS, "scenario")
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed: expected an integer, got {_describe(seed)}")
    phases = spec.get("phases", [])
    if not isinstance(phases, list):
        raise ValueError(f"phases: expected a list, got {_describe(phases)}")
    return {
        "seed": seed,
        "models": _validate_models(spec.get("models", {"*": {}}), "models"),
        "phases": [_validate_phase(phase, f"phases[{i}]") for i, phase in enumerate(phases)],
    }


# --------------------------------------------------------------------------- text and tokens

_WORD = re.compile(r"\S+")
_VOCABULARY = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor",
    "indigo", "juniper", "kelp", "lantern", "meadow", "nickel", "orchid", "pebble",
    "quartz", "raven", "saffron", "tundra", "umber", "velvet", "willow", "yarrow",
    "zephyr", "yes", "no", "42", "blue", "seven", "paris", "hello",
)  # fmt: skip


def _pieces(text: str) -> list[str]:
    """Whitespace tokens that keep their leading whitespace, so they concatenate back to the text."""
    pieces: list[str] = []
    start = 0
    for match in _WORD.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    return pieces


def _first_piece(text: str) -> str:
    match = _WORD.search(text)
    return text[: match.end()] if match else ""


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


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()


def _default_fingerprint(model: str) -> str:
    return "fp_" + _digest("fingerprint", model).hex()[:10]


@functools.lru_cache(maxsize=4096)
def _default_answers(model: str, prompt: str) -> _Answers:
    # Deterministic per (model, prompt): an unscripted canary sees a stable model, not noise.
    digest = _digest("answer", model, prompt)
    words = [_VOCABULARY[digest[i + 1] % len(_VOCABULARY)] for i in range(1 + digest[0] % 3)]
    return _Answers.of({" ".join(words).capitalize(): 1.0})


# --------------------------------------------------------------------------- compiled behaviour


@dataclass(frozen=True)
class _Pool:
    """A weighted choice ready to draw from; zero weights are dropped so they can never appear."""

    values: tuple[str, ...]
    cum_weights: tuple[float, ...]
    probs: dict[str, float]

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> _Pool:
        items = [(value, weight) for value, weight in weights.items() if weight > 0]
        total = sum(weight for _, weight in items)
        cumulative: list[float] = []
        running = 0.0
        for _, weight in items:
            running += weight
            cumulative.append(running)
        probs = {value: weight / total for value, weight in items}
        return cls(tuple(value for value, _ in items), tuple(cumulative), probs)

    def draw(self, rng: random.Random) -> str:
        if len(self.values) == 1:  # no draw: a constant pool does not shift the RNG stream
            return self.values[0]
        return rng.choices(self.values, cum_weights=self.cum_weights)[0]


@dataclass(frozen=True)
class _Answers:
    """An answer distribution plus the distribution of its first tokens (for logprobs)."""

    pool: _Pool
    first_tokens: tuple[tuple[str, float], ...]  # most likely first
    first_prob: dict[str, float]

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> _Answers:
        pool = _Pool.of(weights)
        first: dict[str, float] = {}
        for answer, prob in pool.probs.items():
            token = _first_piece(answer)
            first[token] = first.get(token, 0.0) + prob
        ordered = tuple(sorted(first.items(), key=lambda item: -item[1]))
        return cls(pool, ordered, first)


@dataclass(frozen=True)
class _Behaviour:
    """One model's settings compiled for fast draws; rebuilt whenever the settings change."""

    resolved: _Pool | None
    fingerprints: _Pool | None
    latency: float
    latency_jitter: float
    outputs: dict[str, _Answers]
    substring_keys: tuple[str, ...]  # longest first, so the most specific key wins
    logprob_jitter: float
    error_rate: float
    error_kinds: tuple[JsonDict, ...]

    @classmethod
    def compile(cls, settings: JsonDict) -> _Behaviour:
        resolved = settings.get("resolved")
        fingerprints = settings.get("fingerprints")
        outputs = {prompt: _Answers.of(dist) for prompt, dist in settings.get("outputs", {}).items()}
        return cls(
            resolved=_Pool.of(resolved) if resolved is not None else None,
            fingerprints=_Pool.of(fingerprints) if fingerprints is not None else None,
            latency=settings.get("latency", 0.0),
            latency_jitter=settings.get("latency_jitter", 0.0),
            outputs=outputs,
            substring_keys=tuple(sorted((key for key in outputs if key != "*"), key=len, reverse=True)),
            logprob_jitter=settings.get("logprob_jitter", 0.0),
            error_rate=settings.get("error_rate", 0.0),
            error_kinds=tuple(settings.get("error_kinds", [{"kind": "500"}])),
        )

    def answers_for(self, model: str, prompt: str) -> _Answers:
        exact = self.outputs.get(prompt)
        if exact is not None:
            return exact
        for key in self.substring_keys:
            if key in prompt:
                return self.outputs[key]
        fallback = self.outputs.get("*")
        return fallback if fallback is not None else _default_answers(model, prompt)

    def fingerprint(self, model: str, rng: random.Random) -> str:
        return self.fingerprints.draw(rng) if self.fingerprints else _default_fingerprint(model)

    def resolve(self, model: str, rng: random.Random) -> str:
        return self.resolved.draw(rng) if self.resolved else model

    def delay(self, rng: random.Random) -> float:
        return self.latency + (rng.uniform(0.0, self.latency_jitter) if self.latency_jitter else 0.0)


# --------------------------------------------------------------------------- replies


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


def _seconds_header(value: object) -> str:
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]  # validated as a number
    return str(int(number)) if number.is_integer() else f"{number:g}"


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
    if "retry_after" in fault:
        reply.headers["Retry-After"] = _seconds_header(fault["retry_after"])
    if "retry_after_ms" in fault:
        reply.headers["retry-after-ms"] = _seconds_header(fault["retry_after_ms"])
    if "should_retry" in fault:
        reply.headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
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


def _malformed(model: str) -> _Reply:
    # Cut off mid-string, as a body is when a proxy or the connection gives up half-way.
    body = (
        f'{{"id":"chatcmpl-{uuid.uuid4().hex[:29]}","object":"chat.completion","created":{int(time.time())},'
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


@dataclass(frozen=True)
class _Route:
    kind: str  # "chat" | "models" | "not_found" | "azure_not_found"
    azure: bool = False
    deployment: str | None = None  # Azure classic: the model id comes from the path


_AZURE_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


def _match_route(method: str, url: SplitResult) -> _Route:
    path = url.path.rstrip("/") or "/"
    if method == "POST" and path == "/v1/chat/completions":
        return _Route("chat")
    if method == "POST" and path == "/openai/v1/chat/completions":
        return _Route("chat", azure=True)
    if method == "GET" and path in ("/v1/models", "/openai/v1/models"):
        return _Route("models")
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


_INVALID_JSON = object()


def _parse_json(raw: bytes) -> object:
    if not raw:
        return _INVALID_JSON
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return _INVALID_JSON


@dataclass(frozen=True)
class _ChatRequest:
    model: str
    prompt: str
    prompt_tokens: int
    limit: int | None
    logprobs: bool
    top_logprobs: int
    route: _Route


def _wrong_type(param: str, expected: str, value: object) -> _Rejected:
    message = f"Invalid type for '{param}': expected {expected}, but got {_describe(value)} instead."
    return _invalid(message, param, "invalid_type")


def _optional_int(body: JsonDict, param: str, low: int, high: int | None = None) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(param, "an integer", value)
    if value < low:
        message = f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, got {value}."
        raise _invalid(message, param, "integer_below_min_value")
    if high is not None and value > high:
        message = f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, got {value}."
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
    )


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
        "body_keys": sorted(str(key) for key in fields),
    }


def _token_logprob(token: str, logprob: float, top: list[tuple[str, float]]) -> JsonDict:
    def entry(text: str, value: float) -> JsonDict:
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    return {**entry(token, logprob), "top_logprobs": [entry(text, value) for text, value in top]}


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
        "id": "chatcmpl-" + uuid.uuid4().hex[:29],
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


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """A scriptable OpenAI-compatible server on loopback; see the module docstring for scenarios.

    All mutable state sits behind one lock, which is never held while a request sleeps.
    """

    def __init__(
        self,
        scenario: dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        seed: int | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._api_key = api_key
        self._default_seed = seed
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._seed = 0
        self._settings: dict[str, JsonDict] = {}
        self._behaviours: dict[str, _Behaviour] = {}
        self._faults: dict[str, deque[JsonDict]] = {}
        self._phases: list[JsonDict] = []
        self._phases_applied = 0
        self._phase_start: float | None = None  # the phase clock starts when serving starts
        self._log: deque[JsonDict] = deque(maxlen=_MAX_LOG_ENTRIES)
        validated = validate_scenario(scenario if scenario is not None else {})
        with self._lock:
            self._install(validated)

    # ---- lifecycle

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; the phase clock starts now."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        server = _Server((self._host, self._port), self)
        self._server = server
        self._stopping.clear()  # a stopped simulator can be started again (on a new port if port=0)
        with self._lock:
            self._phase_start = time.monotonic()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"fpwatch-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping requests and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()  # idle keep-alive connections would otherwise hold their threads
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started; call start() first")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # ---- scripting

    def set_scenario(self, scenario: dict[str, Any]) -> None:
        """Replace models, faults, phases and the RNG seed; restart the phase clock."""
        validated = validate_scenario(scenario)
        with self._lock:
            self._install(validated)

    def update_model(self, name: str, settings: dict[str, Any]) -> None:
        """Shallow-merge settings into one model (created from "*"'s settings when absent)."""
        where = _key_loc("models", _check_model_name(name, "models"))
        clean = _validate_settings(settings, where)
        with self._lock:
            self._apply_due_phases()
            self._merge_model(name, clean)

    def push_faults(self, name: str, faults: list[dict[str, Any]]) -> None:
        """Queue one-shot faults for the model's next requests, after any already pending."""
        where = _key_loc("models", _check_model_name(name, "models")) + ".faults"
        clean = _faults(faults, where)
        with self._lock:
            self._apply_due_phases()  # a due phase that sets faults must not replace these later
            self._faults.setdefault(name, deque()).extend(clean)

    def requests(self) -> list[dict[str, Any]]:
        """Copies of the request log, oldest first (admin requests are not logged)."""
        with self._lock:
            entries = [dict(entry) for entry in self._log]
        # Nested values (body_keys, a client's odd `seed`) are never mutated once logged, so the
        # deep copy can happen outside the lock and a large log does not stall live requests.
        return copy.deepcopy(entries)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # ---- state (every method below expects the lock to be held)

    def _install(self, validated: JsonDict) -> None:
        seed = validated["seed"] if validated["seed"] is not None else self._default_seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)  # recorded, so a run can be replayed
        self._seed = seed
        self._rng.seed(seed)
        self._settings, self._behaviours, self._faults = {}, {}, {}
        for name, settings in validated["models"].items():
            own = dict(settings)
            self._faults[name] = deque(own.pop("faults", []))
            self._settings[name] = own
            self._behaviours[name] = _Behaviour.compile(own)
        self._phases = sorted(validated["phases"], key=lambda phase: phase["at"])
        self._phases_applied = 0
        self._phase_start = time.monotonic() if self._server is not None else None

    def _merge_model(self, name: str, settings: JsonDict) -> None:
        patch = dict(settings)
        if "faults" in patch:
            self._faults[name] = deque(patch.pop("faults"))
        base = self._settings.get(name, self._settings.get("*", {}))
        merged = {**base, **patch}
        self._settings[name] = merged
        self._behaviours[name] = _Behaviour.compile(merged)

    def _apply_due_phases(self) -> None:
        # Phases are applied lazily, when state is next read: no timer thread to manage or race with.
        if self._phase_start is None:
            return
        elapsed = time.monotonic() - self._phase_start
        while self._phases_applied < len(self._phases) and self._phases[self._phases_applied]["at"] <= elapsed:
            for name, settings in self._phases[self._phases_applied]["models"].items():
                self._merge_model(name, settings)
            self._phases_applied += 1

    def _behaviour_for(self, model: str) -> _Behaviour | None:
        return self._behaviours.get(model) or self._behaviours.get("*")

    def _next_fault(self, model: str, behaviour: _Behaviour) -> JsonDict | None:
        queue = self._faults.get(model)
        if not queue and model not in self._settings:
            queue = self._faults.get("*")  # unlisted models share the "*" queue
        if queue:
            return queue.popleft()
        if behaviour.error_rate and self._rng.random() < behaviour.error_rate:
            return dict(self._rng.choice(behaviour.error_kinds))
        return None

    def _snapshot(self) -> JsonDict:
        with self._lock:
            self._apply_due_phases()
            models: dict[str, JsonDict] = {}
            for name, settings in self._settings.items():
                models[name] = copy.deepcopy(settings)
                if self._faults.get(name):
                    models[name]["faults"] = copy.deepcopy(list(self._faults[name]))
            phases = copy.deepcopy(self._phases[self._phases_applied :])
            return {"seed": self._seed, "models": models, "phases": phases}

    # ---- answering API requests

    def _handle_api(
        self, method: str, target: str, authorization: str | None, api_key: str | None, raw: bytes
    ) -> _Reply:
        url = urlsplit(target)
        route = _match_route(method, url)
        body = _parse_json(raw)
        auth, sent_key = _authenticate(self._api_key, authorization, api_key)
        request_id = "req_" + uuid.uuid4().hex
        body_model = body.get("model") if isinstance(body, dict) else None
        model = route.deployment or (body_model if isinstance(body_model, str) else None)
        entry = _new_entry(method, url.path, model, body, auth, request_id)
        early = _precheck(method, url.path, route, body, auth, sent_key)
        with self._lock:
            self._log.append(entry)
            self._apply_due_phases()
            if isinstance(early, _Reply):
                reply = early
            elif early is None:
                reply = _Reply(200, self._model_list())
            else:
                reply = self._answer_chat(early, request_id)
            entry["status"] = None if reply.disconnect else reply.status
            entry["fault"] = reply.fault
        reply.headers.setdefault("x-request-id", request_id)
        return reply

    def _model_list(self) -> JsonDict:
        data = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fpwatch-simulator"}
            for name in self._settings
            if name != "*"
        ]
        return {"object": "list", "data": data}

    def _answer_chat(self, req: _ChatRequest, request_id: str) -> _Reply:
        behaviour = self._behaviour_for(req.model)
        if behaviour is None:
            return _model_not_found(req.model, req.route.deployment is not None)
        fault = self._next_fault(req.model, behaviour)
        delay = behaviour.delay(self._rng)
        if fault is not None and fault["kind"] != "timeout":
            reply = _fault_reply(fault, req.model, request_id)
        else:
            reply = _Reply(200, self._completion(req, behaviour))
            if fault is not None:
                reply.fault = "timeout"
                delay += fault.get("delay", _DEFAULT_FAULT_DELAY)
        reply.delay = delay
        return reply

    def _completion(self, req: _ChatRequest, behaviour: _Behaviour) -> JsonDict:
        answers = behaviour.answers_for(req.model, req.prompt)
        answer = answers.pool.draw(self._rng)
        pieces = _pieces(answer)
        finish = "stop"
        if req.limit is not None and len(pieces) > req.limit:
            pieces = pieces[: req.limit]
            answer = "".join(pieces)
            finish = "length"
        logprobs = self._logprobs(pieces, answers, req.top_logprobs, behaviour.logprob_jitter) if req.logprobs else None
        fingerprint = behaviour.fingerprint(req.model, self._rng)
        resolved = behaviour.resolve(req.model, self._rng)
        return _completion_body(req, answer, finish, len(pieces), logprobs, resolved, fingerprint)

    def _logprobs(self, pieces: list[str], answers: _Answers, top_n: int, jitter: float) -> JsonDict:
        """First token: ln P(first token) under the answer distribution; later tokens: near-certain."""
        if not pieces:
            return {"content": [], "refusal": None}
        jittered: dict[str, float] = {}

        def logprob(token: str, base: float) -> float:
            # One jittered value per token, so the chosen token and its top_logprobs entry agree.
            if token not in jittered:
                noise = self._rng.gauss(0.0, jitter) if jitter else 0.0
                jittered[token] = min(0.0, base + noise)
            return jittered[token]

        first = pieces[0]
        chosen = logprob(first, math.log(answers.first_prob[first]))
        top = [(token, logprob(token, math.log(prob))) for token, prob in answers.first_tokens[:top_n]]
        top.sort(key=lambda item: -item[1])
        content = [_token_logprob(first, chosen, top)]
        for piece in pieces[1:]:
            value = min(0.0, -0.001 + (self._rng.gauss(0.0, jitter) if jitter else 0.0))
            content.append(_token_logprob(piece, value, [(piece, value)] if top_n else []))
        return {"content": content, "refusal": None}

    # ---- admin endpoints

    def _handle_admin(self, method: str, path: str, raw: bytes) -> _Reply:
        try:
            return self._admin_route(method, path, raw)
        except ValueError as exc:
            return _admin_reply(400, {"error": str(exc)})

    def _admin_route(self, method: str, path: str, raw: bytes) -> _Reply:
        if path == "/_sim/scenario":
            if method == "GET":
                return _admin_reply(200, self._snapshot())
            if method == "PUT":
                self.set_scenario(_admin_json(raw))
                return _admin_reply(200, self._snapshot())
            return _admin_not_allowed(method, path, "GET, PUT")
        if path == "/_sim/requests":
            if method == "GET":
                return _admin_reply(200, self.requests())
            if method == "DELETE":
                self.clear_requests()
                return _admin_reply(200, {"cleared": True})
            return _admin_not_allowed(method, path, "GET, DELETE")
        prefix = "/_sim/models/"
        if path.startswith(prefix) and len(path) > len(prefix):
            return self._admin_model(method, path[len(prefix) :], raw)
        return _admin_reply(404, {"error": f"no admin endpoint {method} {path}"})

    def _admin_model(self, method: str, rest: str, raw: bytes) -> _Reply:
        if rest.endswith("/faults"):
            if method != "POST":
                return _admin_not_allowed(method, f"/_sim/models/{rest}", "POST")
            name = unquote(rest[: -len("/faults")])
            self.push_faults(name, _admin_json(raw))
            with self._lock:
                pending = len(self._faults.get(name, ()))
            return _admin_reply(200, {"model": name, "pending_faults": pending})
        if method != "PATCH":
            return _admin_not_allowed(method, f"/_sim/models/{rest}", "PATCH")
        name = unquote(rest)
        self.update_model(name, _admin_json(raw))
        return _admin_reply(200, {"model": name, "settings": self._snapshot()["models"][name]})


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


def _admin_reply(status: int, payload: object) -> _Reply:
    return _Reply(status, payload, provider_headers=False)


def _admin_not_allowed(method: str, path: str, allowed: str) -> _Reply:
    reply = _admin_reply(405, {"error": f"{method} is not allowed on {path}; use {allowed}"})
    reply.headers["Allow"] = allowed
    return reply


def _admin_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request sleeping through a `timeout` fault must not block exit
    request_queue_size = 1024  # bursts of hundreds of concurrent connections must not be refused
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, disconnect tests, stop()) are normal here, not errors.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with a real provider
    server_version = "fpwatch-simulator"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would delay the second
    timeout = 120  # idle keep-alive connections eventually free their thread
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the simulator is a test double: a line per request would drown test and demo output

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.monotonic()
        raw = self._read_body()
        if raw is None:
            return
        simulator = self.server.simulator
        try:
            reply = self._reply(simulator, raw)
        except Exception:  # a simulator bug: answer 500 rather than hang the client, and show it
            traceback.print_exc()
            reply = _openai_error(500, "fpwatch simulator internal error", "server_error")
        if reply.delay > 0 and simulator._stopping.wait(reply.delay):
            self.close_connection = True  # stopping: drop the request rather than answer late
            return
        if reply.disconnect:
            self.close_connection = True
            return
        self._send(reply, started)

    def _reply(self, simulator: Simulator, raw: bytes) -> _Reply:
        path = urlsplit(self.path).path
        if path.startswith("/_sim/"):
            return simulator._handle_admin(self.command, path, raw)
        authorization, api_key = self.headers.get("Authorization"), self.headers.get("api-key")
        return simulator._handle_api(self.command, self.path, authorization, api_key, raw)

    def _read_body(self) -> bytes | None:
        """The request body; None when the request was refused (and the connection closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._refuse(413 if length > 0 else 400, "bad or too large Content-Length")
            return None
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int, message: str) -> None:
        # The unread body would be parsed as the next request, so the connection must close.
        self.close_connection = True
        self._send(_openai_error(status, message, "invalid_request_error"), time.monotonic())

    def _send(self, reply: _Reply, started: float) -> None:
        body = reply.encoded()
        self.send_response(reply.status, _reason(reply.status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        if reply.provider_headers:
            self.send_header("openai-version", "2020-10-01")
            self.send_header("openai-processing-ms", str(int((time.monotonic() - started) * 1000)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


# --------------------------------------------------------------------------- files and CLI


def load_scenario(path: str | Path) -> dict[str, Any]:
    """Read a .json or .toml scenario file and validate it; errors name the file and the problem."""
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"{source}: a scenario file must end in .json or .toml")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{source}: cannot read the scenario file: {reason}") from None
    try:
        data: object = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid {suffix[1:].upper()}: {exc}") from None
    try:
        return validate_scenario(data)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def serve(host: str, port: int, scenario: dict[str, Any] | None, api_key: str | None, seed: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (for `fpwatch simulate`)."""
    simulator = Simulator(scenario, host=host, port=port, api_key=api_key, seed=seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        simulator.start()
        print(f"fpwatch simulator listening on {simulator.base_url}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
