"""Drift detection end to end: the real `fpwatch check` and daemon (subprocesses) against the simulator's noise model.

The simulated models answer the built-in canaries the way a served model does at temperature 0:
rotating fingerprints, near-tied first tokens that flip, long answers that rarely repeat, logprob
jitter (simulator.realistic). A silent swap (same fingerprints, same resolved model, different
answers) must raise a critical `canary.drift`; a long stretch of that noise must raise nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import API_KEY, HttpSink, fpwatch_env, free_port, wait_for

from fpwatch.sim import Simulator, realistic

SILENT, LOUD = "sim/silent", "sim/loud"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY, seed=11) as simulator:
        for name in ("silent", "loud"):
            simulator.update_model(name, realistic("a"))
        yield simulator


def write_config(
    path: Path, sim: Simulator, *, models: list[str], extra: str = "", defaults: str = "", kind: str = "openai"
) -> None:
    entries = "\n".join(f'[[models]]\nprovider = "sim"\nmodel = "{m}"\n' for m in models)
    path.write_text(
        f"""
[fpwatch]
state = "state.db"
log_format = "json"
{extra}

[defaults]
grace_period = "1h"
{defaults}

[providers.sim]
type = "{kind}"
base_url = "{sim.base_url}"
api_key = "${{SIM_KEY}}"

