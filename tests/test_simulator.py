"""The simulated provider, exercised over real loopback sockets with real clients (no mocks)."""

from __future__ import annotations

import copy
import http.client
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import fpwatch.sim.scenario as simulator_module
from fpwatch.config import BUILTIN_SET
from fpwatch.sim import (
    BUILTIN_PROMPTS,
    Simulator,
    load_scenario,
    perturbed_logprobs,
    realistic,
    routed,
    shifted,
    validate_scenario,
    with_fingerprints,
)

KEY = "sk-sim-test-0123456789"
FIXTURES = Path(__file__).parent / "fixtures" / "responses"
MATH = "What is 17*23? Answer with the number only."


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=1234) as simulator:
        yield simulator


@pytest.fixture
def keyed_sim() -> Iterator[Simulator]:
    with Simulator(seed=1234, api_key=KEY) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        yield http


def chat(http: httpx.Client, model: str = "gpt-4o", prompt: str = "Say hi", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    return http.post("/v1/chat/completions", json=body)


def sdk(sim: Simulator, api_key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=api_key, max_retries=0, timeout=10)


# --------------------------------------------------------------------------- the official SDK


def test_openai_sdk_parses_a_full_completion(keyed_sim: Simulator) -> None:
    """The official SDK parses fingerprint, resolved model, usage and top logprobs from the simulator."""
    distribution = {"391": 0.6, "392": 0.25, "390": 0.1, "39": 0.05}
    keyed_sim.set_scenario(
        {
            "models": {
                "gpt-4o": {
                    "resolved": "gpt-4o-2024-08-06",
                    "fingerprints": {"fp_44709d6fcb": 1},
                    "outputs": {MATH: distribution},
                }
            }
        }
    )
    completion = sdk(keyed_sim).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": MATH}],
        seed=1,
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
    )
    assert completion.system_fingerprint == "fp_44709d6fcb"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.object == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24,}", completion.id)
    choice = completion.choices[0]
    answer = choice.message.content
    assert answer in distribution
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(MATH.split()) + 2
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 1
    assert choice.logprobs is not None and choice.logprobs.content is not None
    first = choice.logprobs.content[0]
    assert first.token == answer
    assert first.logprob == pytest.approx(math.log(distribution[answer]))
    assert first.bytes == list(answer.encode())
    assert [alt.token for alt in first.top_logprobs] == ["391", "392", "390"]
    assert [alt.logprob for alt in first.top_logprobs] == pytest.approx([math.log(p) for p in (0.6, 0.25, 0.1)])


def test_raw_response_exposes_request_id(keyed_sim: Simulator) -> None:
    """with_raw_response shows x-request-id and openai-processing-ms, matching the request log."""
    raw = sdk(keyed_sim).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    request_id = raw.headers.get("x-request-id")
    assert request_id is not None and re.fullmatch(r"req_[0-9a-f]{32}", request_id)
    assert raw.headers.get("openai-processing-ms", "").isdigit()
    assert raw.parse().choices[0].message.content
    assert keyed_sim.requests()[-1]["request_id"] == request_id


