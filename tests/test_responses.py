"""`type = "openai-responses"`: OpenAI's Responses API adapter on documented bodies, the simulator's Responses dialect
proven with the official `openai` SDK (`client.responses.create`), and the real `fpwatch check` against it (baseline,
a new snapshot, a change of the echoed settings, a silent swap, retries, adaptation, secrets).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ONE_PROVIDER_HEAD, only_model, run_in

from fpwatch.config import Canary, Message, ModelConfig, ProviderConfig, Secret
from fpwatch.errors import ProbeError
from fpwatch.providers import TYPES
from fpwatch.providers.http import Attempt, Exchange
from fpwatch.providers.openai_responses import ResponsesAdapter, echoed_settings, parse_response
from fpwatch.sim import Simulator, realistic

KEY = "sk-proj-fpwatch-responses-test-3c2b1a0f"
SNAPSHOT, NEXT_SNAPSHOT = "gpt-5.5-2026-04-23", "gpt-5.5-2026-09-02"
MODEL = "responses/gpt-5.5"


# --------------------------------------------------------------------------- the adapter on bodies


def body_exchange(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"content-type": "application/json", **(headers or {})}
    return Exchange(status, all_headers, raw, 0.1, [Attempt(status, None, 0, None, None)])


def response(**fields: Any) -> dict[str, Any]:
    """A Response as OpenAI sent it on 2026-05-06 for gpt-5.5 (provider-facts.md 2.2), with `fields` replaced."""
    body: dict[str, Any] = {
        "id": "resp_0c6f1d3ea7c8d6d70069fb3e4b6bb08190a8a8b6c5a3c2a1e5",
        "object": "response",
        "created_at": 1778073675,
        "status": "completed",
        "background": False,
        "billing": {"payer": "developer"},
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": 16,
        "model": SNAPSHOT,
        "output": [
            {"id": "rs_0c6f", "type": "reasoning", "summary": []},
            {
                "id": "msg_0c6f",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "annotations": [],
                        "logprobs": [
                            {
                                "token": "391",
                                "logprob": -0.0012,
                                "bytes": [51, 57, 49],
                                "top_logprobs": [{"token": "391", "logprob": -0.0012, "bytes": [51, 57, 49]}],
                            }
                        ],
                        "text": "391",
                    }
                ],
            },
        ],
        "parallel_tool_calls": True,
        "prompt_cache_retention": "24h",
        "reasoning": {"effort": "medium", "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "top_p": 0.98,
        "usage": {
            "input_tokens": 14,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 9},
            "total_tokens": 26,
        },
    }
    body.update(fields)
    return body


def test_a_response_parses_with_its_echoed_settings_as_the_fingerprint() -> None:
    parsed = parse_response(body_exchange(response()))
    assert (parsed.output, parsed.response_model, parsed.finish_reason) == ("391", SNAPSHOT, "stop")
    assert parsed.fingerprint == "temperature=1;top_p=0.98;service_tier=default;effort=medium"
    assert parsed.fingerprint_state == "present"
    assert (parsed.input_tokens, parsed.output_tokens, parsed.reasoning_tokens) == (14, 12, 9)
    assert parsed.response_id.startswith("resp_0c6f")  # type: ignore[union-attr]
    assert parsed.first_token is not None and (parsed.first_token.token, parsed.first_token.logprob) == ("391", -0.0012)


@pytest.mark.parametrize(
    ("fields", "fingerprint", "state"),
    [
        ({"reasoning": {"effort": None}}, "temperature=1;top_p=0.98;service_tier=default", "present"),
        ({"top_p": 0.97}, "temperature=1;top_p=0.97;service_tier=default;effort=medium", "present"),
        ({"service_tier": "flex"}, "temperature=1;top_p=0.98;service_tier=flex;effort=medium", "present"),
        ({"temperature": None, "top_p": None, "service_tier": None, "reasoning": None}, None, "absent"),
        ({"top_p": "0.98"}, "temperature=1;top_p=0.98;service_tier=default;effort=medium", "present"),
        ({"top_p": {"value": 0.98}}, None, "invalid"),
        ({"service_tier": True}, None, "invalid"),
    ],
)
def test_each_echoed_setting_is_part_of_the_derived_fingerprint(
    fields: dict[str, Any], fingerprint: Any, state: str
) -> None:
    assert echoed_settings(response(**fields)) == (fingerprint, state)


def test_an_incomplete_answer_a_refusal_and_reasoning_only() -> None:
    cut = parse_response(
        body_exchange(response(status="incomplete", incomplete_details={"reason": "max_output_tokens"}))
    )
    assert cut.finish_reason == "length"
    refusal = [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]
    assert parse_response(body_exchange(response(output=refusal))).output == "I can't help with that."
    thinking = parse_response(body_exchange(response(output=[{"type": "reasoning", "summary": []}])))
    assert (thinking.output, thinking.first_token) == ("", None)  # completed: the model chose to say nothing
    spent = response(status="incomplete", incomplete_details={"reason": "max_output_tokens"}, output=[])
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(spent))
    assert caught.value.kind == "bad_request" and caught.value.permanent
    assert "ended without an answer after 9 reasoning tokens (status incomplete, length)" in str(caught.value)
    assert "raise the canary's max_tokens" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (response(output={"text": "391"}), "output is an object, not a list of items"),
        (response(output=["391"]), "output[0] is a string, not an output item"),
        (response(output=[{"type": "message", "content": "391"}]), "output[0].content is a string, not a list"),
        (
            response(output=[{"type": "message", "content": [{"type": "output_text", "text": 391}]}]),
            ".text is a number",
        ),
        ({"id": "chatcmpl-1", "object": "chat.completion", "choices": []}, "no output"),
        ([response()], "a JSON list, not an object"),
        (b'{"id":"resp_1","object":"response","output":[{"type":"mess', "not valid JSON"),
    ],
)
def test_a_broken_response_is_malformed_with_the_reason(body: Any, reason: str) -> None:
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(body))
    assert caught.value.kind == "malformed" and reason in str(caught.value)


def test_errors_are_openais_and_a_failed_response_says_why() -> None:
    limited = {
        "error": {"message": "Rate limit reached for gpt-5.5", "type": "requests", "code": "rate_limit_exceeded"}
    }
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(limited, 429, {"retry-after": "2"}))
    assert caught.value.kind == "rate_limited" and "Rate limit reached for gpt-5.5 (HTTP 429)" in str(caught.value)
    unknown = {"error": {"message": "Unknown parameter: 'seed'.", "type": "invalid_request_error", "param": "seed"}}
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(unknown, 400))
    assert caught.value.permanent and "Unknown parameter: 'seed'." in str(caught.value)
    failed = response(status="failed", output=[], error={"code": "server_error", "message": "The model crashed."})
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(failed))
    assert caught.value.kind == "server_error" and not caught.value.permanent
    assert "The model crashed. (server_error, HTTP 200 with status failed)" in str(caught.value)
    with pytest.raises(ProbeError, match="remove background"):
        parse_response(body_exchange(response(status="queued", output=[])))
    timed_out = response(status="failed", output=[], error={"code": "vector_store_timeout", "message": "Timed out."})
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(timed_out))
    assert caught.value.kind == "server_error" and not caught.value.permanent  # passing: tried again next check
    tokens = {"error": {"message": "Unsupported parameter: 'max_tokens'.", "type": "invalid_request_error"}}
    with pytest.raises(ProbeError) as caught:
        parse_response(body_exchange(tokens, 400))
    assert "params = { max_output_tokens = N }" in str(caught.value)  # the Responses API's name, not Chat's


def model_config(**params: Any) -> ModelConfig:
    provider = ProviderConfig(
        "responses", "openai-responses", "https://api.openai.com/v1", Secret("sk-x"), {"OpenAI-Organization": "org-1"}
    )
    canary = Canary("c", (Message("system", "Be brief."), Message("user", "17*23?")), max_tokens=3, seed=7)
    return ModelConfig(MODEL, provider, "gpt-5.5", (canary,), interval=timedelta(minutes=15), params=params)


def test_the_request_is_the_responses_api() -> None:
    """input and max_output_tokens (at least 16), no seed (the type declares it unsupported), logprobs asked the
    Responses way, the key as a Bearer header, the model's params last."""
    model = model_config()
    adapter = ResponsesAdapter(model.provider)
    canary = model.canaries[0]
    request = adapter.build_request(model, canary)
    assert request.url == "https://api.openai.com/v1/responses"
    assert request.headers["authorization"] == "Bearer sk-x" and request.headers["OpenAI-Organization"] == "org-1"
    assert request.payload == {
        "model": "gpt-5.5",
        "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "17*23?"}],
        "store": False,
        "temperature": 0.0,
        "max_output_tokens": 16,
        "top_logprobs": 5,
        "include": ["message.output_text.logprobs"],
    }  # the canary's seed 7 is not sent: the API has no such field
    assert TYPES["openai-responses"].unsupported == frozenset({"seed"})
    tuned = adapter.build_request(model_config(reasoning={"effort": "low"}, max_output_tokens=64), canary)
    assert tuned.payload["reasoning"] == {"effort": "low"} and tuned.payload["max_output_tokens"] == 64
    included = adapter.build_request(model_config(include=["reasoning.encrypted_content"]), canary)
    assert included.payload["include"] == ["reasoning.encrypted_content", "message.output_text.logprobs"]


