"""type = "gemini": recorded bodies parse, requests are built as the Gemini API wants them, waits are read from
error bodies, and the real `fpwatch check` (a subprocess) against the simulator's Gemini dialect."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fpwatch_env

from fpwatch.config import Canary, Message, ModelConfig, ProviderConfig, Secret, load_config
from fpwatch.errors import ConfigError, ProbeError
from fpwatch.providers import ADAPTERS, TYPES, Parsed
from fpwatch.providers.capabilities import rejected_option
from fpwatch.providers.gemini import parse_generate_content, retry_delay
from fpwatch.providers.http import Attempt, Exchange
from fpwatch.sim import Simulator, realistic

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
# An AI Studio-shaped key (the redactor's pattern knows the AIza prefix) and one no pattern matches.
KEY = "AIzaSyFpwatchTest0123456789abcdefghijk"
MODEL, NAME = "gemini-2.5-flash", "google/gemini-2.5-flash"


def exchange(status: int, body: Any, headers: dict[str, str] | None = None, attempts: int = 1) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    tried = [Attempt(status, None, 0, None, None)] * attempts
    return Exchange(status, {"content-type": "application/json", **(headers or {})}, raw, 0.1, tried)


def fixture(name: str) -> Exchange:
    case = json.loads((FIXTURES / name).read_text())
    headers = {k.lower(): (v[0] if isinstance(v, list) else str(v)) for k, v in (case["headers"] or {}).items()}
    return exchange(case["status"], case["body"], {k: v for k, v in headers.items() if k != "content-encoding"})


# --- every recorded body ----------------------------------------------------------------------------------

# fixture: ("ok", resolved model, response id, output start, input, output, reasoning tokens)
#       or (error kind, words the message must contain, permanent)
RECORDED: dict[str, tuple[Any, ...]] = {
    "gemini-3-pro-thoughts.json": (
        "ok",
        "gemini-3-pro-preview",
        "DniLab2dFPeSxN8PpqXY4Ag",
        "There are **3**",
        9,
        287,
        258,
    ),
    "gemini-generatecontent-gemini-1.5.json": (
        "ok",
        "gemini-1.5-flash",
        "UB5DaMfEN7jFnvgPocrJaA",
        "The most iconic city",
        25,
        8,
        None,
    ),
    # a function call is an answer without text, as an OpenAI tool call is
    "gemini-generatecontent-thoughts.json": ("ok", "gemini-2.5-flash", "WKNOarSwGpjhz7IP99bVwQU", "", 79, 84, 69),
    "gemini-400-api-key-invalid.json": (
        "auth",
        "API key not valid. Please pass a valid API key. (HTTP 400 INVALID_ARGUMENT)",
        True,
    ),
    "gemini-404-not-found.json": ("not_found", "models/gemini-3.6-flahs is not found for API version v1beta", True),
    "gemini-429-resource-exhausted-plain.json": ("rate_limited", "Resource exhausted. Please try again later.", False),
    # Google's OpenAI-compatible endpoint wraps its status in a list: read by either adapter
    "gemini-openai-compat-400-error-array.json": ("bad_request", 'Unknown name "reasoning": Cannot find field.', True),
}


def test_every_gemini_fixture_is_in_the_table() -> None:
    """No recorded Gemini body goes untested."""
    assert sorted(p.name for p in FIXTURES.glob("gemini-*.json")) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_body_parses_into_an_observation_or_a_clear_error(name: str) -> None:
    """Each recorded Gemini body: the version signals and token counts as recorded, or Google's words and a hint."""
    expected = RECORDED[name]
    if expected[0] == "ok":
        parsed = parse_generate_content(fixture(name))
        _, model, response_id, output, input_tokens, output_tokens, reasoning = expected
        assert (parsed.fingerprint, parsed.fingerprint_state) == (None, "absent")
        assert (parsed.response_model, parsed.response_id) == (model, response_id)
        assert parsed.output.startswith(output) and (output or parsed.output == "")
        assert (parsed.input_tokens, parsed.output_tokens, parsed.reasoning_tokens) == (
            input_tokens,
            output_tokens,
            reasoning,
        )
        assert parsed.finish_reason == "STOP"
        return
    kind, words, permanent = expected
    with pytest.raises(ProbeError) as caught:
        parse_generate_content(fixture(name))
    error = caught.value
    assert (error.kind, error.permanent) == (kind, permanent)
    assert words in error.provider_words and error.hint and "\n" not in str(error)