def test_azure_client_uses_the_deployment_path(keyed_sim: Simulator) -> None:
    """openai.AzureOpenAI reaches the classic deployment route with its api-key header."""
    keyed_sim.set_scenario({"models": {"prod-gpt4o": {"resolved": "gpt-4o-2024-11-20"}}})
    azure = openai.AzureOpenAI(azure_endpoint=keyed_sim.url, api_version="2024-10-21", api_key=KEY, max_retries=0)
    completion = azure.chat.completions.create(model="prod-gpt4o", messages=[{"role": "user", "content": "hi"}])
    assert completion.model == "gpt-4o-2024-11-20"
    assert completion.system_fingerprint and completion.system_fingerprint.startswith("fp_")
    entry = keyed_sim.requests()[-1]
    assert entry["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
    assert (entry["model"], entry["auth"], entry["status"]) == ("prod-gpt4o", "ok", 200)


def test_sdk_gets_authentication_error_that_echoes_the_key(keyed_sim: Simulator) -> None:
    """A wrong key is an AuthenticationError whose message repeats the key, which the log never holds."""
    wrong = "sk-wrong-secret-9876"
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(keyed_sim, api_key=wrong).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "invalid_api_key"
    assert wrong in str(caught.value)
    assert keyed_sim.requests()[-1]["auth"] == "wrong"
    assert wrong not in json.dumps(keyed_sim.requests())


def test_missing_key_and_api_key_header(keyed_sim: Simulator) -> None:
    """No key gets OpenAI's "didn't provide" 401; the Azure-style api-key header is accepted too."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=keyed_sim.url) as http:
        missing = http.post("/v1/chat/completions", json=body)
        via_header = http.post("/v1/chat/completions", json=body, headers={"api-key": KEY})
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")
    assert via_header.status_code == 200
    assert [e["auth"] for e in keyed_sim.requests()] == ["missing", "ok"]


def test_sdk_gets_rate_limit_error_for_quota(keyed_sim: Simulator) -> None:
    """A quota fault is a RateLimitError with code insufficient_quota and no Retry-After."""
    keyed_sim.push_faults("gpt-4o", [{"kind": "quota"}])
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(keyed_sim).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert "retry-after" not in caught.value.response.headers
    assert keyed_sim.requests()[-1]["fault"] == "quota"


# --------------------------------------------------------------------------- fingerprints and pools


def test_fingerprint_and_resolved_pools_respect_weights(sim: Simulator, client: httpx.Client) -> None:
    """400 draws from 75/25 pools land near their weights."""
    sim.set_scenario(
        {
            "models": {
                "gpt-4o": {
                    "fingerprints": {"fp_aaaaaaaaaa": 3, "fp_bbbbbbbbbb": 1},
                    "resolved": {"gpt-4o-2024-08-06": 0.25, "gpt-4o-2024-11-20": 0.75},
                }
            }
        }
    )
    bodies = [chat(client).json() for _ in range(400)]
    fingerprints = Counter(body["system_fingerprint"] for body in bodies)
    resolved = Counter(body["model"] for body in bodies)
    assert set(fingerprints) == {"fp_aaaaaaaaaa", "fp_bbbbbbbbbb"}
    assert 250 <= fingerprints["fp_aaaaaaaaaa"] <= 350
    assert 250 <= resolved["gpt-4o-2024-11-20"] <= 350


def test_null_absent_and_empty_fingerprints_differ_on_the_wire(sim: Simulator, client: httpx.Client) -> None:
    """ "<null>" sends null, "<absent>" omits the key and "" sends an empty string."""
    sim.set_scenario(
        {
            "models": {
                "null": {"fingerprints": {"<null>": 1}},
                "absent": {"fingerprints": "<absent>"},
                "empty": {"fingerprints": {"": 1}},
            }
        }
    )
    null, absent, empty = (chat(client, model).json() for model in ("null", "absent", "empty"))
    assert "system_fingerprint" in null and null["system_fingerprint"] is None
    assert "system_fingerprint" not in absent
    assert empty["system_fingerprint"] == ""


def test_no_scenario_serves_any_model_deterministically(sim: Simulator, client: httpx.Client) -> None:
    """Without a scenario any model id gets a stable default fingerprint and a stable answer."""
    first, second = chat(client, "any-model", "x").json(), chat(client, "any-model", "x").json()
    assert re.fullmatch(r"fp_[0-9a-f]{10}", first["system_fingerprint"])
    assert first["system_fingerprint"] == second["system_fingerprint"]
    assert first["model"] == "any-model"
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    other = chat(client, "other-model", "x").json()
    assert other["system_fingerprint"] != first["system_fingerprint"]


def test_outputs_match_exactly_then_by_substring_then_fallback(sim: Simulator, client: httpx.Client) -> None:
    """An exact prompt key wins, then the longest substring key, then "*"."""
    sim.set_scenario(
        {"models": {"m": {"outputs": {"ping": "exact", "17*23": "short", "is 17*23": "long", "*": "fallback"}}}}
    )

    def answer(prompt: str) -> str:
        content: str = chat(client, "m", prompt).json()["choices"][0]["message"]["content"]
        return content

    assert [answer("ping"), answer("What is 17*23?"), answer("hello")] == ["exact", "long", "fallback"]


# --------------------------------------------------------------------------- faults


def test_one_shot_faults_are_consumed_in_order(sim: Simulator, client: httpx.Client) -> None:
    """Scenario faults come first, pushed faults follow, then normal answers resume."""
    sim.set_scenario({"models": {"gpt-4o": {"faults": ["500", {"kind": 502}]}}})
    sim.push_faults("gpt-4o", [{"kind": "503"}, {"kind": "529"}])
    responses = [chat(client) for _ in range(5)]
    assert [r.status_code for r in responses] == [500, 502, 503, 529, 200]
    assert responses[0].json()["error"]["type"] == "server_error"
    assert responses[0].headers["x-request-id"] in responses[0].json()["error"]["message"]
    assert [e["fault"] for e in sim.requests()] == ["500", "502", "503", "529", None]
    assert [e["status"] for e in sim.requests()] == [500, 502, 503, 529, 200]


def test_rate_limit_fault_sends_retry_headers_only_when_asked(sim: Simulator, client: httpx.Client) -> None:
    """A 429 carries Retry-After, retry-after-ms and x-should-retry exactly when the fault sets them."""
    sim.push_faults(
        "gpt-4o",
        [{"kind": "429", "retry_after": 2, "retry_after_ms": 1500, "should_retry": False}, {"kind": "429"}],
    )
    full, bare = chat(client), chat(client)
    assert full.status_code == 429 and full.json()["error"]["code"] == "rate_limit_exceeded"
    assert (full.headers["retry-after"], full.headers["retry-after-ms"]) == ("2", "1500")
    assert full.headers["x-should-retry"] == "false"
    assert bare.status_code == 429
    assert "retry-after" not in bare.headers and "x-should-retry" not in bare.headers


def test_html_and_malformed_bodies(sim: Simulator, client: httpx.Client) -> None:
    """An html fault sends a text/html page; a malformed fault sends 200 with broken JSON."""
    sim.push_faults("gpt-4o", [{"kind": "html", "status": 503}, {"kind": "malformed"}, {"kind": "html"}])
    html, malformed, default_html = chat(client), chat(client), chat(client)
    assert html.status_code == 503 and html.headers["content-type"] == "text/html"
    assert html.text.startswith("<html>") and "503 Service Unavailable" in html.text
    assert default_html.status_code == 502
    assert malformed.status_code == 200 and malformed.headers["content-type"] == "application/json"
    assert int(malformed.headers["content-length"]) == len(malformed.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)


def test_error_fault_sends_the_exact_body(sim: Simulator, client: httpx.Client) -> None:
    """An error fault replays a recorded provider error verbatim."""
    recorded = json.loads((FIXTURES / "openai-400-unsupported-temperature.json").read_text())["body"]
    sim.push_faults("gpt-5", [{"kind": "error", "status": 400, "body": recorded, "headers": {"x-extra": "1"}}])
    response = chat(client, "gpt-5", temperature=0)
    assert response.status_code == 400
    assert response.json() == recorded
    assert response.headers["x-extra"] == "1"


def test_malformed_fault_with_replace_sends_a_complete_answer_with_those_fields(
    sim: Simulator, client: httpx.Client
) -> None:
    """replace sets (or, with "<absent>", removes) fields of an otherwise normal answer, at dotted paths."""
    shapes: list[dict[str, Any]] = [
        {"choices.0.message": None},
        {"choices.0.message.content": [1, {"type": "text", "text": 2}]},
        {"system_fingerprint": {"v": 2}, "choices.0.message.content": 7},
        {"choices.0.message": "<absent>", "choices.9.x": 1, "id.x": 1},  # paths past the body change nothing
    ]
    sim.push_faults("gpt-4o", [{"kind": "malformed", "replace": shape} for shape in shapes])
    null, parts, typed, missing = (chat(client, logprobs=True).json() for _ in shapes)
    assert null["choices"][0]["message"] is None and null["object"] == "chat.completion"
    assert null["choices"][0]["logprobs"]["content"]  # the rest of the answer is as usual
    assert parts["choices"][0]["message"]["content"] == [1, {"type": "text", "text": 2}]
    assert typed["system_fingerprint"] == {"v": 2} and typed["choices"][0]["message"]["content"] == 7
    assert "message" not in missing["choices"][0] and missing["id"].startswith("chatcmpl-")
    assert [e["fault"] for e in sim.requests()] == ["malformed"] * 4
    assert chat(client).json()["choices"][0]["message"]["content"]  # one-shot: the next answer is normal


def test_echo_key_repeats_the_sent_key_in_every_place_of_a_200_answer(keyed_sim: Simulator) -> None:
    """echo_key = true puts the request's key (bearer or api-key) in content, logprobs, ids, model, fingerprint."""
    keyed_sim.update_model("gpt-4o", {"echo_key": True, "outputs": {"*": "Two"}})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "1+1="}], "logprobs": True, "top_logprobs": 2}
    with httpx.Client(base_url=keyed_sim.url, timeout=10) as http:
        bearer = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        azure = http.post("/openai/v1/chat/completions", json=body, headers={"api-key": KEY})
    for response in (bearer, azure):
        assert response.status_code == 200
        answer = response.json()
        choice = answer["choices"][0]
        assert choice["message"]["content"] == f"Two {KEY}"
        assert KEY in [alt["token"] for alt in choice["logprobs"]["content"][0]["top_logprobs"]]
        assert choice["logprobs"]["content"][0]["token"] == "Two"  # the answer's own tokens are unchanged
        assert KEY in choice["finish_reason"] and KEY in answer["model"] and KEY in answer["id"]
        assert KEY in answer["system_fingerprint"] and KEY in response.headers["x-request-id"]
    assert KEY not in json.dumps(keyed_sim.requests())  # the request log still holds no key
    keyed_sim.update_model("gpt-4o", {"echo_key": ["content"]})
    only = sdk(keyed_sim).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "1+1="}])
    assert only.choices[0].message.content == f"Two {KEY}" and KEY not in only.id + only.model
    assert keyed_sim.respond(body)[1]["choices"][0]["message"]["content"] == "Two"  # in-process: no key to echo


