"""Adapters: real recorded provider responses parse into observations or clear errors; requests are built right."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fpwatch.config import Canary, Message, ModelConfig, ProviderConfig, Secret
from fpwatch.detect.observation import Observation
from fpwatch.errors import ProbeError
from fpwatch.providers import ADAPTERS, Parsed, Providers, probe
from fpwatch.providers.http import Attempt, Exchange, server_delay
from fpwatch.providers.openai import parse_chat_completion
from fpwatch.redact import Redactor
from fpwatch.sim import Simulator

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
ALL = sorted(p.name for p in FIXTURES.glob("*.json"))
# Native Anthropic and Gemini bodies belong to their own adapters (test_anthropic.py, test_gemini.py); through
# the OpenAI-format parser (a provider whose type is wrong) they must still give a clear error, never a crash.
OTHER_WIRE = {n for n in ALL if n.startswith("anthropic-") or (n.startswith("gemini-") and "openai-compat" not in n)}


def exchange_from(name: str) -> Exchange:
    case = json.loads((FIXTURES / name).read_text())
    body = case["body"]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else b""
    headers = {k.lower(): (v[0] if isinstance(v, list) else str(v)) for k, v in (case["headers"] or {}).items()}
    headers.setdefault("content-type", "application/json")
    return Exchange(case["status"], headers, raw, 0.1, [Attempt(case["status"], None, 0, None, None)])


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_parses_or_gives_a_clear_error(name: str) -> None:
    """Each recorded response becomes a Parsed value or a ProbeError with a readable one-line message."""
    try:
        parsed = parse_chat_completion(exchange_from(name))
    except ProbeError as error:
        message = str(error)
        assert message and "\n" not in message and len(message) < 600
        assert error.kind in {
            "auth",
            "quota",
            "rate_limited",
            "not_found",
            "server_error",
            "bad_request",
            "content_filter",
            "malformed",
            "http_error",
            "redirect",
        }
        return
    assert name not in OTHER_WIRE, "a non-OpenAI body must not pass as a completion"
    assert isinstance(parsed, Parsed)
    assert parsed.fingerprint_state in ("present", "null", "empty", "absent")  # no recorded body is "invalid"
    assert (parsed.fingerprint is not None) == (parsed.fingerprint_state == "present")


SUCCESSES: dict[str, tuple[str | None, str, str | None, str]] = {
    # fixture: (fingerprint, state, resolved model, start of output)
    "openai-chat-gpt-4o-mini.json": ("fp_4f5f0b399a", "present", "gpt-4o-mini-2024-07-18", "Hello!"),
    "openai-chat-gpt35-null-fingerprint-2026.json": (None, "null", "gpt-3.5-turbo-0125", "Why did"),
    "mistral-chat-no-fingerprint.json": (None, "absent", "mistral-large-latest", "Hello!"),
    "deepseek-chat-fp8-fingerprint.json": (
        "fp_eaab8d114b_prod0820_fp8_kvcache",
        "present",
        "deepseek-chat",
        "## ",
    ),
    "llamacpp-server-build-commit-fingerprint.json": (
        "b9436-d6588daa8",
        "present",
        "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf",
        "Ich",
    ),
    "lmstudio-chunk-fingerprint-is-model.json": (
        "gemma-2-2b-it-abliterated",
        "present",
        "gemma-2-2b-it-abliterated",
        "",
    ),
    "openrouter-o1-no-fingerprint.json": (None, "absent", "openai/o1", "2 + 2"),
    "azure-chat-gpt35-null-fingerprint.json": (None, "null", "gpt-35-turbo", "Why did"),
    "ollama-openai-compat.json": ("fp_ollama", "present", "qwen3:0.6b", "{"),
    "openai-chat-refusal-docs-example.json": ("fp_3407719c7f", "present", "gpt-4o-2024-08-06", "I'm sorry"),
    "vllm-selfhosted-null-fingerprint.json": (None, "null", None, ""),
}


@pytest.mark.parametrize("name", sorted(SUCCESSES))
def test_version_signals_are_extracted(name: str) -> None:
    """Fingerprint (null, empty and absent kept distinct), resolved model and output come out as recorded."""
    fingerprint, state, model, output = SUCCESSES[name]
    parsed = parse_chat_completion(exchange_from(name))
    assert (parsed.fingerprint, parsed.fingerprint_state) == (fingerprint, state)
    if model is not None:
        assert parsed.response_model == model
    assert parsed.output.startswith(output)


def test_empty_string_fingerprint_is_its_own_state() -> None:
    """An empty-string system_fingerprint is recorded as "empty", not as null or absent."""
    body = {"id": "x", "model": "m", "system_fingerprint": "", "choices": [{"message": {"content": "hi"}}]}
    parsed = parse_chat_completion(Exchange(200, {"content-type": "application/json"}, json.dumps(body).encode(), 0.1))
    assert (parsed.fingerprint, parsed.fingerprint_state) == (None, "empty")


def answer(**fields: Any) -> dict[str, Any]:
    """A minimal chat completion, with `fields` replacing its top-level keys or `message`'s (message=...)."""
    message = fields.pop("message", {"role": "assistant", "content": "hi"})
    body = {"id": "x", "model": "m", "system_fingerprint": "fp_1", "choices": [{"index": 0, "message": message}]}
    return {**body, **fields}


