"""The simulator's Gemini dialect, proven with the official google-genai SDK as a test-only client, and fpwatch's
retry loop reading the wait from its error bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from fpwatch.providers.gemini import retry_delay
from fpwatch.providers.http import ClientPool, Exchange, post_json
from fpwatch.sim import Simulator

KEY = "AIzaSyFpwatchSimTest0123456789abcdefg"
MODEL = "gemini-2.5-flash"
PATH = f"/v1beta/models/{MODEL}:generateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "1+1="}]}]}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=KEY, seed=7) as simulator:
        simulator.update_model(
            MODEL,
            {"resolved": "gemini-2.5-flash-preview-09-2025", "outputs": {"1+1=": {"2": 0.8, "3": 0.15, "4": 0.05}}},
        )
        yield simulator


_CLIENTS: list[genai.Client] = []  # a Client closes its HTTP client when collected, mid-call if unreferenced


def client(sim: Simulator, api_key: str = KEY, version: str | None = None) -> genai.Client:
    # The SDK joins base_url and api_version (3.x: "v1" unless told); it retries nothing unless asked to.
    made = genai.Client(api_key=api_key, http_options=types.HttpOptions(base_url=sim.url, api_version=version))
    _CLIENTS.append(made)
    return made


def post(http: httpx.Client, body: Any = BODY, path: str = PATH, key: str | None = KEY) -> httpx.Response:
    return http.post(path, json=body, headers={"x-goog-api-key": key} if key else {})


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as plain:
        yield plain


# --------------------------------------------------------------------------- the official SDK


@pytest.mark.parametrize("version", [None, "v1beta"])
def test_the_sdk_parses_a_full_response(sim: Simulator, version: str | None) -> None:
    """generate_content reads the answer, modelVersion, responseId, usage and both kinds of logprobs."""
    sdk = client(sim, version=version)
    config = types.GenerateContentConfig(
        system_instruction="Answer with the number only.",
        temperature=0,
        seed=1,
        max_output_tokens=4,
        response_logprobs=True,
        logprobs=3,
    )
    response = sdk.models.generate_content(model=MODEL, contents="1+1=", config=config)
    assert response.text in ("2", "3", "4") and response.model_version == "gemini-2.5-flash-preview-09-2025"
    assert response.response_id and len(response.response_id) == 22
    candidate = response.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP
    logprobs = candidate.logprobs_result
    assert logprobs is not None and logprobs.top_candidates and logprobs.chosen_candidates
    top = {c.token: c.log_probability for c in logprobs.top_candidates[0].candidates or []}
    assert list(top) == ["2", "3", "4"] and top["2"] == pytest.approx(-0.2231, abs=1e-3)
    assert logprobs.chosen_candidates[0].token == response.text
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count == 6 and usage.candidates_token_count == 1
    (entry,) = sim.requests()
    assert entry["path"] == f"/{version or 'v1'}/models/{MODEL}:generateContent" and entry["auth"] == "ok"
    assert (entry["seed"], entry["temperature"], entry["max_tokens"], entry["logprobs"], entry["top_logprobs"]) == (
        1,
        0,
        4,
        True,
        3,
    )
    assert "systemInstruction" in entry["body_keys"] and entry["query"] == []


def test_the_sdk_truncates_at_max_output_tokens() -> None:
    """A long answer cut at maxOutputTokens ends with MAX_TOKENS."""
    with Simulator(api_key=KEY, seed=1) as sim:
        sim.update_model(MODEL, {"outputs": {"*": "one two three four five"}})
        sdk = client(sim)
        config = types.GenerateContentConfig(max_output_tokens=2)
        response = sdk.models.generate_content(model=MODEL, contents="count", config=config)
    assert response.text == "one two" and response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[index]


FAULTS: dict[str, tuple[Any, type[errors.APIError], int, str, str]] = {
    # fault: (scenario fault, SDK error, code, status, words)
    "rate limited": ({"kind": "429", "retry_after": 2}, errors.ClientError, 429, "RESOURCE_EXHAUSTED", "quota"),
    "daily quota": ("quota", errors.ClientError, 429, "RESOURCE_EXHAUSTED", "PerDay"),
    "internal": ("500", errors.ServerError, 500, "INTERNAL", "internal error"),
    "overloaded": ("503", errors.ServerError, 503, "UNAVAILABLE", "overloaded"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_faults_raise_the_sdks_typed_errors(sim: Simulator, name: str) -> None:
    """Google's error shapes: 4xx is ClientError, 5xx ServerError, each with its code and status."""
    fault, kind, code, status, words = FAULTS[name]
    sim.push_faults(MODEL, [fault])
    with pytest.raises(kind) as caught:
        client(sim).models.generate_content(model=MODEL, contents="hi")
    assert (caught.value.code, caught.value.status) == (code, status)
    assert words in str(caught.value.details)