# --------------------------------------------------------------------------- the simulator, through the SDK


@pytest.fixture
def sim() -> Iterator[Simulator]:
    scenario = {"models": {"gpt-5.5": {"resolved": SNAPSHOT, "outputs": {"*": {"Paris": 0.8, "Lyon": 0.2}}}}}
    with Simulator(scenario, api_key=KEY, seed=5) as simulator:
        yield simulator


def sdk(sim: Simulator, api_key: str = KEY, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key=api_key, max_retries=retries, timeout=10)


def ask(client: openai.OpenAI, **extra: Any) -> Any:
    arguments: dict[str, Any] = {"model": "gpt-5.5", "input": "Capital of France?", "max_output_tokens": 16, **extra}
    return client.responses.create(**arguments)


def test_the_sdk_parses_a_full_response(sim: Simulator) -> None:
    """client.responses.create reads the resolved snapshot, output_text, logprobs, the echoed settings and usage."""
    reply = ask(
        sdk(sim), temperature=0, top_logprobs=3, include=["message.output_text.logprobs"], instructions="Be brief."
    )
    assert reply.object == "response" and reply.status == "completed" and reply.id.startswith("resp_")
    assert reply.model == SNAPSHOT and reply.output_text in ("Paris", "Lyon")
    (message,) = reply.output
    (text,) = message.content  # type: ignore[union-attr]
    assert text.type == "output_text" and text.logprobs and text.logprobs[0].token == reply.output_text
    assert len(text.logprobs[0].top_logprobs) == 2  # the simulator knows two first tokens for this prompt
    assert (reply.temperature, reply.top_p, reply.service_tier, reply.reasoning.effort) == (0, 1.0, "default", None)
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 1)
    entry = sim.requests()[-1]
    assert reply._request_id == entry["request_id"] and (entry["path"], entry["auth"]) == ("/v1/responses", "ok")

    sim.update_model("gpt-5.5", {"echoes": {"top_p": 0.98, "service_tier": "priority", "reasoning_effort": "high"}})
    chosen = ask(sdk(sim))
    assert (chosen.temperature, chosen.top_p, chosen.service_tier, chosen.reasoning.effort) == (
        1.0,
        0.98,
        "priority",
        "high",
    )
    assert ask(sdk(sim), top_p=0.5, service_tier="auto").top_p == 0.5  # what is sent is echoed as sent
    sim.update_model("gpt-5.5", {"outputs": {"Count": " ".join(str(n) for n in range(1, 31))}})
    cut = ask(sdk(sim), input="Count to 30")
    assert (cut.status, cut.incomplete_details.reason, cut.output_text) == (  # type: ignore[union-attr]
        "incomplete",
        "max_output_tokens",
        " ".join(str(n) for n in range(1, 17)),
    )


