"""`type = "anthropic"`: the Messages API adapter on recorded bodies, the simulator's Anthropic dialect proven with
the official `anthropic` SDK, and the real `fpwatch check` against it (baseline, model change, silent swap, retries,
secrets).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import ONE_PROVIDER_HEAD, only_model, run_in

from fpwatch.config import Canary, Message, ModelConfig, ProviderConfig, Secret, load_config
from fpwatch.errors import ConfigError, ProbeError
from fpwatch.providers import TYPES
from fpwatch.providers.anthropic import AnthropicAdapter, parse_message
from fpwatch.providers.capabilities import rejected_option
from fpwatch.providers.http import Attempt, Exchange
from fpwatch.sim import Simulator, realistic

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
KEY = "sk-ant-api03-fpwatch-test-5f4e3d2c1b0a"
SNAPSHOT, NEXT_SNAPSHOT = "claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20260114"
MODEL = "claude/claude-sonnet-4-5"


# --------------------------------------------------------------------------- recorded bodies


def exchange_from(name: str) -> Exchange:
    case = json.loads((FIXTURES / name).read_text())
    body = case["body"]
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {k.lower(): str(v) for k, v in (case["headers"] or {}).items()}
    headers.setdefault("content-type", "application/json")
    return Exchange(case["status"], headers, raw, 0.1, [Attempt(case["status"], None, 0, None, None)])


# fixture: the Parsed fields it must give, or (error kind, words the message must hold, permanent)
RECORDED: dict[str, dict[str, Any] | tuple[str, tuple[str, ...], bool]] = {
    "anthropic-message-stop-sequence.json": {
        "output": "The beautiful city of ",
        "response_model": SNAPSHOT,
        "response_id": "msg_01376yZQxHcw9pER2Ab2SvQb",
        "finish_reason": "stop_sequence",
        "input_tokens": 32,
        "output_tokens": 5,
        "fingerprint": "service_tier=standard",  # usage.service_tier, the derived fingerprint
        "fingerprint_state": "present",
        "first_token": None,
    },
    "anthropic-429-headers-no-retry-after.json": (
        "rate_limited",
        ("HTTP 429", "requests until 2024-03-26T20:00:00Z used up", "lower max_concurrency"),
        False,
    ),
    "anthropic-500-api-error-null-request-id.json": (
        "server_error",
        ("Overloaded (api_error, HTTP 500)", "Anthropic's API failed"),
        False,
    ),
    "anthropic-529-overloaded.json": (
        "server_error",
        ("Overloaded (overloaded_error, HTTP 529)", "not your rate limit"),
        False,
    ),
}


def test_every_anthropic_fixture_is_in_the_table() -> None:
    """A new recorded anthropic-* body must say here what it parses into."""
    assert sorted(p.name for p in FIXTURES.glob("anthropic-*.json")) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_bodies_parse_into_an_observation_or_the_providers_words(name: str) -> None:
    """Each recorded Messages API body gives the answer and version signals, or one line in Anthropic's words."""
    expected = RECORDED[name]
    if isinstance(expected, dict):
        parsed = parse_message(exchange_from(name))
        assert {field: getattr(parsed, field) for field in expected} == expected
        return
    kind, words, permanent = expected
    with pytest.raises(ProbeError) as caught:
        parse_message(exchange_from(name))
    message = str(caught.value)
    assert caught.value.kind == kind and caught.value.permanent is permanent
    assert "\n" not in message and len(message) < 400
    for part in words:
        assert part in message


def test_an_openai_body_is_not_taken_for_a_message() -> None:
    """A chat.completion sent to an anthropic provider (a wrong type or base_url) says so."""
    case = json.loads((FIXTURES / "openai-chat-gpt-4o-mini.json").read_text())
    exchange = Exchange(200, {"content-type": "application/json"}, json.dumps(case["body"]).encode(), 0.1)
    with pytest.raises(ProbeError, match=r"no content .* check the provider's type and base_url"):
        parse_message(exchange)