def parse_body(body: dict[str, Any]) -> Parsed:
    return parse_chat_completion(Exchange(200, {"content-type": "application/json"}, json.dumps(body).encode(), 0.1))


@pytest.mark.parametrize(
    ("fingerprint", "state"), [({"v": 2}, "invalid"), (7, "invalid"), (["fp_1"], "invalid"), (True, "invalid")]
)
def test_a_fingerprint_of_the_wrong_type_is_invalid_not_empty(fingerprint: Any, state: str) -> None:
    """An object, number, list or boolean as system_fingerprint is recorded as "invalid", the answer kept."""
    parsed = parse_body(answer(system_fingerprint=fingerprint))
    assert (parsed.fingerprint, parsed.fingerprint_state, parsed.output) == (None, state, "hi")
    assert parse_body(answer(system_fingerprint="  ")).fingerprint_state == "empty"  # still its own state


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    # case: (the answer's choices[0], the reason the error must give)
    "message null": ({"message": None}, "choices[0].message is null, not an object"),
    "message a string": ({"message": "hi"}, "choices[0].message is a string, not an object"),
    "no message": ({"text": "hi", "index": 0}, "choices[0] has no message (keys: index, text)"),
    "content a number": ({"message": {"content": 42}}, "choices[0].message.content is a number, not a string"),
    "content an object": ({"message": {"content": {"text": "hi"}}}, "content is an object, not a string"),
    "content a boolean": ({"message": {"content": False}}, "content is a boolean, not a string"),
    "content a list of numbers": ({"message": {"content": [1, 2]}}, "content[0] is a number, not a content part"),
    "content a list of strings": ({"message": {"content": ["hi"]}}, "content[0] is a string, not a content part"),
    "a text part without text": (
        {"message": {"content": [{"type": "text", "text": None}]}},
        "choices[0].message.content[0].text is null, not a string",
    ),
    "delta content a list": ({"delta": {"content": {}}}, "choices[0].delta.content is an object, not a string"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_success_is_an_error_with_the_reason(case: str) -> None:
    """A 200 whose message or content has the wrong type is a "malformed" error naming the field, not an answer."""
    choice, reason = MALFORMED[case]
    with pytest.raises(ProbeError) as caught:
        parse_body({**answer(), "choices": [choice]})
    assert caught.value.kind == "malformed" and reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_content_parts_and_null_content_are_still_answers() -> None:
    """Text content parts are joined (thinking parts left out); null content with no refusal is an empty answer."""
    parts = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}, {"type": "text", "text": "Paris"}]
    assert parse_body(answer(message={"content": parts})).output == "Paris"
    assert parse_body(answer(message={"content": [{"text": "a"}, {"text": "b"}]})).output == "ab"
    assert parse_body(answer(message={"content": None, "tool_calls": []})).output == ""
    assert parse_body(answer(message={"content": None, "refusal": "I can't"})).output == "I can't"


def test_usage_reasoning_tokens_and_first_token_logprobs() -> None:
    """Usage (with reasoning tokens) and the first token's top logprobs are recorded."""
    reasoning = parse_chat_completion(exchange_from("openai-chat-o3-mini-reasoning.json"))
    assert (reasoning.output_tokens, reasoning.reasoning_tokens) == (238, 192)
    top = parse_chat_completion(exchange_from("openai-chat-gpt4o-top-logprobs.json"))
    assert top.first_token is not None
    assert top.first_token.token == "0" and top.first_token.logprob == pytest.approx(-0.00019960667)
    assert list(top.first_token.top) == ["0", "1", "As"]
    assert top.response_id == "chatcmpl-AcgR7Wy6MMDqoorytBlzS2lzpwQAA"