def test_disconnect_fault_closes_without_a_response(sim: Simulator, client: httpx.Client) -> None:
    """A disconnect fault drops the connection; the next request is answered normally."""
    sim.push_faults("gpt-4o", [{"kind": "disconnect"}])
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client)
    assert chat(client).status_code == 200
    assert [e["status"] for e in sim.requests()] == [None, 200]


def test_timeout_fault_outlasts_the_client_timeout(sim: Simulator) -> None:
    """A timeout fault makes the client time out while other requests still get answers."""
    sim.push_faults("gpt-4o", [{"kind": "timeout", "delay": 5}])
    with httpx.Client(base_url=sim.url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            chat(http)
        assert chat(http).status_code == 200
    assert sim.requests()[0]["fault"] == "timeout"


def test_error_rate_draws_from_error_kinds(sim: Simulator, client: httpx.Client) -> None:
    """With error_rate 1 every request gets one of the listed fault kinds."""
    sim.set_scenario({"models": {"*": {"error_rate": 1.0, "error_kinds": ["502", {"kind": "html", "status": 504}]}}})
    statuses = Counter(chat(client, "flaky").status_code for _ in range(30))
    assert set(statuses) == {502, 504}


# --------------------------------------------------------------------------- request handling


def test_max_tokens_truncates_and_reports_length(sim: Simulator, client: httpx.Client) -> None:
    """max_tokens / max_completion_tokens cut the answer to that many tokens with finish_reason length."""
    sim.set_scenario({"models": {"gpt-4o": {"outputs": {"*": "one two three four"}}}})
    short = chat(client, max_tokens=2, logprobs=True, top_logprobs=1).json()
    newer = chat(client, max_completion_tokens=3).json()
    whole = chat(client, max_tokens=10).json()
    assert short["choices"][0]["message"]["content"] == "one two"
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 2
    tokens = short["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in tokens] == ["one", " two"]
    assert tokens[1]["logprob"] == pytest.approx(-0.001)
    assert [t["token"] for t in tokens[1]["top_logprobs"]] == [" two"]
    assert newer["choices"][0]["message"]["content"] == "one two three"
    assert (whole["choices"][0]["finish_reason"], whole["usage"]["completion_tokens"]) == ("stop", 4)


def test_logprob_jitter_varies_values_but_keeps_them_valid(sim: Simulator, client: httpx.Client) -> None:
    """With logprob_jitter the first-token logprob varies around ln(p) and never exceeds 0."""
    sim.set_scenario({"models": {"m": {"outputs": {"*": "yes"}, "logprob_jitter": 0.2}}})
    values = [
        chat(client, "m", logprobs=True).json()["choices"][0]["logprobs"]["content"][0]["logprob"] for _ in range(20)
    ]
    assert all(value <= 0 for value in values)
    assert len(set(values)) > 5


def test_invalid_requests_get_openai_shaped_errors(sim: Simulator, client: httpx.Client) -> None:
    """Bad bodies are 400 naming the parameter; unknown models and routes are 404."""
    sim.set_scenario({"models": {"gpt-4o": {}}})
    not_json = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": 4, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            "top_logprobs",
        ),
    ]
    for body, param in cases:
        response = client.post("/v1/chat/completions", json=body)
        assert (response.status_code, response.json()["error"]["param"]) == (400, param), body
    unknown = chat(client, "gpt-9")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    route = client.post("/v1/embeddings", json={})
    assert route.status_code == 404 and "Invalid URL" in route.json()["error"]["message"]


def test_azure_routes_and_missing_api_version(sim: Simulator, client: httpx.Client) -> None:
    """Azure v1 takes the model from the body; a classic path without api-version is Azure's 404."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    v1 = client.post("/openai/v1/chat/completions", json=body)
    assert v1.status_code == 200 and v1.json()["model"] == "gpt-4o"
    assert "prompt_filter_results" in v1.json()
    no_version = client.post("/openai/deployments/gpt-4o/chat/completions", json=body)
    assert no_version.status_code == 404
    assert no_version.json() == {"error": {"code": "404", "message": "Resource not found"}}
    sim.set_scenario({"models": {"known": {}}})
    missing = client.post("/openai/deployments/nope/chat/completions?api-version=2024-10-21", json=body)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DeploymentNotFound"


def test_models_endpoint_lists_named_models(sim: Simulator, client: httpx.Client) -> None:
    """GET /v1/models lists the scenario's named models, not the "*" fallback."""
    sim.set_scenario({"models": {"gpt-4o": {}, "gpt-4o-mini": {}, "*": {}}})
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [model["id"] for model in listing["data"]] == ["gpt-4o", "gpt-4o-mini"]


def test_request_log_records_parameters_without_secrets(sim: Simulator, client: httpx.Client) -> None:
    """Each request is logged with its sampling parameters and body keys."""
    before = time.time()
    chat(client, seed=7, temperature=0, max_tokens=5, logprobs=True, top_logprobs=2)
    (entry,) = sim.requests()
    assert before <= entry["time"] <= time.time() and isinstance(entry["monotonic"], float)
    assert (entry["method"], entry["path"], entry["model"], entry["status"]) == (
        "POST",
        "/v1/chat/completions",
        "gpt-4o",
        200,
    )
    assert (entry["seed"], entry["temperature"], entry["max_tokens"], entry["logprobs"]) == (7, 0, 5, True)
    assert (entry["top_logprobs"], entry["max_completion_tokens"], entry["auth"]) == (
        2,
        None,
        "none-required",
    )
    assert entry["body_keys"] == [
        "logprobs",
        "max_tokens",
        "messages",
        "model",
        "seed",
        "temperature",
        "top_logprobs",
    ]
    entry["status"] = 999  # callers get copies
    assert sim.requests()[0]["status"] == 200
    sim.clear_requests()
    assert sim.requests() == []


# --------------------------------------------------------------------------- scripting


def test_phases_switch_behaviour_after_their_time(sim: Simulator, client: httpx.Client) -> None:
    """A phase at 0.3 s rotates the fingerprint pool; before it the old pool holds."""
    sim.set_scenario(
        {
            "models": {"gpt-4o": {"fingerprints": "fp_old0000000"}},
            "phases": [{"at": 0.3, "models": {"gpt-4o": {"fingerprints": "fp_new0000000"}}}],
        }
    )
    assert chat(client).json()["system_fingerprint"] == "fp_old0000000"
    time.sleep(0.35)
    assert chat(client).json()["system_fingerprint"] == "fp_new0000000"
    assert client.get("/_sim/scenario").json()["phases"] == []


def test_update_model_merges_and_creates_from_fallback(sim: Simulator, client: httpx.Client) -> None:
    """update_model keeps other settings; a new model starts from "*"'s settings."""
    sim.set_scenario({"models": {"gpt-4o": {"resolved": "gpt-4o-2024-08-06"}, "*": {"outputs": {"*": "star"}}}})
    sim.update_model("gpt-4o", {"fingerprints": "fp_1111111111"})
    sim.update_model("brand-new", {"fingerprints": "fp_2222222222"})
    merged, created = chat(client).json(), chat(client, "brand-new").json()
    assert (merged["model"], merged["system_fingerprint"]) == ("gpt-4o-2024-08-06", "fp_1111111111")
    assert created["choices"][0]["message"]["content"] == "star"
    assert created["system_fingerprint"] == "fp_2222222222"