def body_exchange(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange(status, {"content-type": "application/json", **(headers or {})}, json.dumps(body).encode(), 0.1)


def message(**fields: Any) -> dict[str, Any]:
    body = {
        "id": "msg_01x",
        "type": "message",
        "role": "assistant",
        "model": SNAPSHOT,
        "content": [{"type": "text", "text": "Paris"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }
    return {**body, **fields}


def test_thinking_is_not_the_answer_but_its_tokens_count() -> None:
    """Text blocks are joined; thinking and redacted thinking are skipped; thinking and cached tokens are counted."""
    parsed = parse_message(
        body_exchange(
            message(
                content=[
                    {"type": "thinking", "thinking": "The user wants a city.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Par"},
                    {"type": "text", "text": "is"},
                ],
                usage={
                    "input_tokens": 10,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 1,
                    "output_tokens": 300,
                    "output_tokens_details": {"thinking_tokens": 290},
                    "service_tier": "priority",
                },
            )
        )
    )
    assert (parsed.output, parsed.input_tokens, parsed.output_tokens, parsed.reasoning_tokens) == (
        "Paris",
        16,
        300,
        290,
    )


def test_a_refusal_and_an_empty_answer_are_answers() -> None:
    """stop_reason "refusal" with no text, or content [], is an empty answer recorded with its reason."""
    parsed = parse_message(body_exchange(message(content=[], stop_reason="refusal")))
    assert (parsed.output, parsed.finish_reason) == ("", "refusal")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Paris", "content is a string, not a list of blocks"),
        (None, "content is null, not a list of blocks"),
        (["Paris"], "content[0] is a string, not a content block"),
        ([{"text": "Paris"}], "content[0] is an object, not a content block"),
        ([{"type": "text", "text": 7}], "content[0].text is a number, not a string"),
    ],
)
def test_a_broken_message_is_malformed_with_the_reason(content: Any, reason: str) -> None:
    """A content of the wrong shape is a malformed answer that says where, not an empty one."""
    with pytest.raises(ProbeError) as caught:
        parse_message(body_exchange(message(content=content)))
    assert caught.value.kind == "malformed" and reason in str(caught.value)


ERRORS: list[tuple[int, str, str, str, str, bool]] = [
    # status, error.type, message, fpwatch's kind, a part of the hint, permanent
    (401, "authentication_error", "invalid x-api-key", "auth", "x-api-key", True),
    (403, "permission_error", "Your API key does not have permission", "auth", "workspace's access", True),
    (404, "not_found_error", "model: claude-nope", "not_found", "check the model id", True),
    (400, "invalid_request_error", "max_tokens: Field required", "bad_request", "max_tokens", True),
    (429, "rate_limit_error", "Number of requests has exceeded your rate limit", "rate_limited", "wait 7s", False),
    (529, "overloaded_error", "Overloaded", "server_error", "overloaded", False),
    (500, "api_error", "Internal server error", "server_error", "retried", False),
    (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
        "quota",
        "credits",
        True,
    ),
    (400, "billing_error", "This organization has been disabled.", "quota", "billing", True),
    (400, "invalid_request_error", "seed: Extra inputs are not permitted", "bad_request", "remove it from", True),
    (400, "invalid_request_error", "temperature: Input should be less than or equal to 1", "bad_request", "0 to", True),
    (
        400,
        "invalid_request_error",
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        "bad_request",
        "remove top_p",
        True,
    ),
]


@pytest.mark.parametrize(("status", "kind", "said", "our_kind", "hint", "permanent"), ERRORS)
def test_each_error_type_is_said_in_anthropics_words_with_its_hint(
    status: int, kind: str, said: str, our_kind: str, hint: str, permanent: bool
) -> None:
    """The error envelope gives Anthropic's message and type, the status, and the hint that fixes it."""
    body = {"type": "error", "error": {"type": kind, "message": said}, "request_id": "req_011CX"}
    with pytest.raises(ProbeError) as caught:
        parse_message(body_exchange(body, status, {"retry-after": "7"} if status == 429 else None))
    error = caught.value
    assert error.provider_words == f"{said} ({kind}, HTTP {status})"
    assert (error.kind, error.permanent, error.status) == (our_kind, permanent, status)
    assert hint in error.hint


def test_a_newer_models_deprecated_temperature_is_a_rejected_option() -> None:
    """Opus 4.7 and later answer temperature with "deprecated for this model": adapted like any rejected option."""
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "`temperature` is deprecated for this model."},
    }
    with pytest.raises(ProbeError) as caught:
        parse_message(body_exchange(body, 400))
    canary = Canary("c", (Message("user", "hi"),))
    assert caught.value.canary_setting == "temperature"
    assert rejected_option(caught.value, canary) == "temperature"


