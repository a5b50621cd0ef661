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

    [models."o3-mini"]                        # a reasoning model: 400 for temperature 0 or logprobs
    rejects = ["temperature", "logprobs", "top_logprobs"]

    [models."*"]                              # any model id not listed above
    latency = 0.01

    [[phases]]                                # at 5 s after start, patch gpt-4o's settings
    at = 5.0
    [phases.models."gpt-4o"]
    fingerprints = { fp_44709d6fcb = 0.5, fp_new0000000 = 0.5 }
    [phases.models."gpt-4o".route]            # ... and send 30 % of its requests to another model
    share = 0.3
    to = { resolved = "gpt-4o-mini-2024-07-18", outputs = { "*" = "Hi there!" } }

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
    text; otherwise the longest key that is a substring of it wins; ``"*"`` is the fallback. A key
    that starts with ``=`` matches only the exact text after it (``"=x"`` answers the prompt ``x``
    but not ``explain``). Each value is a weighted pool of answers (or one answer string). A prompt
    nothing matches gets one deterministic short answer derived from the model id and the prompt.
``long_outputs``
    Long answers with temperature-0 serving noise, keyed like ``outputs`` and matched together
    with its keys (the same key here wins over ``outputs``):
    ``{"*": {"text": "...", "repeat": 0.07, "diverge_after": 0.5}}``; a string is short for
    ``{"text": ...}``. With probability ``repeat`` (default 0.07, about the exact-repeat rate measured
    for GPT-4o at temperature 0) the answer is ``text``. Otherwise it equals ``text`` up to a token
    position k drawn uniformly from ``ceil(diverge_after * n) .. n-1`` (n: the tokens of ``text``;
    ``diverge_after`` default 0.5), token k is a different word and the rest are words drawn at
    random, n tokens in all: long answers rarely repeat exactly, and diverge late.
``latency``, ``latency_jitter``, ``logprob_jitter``
    Non-negative seconds / standard deviation, default 0.
``logprob_shift``
    Nats (default 0, may be negative) added to the reported first-token logprob of every token but
    the most likely one, in ``top_logprobs`` and for the chosen token, capped at -0.0001: a
    numerics change that leaves the answers alone.
``by_fingerprint``
    Replicas that differ in numerics: ``{"fp_x": {"outputs": {...}, "logprob_shift": 0.3}}``. The
    fingerprint is drawn before the answer; when it has an entry, the entry's ``outputs`` keys
    replace the same keys of the model's ``outputs`` and ``long_outputs``, and its
    ``logprob_shift`` replaces the model's, for that request.
``route``
    Partial routing: ``{"share": 0.3, "to": {...}}``. With probability ``share`` (0..1) a request is
    answered from the settings in ``to`` alone (defaults for what it leaves out) instead of the
    model's own. ``to`` takes only answer settings: ``resolved``, ``fingerprints``, ``outputs``,
    ``long_outputs``, ``logprob_jitter``, ``logprob_shift``, ``by_fingerprint``. Latency, errors,
    faults and ``rejects`` stay the model's.
``error_rate``, ``error_kinds``
    Probability (0..1, default 0) that a request gets a fault drawn uniformly from ``error_kinds``
    (default ``["500"]``).
``faults``
    One-shot faults, consumed in order by that model's next requests (before ``error_rate``).