def answer(**candidate: Any) -> dict[str, Any]:
    """A generateContent body whose first candidate has `candidate`'s fields."""
    first = {"content": {"parts": [{"text": "Blue"}], "role": "model"}, "finishReason": "STOP", **candidate}
    return {"candidates": [first], "modelVersion": "models/gemini-2.5-flash-001", "responseId": "r1"}


def test_thoughts_are_skipped_logprobs_read_and_a_zero_logprob_may_be_left_out() -> None:
    """Thought parts are not the answer; chosen and top candidates become the first token; an absent
    logProbability is 0 (proto3 JSON leaves defaults out); the `models/` prefix of modelVersion goes."""
    parts = [{"text": "Let me think", "thought": True}, {"text": "Blue"}, {"text": "!"}]
    logprobs = {
        "chosenCandidates": [{"token": "Blue"}, {"token": "!", "logProbability": -0.2}],
        "topCandidates": [{"candidates": [{"token": "Blue"}, {"token": "Red", "logProbability": -3.5}]}],
    }
    body = answer(content={"parts": parts, "role": "model"}, logprobsResult=logprobs)
    body["usageMetadata"] = {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 40}
    parsed = parse_generate_content(exchange(200, body))
    assert parsed.output == "Blue!" and parsed.response_model == "gemini-2.5-flash-001"
    assert parsed.first_token is not None
    assert (parsed.first_token.token, parsed.first_token.logprob, parsed.first_token.top) == (
        "Blue",
        0.0,
        {"Blue": 0.0, "Red": -3.5},
    )
    assert (parsed.output_tokens, parsed.reasoning_tokens) == (42, 40)