def test_the_sdk_raises_its_typed_errors(sim: Simulator) -> None:
    """Wrong key (repeated by the server), 429, 500, an unknown field, too few tokens, an unknown model."""
    wrong = "sk-wrong-responses-key-4444"
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
        ask(sdk(sim, api_key=wrong))
    sim.push_faults("gpt-5.5", [{"kind": "429", "retry_after": 3}, "500"])
    with pytest.raises(openai.RateLimitError) as limited:
        ask(sdk(sim))
    assert limited.value.response.headers["retry-after"] == "3" and limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        ask(sdk(sim))
    with pytest.raises(openai.BadRequestError, match=r"Unknown parameter: 'seed'\.") as unknown:
        ask(sdk(sim), extra_body={"seed": 1})
    assert unknown.value.param == "seed" and unknown.value.code == "unknown_parameter"
    with pytest.raises(openai.BadRequestError, match="Expected a value >= 16, but got 4 instead"):
        ask(sdk(sim), max_output_tokens=4)
    sim.update_model("gpt-5.5", {"rejects": ["temperature", "top_logprobs"]})
    with pytest.raises(openai.BadRequestError, match="Unsupported parameter: 'temperature'"):
        ask(sdk(sim), temperature=0)
    with pytest.raises(openai.BadRequestError, match="Unsupported parameter: 'top_logprobs'"):
        ask(sdk(sim), top_logprobs=2, include=["message.output_text.logprobs"])
    sim.set_scenario({"models": {"gpt-5.5": {}}})
    with pytest.raises(openai.NotFoundError, match="The model `gpt-nope` does not exist"):
        ask(sdk(sim), model="gpt-nope")