{entries}
"""
    )


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(tmp_path / "fpwatch.toml"), *args],
        capture_output=True,
        text=True,
        env=fpwatch_env(SIM_KEY=API_KEY),
        cwd=tmp_path,
        timeout=120,
    )


def by_model(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in json.loads(result.stdout)["models"]}


def test_check_raises_a_critical_silent_drift_after_a_silent_swap_and_ack_signs_it_off(
    tmp_path: Path, sim: Simulator
) -> None:
    """The real `check`: a silent swap is a critical drift (exit 2 until acked), a visible upgrade a warning one."""
    write_config(tmp_path / "fpwatch.toml", sim, models=["silent", "loud"])
    for _ in range(10):
        steady = run(tmp_path, "check", "--json")
        assert steady.returncode == 0, steady.stdout + steady.stderr
        for model in by_model(steady).values():
            assert [e["type"] for e in model["events"] if e["severity"] != "info"] == []
    models = by_model(steady)
    assert {m["state"] for m in models.values()} == {"ok"}, [m["drift"] for m in models.values()]
    assert models[SILENT]["drift"]["reference_samples"] >= 16
    before = {name: m["behaviour_fingerprint"] for name, m in models.items()}

    # "silent": another model behind the same fingerprints and resolved name; "loud": a visible upgrade.
    sim.update_model("silent", {"outputs": realistic("b")["outputs"]})
    sim.update_model("loud", realistic("b"))
    swapped = run(tmp_path, "check", "--json")
    assert swapped.returncode == 2, swapped.stdout + swapped.stderr  # the silent one is CRITICAL
    models = by_model(swapped)

    silent = models[SILENT]
    (drift,) = [e for e in silent["events"] if e["type"] == "canary.drift"]
    assert drift["severity"] == "critical" and drift["details"]["silent"] is True
    assert [e["type"] for e in silent["events"]] == ["canary.drift"]  # nothing else changed
    details = drift["details"]
    assert details["statistic"] in ("pooled_g", "logprob") or details["statistic"].startswith("g:")
    assert details["value"] > details["threshold"] and details["effect_size"] > 0.3
    color = details["canaries"]["default/color"]
    assert color["before"] and color["after"] and color["before_examples"] and color["after_examples"]
    assert "Purple" in color["after"]  # realistic("b") names other colors
    assert silent["burst_requests"] > 0 and silent["state"] == "drift"
    assert silent["behaviour_fingerprint"] != before[SILENT]
    assert details["behaviour_fingerprint"] == {"old": before[SILENT], "new": silent["behaviour_fingerprint"]}

    loud = models[LOUD]
    types = [e["type"] for e in loud["events"]]
    assert "fingerprint.changed" in types and "model.changed" in types
    (loud_drift,) = [e for e in loud["events"] if e["type"] == "canary.drift"]
    assert loud_drift["severity"] == "warning" and loud_drift["details"]["silent"] is False

    # The human report says the same, with the evidence.
    status = run(tmp_path, "status")
    assert "drift" in status.stdout and "canary behaviour changed" in status.stdout
    events = json.loads(run(tmp_path, "events", "--json", "--model", SILENT, "--type", "canary.drift").stdout)
    assert [e["id"] for e in events] == [drift["id"]]

    # The new behaviour is the reference now: the next check raises nothing new, but the state stays
    # "drift", and CRITICAL for a monitor, until a person signs it off.
    after = run(tmp_path, "check", "--json", SILENT)
    assert after.returncode == 2, after.stdout
    assert by_model(after)[SILENT]["state"] == "drift" and by_model(after)[SILENT]["events"] == []
    acked = run(tmp_path, "ack", str(drift["id"]), "--comment", "vendor confirmed the swap")
    assert acked.returncode == 0, acked.stderr
    state = by_model(run(tmp_path, "status", "--json"))[SILENT]
    assert state["drift"]["open_since"] is None and state["state"] in ("learning", "ok")  # relearning 2 checks
    for _ in range(2):
        quiet = run(tmp_path, "check", "--json", SILENT)
        assert quiet.returncode == 0, quiet.stdout
    assert by_model(quiet)[SILENT]["state"] == "ok"


def test_a_model_that_rejects_temperature_and_logprobs_is_adapted_once_not_failed(
    tmp_path: Path, sim: Simulator
) -> None:
    """A reasoning model that rejects temperature and logprobs is adapted once and checked without them, not failed."""
    sim.update_model("silent", {"rejects": ["temperature", "logprobs"]})
    write_config(tmp_path / "fpwatch.toml", sim, models=["silent"])
    first = run(tmp_path, "check")
    assert first.returncode == 0, first.stdout + first.stderr  # adapted, not failed
    report = first.stdout
    assert "Adapted canaries" in report and f"{SILENT}: temperature" in report and f"{SILENT}: logprobs" in report
    assert "Errors:" not in report

    sim.clear_requests()
    second = run(tmp_path, "check", "--json")
    assert second.returncode == 0
    model = by_model(second)[SILENT]
    assert model["adapted"] == {} and model["error"] is None and model["failed_requests"] == 0  # said once
    assert model["unsupported"] == ["logprobs", "temperature"]
    sent = [r for r in sim.requests() if r["path"].endswith("/chat/completions")]
    assert sent and all(r["status"] == 200 for r in sent)
    assert all("temperature" not in r["body_keys"] and "logprobs" not in r["body_keys"] for r in sent)
    # temperature is not 0 any more, so each canary takes twice the samples: 2 x (10 + 4 + 10 + 10)
    assert len(sent) == 68
    assert "rejects logprobs, temperature" in run(tmp_path, "status").stdout
    assert "Adapted canaries" not in run(tmp_path, "check").stdout

    # The same name now watches another model id, which takes temperature and logprobs: it starts clean.
    config = tmp_path / "fpwatch.toml"
    config.write_text(config.read_text().replace('model = "silent"', 'model = "loud"\nname = "sim/silent"'))
    sim.clear_requests()
    other = run(tmp_path, "check", "--json")
    assert other.returncode == 0, other.stdout + other.stderr
    assert by_model(other)[SILENT]["unsupported"] == []
    sent = [r for r in sim.requests() if r["path"].endswith("/chat/completions")]
    assert len(sent) == 34 and all("temperature" in r["body_keys"] and "logprobs" in r["body_keys"] for r in sent)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("behaviour", [{"ignores": ["logprobs"]}, {"rejects": ["logprobs", "top_logprobs"]}])
def test_an_openai_compatible_server_is_asked_for_logprobs_and_adapted_when_it_ignores_or_rejects_them(
    tmp_path: Path, sim: Simulator, behaviour: dict[str, Any]
) -> None:
    """logprobs = "auto" asks every server; one that answers without them, or refuses them, is not asked again."""
    write_config(tmp_path / "fpwatch.toml", sim, models=["silent", "loud"], kind="openai-compatible")
    sim.update_model("silent", behaviour)
    first = run(tmp_path, "check", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    models = by_model(first)
    assert list(models[SILENT]["adapted"]) == ["logprobs"] and models[LOUD]["adapted"] == {}
    if "ignores" in behaviour:
        assert models[SILENT]["adapted"]["logprobs"] == "the server accepted logprobs but answered without them"
    sim.clear_requests()
    second = run(tmp_path, "check", "--json")
    assert second.returncode == 0 and by_model(second)[SILENT]["unsupported"] == ["logprobs"]
    sent = [r for r in sim.requests() if r["path"].endswith("/chat/completions")]
    assert {r["model"] for r in sent if "logprobs" in r["body_keys"]} == {"loud"}  # the other server still is


def test_daemon_stays_quiet_through_a_long_noisy_steady_state_then_alerts_on_a_silent_swap(
    tmp_path: Path, sim: Simulator
) -> None:
    """The daemon runs 60 noisy checks without an alarm, then alerts a json:// sink with a silent swap's evidence."""
    sink = HttpSink()
    port = free_port()
    # A user canary with a long answer too: it repeats exactly only ~7% of the time and diverges late.
    write_config(
        tmp_path / "fpwatch.toml",
        sim,
        models=["silent"],
        extra=f'listen = "127.0.0.1:{port}"\n\n[alerts]\ngroup_wait = "0s"\n\n'
        f'[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\nmin_severity = "warning"\n\n'
        '[canaries.haiku]\nprompt = "Write a haiku about sunrise."\nmax_tokens = 80\nsamples = 3\n',
        defaults='interval = "1s"\njitter = "0"\ncanaries = ["default", "haiku"]',
    )
    env = fpwatch_env(SIM_KEY=API_KEY)
    with (tmp_path / "daemon.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fpwatch", "--config", str(tmp_path / "fpwatch.toml"), "run"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def status() -> dict[str, Any]:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=5).json()
            except httpx.HTTPError:
                return {}
            return dict(body["models"][0])

        wait_for(lambda: status().get("checks", 0) >= 60, timeout=200, what="60 checks")
        quiet = status()
        assert quiet["state"] == "ok" and quiet["drift"]["confirmed"] == 0, quiet["drift"]
        noise = quiet["drift"]["noise"]  # measured on this model: what its thresholds come from
        assert (
            noise["answers"]["typical"] >= 0 and 0 < noise["logprobs"]["typical"] < quiet["drift"]["logprob_threshold"]
        )
        shown = run(tmp_path, "status").stdout
        # (the daemon keeps checking: the figures may have moved since; their form is what is shown)
        assert "NOISE (ANSWERS / LOGPROBS)" in shown and re.search(r"\d\.\d\d / [0-9.e-]+ nats", shown), shown
        events = json.loads(run(tmp_path, "events", "--json").stdout)
        assert [e for e in events if e["severity"] != "info"] == []
        assert sink.posts == []

        sim.update_model("silent", {"outputs": realistic("b")["outputs"]})
        changed = wait_for(
            lambda: [e for e in json.loads(run(tmp_path, "events", "--json").stdout) if e["type"] == "canary.drift"],
            timeout=60,
            what="canary.drift",
        )
        assert len(changed) == 1 and changed[0]["details"]["silent"] is True
        assert changed[0]["severity"] == "critical"
        posts = wait_for(lambda: sink.to("/hook"), timeout=30, what="the alert")
        body = posts[0]["message"]
        assert "canary.drift" in body and "silent: yes" in body and "before" in body and "after" in body
        assert "behaviour fingerprint bfp_" in body
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert f'fpwatch_drift_open{{model="{SILENT}"}} 1.0' in metrics
        assert f'fpwatch_drift_bursts_total{{model="{SILENT}"}}' in metrics
        assert f'fpwatch_drift_screen_surprise{{kind="threshold",model="{SILENT}"}}' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=40)
        sink.server.shutdown()
    assert proc.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