BROKEN: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (body, error kind, words)
    "thinking ate the budget": (
        {**answer(content={"role": "model"}, finishReason="MAX_TOKENS"), "usageMetadata": {"thoughtsTokenCount": 4}},
        "bad_request",
        "thought for 4 tokens",
    ),
    "answer withheld": (answer(content=None, finishReason="SAFETY"), "content_filter", "finishReason SAFETY"),
    "prompt blocked": (
        {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}},
        "content_filter",
        "PROHIBITED_CONTENT",
    ),
    "no candidates": ({"modelVersion": "x"}, "malformed", "no candidates[0]"),
    "a part that is no object": (answer(content={"parts": ["Blue"]}), "malformed", "parts[0] is a string"),
    "text that is no string": (answer(content={"parts": [{"text": 7}]}), "malformed", "parts[0].text is a number"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_200_without_a_usable_answer_says_why(case: str) -> None:
    """A withheld, blocked, broken or thought-out answer is an error with the reason, not an empty answer."""
    body, kind, words = BROKEN[case]
    with pytest.raises(ProbeError) as caught:
        parse_generate_content(exchange(200, body))
    assert caught.value.kind == kind and words in str(caught.value)


# --- errors and waits -------------------------------------------------------------------------------------


def status(code: int, name: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": name, "details": list(details)}}


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota(quota_id: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]}


def test_retry_delay_reads_retry_info_and_a_daily_quota_is_never_waited_for() -> None:
    """RetryInfo's "2s" / "1.5s" are seconds; a per-day quota is math.inf (reported, not retried); else None."""
    minute = quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    assert retry_delay(json.dumps(status(429, "RESOURCE_EXHAUSTED", "x", minute, retry_info("2s"))).encode()) == 2.0
    assert retry_delay(json.dumps([status(429, "RESOURCE_EXHAUSTED", "x", retry_info("1.5s"))]).encode()) == 1.5
    daily = status(429, "RESOURCE_EXHAUSTED", "x", quota("GenerateRequestsPerDayPerProjectPerModel"), retry_info("9s"))
    assert retry_delay(json.dumps(daily).encode()) == math.inf
    for body in (b"not json", b"{}", json.dumps(status(429, "RESOURCE_EXHAUSTED", "x", retry_info("soon"))).encode()):
        assert retry_delay(body) is None


ERRORS: dict[str, tuple[int, dict[str, Any], str, str]] = {
    # case: (HTTP status, body, kind, words in the message)
    "field violations in Google's words": (
        400,
        status(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "generation_config.top_k", "description": "must be positive"}],
            },
        ),
        "bad_request",
        "Request contains an invalid argument.; generation_config.top_k: must be positive (HTTP 400 INVALID_ARGUMENT",
    ),
    "logprobs not enabled": (
        400,
        status(400, "INVALID_ARGUMENT", "Logprobs is not enabled for models/gemini-2.5-pro"),
        "bad_request",
        "set logprobs = false",
    ),
    "a wait from the body": (
        429,
        status(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", retry_info("53s")),
        "rate_limited",
        "the server asked to wait 53s",
    ),
    "a daily quota": (
        429,
        status(429, "RESOURCE_EXHAUSTED", "quota", quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier")),
        "quota",
        "daily quota GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    ),
    "overloaded": (
        503,
        status(503, "UNAVAILABLE", "The model is overloaded."),
        "server_error",
        "(HTTP 503 UNAVAILABLE",
    ),
    "no key": (403, status(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"), "auth", "api_key"),
    "a region it does not serve": (
        400,
        status(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
        "bad_request",
        "does not serve the region",
    ),
    "an HTML page from a proxy": (502, b"<html><title>502 Bad Gateway</title></html>", "malformed", "HTML page"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_carry_googles_words_and_a_hint(case: str) -> None:
    """Each google.rpc status maps to its kind, Google's message shown as it is, with what to do."""
    http, body, kind, words = ERRORS[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "text/html"} if isinstance(body, bytes) else {}
    with pytest.raises(ProbeError) as caught:
        parse_generate_content(exchange(http, raw, headers, attempts=2))
    assert caught.value.kind == kind and words in str(caught.value), str(caught.value)


def test_logprobs_refusals_are_recognised_from_googles_words() -> None:
    """Both of Google's logprobs refusals name an option the canary sends: the check adapts, as for OpenAI."""
    canary = Canary("c", (Message("user", "hi"),))
    for words in (
        "Logprobs is not enabled for models/gemini-2.5-pro",
        "Logprobs is not supported for the current model.",
    ):
        assert rejected_option(f"{words} (HTTP 400 INVALID_ARGUMENT)", canary) == "logprobs"
    seed = 'Invalid JSON payload received. Unknown name "seed": Cannot find field. (HTTP 400 INVALID_ARGUMENT)'
    assert rejected_option(seed, canary) == "seed"  # the OpenAI-compatible endpoint's refusal
    assert rejected_option('Unknown name "reasoning": Cannot find field.', canary) is None


# --- requests ---------------------------------------------------------------------------------------------


def provider(base_url: str = "https://generativelanguage.googleapis.com") -> ProviderConfig:
    return ProviderConfig("google", "gemini", base_url, api_key=Secret(KEY))


def test_request_mapping_key_in_a_header_never_in_the_url() -> None:
    """generateContent under v1beta; x-goog-api-key; system messages to systemInstruction, assistant to "model";
    seed, temperature, token limit and logprobs in generationConfig, where `params` may add their own."""
    messages = (
        Message("system", "Be terse."),
        Message("user", "hi"),
        Message("assistant", "Hi."),
        Message("user", "1+1="),
    )
    canary = Canary("c", messages, seed=7, temperature=0.0, max_tokens=3)
    params = {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}, "safetySettings": []}
    model = ModelConfig(name="m", provider=provider(), model=MODEL, canaries=(canary,), params=params)
    request = ADAPTERS["gemini"](provider()).build_request(model, canary)
    assert request.url == f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}:generateContent"
    assert request.params is None and KEY not in request.url and request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers and request.body_delay is retry_delay
    assert request.payload == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "Hi."}]},
            {"role": "user", "parts": [{"text": "1+1="}]},
        ],
        "generationConfig": {
            "maxOutputTokens": 3,
            "temperature": 0.0,
            "seed": 7,
            "responseLogprobs": True,
            "logprobs": 5,
            "thinkingConfig": {"thinkingBudget": 0},
        },
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "safetySettings": [],
    }


def test_a_plain_canary_a_versioned_base_url_and_model_names() -> None:
    """No seed, temperature or logprobs: none sent; a base URL with its version and a models/ or tuned model id."""
    canary = Canary("c", (Message("user", "hi"),), seed=None, temperature=None, logprobs=False)
    adapter = ADAPTERS["gemini"](provider("https://proxy.example/v1beta"))
    for model_id, path in (
        ("models/gemini-2.0-flash", "models/gemini-2.0-flash"),
        ("tunedModels/t-1", "tunedModels/t-1"),
    ):
        model = ModelConfig(name="m", provider=adapter.provider, model=model_id, canaries=(canary,))
        request = adapter.build_request(model, canary)
        assert request.url == f"https://proxy.example/v1beta/{path}:generateContent"
        assert request.payload["generationConfig"] == {"maxOutputTokens": 16}
    top0 = Canary("c", (Message("user", "hi"),), top_logprobs=0)
    model = ModelConfig(name="m", provider=adapter.provider, model=MODEL, canaries=(top0,))
    assert "logprobs" not in adapter.build_request(model, top0).payload["generationConfig"]  # chosen tokens only