def test_the_sdk_retries_on_the_servers_word(sim: Simulator) -> None:
    sim.push_faults("gpt-5.5", [{"kind": "429", "retry_after": 0.3}, {"kind": "529", "retry_after": 0.2}])
    assert ask(sdk(sim, retries=2)).model == SNAPSHOT
    log = sim.requests()
    assert [e["status"] for e in log] == [429, 529, 200] and log[1]["monotonic"] - log[0]["monotonic"] >= 0.3


def test_faults_and_echoes_in_the_responses_shapes(sim: Simulator) -> None:
    body = {"model": "gpt-5.5", "input": "hi", "max_output_tokens": 16}
    sim.push_faults("gpt-5.5", ["malformed", {"kind": "malformed", "replace": {"output": "x"}}])
    cut = sim.respond(body, path="/v1/responses")
    assert cut[0] == 200 and cut[1]["raw"].startswith('{"id":"resp_') and cut[1]["raw"].endswith('"text":"Hel')
    assert sim.respond(body, path="/v1/responses")[1]["output"] == "x"
    sim.update_model("gpt-5.5", {"echo_key": True})
    raw = httpx.post(f"{sim.url}/v1/responses", json=body, headers={"authorization": f"Bearer {KEY}"})
    echoed = raw.json()
    assert echoed["output"][0]["content"][0]["text"].endswith(KEY) and echoed["id"] == f"resp_{KEY}"
    assert echoed["service_tier"].endswith(KEY) and raw.headers["x-request-id"] == f"req_{KEY}"
    with pytest.raises(ValueError, match=r'echoes\["top_p"\]: expected a number, got a string'):
        sim.update_model("gpt-5.5", {"echoes": {"top_p": "high"}})
    with pytest.raises(ValueError, match=r"echoes: unknown key"):
        sim.update_model("gpt-5.5", {"echoes": {"seed": 1}})


# --------------------------------------------------------------------------- fpwatch check, end to end


def write_config(tmp_path: Path, sim: Simulator, *, models: str = "") -> None:
    (tmp_path / "fpwatch.toml").write_text(
        ONE_PROVIDER_HEAD
        + f"""
[providers.responses]
type = "openai-responses"
base_url = "{sim.url}/v1"
api_key = "${{OPENAI_API_KEY}}"

[[models]]
provider = "responses"
model = "gpt-5.5"
{models}
"""
    )


