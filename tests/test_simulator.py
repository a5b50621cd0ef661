"""The simulated provider, exercised over real loopback sockets with real clients (no mocks)."""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import fpwatch.simulator as simulator_module
from fpwatch.simulator import Simulator, load_scenario

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
    code = "from fpwatch.simulator import serve; serve('127.0.0.1', 0, None, None, 5)"
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
