"""Answers fpwatch must not trust, end to end: the real `fpwatch` CLI (subprocesses) against the simulator on loopback.

A provider, or a proxy in front of it, that echoes the API key in its 200 answers must not get the key
into the database, exports, events, status, logs or notifications; a 200 whose message or content has
the wrong type is a failed request with its reason, not an empty answer; a fingerprint of the wrong
type is recorded as "invalid", not as "empty".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, HttpSink

from fpwatch.sim import Simulator

# Matches none of the key patterns: only the verbatim net (every loaded secret) can catch it.
KEY = "zq7Rk2mWx9Lp4Tn8Vb3Hc6Jd1Fg5Ys0E"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The simulator behind the `cli` fixture: it wants KEY (and below, repeats it)."""
    with Simulator(api_key=KEY, seed=7) as simulator:
        yield simulator


def observations(cli: Cli) -> list[dict[str, Any]]:
    exported = cli("export")
    assert exported.code == 0, exported.stderr
    return [r for r in map(json.loads, exported.stdout.splitlines()) if r["kind"] == "observation"]


def test_a_key_echoed_in_200_answers_reaches_no_database_export_event_status_log_or_notification(
    cli: Cli, sim: Simulator, sink: HttpSink, tmp_path: Path
) -> None:
    """The key, echoed in every field of every 200 answer through a learnt reference and a drift, is stored nowhere."""
    sim.update_model("gpt-4o", {"echo_key": True, "outputs": {"*": "Two"}})
    echoed = httpx.post(
        f"{sim.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "1+1="}], "logprobs": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert echoed.status_code == 200 and KEY in echoed.text  # the simulator does leak it, in a success
    cli.env["SIM_KEY"] = KEY
    notify = f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\nmin_severity = "info"\n'
    cli.write(samples=8, extra=notify)
    runs = [cli("--debug", "check", "--json") for _ in range(5)]  # enough answers for a drift reference
    assert all(r.code == 0 for r in runs), runs[-1].stdout + runs[-1].stderr
    learnt = cli("status", "--json")
    assert learnt.json()["models"][0]["drift"]["reference_samples"] >= 16, learnt.stdout

    sim.update_model("gpt-4o", {"outputs": {"*": "Three"}})  # a silent swap: the drift event carries examples
    swapped = cli("--debug", "check", "--json")
    assert swapped.code == 2, swapped.stdout + swapped.stderr
    (drift,) = [e for e in swapped.json()["models"][0]["events"] if e["type"] == "canary.drift"]
    examples = json.dumps(drift["details"]["canaries"])
    assert "Two [REDACTED]" in examples and "Three [REDACTED]" in examples

    shown = [*runs, learnt, swapped, cli("events", "--json"), cli("status", "--json"), cli("export"), cli("status")]
    assert all(r.code in (0, 2) for r in shown), [r.stderr for r in shown]
    exported = observations(cli)
    assert exported and all(o["ok"] for o in exported)
    assert {o["output"] for o in exported} == {"Two [REDACTED]", "Three [REDACTED]"}
    assert all("[REDACTED]" in o["request_id"] and "[REDACTED]" in o["system_fingerprint"] for o in exported)
    assert sink.to("/hook"), "the notifier got nothing: the test would prove nothing about notifications"
    written = "".join(r.stdout + r.stderr for r in shown) + json.dumps(sink.posts)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "fpwatch.toml"]
    assert {"state.db", "state.db-wal"} & {p.name for p in files}
    for path in files:  # the database, its WAL, anything else fpwatch left there
        written += path.read_bytes().decode("utf-8", errors="replace")
    assert KEY not in written
    assert written.count("[REDACTED]") > 100  # every answer was masked, not dropped


MALFORMED = {
    "message null": ({"choices.0.message": None}, "choices[0].message is null, not an object"),
    "content a number": ({"choices.0.message.content": 42}, "choices[0].message.content is a number, not a string"),
    "content an object": ({"choices.0.message.content": {"a": 1}}, "message.content is an object, not a string"),
    "content a list": ({"choices.0.message.content": [1, 2]}, "message.content[0] is a number, not a content part"),
    "no message": ({"choices.0.message": "<absent>"}, "choices[0] has no message"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_200_is_a_failed_request_with_its_reason(cli: Cli, sim: Simulator, case: str) -> None:
    """`fpwatch check` against a server whose 200s are malformed: exit 3, every request failed, the reason named."""
    replace, reason = MALFORMED[case]
    sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": [{"kind": "malformed", "replace": replace}]})
    cli.env["SIM_KEY"] = KEY
    cli.write(samples=2)
    result = cli("check", "--json")
    assert result.code == 3, result.stdout + result.stderr
    model = result.json()["models"][0]
    assert model["failed_requests"] == 2 and reason in model["error"]
    recorded = observations(cli)
    assert [(o["ok"], o["error_kind"], o["http_status"], o["output"]) for o in recorded] == [
        (False, "malformed", 200, None)
    ] * 2
    assert all(reason in o["error"] for o in recorded)


def test_a_fingerprint_of_the_wrong_type_is_recorded_invalid_and_reported_missing(cli: Cli, sim: Simulator) -> None:
    """An object as system_fingerprint is its own state, "invalid" (not "empty"); the answers still count."""
    cli.env["SIM_KEY"] = KEY
    cli.write(samples=3)
    assert cli("check").code == 0  # a real fingerprint first
    broken = [{"kind": "malformed", "replace": {"system_fingerprint": {"build": 2}}}]
    sim.update_model("gpt-4o", {"error_rate": 1.0, "error_kinds": broken})
    result = cli("check", "--json")
    assert result.code in (0, 1), result.stdout + result.stderr
    model = result.json()["models"][0]
    assert model["failed_requests"] == 0 and model["error"] is None
    (missing,) = [e for e in model["events"] if e["type"] == "fingerprint.missing"]
    assert "3 invalid" in missing["summary"]
    latest = observations(cli)[-3:]
    assert [(o["ok"], o["fingerprint_state"], o["system_fingerprint"]) for o in latest] == [(True, "invalid", None)] * 3