def test_bad_scenarios_name_the_key_and_its_location(sim: Simulator, client: httpx.Client) -> None:
    """Validation errors say what is wrong and where, and leave the running scenario untouched."""
    sim.set_scenario({"models": {"gpt-4o": {"fingerprints": "fp_keep000000"}}})
    with pytest.raises(ValueError, match=r"models\[\"gpt-4o\"\]: unknown key 'latncy' \(did you mean 'latency'\?\)"):
        sim.set_scenario({"models": {"gpt-4o": {"latncy": 1}}})
    with pytest.raises(ValueError, match=r"phases\[0\]\.models\[\"m\"\]\.faults\[0\]\.kind: unknown fault kind"):
        sim.set_scenario({"phases": [{"at": 1, "models": {"m": {"faults": [{"kind": "boom"}]}}}]})
    with pytest.raises(ValueError, match=r"fingerprints\[\"fp_x\"\]: must be >= 0"):
        sim.update_model("gpt-4o", {"fingerprints": {"fp_x": -1}})
    with pytest.raises(ValueError, match=r"scenario: unknown key 'model'"):
        Simulator({"model": {}})
    assert chat(client).json()["system_fingerprint"] == "fp_keep000000"


def test_load_scenario_reads_json_and_toml(tmp_path: Path) -> None:
    """The TOML example in the module docstring loads, equals its JSON twin, and bad files are named."""
    docstring = simulator_module.__doc__ or ""
    block = docstring.split(".. code-block:: toml\n")[1].split("\nModel settings")[0]
    toml_text = "\n".join(line[4:] for line in block.splitlines())
    toml_file = tmp_path / "story.toml"
    toml_file.write_text(toml_text)
    scenario = load_scenario(toml_file)
    assert scenario["models"]["gpt-4o"]["outputs"][MATH] == {"391": 0.97, "392": 0.03}
    assert scenario["phases"][0]["at"] == 5.0
    json_file = tmp_path / "story.json"
    json_file.write_text(json.dumps(scenario))
    assert load_scenario(json_file) == scenario
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": {"m": {"latency": -1}}}')
    with pytest.raises(ValueError, match=r"broken\.json: models\[\"m\"\]\.latency: must be >= 0"):
        load_scenario(broken)
    with pytest.raises(ValueError, match=r"missing\.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"\.yaml: a scenario file must end in \.json or \.toml"):
        load_scenario(tmp_path / "story.yaml")


def test_admin_endpoints_drive_the_simulator_over_http(sim: Simulator, client: httpx.Client) -> None:
    """The /_sim/ endpoints replace the scenario, patch a model, queue faults and manage the log."""
    put = client.put("/_sim/scenario", json={"seed": 3, "models": {"gpt-4o": {"fingerprints": "fp_a000000000"}}})
    assert put.status_code == 200 and put.json()["seed"] == 3
    patch = client.patch("/_sim/models/gpt-4o", json={"resolved": "gpt-4o-2024-08-06"})
    assert patch.json()["settings"]["resolved"] == {"gpt-4o-2024-08-06": 1.0}
    faults = client.post("/_sim/models/gpt-4o/faults", json=[{"kind": "503"}])
    assert faults.json() == {"model": "gpt-4o", "pending_faults": 1}
    state = client.get("/_sim/scenario").json()
    assert state["models"]["gpt-4o"]["faults"] == [{"kind": "503"}]
    assert chat(client).status_code == 503
    body = chat(client).json()
    assert (body["model"], body["system_fingerprint"]) == ("gpt-4o-2024-08-06", "fp_a000000000")
    logged = client.get("/_sim/requests").json()
    assert [entry["status"] for entry in logged] == [503, 200]
    assert client.delete("/_sim/requests").status_code == 200
    assert client.get("/_sim/requests").json() == []


def test_admin_endpoints_reject_bad_input(sim: Simulator, client: httpx.Client) -> None:
    """Bad admin input is a 400 with an error message; unknown admin paths are 404."""
    not_json = client.put("/_sim/scenario", content=b"{")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    unknown = client.patch("/_sim/models/gpt-4o", json={"fingerprint": "x"})
    assert unknown.status_code == 400 and "did you mean 'fingerprints'" in unknown.json()["error"]
    not_list = client.post("/_sim/models/gpt-4o/faults", json={"kind": "500"})
    assert not_list.status_code == 400 and "expected a list" in not_list.json()["error"]
    assert client.get("/_sim/nothing").status_code == 404
    assert client.post("/_sim/scenario", json={}).status_code == 405


# --------------------------------------------------------------------------- load and process


def test_200_concurrent_slow_requests_all_succeed(sim: Simulator) -> None:
    """200 concurrent requests that each wait 0.2 s are all answered, in parallel."""
    sim.set_scenario({"models": {"*": {"latency": 0.2}}})
    host, port = sim.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})

    # http.client, one connection per thread: httpx's pool scans every connection for every request,
    # which at 200 connections costs seconds on the client side and would hide the server's speed.
    def one(_: int) -> int:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    print(f"200 concurrent requests at 0.2 s latency took {elapsed:.2f} s")
    assert statuses == [200] * 200
    assert elapsed < 10  # serial handling would take 40 s; this only proves they overlapped