ERRORS: dict[str, tuple[str, str]] = {
    # fixture: (kind, words the message must contain)
    "openai-401-invalid-api-key.json": ("auth", "api_key"),
    "openai-404-model-not-found.json": ("not_found", "does not exist"),
    "openai-429-insufficient-quota.json": ("quota", "does not retry"),
    "openai-429-insufficient-quota-code-null.json": ("quota", "quota"),
    "openai-429-rate-limit-exceeded-tokens.json": ("rate_limited", "Request too large"),
    "openai-400-unsupported-temperature.json": ("bad_request", 'temperature = "default"'),
    "openai-400-unsupported-value-o1-mini.json": ("bad_request", "role"),
    "openai-500-server-error-request-id.json": ("server_error", "HTTP 500"),
    "azure-404-deployment-not-found.json": ("not_found", "deployment"),
    "azure-404-string-code.json": ("not_found", "Resource not found"),
    "azure-429-token-rate-limit.json": ("rate_limited", "exceeded token rate limit"),
    "azure-content-filter-error-body.json": ("content_filter", "content filter"),
    "xai-400-error-string.json": ("bad_request", "presencePenalty"),
    "openrouter-400-provider-error-raw.json": ("bad_request", "must contain the word 'json'"),
    "openrouter-401-int-code.json": ("auth", "No cookie auth credentials"),
    "openrouter-429-provider-error.json": ("rate_limited", "upstream provider Google"),
    "openrouter-429-upstream-remedy-hint.json": ("rate_limited", "rate-limited upstream"),
    "moonshot-429-engine-overloaded.json": ("rate_limited", "overloaded"),
    "gemini-openai-compat-400-error-array.json": ("bad_request", 'Unknown name "reasoning"'),
    "anthropic-529-overloaded.json": ("rate_limited", "Overloaded"),
    "anthropic-message-stop-sequence.json": ("malformed", "no choices[0]"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_carry_the_providers_words_and_a_hint(name: str) -> None:
    """Each error shape maps to its kind, with the provider's own message shown as-is."""
    kind, words = ERRORS[name]
    with pytest.raises(ProbeError) as caught:
        parse_chat_completion(exchange_from(name))
    assert caught.value.kind == kind
    assert words in str(caught.value)


def test_html_and_broken_json_bodies_are_explained() -> None:
    """An HTML error page or a truncated JSON body becomes a readable "malformed" error."""
    html = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    with pytest.raises(ProbeError) as caught:
        parse_chat_completion(Exchange(502, {"content-type": "text/html"}, html, 0.1))
    assert (
        caught.value.kind == "malformed" and "HTML page" in str(caught.value) and "502 Bad Gateway" in str(caught.value)
    )
    with pytest.raises(ProbeError) as caught:
        parse_chat_completion(Exchange(200, {"content-type": "application/json"}, b'{"id": "chatcmpl-12', 0.1))
    assert caught.value.kind == "malformed" and "not valid JSON" in str(caught.value)


def test_server_delay_prefers_ms_then_seconds_then_http_date() -> None:
    """retry-after-ms beats Retry-After; an HTTP date becomes seconds from now; garbage is ignored."""
    assert server_delay({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert server_delay({"retry-after": "2"}) == 2.0
    assert server_delay({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == pytest.approx(10.0)
    assert server_delay({"retry-after": "soon"}) is None
    assert server_delay({}) is None


def _model(provider: ProviderConfig, **kw: Any) -> ModelConfig:
    canary = Canary("c", (Message("user", "hi"),), seed=7, temperature=0.0, max_tokens=3)
    return ModelConfig(name="m", provider=provider, model="gpt-4o", canaries=(canary,), **kw)


def test_openai_request_mapping() -> None:
    """OpenAI: Bearer key in a header only, max_completion_tokens, seed, temperature, logprobs with top 20."""
    provider = ProviderConfig("openai", "openai", "https://api.openai.com/v1", api_key=Secret("sk-secret"))
    model = _model(provider, params={"service_tier": "default"})
    request = ADAPTERS["openai"](provider).build_request(model, model.canaries[0])
    assert request.url == "https://api.openai.com/v1/chat/completions" and "sk-secret" not in request.url
    assert request.headers["authorization"] == "Bearer sk-secret"
    assert request.payload == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 7,
        "temperature": 0.0,
        "max_completion_tokens": 3,
        "logprobs": True,
        "top_logprobs": 20,
        "service_tier": "default",
    }


def test_reasoning_canary_omits_temperature_and_params_override_token_field() -> None:
    """temperature = "default" sends none; a max_tokens in params replaces fpwatch's own token field."""
    provider = ProviderConfig("x", "openai-compatible", "http://127.0.0.1:1/v1")
    canary = Canary("r", (Message("user", "hi"),), seed=None, temperature=None, max_tokens=3, logprobs=False)
    model = ModelConfig(name="m", provider=provider, model="o3", canaries=(canary,), params={"max_tokens": 50})
    payload = ADAPTERS["openai-compatible"](provider).build_request(model, canary).payload
    assert payload == {"model": "o3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


def test_azure_paths_and_api_key_header() -> None:
    """Azure: deployment path with api-version as a query parameter, or the v1 path; the key in api-key."""
    classic = ProviderConfig(
        "az", "azure", "https://res.openai.azure.com", api_key=Secret("k1"), extra={"api_version": "2024-10-21"}
    )
    model = _model(classic, timeout=timedelta(seconds=5))
    request = ADAPTERS["azure"](classic).build_request(model, model.canaries[0])
    assert request.url == "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
    assert request.params == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "k1" and "authorization" not in request.headers
    assert request.payload["max_tokens"] == 3 and request.payload["top_logprobs"] == 5
    v1 = ProviderConfig("az", "azure", "https://res.openai.azure.com/openai/v1", api_key=Secret("k1"))
    assert ADAPTERS["azure"](v1).build_request(model, model.canaries[0]).url == (
        "https://res.openai.azure.com/openai/v1/chat/completions"
    )


# --- over loopback: probe() against the simulator --------------------------------------------------------

OPAQUE_KEY = "zq7Rk2mWx9Lp4Tn8Vb3Hc6Jd1Fg5Ys0E"  # no key pattern matches it: only the verbatim net catches it


@pytest.fixture
def echoing() -> Iterator[Simulator]:
    """A simulator that wants OPAQUE_KEY and repeats it everywhere in its 200 answers."""
    with Simulator(api_key=OPAQUE_KEY, seed=5) as sim:
        sim.update_model("gpt-4o", {"echo_key": True, "outputs": {"*": "Two"}})
        yield sim


def probe_once(sim: Simulator, redact: Redactor, provider_type: str = "openai-compatible") -> Observation:
    base = sim.base_url if provider_type != "azure" else sim.url
    provider = ProviderConfig("sim", provider_type, base, api_key=Secret(OPAQUE_KEY))
    canary = Canary("c", (Message("user", "1+1="),), seed=1, temperature=0.0, max_tokens=3, top_logprobs=3)
    model = ModelConfig(name="sim/gpt-4o", provider=provider, model="gpt-4o", canaries=(canary,))

    async def go() -> Observation:
        async with Providers() as providers:
            return await probe(providers.session(provider), model, canary, 0, redact=redact)

    return asyncio.run(go())


@pytest.mark.parametrize("provider_type", ["openai-compatible", "azure"])
def test_a_key_echoed_in_a_200_answer_is_scrubbed_from_every_field(echoing: Simulator, provider_type: str) -> None:
    """Output, logprob tokens, fingerprint, resolved model, ids and finish reason all pass the redactor."""
    observation = probe_once(echoing, Redactor({OPAQUE_KEY}), provider_type)
    assert observation.ok, observation.error
    assert OPAQUE_KEY not in repr(observation.to_dict())
    assert observation.output == "Two [REDACTED]" and observation.first_token is not None
    assert observation.first_token.token == "Two" and "[REDACTED]" in observation.first_token.top
    for value in (observation.system_fingerprint, observation.response_model, observation.response_id):
        assert value is not None and "[REDACTED]" in value
    assert observation.request_id == "req_[REDACTED]" and observation.finish_reason == "stop [REDACTED]"
    # Without the key loaded, the same answer keeps it: the test above is not passing by accident.
    assert OPAQUE_KEY in repr(probe_once(echoing, Redactor()).to_dict())


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_success_over_loopback_is_an_error_observation(case: str) -> None:
    """Each malformed 200 shape, sent by the simulator, is recorded as a failed request with the reason."""
    choice, reason = MALFORMED[case]
    with Simulator(api_key=OPAQUE_KEY, seed=5) as sim:
        shape = {"choices.0.message": choice["message"]} if "message" in choice else {"choices.0": choice}
        sim.push_faults("gpt-4o", [{"kind": "malformed", "replace": shape}])
        observation = probe_once(sim, Redactor({OPAQUE_KEY}))
    assert (observation.ok, observation.http_status, observation.error_kind) == (False, 200, "malformed")
    assert observation.error is not None and reason in observation.error
    assert observation.output is None and observation.fingerprint_state is None