def run(tmp_path: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return run_in(tmp_path, *args, OPENAI_API_KEY=key)


summary = only_model


@pytest.fixture
def gpt() -> Iterator[Simulator]:
    """A realistic Responses-only model: temperature-0 noise on the built-in canaries, a dated snapshot, top_p 0.98."""
    with Simulator(api_key=KEY, seed=21) as simulator:
        simulator.update_model("gpt-5.5", {**realistic("a"), "resolved": SNAPSHOT, "echoes": {"top_p": 0.98}})
        yield simulator


PROBE = 'canaries = ["probe"]\n\n[canaries.probe]\nprompt = "Capital of France? One word."\nmax_tokens = 3\nsamples = 2'
ECHOED = "temperature=0;top_p=0.98;service_tier=default"


def test_baseline_then_a_new_snapshot_is_model_changed(tmp_path: Path, gpt: Simulator) -> None:
    """Check 1 learns the snapshot and the echoed settings (exit 0); the name moved to a new snapshot: model.changed."""
    write_config(tmp_path, gpt, models=PROBE)
    first = run(tmp_path, "check", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    model = summary(first)
    assert model["resolved_models"] == [SNAPSHOT] and model["fingerprints"] == [ECHOED]
    assert [e["type"] for e in model["events"]] == ["fingerprint.first_seen", "model.first_seen"]
    sent = gpt.requests()
    assert {e["path"] for e in sent} == {"/v1/responses"} and {e["auth"] for e in sent} == {"ok"}
    assert all(e["seed"] is None and e["temperature"] == 0 for e in sent)
    assert sent[0]["body_keys"] == [
        "include",
        "input",
        "max_output_tokens",
        "model",
        "store",
        "temperature",
        "top_logprobs",
    ]
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT seed, system_fingerprint, response_model, first_token FROM observations").fetchall()
    assert {row[:3] for row in rows} == {(None, ECHOED, SNAPSHOT)} and all(row[3] for row in rows)

    gpt.update_model("gpt-5.5", {"resolved": NEXT_SNAPSHOT})
    changed = run(tmp_path, "check", "--json")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    (event,) = [e for e in summary(changed)["events"] if e["type"] == "model.changed"]
    assert (event["details"]["old"], event["details"]["new"]) == ([SNAPSHOT], NEXT_SNAPSHOT)


def test_a_change_of_the_echoed_settings_is_a_backend_change(tmp_path: Path, gpt: Simulator) -> None:
    """The server now chooses top_p 0.97: fingerprint.changed (a warning, exit 1) names the new settings."""
    write_config(tmp_path, gpt, models=PROBE)
    assert run(tmp_path, "check", "--json").returncode == 0
    gpt.update_model("gpt-5.5", {"echoes": {"top_p": 0.97}})
    changed = run(tmp_path, "check", "--json")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    model = summary(changed)
    (event,) = [e for e in model["events"] if e["type"] == "fingerprint.changed"]
    assert event["severity"] == "warning" and "top_p=0.97" in event["summary"]
    assert event["details"]["new"] == "temperature=0;top_p=0.97;service_tier=default"
    assert set(model["fingerprints"]) == {ECHOED, "temperature=0;top_p=0.97;service_tier=default"}  # grace overlap


def test_a_silent_swap_is_a_critical_silent_drift(tmp_path: Path, gpt: Simulator) -> None:
    """Same snapshot, same echoed settings, other answers: a silent canary.drift, exit 2."""
    write_config(tmp_path, gpt)
    for _ in range(8):
        steady = run(tmp_path, "check", "--json")
        assert steady.returncode == 0, steady.stdout + steady.stderr
    assert summary(steady)["state"] == "ok"
    gpt.update_model("gpt-5.5", {"outputs": realistic("b")["outputs"]})
    swapped = run(tmp_path, "check", "--json")
    assert swapped.returncode == 2, swapped.stdout + swapped.stderr
    (drift,) = summary(swapped)["events"]
    assert drift["type"] == "canary.drift" and drift["severity"] == "critical" and drift["details"]["silent"] is True


def test_a_429_is_retried_after_the_servers_own_wait(tmp_path: Path, gpt: Simulator) -> None:
    write_config(tmp_path, gpt, models=PROBE.replace("samples = 2", "samples = 1"))
    gpt.push_faults("gpt-5.5", [{"kind": "429", "retry_after": 1.5}])
    result = run(tmp_path, "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    log = gpt.requests()
    assert [e["status"] for e in log] == [429, 200] and log[1]["monotonic"] - log[0]["monotonic"] >= 1.5


def test_a_reasoning_models_refusals_are_adapted_once(tmp_path: Path, gpt: Simulator) -> None:
    """GPT-5 refuses temperature and top_logprobs: the canary goes on without them, said once, and the check is OK;
    the echoed temperature (1, the server's) is then part of the fingerprint."""
    gpt.update_model("gpt-5.5", {"rejects": ["temperature", "top_logprobs"]})
    write_config(tmp_path, gpt, models=PROBE)
    first = run(tmp_path, "check", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    model = summary(first)
    assert set(model["adapted"]) == {"temperature", "logprobs"} and model["fingerprints"] == [
        "temperature=1;top_p=0.98;service_tier=default"
    ]
    again = run(tmp_path, "check", "--json")
    assert again.returncode == 0 and summary(again)["adapted"] == {}
    assert {tuple(e["body_keys"]) for e in gpt.requests()[-4:]} == {("input", "max_output_tokens", "model", "store")}


def test_the_key_is_in_no_url_log_line_or_stored_byte(tmp_path: Path, gpt: Simulator) -> None:
    gpt.update_model("gpt-5.5", {"echo_key": True})
    write_config(tmp_path, gpt, models=PROBE)
    wrong = "sk-proj-wrong-key-that-leaks-8888"
    outputs = [run(tmp_path, "--debug", "check", "--json"), run(tmp_path, "--debug", "check", "--json", key=wrong)]
    outputs += [run(tmp_path, "events", "--json"), run(tmp_path, "export"), run(tmp_path, "config", "show", "--json")]
    assert outputs[0].returncode in (0, 1) and outputs[1].returncode == 3
    written = "".join(r.stdout + r.stderr for r in outputs)
    assert "[REDACTED]" in written
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "fpwatch.toml":
            written += path.read_bytes().decode("utf-8", errors="replace")
    for secret in (KEY, wrong):
        assert secret not in written
    assert not any(KEY in e["path"] or wrong in e["path"] for e in gpt.requests())