# --- the real `fpwatch check` against the simulator's Gemini dialect ---------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=KEY, seed=21) as simulator:
        simulator.update_model(MODEL, {**realistic("a"), "resolved": "gemini-2.5-flash-001"})
        yield simulator


class Check:
    """`fpwatch check` on a gemini provider pointing at the simulator, in a temp folder."""

    def __init__(self, tmp_path: Path, sim: Simulator, key: str = KEY, model_extra: str = "") -> None:
        self.tmp_path, self.sim, self.key = tmp_path, sim, key
        self.outputs: list[str] = []
        (tmp_path / "fpwatch.toml").write_text(
            f"""
[fpwatch]
state = "state.db"
log_format = "json"

[defaults]
grace_period = "1h"
learning_period = 1

[providers.google]
type = "gemini"
base_url = "{sim.url}"
api_key = "${{GEMINI_API_KEY}}"

[[models]]
provider = "google"
model = "{MODEL}"
{model_extra}
"""
        )

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "fpwatch", "--config", str(self.tmp_path / "fpwatch.toml"), *args],
            capture_output=True,
            text=True,
            env=fpwatch_env(GEMINI_API_KEY=self.key),
            cwd=self.tmp_path,
            timeout=120,
        )
        self.outputs.append(result.stdout + result.stderr)
        return result

    def model(self, *args: str) -> dict[str, Any]:
        result = self("check", "--json", *args)
        summary: dict[str, Any] = json.loads(result.stdout)["models"][0]
        summary["exit_code"] = result.returncode
        return summary


def sent(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].endswith(":generateContent")]


def test_baseline_then_a_re_pointed_name_is_model_changed(tmp_path: Path, sim: Simulator) -> None:
    """The first check learns modelVersion (exit 0, no fingerprint at all); a new one is model.changed, exit 1."""
    check = Check(tmp_path, sim)
    first = check.model()
    assert first["exit_code"] == 0 and first["error"] is None, first
    assert [e["type"] for e in first["events"]] == ["model.first_seen"]
    assert first["resolved_models"] == ["gemini-2.5-flash-001"] and first["fingerprints"] == []
    log = sent(sim)
    assert log and all(r["status"] == 200 and r["auth"] == "ok" and r["logprobs"] is True for r in log)
    assert check.model()["exit_code"] == 0
    sim.update_model(MODEL, {"resolved": "gemini-2.5-flash-002"})
    changed = check.model()
    assert changed["exit_code"] == 1, changed
    (event,) = [e for e in changed["events"] if e["type"] == "model.changed"]
    assert event["details"]["new"] == "gemini-2.5-flash-002" and event["severity"] == "warning"


def test_a_silent_swap_behind_the_same_model_version_is_a_critical_drift(tmp_path: Path, sim: Simulator) -> None:
    """Answers change, modelVersion does not: the only signal is the behaviour, a silent canary.drift, exit 2."""
    check = Check(tmp_path, sim)
    for _ in range(10):
        steady = check.model()
        assert steady["exit_code"] == 0, steady
        assert [e["type"] for e in steady["events"] if e["severity"] != "info"] == []
    assert steady["state"] == "ok" and steady["drift"]["reference_samples"] >= 16, steady["drift"]
    sim.update_model(MODEL, {"outputs": realistic("b")["outputs"]})
    swapped = check.model()
    assert swapped["exit_code"] == 2, swapped
    assert [e["type"] for e in swapped["events"]] == ["canary.drift"]
    drift = swapped["events"][0]
    assert drift["severity"] == "critical" and drift["details"]["silent"] is True


def test_a_429_is_retried_after_the_wait_in_its_body(tmp_path: Path, sim: Simulator) -> None:
    """RESOURCE_EXHAUSTED with RetryInfo.retryDelay "1.5s" (no Retry-After header): the retry comes 1.5 s later."""
    one = 'canaries = ["one"]\n\n[canaries.one]\nprompt = "Reply in one token. 1+1="\nmax_tokens = 2\nsamples = 1'
    check = Check(tmp_path, sim, model_extra=one)
    sim.push_faults(MODEL, [{"kind": "429", "retry_after": 1.5}])
    result = check.model()
    assert result["exit_code"] == 0 and result["failed_requests"] == 0, result
    log = sent(sim)
    assert [(r["status"], r["fault"]) for r in log] == [(429, "429"), (200, None)]
    assert 1.5 <= log[1]["monotonic"] - log[0]["monotonic"] < 4
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT attempts, ok FROM observations").fetchall() == [(2, 1)]