# --------------------------------------------------------------------------- requests and config


def model_config(**extra: str) -> ModelConfig:
    provider = ProviderConfig(
        "claude",
        "anthropic",
        "https://api.anthropic.com",
        api_key=Secret(KEY),
        headers={"anthropic-beta": "x"},
        extra=extra,
    )
    canary = Canary("c", (Message("system", "Be brief."), Message("user", "Capital of France?")), max_tokens=5)
    return ModelConfig("claude/m", provider, "claude-sonnet-4-5", (canary,), timeout=timedelta(seconds=5))


def test_the_request_is_the_messages_api() -> None:
    """/v1/messages, x-api-key and anthropic-version; system on top; max_tokens, temperature; no seed, no logprobs."""
    model = model_config()
    adapter = AnthropicAdapter(model.provider)
    request = adapter.build_request(model, model.canaries[0])
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["anthropic-beta"] == "x" and "authorization" not in request.headers
    assert dict(request.payload) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "system": "Be brief.",
        "temperature": 0.0,
    }
    assert adapter.asks_logprobs(model.canaries[0]) is False
    assert TYPES["anthropic"].unsupported == frozenset({"seed", "logprobs"})


def test_anthropic_version_params_and_a_base_url_with_v1() -> None:
    """The declared anthropic_version key sets the header; params win; a base URL copied with /v1 still works."""
    model = model_config(anthropic_version="2026-10-21")
    provider = ProviderConfig("claude", "anthropic", "https://proxy.example/anthropic/v1", extra=model.provider.extra)
    model = ModelConfig(model.name, provider, model.model, model.canaries, params={"max_tokens": 64, "top_k": 1})
    request = AnthropicAdapter(provider).build_request(model, model.canaries[0])
    assert request.url == "https://proxy.example/anthropic/v1/messages"
    assert request.headers["anthropic-version"] == "2026-10-21" and "x-api-key" not in request.headers
    assert (request.payload["max_tokens"], request.payload["top_k"]) == (64, 1)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_knows_anthropic_from_what_the_adapter_declares(tmp_path: Path) -> None:
    """Default base URL, the key variable in the advice, anthropic_version for this type only."""
    ok = write(
        tmp_path / "ok.toml",
        '[providers.claude]\ntype = "anthropic"\napi_key = "k"\nanthropic_version = "2023-06-01"\n'
        '[[models]]\nprovider = "claude"\nmodel = "claude-sonnet-4-5"\n',
    )
    config = load_config(ok, TYPES, env={})
    provider = config.providers["claude"]
    assert (provider.base_url, provider.extra) == ("https://api.anthropic.com", {"anthropic_version": "2023-06-01"})
    bad = write(
        tmp_path / "bad.toml",
        '[providers.claude]\ntype = "anthropic"\n[providers.oa]\ntype = "openai"\napi_key = "k"\n'
        'anthropic_version = "2023-06-01"\n[[models]]\nprovider = "claude"\nmodel = "m"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad, TYPES, env={})
    problems = {p.location: p.message for p in caught.value.problems}
    assert "${ANTHROPIC_API_KEY}" in problems["providers.claude.api_key"]
    assert problems["providers.oa.anthropic_version"] == 'only applies to type = "anthropic"; remove it'


def test_a_canary_that_insists_on_logprobs_is_a_config_error_for_anthropic(tmp_path: Path) -> None:
    """logprobs = true cannot be honoured by a type without logprobs: the model's canaries are refused, with the fix;
    "auto" (and the built-in set) are fine."""
    text = (
        '[providers.claude]\ntype = "anthropic"\napi_key = "k"\n[providers.oa]\ntype = "openai"\napi_key = "k"\n'
        '[[models]]\nprovider = "oa"\nmodel = "gpt-4o"\ncanaries = ["lp"]\n'
        '[[models]]\nprovider = "claude"\nmodel = "claude-sonnet-4-5"\ncanaries = ["lp", "auto", "default"]\n'
        '[canaries.lp]\nprompt = "hi"\nlogprobs = true\n[canaries.auto]\nprompt = "hi"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "c.toml", text), TYPES, env={})
    (problem,) = caught.value.problems
    assert problem.location == "models[1].canaries"
    assert problem.message.startswith('canary "lp" sets logprobs = true, but type "anthropic" has no logprobs')
    load_config(write(tmp_path / "d.toml", text.replace('"lp", "auto"', '"auto"')), TYPES, env={})


# --------------------------------------------------------------------------- the simulator, through the SDK


@pytest.fixture
def sim() -> Iterator[Simulator]:
    outputs = {"*": {"Paris": 0.8, "Lyon": 0.2}, "Say hello": "Hello there, world"}
    scenario = {"models": {"claude-sonnet-4-5": {"resolved": SNAPSHOT, "outputs": outputs}}}
    with Simulator(scenario, api_key=KEY, seed=5) as simulator:
        yield simulator


def sdk(sim: Simulator, api_key: str = KEY, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key=api_key, max_retries=retries, timeout=10)


def ask(client: anthropic.Anthropic, **extra: Any) -> anthropic.types.Message:
    arguments: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Capital of France?"}],
        **extra,
    }
    return client.messages.create(**arguments)


def test_the_sdk_parses_a_full_message(sim: Simulator) -> None:
    """client.messages.create reads the id, resolved snapshot, text, stop reason, usage and request id."""
    # The SDK dropped temperature as an argument (1.0); the API still takes it from models that allow it.
    reply = ask(sdk(sim), system="Be brief.", extra_body={"temperature": 0})
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_01")
    assert reply.model == SNAPSHOT
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text in ("Paris", "Lyon")  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    usage = (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.service_tier)
    assert usage == (5, 1, "standard")  # words of the system prompt and the question
    entry = sim.requests()[-1]
    assert reply._request_id == entry["request_id"] and entry["request_id"].startswith("req_011C")
    assert (entry["path"], entry["auth"], entry["status"], entry["temperature"]) == ("/v1/messages", "ok", 200, 0)
    truncated = ask(sdk(sim), max_tokens=1, messages=[{"role": "user", "content": "Say hello world"}])
    assert (truncated.stop_reason, truncated.content[0].text) == ("max_tokens", "Hello")  # type: ignore[union-attr]


def test_the_sdk_raises_its_typed_errors(sim: Simulator) -> None:
    """Wrong key, 429, 529, 500, an extra field, a system role: each is the SDK's exception with Anthropic's body."""
    wrong = "sk-ant-wrong-key-7777"
    with pytest.raises(anthropic.AuthenticationError) as auth:
        ask(sdk(sim, api_key=wrong))
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": auth.value.request_id,
    }
    assert wrong not in str(auth.value) and wrong not in json.dumps(sim.requests())

    sim.push_faults("claude-sonnet-4-5", [{"kind": "429", "retry_after": 3}, "529", "500"])
    with pytest.raises(anthropic.RateLimitError) as limited:
        ask(sdk(sim))
    headers = limited.value.response.headers
    assert headers["retry-after"] == "3" and headers["x-should-retry"] == "true"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ask(sdk(sim))
    assert overloaded.value.status_code == 529 and "overloaded_error" in str(overloaded.value)
    with pytest.raises(anthropic.InternalServerError) as failed:
        ask(sdk(sim))
    assert failed.value.status_code == 500 and failed.value.request_id == failed.value.response.headers["request-id"]

    with pytest.raises(anthropic.BadRequestError, match="seed: Extra inputs are not permitted"):
        ask(sdk(sim), extra_body={"seed": 1})
    with pytest.raises(anthropic.BadRequestError, match='Unexpected role "system"'):
        ask(sdk(sim), messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    sim.set_scenario({"models": {"claude-sonnet-4-5": {}}})  # no "*": other model ids are unknown
    with pytest.raises(anthropic.NotFoundError, match="model: claude-nope"):
        ask(sdk(sim), model="claude-nope")


def test_the_sdk_retries_on_the_servers_word(sim: Simulator) -> None:
    """The SDK's own retry loop (x-should-retry, retry-after) gets through a 529 and a 429 from the simulator."""
    sim.push_faults("claude-sonnet-4-5", [{"kind": "529", "retry_after": 0.2}, {"kind": "429", "retry_after": 0.3}])
    assert ask(sdk(sim, retries=2)).model == SNAPSHOT
    log = sim.requests()
    assert [e["status"] for e in log] == [529, 429, 200]
    assert log[2]["monotonic"] - log[1]["monotonic"] >= 0.3


def test_auth_and_the_version_header_as_the_real_api(sim: Simulator) -> None:
    """x-api-key or a Bearer key; no key: 401; no anthropic-version: 400; an unknown one: 400."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    version = {"anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=sim.url) as http:
        missing = http.post("/v1/messages", json=body, headers=version)
        by_header = http.post("/v1/messages", json=body, headers={**version, "x-api-key": KEY})
        by_bearer = http.post("/v1/messages", json=body, headers={**version, "authorization": f"Bearer {KEY}"})
        no_version = http.post("/v1/messages", json=body, headers={"x-api-key": KEY})
        odd_version = http.post(
            "/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2024-13-01"}
        )
    assert (missing.status_code, missing.json()["error"]["message"]) == (401, "x-api-key header is required")
    assert by_header.status_code == by_bearer.status_code == 200
    assert "openai-version" not in by_header.headers and by_header.headers["request-id"].startswith("req_011C")
    assert (no_version.status_code, no_version.json()["error"]) == (
        400,
        {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
    )
    assert odd_version.json()["error"]["message"] == 'anthropic-version: "2024-13-01" is not a valid version'
    assert [e["auth"] for e in sim.requests()] == ["missing", "ok", "ok", "ok", "ok"]


def test_faults_and_echoes_in_anthropics_shapes(sim: Simulator) -> None:
    """malformed (cut, or fields replaced), quota, a deprecated temperature and echo_key, in-process and by HTTP."""
    sim.update_model("claude-sonnet-4-5", {"rejects": ["temperature"]})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    status, refused = sim.respond({**body, "temperature": 0}, path="/v1/messages")
    assert (status, refused["error"]["message"]) == (400, "`temperature` is deprecated for this model.")
    sim.push_faults("claude-sonnet-4-5", ["malformed", {"kind": "malformed", "replace": {"content": "x"}}, "quota"])
    cut = sim.respond(body, path="/v1/messages")
    assert cut[0] == 200 and cut[1]["raw"].startswith('{"id":"msg_01') and cut[1]["raw"].endswith('"text":"Hel')
    assert sim.respond(body, path="/v1/messages")[1]["content"] == "x"
    assert sim.respond(body, path="/v1/messages")[1]["error"]["message"].startswith("Your credit balance is too low")

    sim.update_model("claude-sonnet-4-5", {"echo_key": True})
    raw = httpx.post(f"{sim.url}/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    echoed = raw.json()
    assert echoed["content"][0]["text"].endswith(KEY) and echoed["model"].endswith(KEY) and echoed["id"] == f"msg_{KEY}"
    assert raw.headers["request-id"] == f"req_{KEY}"


# --------------------------------------------------------------------------- fpwatch check, end to end


def write_config(tmp_path: Path, sim: Simulator, *, provider: str = "", models: str = "") -> None:
    (tmp_path / "fpwatch.toml").write_text(
        ONE_PROVIDER_HEAD
        + f"""
[providers.claude]
type = "anthropic"
base_url = "{sim.url}"
api_key = "${{ANTHROPIC_API_KEY}}"
{provider}

[[models]]
provider = "claude"
model = "claude-sonnet-4-5"
{models}
"""
    )


def run(tmp_path: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return run_in(tmp_path, *args, ANTHROPIC_API_KEY=key)


summary = only_model


@pytest.fixture
def claude() -> Iterator[Simulator]:
    """A realistic Claude: temperature-0 noise on the built-in canaries, a dated snapshot, no system fingerprint."""
    with Simulator(api_key=KEY, seed=12) as simulator:
        simulator.update_model("claude-sonnet-4-5", {**realistic("a"), "resolved": SNAPSHOT})
        yield simulator


PROBE = 'canaries = ["probe"]\n\n[canaries.probe]\nprompt = "Capital of France? One word."\nmax_tokens = 3\nsamples = 2'


def test_baseline_then_a_new_snapshot_is_model_changed(tmp_path: Path, claude: Simulator) -> None:
    """Check 1 learns the snapshot and the service tier (exit 0); the name moved to another snapshot: model.changed,
    exit 1; the requests moved to the priority tier: fingerprint.changed, exit 1."""
    write_config(tmp_path, claude, models=PROBE)
    first = run(tmp_path, "check", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    model = summary(first)
    assert model["resolved_models"] == [SNAPSHOT] and model["fingerprints"] == ["service_tier=standard"]
    assert [e["type"] for e in model["events"]] == ["fingerprint.first_seen", "model.first_seen"]
    sent = claude.requests()
    assert {e["path"] for e in sent} == {"/v1/messages"} and {e["auth"] for e in sent} == {"ok"}
    assert all(e["seed"] is None and e["logprobs"] is None and e["max_tokens"] == 3 for e in sent)
    assert sent[0]["body_keys"] == ["max_tokens", "messages", "model", "temperature"]
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT seed, fingerprint_state, response_model, request_id FROM observations").fetchall()
    assert {row[:3] for row in rows} == {(None, "present", SNAPSHOT)}  # no seed was sent, so none is recorded
    assert {row[3] for row in rows} == {e["request_id"] for e in sent}

    claude.update_model("claude-sonnet-4-5", {"resolved": NEXT_SNAPSHOT})
    changed = run(tmp_path, "check", "--json")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    (event,) = [e for e in summary(changed)["events"] if e["type"] == "model.changed"]
    assert (event["details"]["old"], event["details"]["new"]) == ([SNAPSHOT], NEXT_SNAPSHOT)
    assert event["severity"] == "warning" and event["summary"].startswith(MODEL)

    claude.update_model("claude-sonnet-4-5", {"echoes": {"service_tier": "priority"}})
    tiered = run(tmp_path, "check", "--json")
    assert tiered.returncode == 1, tiered.stdout + tiered.stderr
    (event,) = [e for e in summary(tiered)["events"] if e["type"] == "fingerprint.changed"]
    assert event["details"]["new"] == "service_tier=priority" and event["severity"] == "warning"


def test_a_silent_swap_is_a_critical_silent_drift(tmp_path: Path, claude: Simulator) -> None:
    """Same snapshot name, other answers, no fingerprint and no logprobs to help: the answers alone raise a silent
    canary.drift, exit 2."""
    write_config(tmp_path, claude)
    for _ in range(10):
        steady = run(tmp_path, "check", "--json")
        assert steady.returncode == 0, steady.stdout + steady.stderr
        assert [e["type"] for e in summary(steady)["events"] if e["severity"] != "info"] == []
    model = summary(steady)
    assert model["state"] == "ok" and model["drift"]["reference_samples"] >= 16, model["drift"]
    claude.update_model("claude-sonnet-4-5", {"outputs": realistic("b")["outputs"]})
    swapped = run(tmp_path, "check", "--json")
    assert swapped.returncode == 2, swapped.stdout + swapped.stderr
    model = summary(swapped)
    assert [e["type"] for e in model["events"]] == ["canary.drift"]
    (drift,) = model["events"]
    assert drift["severity"] == "critical" and drift["details"]["silent"] is True
    assert drift["details"]["channel"] == "answers" and model["resolved_models"] == [SNAPSHOT]


@pytest.mark.parametrize("kind", ["429", "529"])
def test_429_and_529_are_retried_after_the_servers_own_wait(tmp_path: Path, claude: Simulator, kind: str) -> None:
    """The retry comes no sooner than the server's retry-after; the observation records both attempts."""
    write_config(tmp_path, claude, models=PROBE.replace("samples = 2", "samples = 1"))
    claude.push_faults("claude-sonnet-4-5", [{"kind": kind, "retry_after": 1.5}])
    result = run(tmp_path, "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    log = claude.requests()
    assert [e["status"] for e in log] == [int(kind), 200] and log[0]["fault"] == kind
    assert log[1]["monotonic"] - log[0]["monotonic"] >= 1.5
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT attempts, ok FROM observations").fetchall() == [(2, 1)]


def test_x_should_retry_false_is_obeyed_and_said_in_anthropics_words(tmp_path: Path, claude: Simulator) -> None:
    """A 529 that says x-should-retry: false is tried once; the check fails with Anthropic's words and the hint."""
    write_config(tmp_path, claude, models=PROBE.replace("samples = 2", "samples = 1"))
    claude.push_faults("claude-sonnet-4-5", [{"kind": "529", "should_retry": False}])
    result = run(tmp_path, "check", "--json")
    assert result.returncode == 3
    assert "Overloaded (overloaded_error, HTTP 529)" in summary(result)["error"]
    assert len(claude.requests()) == 1


def test_a_deprecated_temperature_is_adapted_once(tmp_path: Path, claude: Simulator) -> None:
    """A newer model's 400 for temperature: the canary goes on without it, said once, and the check is OK."""
    claude.update_model("claude-sonnet-4-5", {"rejects": ["temperature"]})
    write_config(tmp_path, claude, models=PROBE)
    first = run(tmp_path, "check", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    model = summary(first)
    assert "temperature" in model["adapted"] and "deprecated for this model" in model["adapted"]["temperature"]
    second = summary(run(tmp_path, "check", "--json"))
    assert second["adapted"] == {} and second["unsupported"] == ["temperature"]
    assert {e["temperature"] for e in claude.requests()[-4:]} == {None}


def test_the_configured_anthropic_version_goes_on_the_wire(tmp_path: Path, claude: Simulator) -> None:
    """anthropic_version is sent as the header: a version the API does not know fails in its words, exit 3."""
    write_config(tmp_path, claude, provider='anthropic_version = "2099-01-01"', models=PROBE)
    result = run(tmp_path, "check", "--json")
    assert result.returncode == 3
    assert 'anthropic-version: "2099-01-01" is not a valid version' in summary(result)["error"]


def test_the_key_is_in_no_url_log_line_or_stored_byte(tmp_path: Path, claude: Simulator) -> None:
    """Neither the key nor a wrong one (echoed by a leaky proxy) reaches URLs, output, logs, the database or exports."""
    claude.update_model("claude-sonnet-4-5", {"echo_key": True})
    write_config(tmp_path, claude, models=PROBE)
    outputs = [run(tmp_path, "--debug", "check", "--json"), run(tmp_path, "check")]
    wrong = "sk-ant-wrong-key-that-leaks-9999"
    outputs += [run(tmp_path, "--debug", "check", "--json", key=wrong), run(tmp_path, "config", "show", "--json")]
    outputs += [run(tmp_path, "events", "--json"), run(tmp_path, "export"), run(tmp_path, "export", "--format", "csv")]
    assert outputs[0].returncode == 0 and outputs[2].returncode == 3
    assert "invalid x-api-key" in summary(outputs[2])["error"]
    written = "".join(r.stdout + r.stderr for r in outputs)
    assert "[REDACTED]" in written  # the echoed key was there, and masked
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "fpwatch.toml":
            written += path.read_bytes().decode("utf-8", errors="replace")
    for secret in (KEY, wrong):
        assert secret not in written
    urls = [e["path"] for e in claude.requests()]
    assert set(urls) == {"/v1/messages"} and not any(KEY in u or wrong in u for u in urls)
    assert os.path.getsize(tmp_path / "state.db") > 0