def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    """serve() announces its URL on stdout, answers requests and exits cleanly on SIGTERM."""
    code = "from fpwatch.sim import serve; serve('127.0.0.1', 0, None, None, 5)"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"fpwatch simulator listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
            assert match, line
            body = {"model": "anything", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(match[1] + "/chat/completions", json=body, timeout=10).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()  # no-op once it has exited; stops a hung server if an assert failed


# --------------------------------------------------------------------------- temperature-0 noise and model changes
#
# These drive the simulator in-process with respond(), which gives the same answers as HTTP (proven
# below), so thousands of draws take a fraction of a second. Seeds are fixed, so every count below is
# deterministic; the tolerances are what a correct simulator would pass for any seed, stated in
# binomial standard deviations, so a failure means the model is wrong and not that the seed is unlucky.

COIN, COLOR = BUILTIN_PROMPTS[2], BUILTIN_PROMPTS[3]
LONG_TEXT = " ".join(f"w{i:02d}" for i in range(60))  # 60 tokens, none of them a vocabulary word


def ask(simulator: Simulator, prompt: str, model: str = "m", **extra: Any) -> dict[str, Any]:
    status, body = simulator.respond({"model": model, "messages": [{"role": "user", "content": prompt}], **extra})
    assert status == 200, body
    return body


def content_of(body: dict[str, Any]) -> str:
    text: str = body["choices"][0]["message"]["content"]
    return text


def first_token(body: dict[str, Any]) -> dict[str, Any]:
    token: dict[str, Any] = body["choices"][0]["logprobs"]["content"][0]
    return token


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    p_total, q_total = sum(p.values()), sum(q.values())
    return 0.5 * sum(abs(p.get(key, 0) / p_total - q.get(key, 0) / q_total) for key in set(p) | set(q))


def frequencies(answers: Iterable[str]) -> dict[str, float]:
    counts = Counter(answers)
    return {answer: count / sum(counts.values()) for answer, count in counts.items()}


def test_builtin_prompts_are_the_builtin_canary_set() -> None:
    """BUILTIN_PROMPTS repeats the built-in canaries' prompts (the simulator does not import fpwatch's config)."""
    assert tuple(canary.prompt for canary in BUILTIN_SET) == BUILTIN_PROMPTS


def test_long_outputs_rarely_repeat_and_diverge_in_the_second_half() -> None:
    """3000 draws: ~7 % repeat exactly; the others share the text's first half and diverge after it."""
    simulator = Simulator({"models": {"m": {"long_outputs": {"*": {"text": LONG_TEXT}}}}}, seed=11)
    words = LONG_TEXT.split()
    answers = [content_of(ask(simulator, "Tell me about Richard Feynman")) for _ in range(3000)]
    repeats = sum(answer == LONG_TEXT for answer in answers)
    # Binomial(3000, 0.07): sd of the rate is 0.0047, so +-0.02 is more than 4 sd.
    assert abs(repeats / 3000 - 0.07) < 0.02, repeats
    positions = []
    for answer in answers:
        if answer == LONG_TEXT:
            continue
        tokens = answer.split(" ")
        assert len(tokens) == len(words)  # about the same length: exactly, here
        positions.append(next(i for i, (a, b) in enumerate(zip(tokens, words, strict=True)) if a != b))
    assert min(positions) >= 30 and max(positions) <= 59  # diverge_after 0.5 of 60 tokens
    # Uniform on 30..59: mean 44.5, sd 8.66, so the mean of ~2800 positions has sd 0.16; +-1 is 6 sd.
    assert abs(sum(positions) / len(positions) - 44.5) < 1
    assert {30, 59} <= set(positions)  # both ends are reachable
    # Truncation applies as for outputs: the first 10 tokens never diverge.
    short = [ask(simulator, "Tell me", max_tokens=10) for _ in range(20)]
    assert {content_of(body) for body in short} == {" ".join(words[:10])}
    assert {body["choices"][0]["finish_reason"] for body in short} == {"length"}


def test_long_outputs_options_and_precedence_over_outputs() -> None:
    """repeat and diverge_after are honoured; a long output wins over an output with the same key only."""
    simulator = Simulator(
        {
            "models": {
                "m": {
                    "outputs": {"*": "short", "Feynman": "short too"},
                    "long_outputs": {
                        "*": {"text": LONG_TEXT, "repeat": 1},
                        "=always new": {"text": "alpha beta gamma delta", "repeat": 0, "diverge_after": 0},
                    },
                }
            }
        },
        seed=3,
    )
    assert content_of(ask(simulator, "anything")) == LONG_TEXT  # long "*" replaced outputs' "*"
    assert content_of(ask(simulator, "Richard Feynman")) == "short too"  # a substring key beats "*"
    fresh = [content_of(ask(simulator, "always new")) for _ in range(200)]
    assert "alpha beta gamma delta" not in fresh  # repeat 0: never the text
    assert all(len(answer.split()) == 4 for answer in fresh)
    assert len({answer.split()[0] for answer in fresh}) > 5  # diverge_after 0: even the first word moves
    token = first_token(ask(simulator, "always new", logprobs=True, top_logprobs=3))
    # The first token diverges with probability 1/4 and is then one of 31 words, so the text's first
    # word is the most likely first token at ln(3/4).
    assert token["top_logprobs"][0] == {
        "token": "alpha",
        "logprob": pytest.approx(math.log(0.75)),
        "bytes": [97, 108, 112, 104, 97],
    }
    assert all(alt["logprob"] == pytest.approx(math.log(0.25 / 31)) for alt in token["top_logprobs"][1:])


def test_exact_keys_match_only_the_whole_prompt() -> None:
    """A key starting with "=" matches only that exact prompt; a plain key also matches as a substring."""
    simulator = Simulator({"models": {"m": {"outputs": {"=x": "exact", "y": "substring", "*": "fallback"}}}}, seed=1)
    answers = [content_of(ask(simulator, prompt)) for prompt in ("x", "explain", "why", "=x")]
    assert answers == ["exact", "fallback", "substring", "fallback"]


def test_route_sends_the_requested_share_to_the_other_settings() -> None:
    """share 0.3: ~30 % of 4000 answers carry the routed model's answer, fingerprint and name together."""
    other = {"resolved": "other-model", "fingerprints": "fp_other00000", "outputs": {"*": "routed"}}
    settings = {"resolved": "own-model", "fingerprints": "fp_own0000000", "outputs": {"*": "own"}}
    simulator = Simulator({"models": {"m": routed(settings, other, 0.3)}}, seed=5)
    bodies = [ask(simulator, "hi") for _ in range(4000)]
    kinds = Counter((content_of(b), b["model"], b["system_fingerprint"]) for b in bodies)
    assert set(kinds) == {("own", "own-model", "fp_own0000000"), ("routed", "other-model", "fp_other00000")}
    # Binomial(4000, 0.3): sd of the share is 0.0072; +-0.03 is about 4 sd.
    assert abs(kinds[("routed", "other-model", "fp_other00000")] / 4000 - 0.3) < 0.03
    for share, expected in ((0.0, "own"), (1.0, "routed")):
        simulator.update_model("m", {"route": {"share": share, "to": other}})
        assert {content_of(ask(simulator, "hi")) for _ in range(50)} == {expected}


def test_route_to_falls_back_to_defaults_not_to_the_model() -> None:
    """`to` is a whole answering model: what it leaves out takes the defaults, not the routing model's values."""
    own = {"resolved": "own-model", "fingerprints": "fp_own0000000", "outputs": {"*": "own"}}
    simulator = Simulator({"models": {"m": routed(own, {"outputs": {"*": "routed"}}, 1.0)}}, seed=5)
    body = ask(simulator, "hi")
    assert (content_of(body), body["model"]) == ("routed", "m")
    assert re.fullmatch(r"fp_[0-9a-f]{10}", body["system_fingerprint"])


def test_shifted_moves_exactly_the_requested_total_variation() -> None:
    """shifted() moves each distribution by exactly tv, in the documented way, and leaves the rest alone."""
    base = realistic("a")
    before = copy.deepcopy(base)
    for tv in (0.0, 0.05, 0.3, 0.55, 0.9, 1.0):
        moved = shifted(base, tv)
        validate_scenario({"models": {"m": moved}})
        for key, distribution in base["outputs"].items():
            assert total_variation(distribution, moved["outputs"][key]) == pytest.approx(tv, abs=1e-12), (tv, key)
        assert {k: v for k, v in moved.items() if k != "outputs"} == {k: v for k, v in base.items() if k != "outputs"}
    assert base == before  # never mutated
    coin = shifted(base, 0.3)["outputs"][COIN]
    assert coin == pytest.approx({"Heads": 0.3, "Tails": 0.7})  # tv moves from the most likely to the second
    color = shifted(base, 0.6)["outputs"][COLOR]  # more than "Blue" has: the rest comes from "Green"
    assert color == pytest.approx({"Red": 0.9, "Green": 0.1})
    only = shifted({"outputs": {"q": "2"}}, 0.25)["outputs"]["q"]
    assert only == pytest.approx({"2": 0.75, "2.": 0.25})  # one answer: part of it moves to a nearby one
    swapped = shifted({"outputs": {"q": {"yes": 0.5, "no": 0.5}}}, 0.8)["outputs"]["q"]
    assert total_variation({"yes": 0.5, "no": 0.5}, swapped) == pytest.approx(0.8)  # via a new answer
    one_prompt = shifted(base, 0.3, prompts=["x"])
    assert one_prompt["outputs"]["=x"] == pytest.approx(
        {"Hello! How can I": 0.2, "It seems like your": 0.6, "Could you clarify?": 0.15, "x": 0.05}
    )
    assert one_prompt["outputs"][COIN] == base["outputs"][COIN]
    with pytest.raises(ValueError, match=r"tv: must be a number between 0 and 1"):
        shifted(base, 1.5)
    with pytest.raises(ValueError, match=r"'explain' is answered by long_outputs"):
        shifted(base, 0.3, prompts=["explain"])
    with pytest.raises(ValueError, match=r"'hi' is answered by no outputs key"):
        shifted({"outputs": {"ping": "pong"}}, 0.3, prompts=["hi"])


def test_shifted_frequencies_move_by_tv_when_served() -> None:
    """Served, the coin's answers move by ~0.3 in total variation (4000 draws before and after)."""
    before = Simulator({"models": {"m": realistic("a")}}, seed=21)
    after = Simulator({"models": {"m": shifted(realistic("a"), 0.3)}}, seed=22)
    old = frequencies(content_of(ask(before, COIN, max_tokens=2)) for _ in range(4000))
    new = frequencies(content_of(ask(after, COIN, max_tokens=2)) for _ in range(4000))
    # Two answers, so TV = |change in P(Heads)|; each frequency has sd <= 0.008, their difference <= 0.011.
    assert total_variation(old, new) == pytest.approx(0.3, abs=0.04)
    assert new["Heads"] == pytest.approx(0.3, abs=0.03)


def test_logprob_shift_moves_only_the_runner_up_logprobs() -> None:
    """logprob_shift moves every first token but the most likely one; the answers are unchanged."""
    settings = {"outputs": {"*": {"Heads": 0.6, "Tails": 0.4}}}
    body = {"model": "m", "messages": [{"role": "user", "content": "coin"}], "logprobs": True, "top_logprobs": 5}
    plain = Simulator({"models": {"m": settings}}, seed=8)
    moved = Simulator({"models": {"m": perturbed_logprobs(settings, 0.5)}}, seed=8)
    lowered = Simulator({"models": {"m": perturbed_logprobs(settings, -2.0)}}, seed=8)
    capped = Simulator({"models": {"m": perturbed_logprobs(settings, 5.0)}}, seed=8)
    for _ in range(50):
        replies = [sim.respond(body)[1] for sim in (plain, moved, lowered, capped)]
        assert len({content_of(reply) for reply in replies}) == 1  # the same answer from the same seed
        tops = [{alt["token"]: alt["logprob"] for alt in first_token(r)["top_logprobs"]} for r in replies]
        assert [top["Heads"] for top in tops] == pytest.approx([math.log(0.6)] * 4)
        assert [top["Tails"] for top in tops] == pytest.approx(
            [math.log(0.4), math.log(0.4) + 0.5, math.log(0.4) - 2.0, -0.0001]
        )
        chosen = first_token(replies[1])
        assert chosen["logprob"] == tops[1][chosen["token"]]  # the chosen token agrees with its entry
    assert perturbed_logprobs(perturbed_logprobs(settings, 0.5), 0.25)["logprob_shift"] == 0.75


def test_by_fingerprint_overrides_answers_and_logprobs_for_that_replica() -> None:
    """A replica's outputs replace the model's keys it names, and its logprob_shift replaces the model's."""
    settings = {
        "fingerprints": {"fp_aaaaaaaaaa": 1, "fp_bbbbbbbbbb": 1},
        "outputs": {"*": {"Heads": 0.6, "Tails": 0.4}, "color": "Blue"},
        "long_outputs": {"story": LONG_TEXT},
        "logprob_shift": -1.0,
        "by_fingerprint": {"fp_bbbbbbbbbb": {"outputs": {"*": {"Heads": 0.2, "Tails": 0.8}, "story": "Short."}}},
    }
    simulator = Simulator({"models": {"m": settings}}, seed=4)
    seen: dict[str, Counter[str]] = {"fp_aaaaaaaaaa": Counter(), "fp_bbbbbbbbbb": Counter()}
    for _ in range(2000):
        body = ask(simulator, "coin", logprobs=True, top_logprobs=2)
        seen[body["system_fingerprint"]][content_of(body)] += 1
        top = {alt["token"]: alt["logprob"] for alt in first_token(body)["top_logprobs"]}
        if body["system_fingerprint"] == "fp_bbbbbbbbbb":
            assert top == pytest.approx({"Tails": math.log(0.8), "Heads": math.log(0.2) - 1.0})
        else:
            assert top == pytest.approx({"Heads": math.log(0.6), "Tails": math.log(0.4) - 1.0})
    # ~1000 draws per replica: the sd of each share is 0.016, so +-0.06 is almost 4 sd.
    assert seen["fp_aaaaaaaaaa"]["Heads"] / seen["fp_aaaaaaaaaa"].total() == pytest.approx(0.6, abs=0.06)
    assert seen["fp_bbbbbbbbbb"]["Heads"] / seen["fp_bbbbbbbbbb"].total() == pytest.approx(0.2, abs=0.06)
    stories = {
        (b["system_fingerprint"], content_of(b)) for b in (ask(simulator, "story", max_tokens=3) for _ in range(40))
    }
    assert stories == {("fp_aaaaaaaaaa", "w00 w01 w02"), ("fp_bbbbbbbbbb", "Short.")}
    assert {content_of(ask(simulator, "color")) for _ in range(20)} == {"Blue"}  # keys it does not name stay


def test_rejects_give_openais_400_bodies_through_the_sdk(sim: Simulator) -> None:
    """A reasoning-style model refuses temperature != 1, logprobs, top_logprobs and seed as OpenAI does."""
    sim.set_scenario(
        {
            "models": {
                "o3": {"rejects": ["temperature", "logprobs", "seed"], "outputs": {"*": "ok"}},
                "only-top": {"rejects": ["top_logprobs"]},
            }
        }
    )
    client = sdk(sim)
    messages: Any = [{"role": "user", "content": "hi"}]
    expected = {
        "temperature": "Unsupported value: 'temperature' does not support 0 with this model. "
        "Only the default (1) value is supported.",
        "logprobs": "Unsupported parameter: 'logprobs' is not supported with this model.",
        "seed": "Unsupported parameter: 'seed' is not supported with this model.",
    }
    calls: list[tuple[str, dict[str, Any]]] = [
        ("temperature", {"temperature": 0}),
        ("logprobs", {"logprobs": True}),
        ("seed", {"seed": 1}),
    ]
    for param, extra in calls:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="o3", messages=messages, **extra)
        code = "unsupported_value" if param == "temperature" else "unsupported_parameter"
        assert (caught.value.status_code, caught.value.param, caught.value.code) == (400, param, code)
        assert caught.value.body == {
            "message": expected[param],
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="only-top", messages=messages, logprobs=True, top_logprobs=2)
    assert (caught.value.param, caught.value.code) == ("top_logprobs", "unsupported_parameter")
    accepted = client.chat.completions.create(model="o3", messages=messages, temperature=1, logprobs=False)
    assert accepted.choices[0].message.content == "ok"
    with httpx.Client(base_url=sim.url) as http:
        raw = chat(http, "o3", temperature=0.2)
    assert raw.json() == {
        "error": {
            "message": "Unsupported value: 'temperature' does not support 0.2 with this model. "
            "Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    }
    log = sim.requests()
    assert [(e["model"], e["status"], e["temperature"]) for e in log] == [
        ("o3", 400, 0),
        ("o3", 400, None),
        ("o3", 400, None),
        ("only-top", 400, None),
        ("o3", 200, 1),
        ("o3", 400, 0.2),
    ]


def test_a_refused_request_uses_up_no_fault() -> None:
    """Rejections come before faults: the pending 503 goes to the first request the model accepts."""
    simulator = Simulator({"models": {"o3": {"rejects": ["temperature"], "faults": ["503"]}}}, seed=1)
    body = {"model": "o3", "messages": [{"role": "user", "content": "hi"}]}
    assert simulator.respond({**body, "temperature": 0})[0] == 400
    assert simulator.respond(body)[0] == 503
    assert simulator.respond(body)[0] == 200


BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"logprob_shift": "0.5"}, r'models\["m"\]\.logprob_shift: expected a number, got a string'),
    ({"route": {"share": 0.3}}, r'models\["m"\]\.route: a route needs \'to\''),
    ({"route": {"shar": 0.3, "to": {}}}, r"route: unknown key 'shar' \(did you mean 'share'\?\)"),
    ({"route": {"share": 1.5, "to": {}}}, r"route\.share: must be between 0 and 1, got 1\.5"),
    (
        {"route": {"share": 0.5, "to": {"route": {"share": 1, "to": {}}}}},
        r"route\.to: a routed-to model cannot route again",
    ),
    ({"route": {"share": 0.5, "to": {"latency": 1}}}, r"route\.to\.latency: only answer settings can be routed"),
    (
        {"route": {"share": 0.5, "to": {"outputs": {"*": {"a": -1}}}}},
        r'route\.to\.outputs\["\*"\]\["a"\]: must be >= 0',
    ),
    ({"long_outputs": ["text"]}, r"long_outputs: expected an object, got a list"),
    ({"long_outputs": {"*": {"txt": "a"}}}, r"long_outputs\[\"\*\"\]: unknown key 'txt' \(did you mean 'text'\?\)"),
    ({"long_outputs": {"*": {"repeat": 0.1}}}, r'long_outputs\["\*"\]: a long output needs \'text\''),
    ({"long_outputs": {"*": {"text": "  "}}}, r'long_outputs\["\*"\]\.text: expected a non-empty string'),
    ({"long_outputs": {"*": {"text": "a b", "repeat": 2}}}, r'long_outputs\["\*"\]\.repeat: must be between 0 and 1'),
    ({"long_outputs": {"*": {"text": "a", "diverge_after": -0.1}}}, r"\.diverge_after: must be between 0 and 1"),
    ({"rejects": "temperature"}, r"rejects: expected a list of parameter names, got a string"),
    ({"rejects": ["temprature"]}, r"rejects\[0\]: cannot reject 'temprature' \(did you mean 'temperature'\?\)"),
    ({"by_fingerprint": {"fp_x": "x"}}, r'by_fingerprint\["fp_x"\]: expected an object, got a string'),
    ({"by_fingerprint": {"fp_x": {"fingerprints": "a"}}}, r'by_fingerprint\["fp_x"\]: unknown key \'fingerprints\''),
    ({"by_fingerprint": {"fp_x": {"logprob_shift": None}}}, r'\["fp_x"\]\.logprob_shift: expected a number, got null'),
    ({"echo_key": ["contents"]}, r"echo_key\[0\]: cannot echo the key in 'contents' \(did you mean 'content'\?\)"),
    ({"echo_key": "content"}, r"echo_key: expected a list"),
    ({"faults": [{"kind": "malformed", "replace": {"a..b": 1}}]}, r'faults\[0\]\.replace\["a\.\.b"\]: a path is keys'),
    ({"faults": [{"kind": "malformed", "replace": []}]}, r"faults\[0\]\.replace: expected an object, got a list"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_new_settings_are_validated_with_their_location(settings: dict[str, Any], message: str) -> None:
    """Each new setting's errors say what is wrong and where, in models, phases and update_model alike."""
    with pytest.raises(ValueError, match=message):
        validate_scenario({"models": {"m": settings}})
    with pytest.raises(ValueError, match=r"phases\[0\]\.models\[\"m\"\]"):
        validate_scenario({"phases": [{"at": 1, "models": {"m": settings}}]})
    with pytest.raises(ValueError, match=message):
        Simulator().update_model("m", settings)


def test_new_settings_round_trip_and_merge(sim: Simulator, client: httpx.Client) -> None:
    """GET /_sim/scenario returns the new settings normalised; PUT of that state changes nothing."""
    settings = routed(realistic("a"), realistic("b"), 0.25)
    settings.update(rejects=["seed", "seed"], by_fingerprint={"fp_x": {"logprob_shift": 0.1}})
    sim.set_scenario({"models": {"m": settings}})
    state = client.get("/_sim/scenario").json()
    model = state["models"]["m"]
    assert model["rejects"] == ["seed"]
    assert model["route"]["share"] == 0.25 and model["route"]["to"]["resolved"] == realistic("b")["resolved"]
    assert model["long_outputs"]["*"] == {
        "text": realistic("a")["long_outputs"]["*"]["text"],
        "repeat": 0.07,
        "diverge_after": 0.5,
    }
    assert client.put("/_sim/scenario", json=state).json()["models"] == state["models"]
    assert (
        client.patch("/_sim/models/m", json={"route": {"share": 1, "to": {"outputs": {"*": "new"}}}}).status_code == 200
    )
    merged = client.get("/_sim/scenario").json()["models"]["m"]
    assert merged["route"] == {"share": 1.0, "to": {"outputs": {"*": {"new": 1.0}}}}  # replaced whole
    assert merged["rejects"] == ["seed"]  # the other settings stay
    assert content_of(chat(client, "m").json()) == "new"


def test_helpers_return_valid_new_settings_and_never_mutate() -> None:
    """Every helper returns fresh, valid settings; routed keeps only the answer settings of `to`."""
    base = realistic("a")
    other = {**realistic("b"), "latency": 1.0, "rejects": ["seed"]}
    frozen = copy.deepcopy((base, other))
    results = [
        realistic(),
        shifted(base),
        routed(base, other, 0.4),
        perturbed_logprobs(base),
        with_fingerprints(base, {"fp_new0000000": 1}),
    ]
    for result in results:
        validate_scenario({"models": {"m": result}})
    assert (base, other) == frozen
    assert set(results[2]["route"]["to"]) == {"resolved", "fingerprints", "outputs", "long_outputs", "logprob_jitter"}
    assert results[4]["fingerprints"] == {"fp_new0000000": 1.0}
    results[0]["outputs"][COIN]["Heads"] = 0
    assert realistic()["outputs"][COIN]["Heads"] == 0.6  # each call builds a new dict
    with pytest.raises(ValueError, match=r"to: a routed-to model cannot route again"):
        routed(base, routed(base, other, 0.5), 0.5)
    with pytest.raises(ValueError, match=r"settings\.route\.share: must be between 0 and 1"):
        routed(base, other, 2)


def test_realistic_variants_are_different_models() -> None:
    """ "a" and "b" differ on the border prompts, fingerprints and name; both know 1+1; each is deterministic."""
    a, b = realistic("a"), realistic("b")
    assert realistic("b") == b and realistic("a") == a
    assert not set(a["fingerprints"]) & set(b["fingerprints"])
    assert sorted(a["fingerprints"].values()) == [0.1, 0.3, 0.6]
    assert a["resolved"] != b["resolved"]
    assert a["outputs"][COIN] == {"Heads": 0.6, "Tails": 0.4}
    assert a["outputs"][COLOR] == {"Blue": 0.55, "Red": 0.3, "Green": 0.15}
    for prompt in (COIN, COLOR):
        assert total_variation(a["outputs"][prompt], b["outputs"][prompt]) > 0.2, prompt
    for settings in (a, b):
        one = settings["outputs"][BUILTIN_PROMPTS[1]]
        assert max(one, key=one.__getitem__) == "2"
    # Served: the border prompts' answers tell the two apart; everything else gets a long answer.
    sims = [Simulator({"models": {"m": settings}}, seed=9) for settings in (a, b)]
    coins = [frequencies(content_of(ask(s, COIN, max_tokens=2)) for _ in range(500)) for s in sims]
    assert total_variation(*coins) > 0.2
    x_answers = {content_of(ask(sims[0], "x", max_tokens=4)) for _ in range(100)}
    assert x_answers <= set(a["outputs"]["=x"]) and all(len(answer.split()) <= 4 for answer in x_answers)
    assert len(content_of(ask(sims[0], "Explain the Fourier transform")).split()) == 60


def test_respond_answers_exactly_as_http_does(sim: Simulator, client: httpx.Client) -> None:
    """The same seed and requests give the same statuses, bodies and log over HTTP and in-process."""
    scenario = {
        "seed": 99,
        "models": {
            "gpt-4o": {
                **routed(realistic("a"), realistic("b"), 0.3),
                "by_fingerprint": {next(iter(realistic("a")["fingerprints"])): {"logprob_shift": 0.2}},
                "error_rate": 0.1,
                "error_kinds": [
                    "500",
                    {"kind": "429", "retry_after": 1},
                    "html",
                    "malformed",
                    {"kind": "timeout", "delay": 0.01},
                ],
                "latency": 0.001,
            },
            "o3": {"rejects": ["temperature", "logprobs"], "faults": ["503"]},
        },
    }
    sim.set_scenario(scenario)
    offline = Simulator(scenario)
    prompts = [*BUILTIN_PROMPTS, "Explain entropy."]
    requests: list[tuple[str, dict[str, Any]]] = []
    for i in range(150):
        body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompts[i % 5]}]}
        body.update(seed=1, temperature=0.0, max_completion_tokens=4 if i % 5 else 40)
        if i % 3:
            body.update(logprobs=True, top_logprobs=5)
        requests.append(("/v1/chat/completions", body))
    requests += [
        ("/v1/chat/completions", {"model": "o3", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}),
        ("/v1/chat/completions", {"model": "o3", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", {"model": "o3", "messages": [{"role": "user", "content": "hi"}], "n": 2}),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        (
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            {"messages": [{"role": "user", "content": "x"}]},
        ),
        ("/openai/deployments/gpt-4o/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/embeddings", {"model": "gpt-4o"}),
    ]

    def normalise(payload: Any) -> Any:
        text = re.sub(r"req_[0-9a-f]{32}|chatcmpl-[0-9a-f]{29}", "<id>", json.dumps(payload, sort_keys=True))
        result = json.loads(text)
        if isinstance(result, dict):
            result.pop("created", None)
        return result

    over_http, in_process = [], []
    for path, body in requests:
        response = client.post(path, json=body)
        json_body = response.headers["content-type"] == "application/json"
        if json_body:
            try:
                payload = response.json()
            except json.JSONDecodeError:  # the malformed fault
                payload = {"raw": response.text}
        else:
            payload = {"raw": response.text}
        over_http.append((response.status_code, normalise(payload)))
        status, answer = offline.respond(body, path=path)
        in_process.append((status, normalise(answer)))
    assert over_http == in_process
    statuses = Counter(status for status, _ in in_process)
    assert {200, 400, 404, 429, 500, 503} <= set(statuses)  # the comparison covered faults and errors

    def log_view(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k not in ("time", "monotonic", "request_id")} for e in entries]

    assert log_view(sim.requests()) == log_view(offline.requests())