def test_a_model_that_rejects_logprobs_is_adapted_once(tmp_path: Path, sim: Simulator) -> None:
    """400 "Logprobs is not enabled for models/..." adapts the canaries; later checks ask for no logprobs."""
    sim.update_model(MODEL, {"rejects": ["logprobs"]})
    check = Check(tmp_path, sim)
    first = check.model()
    assert first["exit_code"] == 0 and first["error"] is None, first
    assert list(first["adapted"]) == ["logprobs"] and "Logprobs is not enabled" in first["adapted"]["logprobs"]
    sim.clear_requests()
    second = check.model()
    assert second["exit_code"] == 0 and second["adapted"] == {} and second["unsupported"] == ["logprobs"]
    log = sent(sim)
    assert log and all(r["status"] == 200 for r in log)
    assert all(
        not {"generationConfig.responseLogprobs", "generationConfig.logprobs"} & set(r["body_keys"]) for r in log
    )


def test_the_key_is_in_no_url_log_line_stored_byte_or_export(tmp_path: Path, sim: Simulator) -> None:
    """Right key and wrong: every request sent it as x-goog-api-key only, and nothing fpwatch wrote holds it."""
    check = Check(tmp_path, sim)
    check("check")
    check("check", "--json")
    check("--debug", "check")
    wrong = "AIzaSyWrongKeyTheServerRejects0000000"
    check.key = wrong
    refused = check.model()
    assert (
        refused["exit_code"] == 3 and "API key not valid" in refused["error"] and "x-goog-api-key" in refused["error"]
    )
    for args in (
        ("export",),
        ("export", "--format", "csv"),
        ("events", "--json"),
        ("status", "--json"),
        ("config", "show"),
    ):
        assert check(*args).returncode in (0, 1), args
    log = sent(sim)
    assert {r["auth"] for r in log} == {"ok", "wrong"} and all(r["query"] == [] for r in log)
    assert all(KEY not in r["path"] and wrong not in r["path"] for r in log)
    written = "".join(check.outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "fpwatch.toml":
            written += path.read_bytes().decode("utf-8", errors="replace")
    assert "gemini-2.5-flash-001" in written  # the database and the export were read, not empty
    assert KEY not in written and wrong not in written


def test_a_key_echoed_in_a_200_answer_is_scrubbed(tmp_path: Path, sim: Simulator) -> None:
    """A proxy repeating the key in the answer, modelVersion, responseId and logprobs: all of it is masked."""
    sim.update_model(MODEL, {"echo_key": True})
    check = Check(tmp_path, sim)
    result = check.model()
    assert result["exit_code"] == 0, result
    export = check("export").stdout
    assert "[REDACTED]" in export and KEY not in export
    assert KEY not in (tmp_path / "state.db").read_bytes().decode("utf-8", errors="replace")


def test_parsed_is_what_the_adapter_protocol_returns() -> None:
    """The registry line: type "gemini" is the Gemini adapter, with its declared defaults."""
    adapter = ADAPTERS["gemini"]
    assert adapter.spec.default_base_url == "https://generativelanguage.googleapis.com"
    assert adapter.spec.key_variable == "GEMINI_API_KEY" and adapter.spec.key_required
    assert isinstance(parse_generate_content(exchange(200, answer())), Parsed)


def test_the_config_takes_type_gemini_with_its_defaults(tmp_path: Path) -> None:
    """type = "gemini" needs only a key: the base URL is Google's; without a key the error names GEMINI_API_KEY."""
    path = tmp_path / "fpwatch.toml"
    models = f'[[models]]\nprovider = "google"\nmodel = "{MODEL}"\n'
    path.write_text(f'[providers.google]\ntype = "gemini"\napi_key = "${{GEMINI_API_KEY}}"\n\n{models}')
    config = load_config(path, TYPES, env={"GEMINI_API_KEY": KEY})
    google = config.providers["google"]
    assert google.base_url == "https://generativelanguage.googleapis.com" and google.api_key == Secret(KEY)
    path.write_text(f'[providers.google]\ntype = "gemini"\n\n{models}')
    with pytest.raises(ConfigError) as caught:
        load_config(path, TYPES, env={})
    assert 'api_key = "${GEMINI_API_KEY}"' in str(caught.value)