``rejects``
    A reasoning-style model: a list of request parameters it refuses, from ``"temperature"``,
    ``"logprobs"``, ``"top_logprobs"``, ``"seed"``. A ``temperature`` other than 1 gets OpenAI's 400
    ``unsupported_value`` ("Unsupported value: 'temperature' does not support 0 with this model.
    Only the default (1) value is supported."); ``logprobs: true``, or a ``top_logprobs`` or
    ``seed`` that is sent, gets 400 ``unsupported_parameter`` ("Unsupported parameter: 'logprobs'
    is not supported with this model."), with ``param`` naming it. Checked in that order, after
    the request is validated and before faults, so a refused request uses up no one-shot fault.

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

In-process use
--------------
``Simulator.respond(body, path=...)`` answers a chat request exactly as a POST of ``body`` to that
path would (validation, rejections, faults, the request log, the same random draws), without HTTP,
auth or latency sleeps, and on a simulator that was never started: the detection benchmark drives
a million requests through it. ``Simulator(log_requests=False)`` keeps no request log (it holds the
last 100,000 requests otherwise).

``realistic()``, ``shifted()``, ``routed()``, ``perturbed_logprobs()`` and ``with_fingerprints()``
build model settings for temperature-0 serving noise on ``BUILTIN_PROMPTS`` (fpwatch's built-in
canaries) and for the changes fpwatch must detect: another model, a moved answer distribution,
partial routing, a logprob-only change, a fingerprint change.

Admin endpoints (no auth)
-------------------------
``GET /_sim/scenario`` (the current state as a scenario: settings after updates and phases,
pending faults, phases still to come), ``PUT /_sim/scenario``, ``PATCH /_sim/models/NAME`` (body:
settings), ``POST /_sim/models/NAME/faults`` (body: list of faults), ``GET /_sim/requests``,
``DELETE /_sim/requests``. Bad input gets 400 ``{"error": "..."}``. The request log never holds a
key, only whether auth was ``ok``, ``missing``, ``wrong`` or ``none-required``.
"""

from __future__ import annotations

import bisect
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
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

__all__ = [
    "BUILTIN_PROMPTS",
    "Simulator",
    "load_scenario",
    "perturbed_logprobs",
    "realistic",
    "routed",
    "serve",
    "shifted",
    "validate_scenario",
    "with_fingerprints",
]

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
    "long_outputs",
    "logprob_jitter",
    "logprob_shift",
    "by_fingerprint",
    "route",
    "error_rate",
    "error_kinds",
    "faults",
    "rejects",
)
# What `route.to` may set: everything that shapes an answer, nothing about how it is served.
_ANSWER_KEYS = (
    "resolved",
    "fingerprints",
    "outputs",
    "long_outputs",
    "logprob_jitter",
    "logprob_shift",
    "by_fingerprint",
)
_ROUTE_KEYS = ("share", "to")
_LONG_OUTPUT_KEYS = ("text", "repeat", "diverge_after")
_BY_FINGERPRINT_KEYS = ("outputs", "logprob_shift")
_REJECTABLE = ("temperature", "logprobs", "top_logprobs", "seed")
# The chance that a long answer repeats exactly: GPT-4o's median TARr@10 at temperature 0 in Atil et
# al.'s data (7-8 %, research notes section 6a), the share of prompts answered identically every time.
_DEFAULT_REPEAT = 0.07
_DEFAULT_DIVERGE_AFTER = 0.5
_MIN_SHIFTED_LOGPROB = -0.0001
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


def _signed_number(value: object, where: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{where}: expected a number, got {_describe(value)}")
    return float(value)  # type: ignore[arg-type]  # _is_number checked it


def _long_output(value: object, where: str) -> JsonDict:
    spec = _as_object({"text": value} if isinstance(value, str) else value, where)
    _check_keys(spec, _LONG_OUTPUT_KEYS, where)
    if "text" not in spec:
        raise ValueError(f"{where}: a long output needs 'text'")
    text = spec["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}.text: expected a non-empty string, got {text!r}")
    return {
        "text": text,
        "repeat": _number(spec.get("repeat", _DEFAULT_REPEAT), f"{where}.repeat", high=1.0),
        "diverge_after": _number(spec.get("diverge_after", _DEFAULT_DIVERGE_AFTER), f"{where}.diverge_after", high=1.0),
    }


def _long_outputs(value: object, where: str) -> dict[str, JsonDict]:
    prompts = _as_object(value, where)
    return {prompt: _long_output(spec, _key_loc(where, prompt)) for prompt, spec in prompts.items()}


def _rejects(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of parameter names, got {_describe(value)}")
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in _REJECTABLE:
            close = difflib.get_close_matches(str(name), _REJECTABLE, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}[{i}]: cannot reject {name!r}{hint}; expected any of: {', '.join(_REJECTABLE)}")
        if name not in names:
            names.append(name)
    return names


def _by_fingerprint(value: object, where: str) -> dict[str, JsonDict]:
    replicas = _as_object(value, where)
    result: dict[str, JsonDict] = {}
    for fingerprint, spec in replicas.items():
        loc = _key_loc(where, fingerprint)
        override = _as_object(spec, loc)
        _check_keys(override, _BY_FINGERPRINT_KEYS, loc)
        result[fingerprint] = {key: _validate_setting(key, item, f"{loc}.{key}") for key, item in override.items()}
    return result


def _complete_object(value: object, keys: tuple[str, ...], where: str, what: str) -> dict[str, Any]:
    """An object with exactly these keys, every one of them present."""
    spec = _as_object(value, where)
    _check_keys(spec, keys, where)
    for key in keys:
        if key not in spec:
            raise ValueError(f"{where}: {what} needs {key!r}")
    return spec


def _route(value: object, where: str) -> JsonDict:
    spec = _complete_object(value, _ROUTE_KEYS, where, "a route")
    to = _as_object(spec["to"], f"{where}.to")
    for key in to:
        if key == "route":
            raise ValueError(f"{where}.to: a routed-to model cannot route again; remove its 'route'")
        if key in _MODEL_KEYS and key not in _ANSWER_KEYS:
            raise ValueError(
                f"{where}.to.{key}: only answer settings can be routed ({', '.join(_ANSWER_KEYS)}); "
                f"{key!r} stays the model's own"
            )
    _check_keys(to, _ANSWER_KEYS, f"{where}.to")
    return {
        "share": _number(spec["share"], f"{where}.share", high=1.0),
        "to": {key: _validate_setting(key, item, f"{where}.to.{key}") for key, item in to.items()},
    }


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
    if key == "long_outputs":
        return _long_outputs(value, where)
    if key == "logprob_shift":
        return _signed_number(value, where)
    if key == "by_fingerprint":
        return _by_fingerprint(value, where)
    if key == "route":
        return _route(value, where)
    if key == "rejects":
        return _rejects(value, where)
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
    phase = _complete_object(value, _PHASE_KEYS, where, "a phase")
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


@functools.lru_cache(maxsize=4096)
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
    total: float

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
        return cls(tuple(value for value, _ in items), tuple(cumulative), probs, running)

    def draw(self, rng: random.Random) -> str:
        values = self.values
        if len(values) == 1:  # no draw: a constant pool does not shift the RNG stream
            return values[0]
        # What rng.choices(values, cum_weights=...) does for one value (the same single random()
        # call, so the same stream), without its per-call set-up.
        return values[bisect.bisect(self.cum_weights, rng.random() * self.total, 0, len(values) - 1)]


def _first_token_logprobs(first: Mapping[str, float]) -> tuple[tuple[tuple[str, float], ...], dict[str, float]]:
    """ln P of each first token: ranked most likely first, and by token."""
    ranked = tuple((token, math.log(prob)) for token, prob in sorted(first.items(), key=lambda item: -item[1]))
    return ranked, dict(ranked)


@dataclass(frozen=True)
class _Answers:
    """An answer distribution plus the distribution of its first tokens (for logprobs)."""

    pool: _Pool
    first_tokens: tuple[tuple[str, float], ...]  # (token, ln P), most likely first
    first_logprob: dict[str, float]  # token -> ln P

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> _Answers:
        pool = _Pool.of(weights)
        first: dict[str, float] = {}
        for answer, prob in pool.probs.items():
            token = _first_piece(answer)
            first[token] = first.get(token, 0.0) + prob
        return cls(pool, *_first_token_logprobs(first))

    def draw(self, rng: random.Random) -> str:
        return self.pool.draw(rng)


_VOCABULARY_HEAD = _VOCABULARY[:-1]


def _other_words(word: str) -> tuple[str, ...]:
    """The words `_LongAnswer.draw` may put in place of `word`: each equally likely."""
    if word in _VOCABULARY_HEAD:
        return tuple(other for other in _VOCABULARY if other != word)
    return _VOCABULARY_HEAD


@dataclass(frozen=True)
class _LongAnswer:
    """A long answer that repeats exactly with probability `repeat` and otherwise diverges late."""

    text: str
    prefixes: tuple[str, ...]  # prefixes[k]: the text's first k tokens
    leads: tuple[str, ...]  # leads[k]: the whitespace before token k
    words: tuple[str, ...]  # words[k]: token k without that whitespace
    repeat: float
    low: int  # the earliest position where an answer diverges
    first_tokens: tuple[tuple[str, float], ...]  # as in _Answers
    first_logprob: dict[str, float]

    @classmethod
    def of(cls, spec: JsonDict) -> _LongAnswer:
        text: str = spec["text"]
        repeat: float = spec["repeat"]
        pieces = _pieces(text)
        n = len(pieces)
        low = min(n - 1, math.ceil(spec["diverge_after"] * n))
        words = tuple(piece.lstrip() for piece in pieces)
        leads = tuple(piece[: len(piece) - len(word)] for piece, word in zip(pieces, words, strict=True))
        # The first token is the text's unless the answer diverges at position 0, which happens with
        # probability (1 - repeat) / n when low is 0, and then is one of the 31 other words, uniformly.
        diverge_first = (1.0 - repeat) / (n - low) if low == 0 else 0.0
        first = {pieces[0]: 1.0 - diverge_first}
        if diverge_first > 0:
            others = _other_words(words[0])
            first.update({leads[0] + other: diverge_first / len(others) for other in others})
        first = {token: prob for token, prob in first.items() if prob > 0}
        prefixes = tuple("".join(pieces[:k]) for k in range(n))
        return cls(text, prefixes, leads, words, repeat, low, *_first_token_logprobs(first))

    def draw(self, rng: random.Random) -> str:
        if rng.random() < self.repeat:
            return self.text
        n = len(self.words)
        k = self.low + rng.randrange(n - self.low)
        word = rng.choice(_VOCABULARY_HEAD)
        if word == self.words[k]:
            word = _VOCABULARY[-1]  # so the replacement is uniform over the 31 words that differ
        rest = rng.choices(_VOCABULARY, k=n - k - 1)
        return self.prefixes[k] + self.leads[k] + word + "".join(" " + other for other in rest)


_Source = _Answers | _LongAnswer


@dataclass(frozen=True)
class _KeyMatcher:
    """Prompt keys compiled for matching: exact (and "=" keys), then the longest substring, then "*"."""

    exact: dict[str, str]  # prompt -> key
    substrings: tuple[str, ...]  # longest first, so the most specific key wins
    fallback: bool

    @classmethod
    def of(cls, keys: Iterable[str]) -> _KeyMatcher:
        keys = list(keys)
        plain = [key for key in keys if key != "*" and not key.startswith("=")]
        exact = {key: key for key in plain}
        exact.update({key[1:]: key for key in keys if key.startswith("=")})
        return cls(exact, tuple(sorted(plain, key=len, reverse=True)), "*" in keys)

    def key_for(self, prompt: str) -> str | None:
        key = self.exact.get(prompt)
        if key is not None:
            return key
        for key in self.substrings:
            if key in prompt:
                return key
        return "*" if self.fallback else None


@dataclass(frozen=True)
class _Lookup:
    matcher: _KeyMatcher
    sources: dict[str, _Source]

    @classmethod
    def of(cls, sources: Mapping[str, _Source]) -> _Lookup:
        return cls(_KeyMatcher.of(sources), dict(sources))

    def find(self, model: str, prompt: str) -> _Source:
        key = self.matcher.key_for(prompt)
        return self.sources[key] if key is not None else _default_answers(model, prompt)


@dataclass(frozen=True)
class _Answerer:
    """The settings that shape an answer, compiled: a model's own, or its route's `to`."""

    resolved: _Pool | None
    fingerprints: _Pool | None
    lookup: _Lookup
    logprob_jitter: float
    logprob_shift: float
    replicas: dict[str, tuple[_Lookup, float]]  # by_fingerprint: the lookup and logprob shift to use

    @classmethod
    def compile(cls, settings: JsonDict) -> _Answerer:
        resolved = settings.get("resolved")
        fingerprints = settings.get("fingerprints")
        outputs: dict[str, _Source] = {p: _Answers.of(d) for p, d in settings.get("outputs", {}).items()}
        long: dict[str, _Source] = {p: _LongAnswer.of(d) for p, d in settings.get("long_outputs", {}).items()}
        shift: float = settings.get("logprob_shift", 0.0)
        replicas: dict[str, tuple[_Lookup, float]] = {}
        for fingerprint, override in settings.get("by_fingerprint", {}).items():
            own = {p: _Answers.of(d) for p, d in override.get("outputs", {}).items()}
            kept = {key: source for key, source in long.items() if key not in own}
            replicas[fingerprint] = (_Lookup.of({**outputs, **kept, **own}), override.get("logprob_shift", shift))
        return cls(
            resolved=_Pool.of(resolved) if resolved is not None else None,
            fingerprints=_Pool.of(fingerprints) if fingerprints is not None else None,
            lookup=_Lookup.of({**outputs, **long}),  # a long output wins over an output with its key
            logprob_jitter=settings.get("logprob_jitter", 0.0),
            logprob_shift=shift,
            replicas=replicas,
        )

    def fingerprint(self, model: str, rng: random.Random) -> str:
        return self.fingerprints.draw(rng) if self.fingerprints else _default_fingerprint(model)

    def resolve(self, model: str, rng: random.Random) -> str:
        return self.resolved.draw(rng) if self.resolved else model


@dataclass(frozen=True)
class _Behaviour:
    """One model's settings compiled for fast draws; rebuilt whenever the settings change."""

    own: _Answerer
    route_share: float
    route_to: _Answerer | None
    latency: float
    latency_jitter: float
    error_rate: float
    error_kinds: tuple[JsonDict, ...]
    rejects: frozenset[str]

    @classmethod
    def compile(cls, settings: JsonDict) -> _Behaviour:
        route = settings.get("route")
        return cls(
            own=_Answerer.compile(settings),
            route_share=route["share"] if route is not None else 0.0,
            route_to=_Answerer.compile(route["to"]) if route is not None else None,
            latency=settings.get("latency", 0.0),
            latency_jitter=settings.get("latency_jitter", 0.0),
            error_rate=settings.get("error_rate", 0.0),
            error_kinds=tuple(settings.get("error_kinds", [{"kind": "500"}])),
            rejects=frozenset(settings.get("rejects", ())),
        )

    def answerer(self, rng: random.Random) -> _Answerer:
        """The model's own answer settings, or its route's with probability `route_share`."""
        share = self.route_share
        if self.route_to is None or share <= 0:
            return self.own
        return self.route_to if share >= 1 or rng.random() < share else self.own

    def delay(self, rng: random.Random) -> float:
        return self.latency + (rng.uniform(0.0, self.latency_jitter) if self.latency_jitter else 0.0)


# --------------------------------------------------------------------------- replies

# Request and completion ids only need to be unique, not secret: a urandom-seeded generator of its
# own is ten times faster than uuid4 and leaves the scenario's seeded RNG stream alone.
_ids = random.Random(random.SystemRandom().getrandbits(64))


def _hex_id(digits: int) -> str:
    return f"{_ids.getrandbits(digits * 4):0{digits}x}"


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


@functools.lru_cache(maxsize=256)
def _split_target(target: str) -> SplitResult:
    return urlsplit(target)


@functools.lru_cache(maxsize=256)
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
        log_requests: bool = True,
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
        self._log_requests = log_requests  # off for benchmarks: no entry to build per request
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

    def respond(self, body: dict[str, Any], *, path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
        """Answer `body` as a POST to `path` would be answered, in-process: (status, JSON body).

        The same validation, rejections, faults, request log and random draws as over HTTP, but no
        auth (the caller is trusted: logged as "ok", or "none-required" without a key) and no
        sleeping (latency and timeout faults only count). Works whether or not the simulator was
        started; the first call starts the phase clock if nothing has. A fault without a JSON body
        gives ``(status, {"raw": text})`` (html, malformed) or ``(0, {})`` (disconnect); response
        headers such as Retry-After are not returned.
        """
        auth = "none-required" if self._api_key is None else "ok"
        reply = self._serve_api("POST", _split_target(path), body, auth, None, in_process=True)
        if reply.disconnect:
            return 0, {}
        if reply.raw is not None:
            return reply.status, {"raw": reply.raw.decode("utf-8")}
        payload: dict[str, Any] = reply.payload  # type: ignore[assignment]  # API replies carry JSON objects
        return reply.status, payload

    def requests(self) -> list[dict[str, Any]]:
        """Copies of the request log, oldest first (admin requests are not logged)."""
        with self._lock:
            entries = [dict(entry) for entry in self._log]
        # Nested values (body_keys, a client's odd `seed`) are never mutated once logged, so the
        # deep copy can happen outside the lock and a large log does not stall live requests.
        copies = copy.deepcopy(entries)
        for entry in copies:
            entry["body_keys"] = list(entry["body_keys"])
        return copies

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
        if self._phase_start is None or self._phases_applied >= len(self._phases):
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
        body = _parse_json(raw)
        auth, sent_key = _authenticate(self._api_key, authorization, api_key)
        return self._serve_api(method, urlsplit(target), body, auth, sent_key)

    def _serve_api(
        self, method: str, url: SplitResult, body: object, auth: str, sent_key: str | None, *, in_process: bool = False
    ) -> _Reply:
        """Everything after reading the request, shared by HTTP and `respond()`."""
        route = _match_route(method, url)
        request_id = "req_" + _hex_id(32)
        early = _precheck(method, url.path, route, body, auth, sent_key)
        entry: JsonDict | None = None
        if self._log_requests:
            body_model = body.get("model") if isinstance(body, dict) else None
            model = route.deployment or (body_model if isinstance(body_model, str) else None)
            entry = _new_entry(method, url.path, model, body, auth, request_id)
        with self._lock:
            if entry is not None:
                self._log.append(entry)
            if in_process and self._phase_start is None:
                self._phase_start = time.monotonic()
            self._apply_due_phases()
            if isinstance(early, _Reply):
                reply = early
            elif early is None:
                reply = _Reply(200, self._model_list())
            else:
                reply = self._answer_chat(early, request_id)
            if entry is not None:
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
        if behaviour.rejects:
            refusal = _refusal(req, behaviour.rejects)
            if refusal is not None:
                return refusal
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
        rng = self._rng
        answerer = behaviour.answerer(rng)
        fingerprint = answerer.fingerprint(req.model, rng)  # before the answer: replicas may differ
        replica = answerer.replicas.get(fingerprint) if answerer.replicas else None
        lookup, shift = replica if replica is not None else (answerer.lookup, answerer.logprob_shift)
        source = lookup.find(req.model, req.prompt)
        answer = source.draw(rng)
        pieces = _pieces(answer)
        finish = "stop"
        if req.limit is not None and len(pieces) > req.limit:
            pieces = pieces[: req.limit]
            answer = "".join(pieces)
            finish = "length"
        logprobs = (
            self._logprobs(pieces, source, req.top_logprobs, answerer.logprob_jitter, shift) if req.logprobs else None
        )
        resolved = answerer.resolve(req.model, rng)
        return _completion_body(req, answer, finish, len(pieces), logprobs, resolved, fingerprint)

    def _logprobs(self, pieces: list[str], source: _Source, top_n: int, jitter: float, shift: float) -> JsonDict:
        """First token: ln P(first token) under the answer distribution; later tokens: near-certain.

        `shift` moves every first token but the most likely one (capped at -0.0001).
        """
        if not pieces:
            return {"content": [], "refusal": None}
        rng = self._rng
        first = pieces[0]
        ranked = source.first_tokens[:top_n]
        most_likely = source.first_tokens[0][0]
        # One value per token, so the chosen token and its top_logprobs entry agree; the chosen token
        # draws its noise first, then the ranked tokens in order.
        logprobs = source.first_logprob
        values: dict[str, float] = {}
        for token in [first, *[token for token, _ in ranked]]:
            if token in values:
                continue
            value = logprobs[token] + (rng.gauss(0.0, jitter) if jitter else 0.0)
            moved = shift and token != most_likely
            values[token] = min(_MIN_SHIFTED_LOGPROB, value + shift) if moved else min(0.0, value)
        chosen = values[first]
        top = [(token, values[token]) for token, _ in ranked]
        top.sort(key=lambda item: -item[1])
        content = [_token_logprob(first, chosen, top)]
        for piece in pieces[1:]:
            value = min(0.0, -0.001 + (rng.gauss(0.0, jitter) if jitter else 0.0))
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


# --------------------------------------------------------------------------- realistic noise and model changes

# The prompts of fpwatch's built-in canary set (fpwatch/canaries.py, BUILTIN_SET), repeated so that
# the simulator imports nothing from fpwatch; a test checks that the two agree.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "x",
    "Reply in one token. 1+1=",
    "Heads or tails? Answer with one word only.",
    "Name one color. Answer with one word only.",
)
_X, _ONE_PLUS_ONE, _COIN, _COLOR = BUILTIN_PROMPTS
_REPLIES_TO_X = (
    "Hello! How can I",
    "It seems like your",
    "Could you clarify?",
    "Hi! What would you",
    "Sure, what do you",
    "x",
)
_OTHER_COLORS = ("Red", "Green", "Purple", "Teal", "Orange", "Yellow")
_FINGERPRINT_WEIGHTS = (0.6, 0.3, 0.1)  # a main pool and two smaller ones, as OpenAI's rotate
_LONG_WORDS = 60


def _settings_copy(settings: dict[str, Any], where: str) -> JsonDict:
    """Validated, normalised and deep-copied: the helpers never share state with their inputs."""
    return copy.deepcopy(_validate_settings(settings, where))


def _long_text(variant: str) -> str:
    """About 60 words, a different text for each variant, the same on every run and platform."""
    digest = _digest("realistic-text", variant, "1") + _digest("realistic-text", variant, "2")
    words = [_VOCABULARY[byte % len(_VOCABULARY)] for byte in digest[:_LONG_WORDS]]
    sentences = [" ".join(words[i : i + 10]).capitalize() + "." for i in range(0, len(words), 10)]
    return " ".join(sentences)


def _realistic_outputs(variant: str) -> dict[str, dict[str, float]]:
    if variant == "a":
        x = {"Hello! How can I": 0.5, "It seems like your": 0.3, "Could you clarify?": 0.15, "x": 0.05}
        one = {"2": 0.97, " 2": 0.03}
        coin = {"Heads": 0.6, "Tails": 0.4}
        color = {"Blue": 0.55, "Red": 0.3, "Green": 0.15}
    else:  # another model: every number below comes from the variant string
        d = _digest("realistic", variant)
        start = d[0] % len(_REPLIES_TO_X)
        x = {_REPLIES_TO_X[(start + i) % len(_REPLIES_TO_X)]: w for i, w in enumerate((0.6, 0.3, 0.1))}
        flip = round(0.005 + 0.045 * d[1] / 255, 4)
        one = {"2": round(1 - flip, 4), " 2": flip}  # a different model still knows 1+1
        tails = round(0.55 + 0.3 * d[2] / 255, 4)  # "Tails" favoured, unlike variant "a"
        heads_word, tails_word = ("heads", "tails") if d[3] % 2 else ("Heads", "Tails")
        coin = {tails_word: tails, heads_word: round(1 - tails, 4)}
        favourite = d[4] % len(_OTHER_COLORS)  # never "Blue", variant "a"'s favourite
        third = (favourite + 1 + d[5] % (len(_OTHER_COLORS) - 1)) % len(_OTHER_COLORS)
        top = round(0.4 + 0.3 * d[6] / 255, 4)
        blue = round((1 - top) * 0.7, 4)
        color = {_OTHER_COLORS[favourite]: top, "Blue": blue, _OTHER_COLORS[third]: round(1 - top - blue, 4)}
    # "=x": the prompt "x" exactly; a plain "x" key would also catch every prompt containing an x.
    return {"=" + _X: x, _ONE_PLUS_ONE: one, _COIN: coin, _COLOR: color}


def realistic(variant: str = "a") -> dict[str, Any]:
    """Model settings for a model that answers `BUILTIN_PROMPTS` as a real one does at temperature 0.

    Near-deterministic answers with rare flips between nearly tied first tokens (variant "a":
    1+1 -> "2" 0.97 / " 2" 0.03; coin -> "Heads" 0.6 / "Tails" 0.4; color -> "Blue" 0.55 / "Red" 0.3
    / "Green" 0.15; "x" -> four short replies), three fingerprints rotating 0.6 / 0.3 / 0.1, logprob
    jitter 0.02, a resolved model name, and a "*" long output (60 words, exact-repeat rate 0.07) so
    that every other prompt shows long-output noise.

    Any other variant string is a different model, derived deterministically from the string: its
    own fingerprints and resolved name, "Tails" favoured (perhaps lower-case), a favourite color
    other than "Blue", other replies to "x" and another long text; it still answers 1+1 with "2".
    """
    digest = _digest("realistic", variant)
    fingerprints = {
        "fp_" + _digest("realistic-fingerprint", variant, str(i)).hex()[:10]: weight
        for i, weight in enumerate(_FINGERPRINT_WEIGHTS)
    }
    settings = {
        "resolved": f"simulated-{variant}-2024-{1 + digest[7] % 12:02d}-{1 + digest[8] % 28:02d}",
        "fingerprints": fingerprints,
        "outputs": _realistic_outputs(variant),
        "long_outputs": {"*": {"text": _long_text(variant), "repeat": _DEFAULT_REPEAT, "diverge_after": 0.5}},
        "logprob_jitter": 0.02,
    }
    return _settings_copy(settings, f"realistic({variant!r})")


def _nearby_answer(answer: str, taken: Iterable[str]) -> str:
    """A new answer that differs from `answer` in its first token only: "Blue" -> "blue", "2" -> "2."."""
    taken = set(taken)
    first = _first_piece(answer)
    word = first.lstrip()
    lead, rest = first[: len(first) - len(word)], answer[len(first) :]
    candidates = [word.lower(), word.capitalize(), word + "."]
    i = 2
    while True:
        for candidate in (lead + variant + rest for variant in candidates):
            if candidate != answer and candidate not in taken:
                return candidate
        candidates, i = [f"{word}({i})"], i + 1


def _shift_distribution(weights: Mapping[str, float], tv: float) -> dict[str, float]:
    """Move exactly `tv` of probability mass, as `shifted` documents; returns probabilities."""
    total = sum(weight for weight in weights.values() if weight > 0)
    probs = {answer: weight / total for answer, weight in weights.items() if weight > 0}
    order = sorted(probs, key=lambda answer: -probs[answer])  # stable: ties keep their order
    if len(order) >= 2 and tv <= 1 - probs[order[1]]:
        receiver = order[1]
    else:
        receiver = _nearby_answer(order[0], probs)
        probs[receiver] = 0.0
    remaining = tv
    for donor in order:
        if donor == receiver or remaining <= 0:
            continue
        take = min(probs[donor], remaining)
        probs[donor] -= take
        remaining -= take
    probs[receiver] += tv
    return {answer: prob for answer, prob in probs.items() if prob > 0}


def shifted(settings: dict[str, Any], tv: float = 0.3, prompts: Iterable[str] | None = None) -> dict[str, Any]:
    """A copy of `settings` whose answer distribution for each prompt has moved by total variation `tv`.

    `prompts` are prompts as a request sends them, matched to `outputs` keys the way requests are
    (so "x" finds a "=x" key); default: every key of `outputs`. For each of those distributions p
    (weights normalised to probabilities), with its answers ordered by decreasing probability (ties
    in their order) and a1, a2 the first two:

    - the receiver is a2 if there is one and tv <= 1 - p(a2); otherwise a new answer next to a1
      (its first word lower-cased, capitalised or followed by ".", whichever is new);
    - the donors are all other answers in that order; tv is taken from them greedily (from a1 first,
      as much as it has, then from the next) and added to the receiver.

    Only donors lose and only the receiver gains, so the total variation distance between the old
    and the new distribution is exactly tv (on whole answers). The usual case, tv <= p(a1), moves tv
    from a1 to a2: coin 0.6/0.4 with tv 0.3 becomes 0.3/0.7. Nothing else changes (fingerprints,
    long_outputs, by_fingerprint, route). ValueError: tv outside [0, 1], a prompt that no `outputs`
    key answers (or that `long_outputs` answers), or invalid settings.
    """
    result = _settings_copy(settings, "settings")
    if not _is_number(tv) or not 0 <= tv <= 1:
        raise ValueError(f"tv: must be a number between 0 and 1, got {tv!r}")
    outputs: dict[str, dict[str, float]] = result.get("outputs", {})
    long_outputs: dict[str, JsonDict] = result.get("long_outputs", {})
    if prompts is None:
        keys = list(outputs)
    else:
        matcher = _KeyMatcher.of([*outputs, *long_outputs])
        keys = []
        for prompt in prompts:
            key = matcher.key_for(prompt)
            if key is None or key in long_outputs:
                answered = "long_outputs, which shifted() leaves alone" if key is not None else "no outputs key"
                raise ValueError(f"prompts: {prompt!r} is answered by {answered}")
            keys.append(key)
    for key in dict.fromkeys(keys):  # each distribution moves once, even when two prompts share it
        outputs[key] = _shift_distribution(outputs[key], tv)
    return result


def routed(settings: dict[str, Any], to: dict[str, Any], share: float) -> dict[str, Any]:
    """A copy of `settings` that answers `share` of the requests from `to` (see ``route``).

    Only the answer settings of `to` are kept, so another model's whole settings (for example
    ``realistic("b")``) can be passed. ValueError: `share` outside [0, 1], or `to` routes itself.
    """
    own = _settings_copy(settings, "settings")
    target = _settings_copy(to, "to")
    if "route" in target:
        raise ValueError("to: a routed-to model cannot route again; remove its 'route'")
    answers = {key: item for key, item in target.items() if key in _ANSWER_KEYS}
    return _validate_settings({**own, "route": {"share": share, "to": answers}}, "settings")


def perturbed_logprobs(settings: dict[str, Any], shift: float = 0.5) -> dict[str, Any]:
    """A copy of `settings` whose ``logprob_shift`` is `shift` nats more: a change of numerics only."""
    result = _settings_copy(settings, "settings")
    result["logprob_shift"] = result.get("logprob_shift", 0.0) + _signed_number(shift, "shift")
    return result


def with_fingerprints(settings: dict[str, Any], fingerprints: dict[str, float]) -> dict[str, Any]:
    """A copy of `settings` that reports these fingerprints (a weighted pool) and is otherwise the same."""
    result = _settings_copy(settings, "settings")
    result["fingerprints"] = _weights(fingerprints, "fingerprints", "fingerprint")
    return result


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