def test_respond_never_sleeps_and_maps_non_json_answers() -> None:
    """respond() skips latency and timeout delays, and reports html, malformed and disconnect faults."""
    simulator = Simulator(
        {
            "models": {
                "m": {
                    "latency": 3600,
                    "faults": ["html", "malformed", "disconnect", {"kind": "timeout", "delay": 3600}],
                }
            }
        },
        seed=1,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    html, malformed, dropped, late, normal = (simulator.respond(body) for _ in range(5))
    assert html[0] == 502 and html[1]["raw"].startswith("<html>")
    assert malformed[0] == 200 and malformed[1]["raw"].startswith('{"id":"chatcmpl-')
    assert dropped == (0, {})
    assert late[0] == 200 and normal[0] == 200
    assert [e["fault"] for e in simulator.requests()] == ["html", "malformed", "disconnect", "timeout", None]


def test_respond_trusts_the_caller_and_can_skip_the_log() -> None:
    """In-process calls need no key (logged "ok"); log_requests=False keeps no log at all."""
    keyed = Simulator(api_key=KEY, seed=1)
    assert keyed.respond({"model": "m", "messages": [{"role": "user", "content": "hi"}]})[0] == 200
    assert keyed.requests()[0]["auth"] == "ok"
    quiet = Simulator({"models": {"m": realistic()}}, seed=1, log_requests=False)
    for prompt in BUILTIN_PROMPTS:
        assert ask(quiet, prompt, logprobs=True, top_logprobs=20)["choices"][0]["logprobs"]["content"]
    assert quiet.requests() == []


def test_respond_starts_the_phase_clock() -> None:
    """On a simulator that was never started, phases run from the first respond()."""
    simulator = Simulator(
        {
            "models": {"m": {"fingerprints": "fp_old0000000"}},
            "phases": [{"at": 0.2, "models": {"m": {"fingerprints": "fp_new0000000"}}}],
        }
    )
    assert ask(simulator, "hi")["system_fingerprint"] == "fp_old0000000"
    time.sleep(0.25)
    assert ask(simulator, "hi")["system_fingerprint"] == "fp_new0000000"
