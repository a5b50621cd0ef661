"""The scenario format (documented here in full), its validation (`validate_scenario`) and `load_scenario`.

A simulated OpenAI-compatible chat API on loopback, scriptable while it runs.

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
- ``POST /v1/messages``: Anthropic's Messages API, ``x-api-key`` auth (its dialect: fpwatch/sim/anthropic.py).
- ``POST /v1/responses``: OpenAI's Responses API, Bearer auth (its dialect: fpwatch/sim/responses.py).
- ``POST /v1beta/models/{model}:generateContent`` (and ``/v1/...``): the Gemini API, ``x-goog-api-key`` or
  ``?key=`` auth, the model id from the path (its dialect: fpwatch/sim/gemini.py).

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
``ignores``
    Parameters the server takes without complaint and without effect: ``["logprobs"]`` answers every
    request without logprobs, as some OpenAI-compatible servers do.
``echo_key``
    A provider (or proxy) that repeats the request's credential (the ``Authorization`` bearer value,
    else the ``api-key`` header) in its 200 answers: ``true`` for every place, or a list of them:
    ``"content"`` (after the answer), ``"logprobs"`` (an alternative first token), ``"fingerprint"``,
    ``"model"``, ``"id"``, ``"finish_reason"``, ``"request_id"`` (the ``x-request-id`` header). Over
    HTTP only (``respond()`` sees no credential); the tests prove fpwatch stores none of it.
``echoes``
    What a Responses API answer echoes for settings a request left out (defaults: fpwatch/sim/responses.py; Anthropic:
    ``service_tier`` only) ``{"top_p": 0.98, "service_tier": "flex", "reasoning_effort": "medium"}``; routable.

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
- ``{"kind": "500"}``, ``"502"``, ``"503"``: OpenAI ``server_error`` bodies; ``"529"``: overloaded (with the
  429's three options).
- ``{"kind": "timeout", "delay": 30}``: wait ``delay`` seconds (default 30), then answer normally.
- ``{"kind": "malformed"}``: HTTP 200 with a truncated JSON body. With ``"replace": {"PATH": value}``
  instead a complete answer with those fields set (``"choices.0.message": null``,
  ``"choices.0.message.content": [1]``, ``"system_fingerprint": {}``; ``"<absent>"`` removes the field).
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

import copy
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fpwatch.hints import closest

JsonDict = dict[str, Any]

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
    "ignores",
    "echo_key",
    "echoes",
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
    "echoes",
)
_ROUTE_KEYS = ("share", "to")
_LONG_OUTPUT_KEYS = ("text", "repeat", "diverge_after")
_BY_FINGERPRINT_KEYS = ("outputs", "logprob_shift")
_REJECTABLE = ("temperature", "logprobs", "top_logprobs", "seed")
_IGNORABLE = ("logprobs",)
_ECHOES = ("temperature", "top_p", "service_tier", "reasoning_effort")  # the Responses API's echoed settings
_ECHO_PLACES = ("content", "logprobs", "fingerprint", "model", "id", "finish_reason", "request_id")
# The chance that a long answer repeats exactly: GPT-4o's median TARr@10 at temperature 0 in Atil et
# al.'s data (7-8 %, research notes section 6a), the share of prompts answered identically every time.
_DEFAULT_REPEAT = 0.07
_DEFAULT_DIVERGE_AFTER = 0.5
_FAULT_OPTIONS: dict[str, tuple[str, ...]] = {
    "429": ("retry_after", "retry_after_ms", "should_retry"),
    "quota": (),
    "500": (),
    "502": (),
    "503": (),
    "529": ("retry_after", "retry_after_ms", "should_retry"),
    "timeout": ("delay",),
    "malformed": ("replace",),
    "html": ("status",),
    "error": ("status", "body", "headers"),
    "disconnect": (),
}


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


def _suggestion(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" when a choice is close, else nothing."""
    match = closest(word, choices)
    return f" (did you mean {match!r}?)" if match else ""


def _check_keys(obj: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in obj:
        if key not in allowed:
            hint = _suggestion(str(key), allowed)
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


def _rejects(value: object, where: str, allowed: tuple[str, ...] = _REJECTABLE, verb: str = "reject") -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of parameter names, got {_describe(value)}")
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in allowed:
            hint = _suggestion(str(name), allowed)
            raise ValueError(f"{where}[{i}]: cannot {verb} {name!r}{hint}; expected any of: {', '.join(allowed)}")
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
        hint = _suggestion(str(kind), _FAULT_OPTIONS)
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
    if name == "replace":
        for path in _as_object(value, where):
            if not all(path.split(".")):
                raise ValueError(f"{_key_loc(where, path)}: a path is keys and list indexes joined by dots")
    try:  # "body" and "replace": anything JSON can carry
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
    if key == "ignores":
        return _rejects(value, where, _IGNORABLE, "ignore")
    if key == "echoes":
        return _echoes(value, where)
    if key == "echo_key":
        if isinstance(value, bool):
            return list(_ECHO_PLACES) if value else []
        return _rejects(value, where, _ECHO_PLACES, "echo the key in")
    return _number(value, where)  # latency, latency_jitter, logprob_jitter


def _echoes(value: object, where: str) -> JsonDict:
    echoes = _as_object(value, where)
    _check_keys(echoes, _ECHOES, where)
    for name, item in echoes.items():
        if name in ("temperature", "top_p"):
            _number(item, _key_loc(where, name))
        elif not (isinstance(item, str) or (item is None and name == "reasoning_effort")):
            raise ValueError(f"{_key_loc(where, name)}: expected a string, got {_describe(item)}")
    return dict(echoes)


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


# --------------------------------------------------------------------------- files


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