def test_a_429_carries_its_wait_in_the_body_not_in_a_header(sim: Simulator, http: httpx.Client) -> None:
    """retry_after 2 becomes RetryInfo.retryDelay "2s", retry_after_ms 1500 "1.5s"; no Retry-After header."""
    sim.push_faults(MODEL, [{"kind": "429", "retry_after": 2}, {"kind": "429", "retry_after_ms": 1500}, "429"])
    delays = []
    for _ in range(3):
        response = post(http)
        assert response.status_code == 429 and "retry-after" not in response.headers
        assert "x-request-id" not in response.headers and "openai-version" not in response.headers
        delays.append(retry_delay(response.content))
    assert delays == [2.0, 1.5, None]


def test_keys_go_in_x_goog_api_key_or_the_key_parameter_never_authorization(sim: Simulator, http: httpx.Client) -> None:
    """x-goog-api-key or ?key= pass; a Bearer key is not read (403); a wrong key is 400 API_KEY_INVALID."""
    assert post(http).status_code == 200
    assert http.post(f"{PATH}?key={KEY}", json=BODY).status_code == 200
    bearer = http.post(PATH, json=BODY, headers={"authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 403 and bearer.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = post(http, key="AIzaSyWrong")
    error = wrong.json()["error"]
    assert wrong.status_code == 400 and error["details"][0]["reason"] == "API_KEY_INVALID"
    assert "AIzaSyWrong" not in wrong.text  # Google repeats nothing that was sent
    assert [r["query"] for r in sim.requests()] == [[], ["key"], [], []]  # names only: the log holds no key
    with pytest.raises(errors.ClientError) as caught:
        client(sim, api_key="AIzaSyWrong").models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == 400 and caught.value.message == "API key not valid. Please pass a valid API key."


INVALID: dict[str, tuple[Any, str, str | None]] = {
    # request body: (Google's message starts, field violation's field; None: no BadRequest detail)
    "unknown top-level field": (
        {**BODY, "temperature": 0},
        'Invalid JSON payload received. Unknown name "temperature"',
        "",
    ),
    "unknown generationConfig field": (
        {**BODY, "generationConfig": {"max_tokens": 3}},
        "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config'",
        "generation_config",
    ),
    "a value of the wrong type": (
        {**BODY, "generationConfig": {"temperature": "hot"}},
        "Invalid value at 'generation_config.temperature' (TYPE_FLOAT)",
        "generation_config.temperature",
    ),
    "no contents": ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified", None),
    "a role Gemini does not know": (
        {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
        "Please use a valid role",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_requests_get_invalid_argument_with_field_violations(http: httpx.Client, case: str) -> None:
    """Bad requests answer 400 INVALID_ARGUMENT in Google's words, with a BadRequest field violation."""
    body, message, field = INVALID[case]
    response = post(http, body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert error["message"].startswith(message)
    if field is None:
        assert "details" not in error
    else:
        (detail,) = error["details"]
        assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        assert detail["fieldViolations"][0].get("field", "") == field


def test_snake_case_fields_are_accepted_as_proto3_json_takes_them(http: httpx.Client) -> None:
    """generation_config / max_output_tokens work like generationConfig / maxOutputTokens."""
    response = post(http, {**BODY, "generation_config": {"max_output_tokens": 1, "response_logprobs": True}})
    candidate = response.json()["candidates"][0]
    assert response.status_code == 200 and "logprobsResult" in candidate


def test_rejects_and_ignores_in_geminis_words(sim: Simulator, http: httpx.Client) -> None:
    """rejects logprobs: 400 "Logprobs is not enabled for models/..."; seed: the unknown-field error; ignores
    logprobs: an answer without logprobsResult."""
    asks = {**BODY, "generationConfig": {"responseLogprobs": True, "logprobs": 2, "seed": 3}}
    sim.update_model(MODEL, {"rejects": ["logprobs", "seed"]})
    refused = post(http, asks).json()["error"]
    assert (
        refused["message"] == f"Logprobs is not enabled for models/{MODEL}" and refused["status"] == "INVALID_ARGUMENT"
    )
    seeded = post(http, {**BODY, "generationConfig": {"seed": 3}}).json()["error"]
    assert "Unknown name \"seed\" at 'generation_config'" in seeded["message"]
    sim.update_model(MODEL, {"rejects": [], "ignores": ["logprobs"]})
    assert "logprobsResult" not in post(http, asks).json()["candidates"][0]


def test_unknown_models_and_paths_are_not_found(sim: Simulator, http: httpx.Client) -> None:
    """A model the scenario lacks is Google's 404 NOT_FOUND naming it; an unknown method too."""
    sim.set_scenario({"models": {MODEL: {}}})
    missing = post(http, path="/v1beta/models/gemini-9:generateContent")
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("models/gemini-9 is not found")
    other = post(http, path=f"/v1beta/models/{MODEL}:streamGenerateContent")
    assert other.status_code == 404 and other.json()["error"]["status"] == "NOT_FOUND"


def test_malformed_and_replace_faults_speak_gemini(sim: Simulator, http: httpx.Client) -> None:
    """malformed: a cut-off generateContent body; with replace, a complete one with those fields changed."""
    sim.push_faults(MODEL, ["malformed", {"kind": "malformed", "replace": {"modelVersion": "<absent>"}}])
    assert post(http).text.startswith('{"candidates":[{"content":{"parts":[{"text":"Hel')
    replaced = post(http).json()
    assert "modelVersion" not in replaced and replaced["candidates"][0]["content"]["parts"]


def test_respond_in_process_answers_the_gemini_route() -> None:
    """Simulator.respond() serves the Gemini path as HTTP does (no auth, no sleeps)."""
    offline = Simulator({"seed": 1, "models": {MODEL: {"resolved": "gemini-x"}}})
    status, body = offline.respond(BODY, path=PATH)
    assert status == 200 and body["modelVersion"] == "gemini-x" and body["candidates"][0]["content"]["parts"]


# --------------------------------------------------------------------------- fpwatch's retry loop


def send(sim: Simulator, timeout: float = 10.0) -> tuple[Exchange, float]:
    """One POST through fpwatch's retrying client with Gemini's body wait; (the exchange, seconds)."""

    async def go() -> tuple[Exchange, float]:
        pool = ClientPool(2, tls=False)
        try:
            async with pool.lease() as http:
                started = time.monotonic()
                headers = {"x-goog-api-key": KEY}
                result = await post_json(http, sim.url + PATH, BODY, headers, timeout=timeout, body_delay=retry_delay)
                return result, time.monotonic() - started
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_the_retry_loop_waits_what_retry_info_asks() -> None:
    """A 429 asking for 0.4 s is retried after 0.4 s; the attempt records the wait it was asked for."""
    with Simulator(api_key=KEY, seed=2) as sim:
        sim.push_faults(MODEL, [{"kind": "429", "retry_after": 0.4}])
        result, _ = send(sim)
        log = sim.requests()
    assert result.status == 200 and [a.retry_after for a in result.attempts] == [0.4, None]
    assert [a.waited for a in result.attempts] == [0, 0.4]
    assert 0.4 <= log[1]["monotonic"] - log[0]["monotonic"] < 2


@pytest.mark.parametrize("fault", [{"kind": "429", "retry_after": 120}, {"kind": "quota"}])
def test_a_long_wait_or_a_daily_quota_is_reported_not_waited_for(fault: dict[str, Any]) -> None:
    """retryDelay "120s" is over the minute fpwatch waits; a per-day quota is never outwaited: one attempt."""
    with Simulator(api_key=KEY, seed=2) as sim:
        sim.push_faults(MODEL, [fault])
        result, seconds = send(sim)
    assert result.status == 429 and len(result.attempts) == 1 and seconds < 2
