"""Border-input discovery (B3IT): the rules, `fpwatch discover` on the simulator (the border inputs it was
given are found within the budget; none on a deterministic server, which is said early; a server that
ignores temperature is unstable; a dead provider fails in one line), the re-probe after a change, the
discovered canaries in later checks, and the daemon discovering by itself while a model learns."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import API_KEY, fpwatch_env, free_port, wait_for

from fpwatch.config import BUILTIN_SET, parse_config
from fpwatch.config.candidates import border_candidates
from fpwatch.detect import borders as rules
from fpwatch.detect.borders import Answers
from fpwatch.detect.drift import outcome
from fpwatch.discovery import border_canary, discover
from fpwatch.providers import ADAPTERS, TYPES
from fpwatch.providers.http import Exchange
from fpwatch.sim import BORDER_PROMPTS, Simulator, realistic

T0 = datetime(2026, 12, 1, tzinfo=UTC)
DETERMINISTIC = {"outputs": {"*": "Fine."}, "logprob_jitter": 0.0}
IGNORES_TEMPERATURE = {"outputs": {"*": {"Alpha": 0.5, "Beta": 0.3, "Gamma": 0.2}}}


def given(variant: str) -> dict[str, dict[str, float]]:
    """The border inputs a realistic simulated model was given: prompt -> its two answers."""
    return {k[1:]: v for k, v in realistic(variant)["outputs"].items() if k[1:] in BORDER_PROMPTS}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY, seed=5) as simulator:
        simulator.update_model("bordered", realistic("a"))
        simulator.update_model("steady", DETERMINISTIC)
        simulator.update_model("sampling", IGNORES_TEMPERATURE)
        yield simulator


def write_config(path: Path, base_url: str, extra: str = "", models: tuple[str, ...] = ("bordered",)) -> None:
    entries = "\n".join(f'[[models]]\nprovider = "sim"\nmodel = "{m}"\n' for m in models)
    path.write_text(
        f'[fpwatch]\nstate = "state.db"\nlog_format = "json"\n{extra}\n\n'
        f'[providers.sim]\ntype = "openai-compatible"\nbase_url = "{base_url}"\napi_key = "${{SIM_KEY}}"\n\n{entries}'
    )


def run(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(tmp_path / "fpwatch.toml"), *args],
        capture_output=True,
        text=True,
        env=fpwatch_env(SIM_KEY=API_KEY),
        cwd=tmp_path,
        timeout=timeout,
    )


# --- the rules ---------------------------------------------------------------------------------------------


def test_the_rules_of_a_border_input() -> None:
    """Two distinct non-empty answers make a candidate; balance is p2/p1; the best balanced are kept, ties by order."""
    assert rules.is_candidate(Answers(("Yes", "No", "Yes")))
    assert not rules.is_candidate(Answers(("Yes", "Yes", " Yes ")))  # whitespace is not an answer of its own
    assert not rules.is_candidate(Answers(("Yes", "", None)))  # empty and failed answers do not count
    assert rules.balance(Answers(("A",) * 6 + ("B",) * 3)) == 0.5
    assert rules.balance(Answers(("A",) * 4)) == 0.0
    measured = {
        "one": Answers(("A",) * 9 + ("B",)),
        "tie": Answers(("A", "B") * 5),
        "flat": Answers(("A",) * 10),
        "also tie": Answers(("B", "A") * 5),
        "two": Answers(("A",) * 6 + ("B",) * 4),
    }
    chosen = rules.choose(measured, target=3)
    assert [b.prompt for b in chosen] == ["tie", "also tie", "two"]
    assert chosen[2].balance == pytest.approx(0.667, abs=1e-3) and chosen[2].answers == {"A": 0.6, "B": 0.4}
    assert rules.canary_name("red") == "discovered/red"
    assert rules.canary_name("a dog") == "discovered/a-dog"
    assert rules.canary_name("?") == "discovered/x3f"
    assert rules.canary_name("Red") != rules.canary_name("red")  # every prompt its own canary


def test_the_gates_end_a_scan_that_has_nothing_to_find() -> None:
    """Most prompts answering two ways: temperature is ignored; every repeat agreeing to 1e-4 nats: deterministic."""
    varied = {f"p{i}": Answers(("A", "B", "A")) for i in range(rules.GATE_PROMPTS)}
    assert rules.gate(varied, candidates=len(varied)) == "unstable"
    exact = {f"p{i}": Answers(("A",) * 3, (-0.5, -0.5 + 1e-6, -0.5)) for i in range(rules.GATE_PROMPTS)}
    assert rules.gate(exact, candidates=0) == "deterministic"
    jittery = {f"p{i}": Answers(("A",) * 3, (-0.5, -0.52, -0.49)) for i in range(rules.GATE_PROMPTS)}
    assert rules.gate(jittery, candidates=0) is None  # a hosted API: keep looking
    assert rules.gate(dict(list(exact.items())[:10]), candidates=0) is None  # too early to say


def test_the_simulators_border_prompts_are_among_the_first_candidates_discovery_tries() -> None:
    """The simulator repeats some of fpwatch's candidate prompts (it imports nothing of fpwatch's config): they are
    candidates, early enough that a default budget reaches them, and no built-in canary's prompt."""
    order = border_candidates()
    assert len(order) == len(set(order)) > 3000
    positions = [order.index(p) for p in BORDER_PROMPTS]
    assert max(positions) < 400
    assert not {c.prompt for c in BUILTIN_SET} & set(BORDER_PROMPTS)


# --- fpwatch discover on the simulator ------------------------------------------------------------------------


def test_discover_finds_the_border_inputs_the_simulator_was_given_within_its_budget(
    tmp_path: Path, sim: Simulator
) -> None:
    """Every border input found is one the model was given, with its answers; the budget holds; the border
    inputs then join the model's checks as discovered/... canaries of one token, shown in status."""
    write_config(tmp_path / "fpwatch.toml", sim.base_url)
    done = run(tmp_path, "discover", "sim/bordered", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "found" and result["budget"] == 2000
    truth = given("a")
    found = {b["prompt"]: b for b in result["found"]}
    assert 3 <= len(found) <= rules.TARGET and set(found) <= set(truth)
    for prompt, border in found.items():
        assert set(border["answers"]) == set(truth[prompt])  # the two tied first tokens it was given
    assert result["requests"] <= 2000 and len(sim.requests()) == result["requests"]
    assert result["tokens"] <= result["requests"]  # one output token each
    assert all(r["max_tokens"] == 1 and r["temperature"] == 0 for r in sim.requests())

    status = json.loads(run(tmp_path, "status", "--json").stdout)["models"][0]["discovery"]
    assert status["canaries"] == [f"discovered/{b['prompt']}" for b in result["found"]]
    human = run(tmp_path, "status").stdout
    assert f"sim/bordered: {len(found)} border inputs" in human and "discovered/" in human

    sim.clear_requests()
    checked = run(tmp_path, "check", "--json")
    assert checked.returncode == 0, checked.stderr
    one_token = [r for r in sim.requests() if r["max_tokens"] == 1]
    assert len(one_token) == rules.SAMPLES * len(found)  # each discovered canary, SAMPLES times a check


def test_discover_keeps_a_small_budget_and_says_what_it_spent(tmp_path: Path, sim: Simulator) -> None:
    write_config(tmp_path / "fpwatch.toml", sim.base_url)
    done = run(tmp_path, "discover", "sim/bordered", "--budget", "300")
    assert done.returncode == 0, done.stderr
    assert len(sim.requests()) <= 300
    assert f"{len(sim.requests()):,} requests" in done.stdout


def test_a_deterministic_server_has_no_border_inputs_and_discovery_says_so_early(
    tmp_path: Path, sim: Simulator
) -> None:
    """A server whose repeated answers agree to the last digit of their logprobs (a self-hosted one) has nothing to
    find: discovery stops after the gate's prompts, not the whole budget, and says logprobs carry the load."""
    write_config(tmp_path / "fpwatch.toml", sim.base_url, models=("steady",))
    done = run(tmp_path, "discover", "sim/steady")
    assert done.returncode == 0, done.stderr
    assert "the server is deterministic" in done.stdout and "logprobs carry the load" in done.stdout
    spent = len(sim.requests())
    assert spent <= rules.SCAN_QUERIES * (rules.GATE_PROMPTS + 8), spent
    status = json.loads(run(tmp_path, "status", "--json").stdout)["models"][0]["discovery"]
    assert status["status"] == "deterministic" and status["found"] == [] and status["requests"] == spent


def test_a_server_that_ignores_temperature_zero_is_called_unstable(tmp_path: Path, sim: Simulator) -> None:
    write_config(tmp_path / "fpwatch.toml", sim.base_url, models=("sampling",))
    result = json.loads(run(tmp_path, "discover", "sim/sampling", "--json").stdout)
    assert result["status"] == "unstable" and result["found"] == []
    assert result["requests"] <= rules.SCAN_QUERIES * (rules.GATE_PROMPTS + 8)


def test_a_dead_provider_fails_discovery_in_one_line_and_keeps_nothing_half_done(tmp_path: Path) -> None:
    write_config(tmp_path / "fpwatch.toml", f"http://127.0.0.1:{free_port()}/v1", extra="", models=("bordered",))
    (tmp_path / "fpwatch.toml").write_text((tmp_path / "fpwatch.toml").read_text() + '\n[defaults]\ntimeout = "2s"\n')
    done = run(tmp_path, "discover", "sim/bordered", "--budget", "200")
    assert done.returncode == 1
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith("sim/bordered: discovery failed after ") and "connect" in line.lower()
    assert API_KEY not in done.stdout + done.stderr
    status = json.loads(run(tmp_path, "status", "--json").stdout)["models"][0]["discovery"]
    assert status["status"] == "failed" and status["found"] == []


def test_discovery_off_and_its_budget_in_the_config(tmp_path: Path, sim: Simulator) -> None:
    """[discovery] budget is every model's default, discovery_budget a model's own; 0 switches it off."""
    raw = {
        "providers": {"sim": {"type": "openai-compatible", "base_url": sim.base_url}},
        "discovery": {"budget": 500},
        "models": [{"provider": "sim", "model": "a"}, {"provider": "sim", "model": "b", "discovery_budget": 0}],
    }
    config = parse_config(raw, TYPES, path=tmp_path / "x.toml", env={})
    assert [m.discovery_budget for m in config.models] == [500, 0]
    with pytest.raises(Exception, match=r"discovery\.budget: must be at least 0"):
        parse_config({**raw, "discovery": {"budget": -1}}, TYPES, path=tmp_path / "x.toml", env={})
    write_config(tmp_path / "fpwatch.toml", sim.base_url, extra="\n[discovery]\nbudget = 0\n")
    off = run(tmp_path, "discover", "sim/bordered")
    assert off.returncode == 1 and "discovery is off for sim/bordered" in off.stderr and "--budget N" in off.stderr
    assert sim.requests() == []


# --- the re-probe after a change, on the simulator's own answering code ----------------------------------------


def _ask(sim: Simulator, name: str) -> Any:
    config = parse_config(
        {"providers": {"sim": {"type": "openai", "api_key": "k"}}, "models": [{"provider": "sim", "model": name}]},
        TYPES,
        path=Path("x.toml"),
        env={},
    )
    model = config.models[0]
    adapter = ADAPTERS["openai"](model.provider)

    async def ask(prompt: str, n: int) -> Answers:
        payload = adapter.build_request(model, border_canary(prompt, samples=1)).payload
        tokens, logprobs = [], []
        for _ in range(n):
            status, body = sim.respond(payload)
            parsed = adapter.parse(Exchange(status, {}, json.dumps(body).encode(), 0.0))
            tokens.append(outcome(parsed.output))
            logprobs.append(parsed.first_token.logprob if parsed.first_token else None)
        return Answers(tuple(tokens), tuple(logprobs), n)

    return ask


def test_after_a_change_the_old_border_inputs_are_reprobed_survivors_kept_and_the_set_topped_up() -> None:
    sim = Simulator({"models": {"m": realistic("a")}}, seed=9, log_requests=False)
    own = {c.prompt for c in BUILTIN_SET}
    first = asyncio.run(discover(_ask(sim, "m"), 2000, now=T0, model_id="m", exclude=own))
    assert first.status == "found" and first.found and first.scanned > 0
    sim.update_model("m", realistic("b"))  # another model: some prompts stay borders (with other answers)
    again = asyncio.run(discover(_ask(sim, "m"), 2000, now=T0, model_id="m", confirmed=1, previous=first, exclude=own))
    truth_b = given("b")
    old = [b.prompt for b in first.found]
    now_found = [b.prompt for b in again.found]
    survived = [p for p in old if p in now_found]
    assert set(now_found) <= set(truth_b)  # the old model's border inputs that are none now are gone
    assert survived and now_found[: len(survived)] == survived  # the survivors come first, re-measured
    assert len(now_found) > len(survived)  # topped up by a scan from the start: the old verdicts were the old model's
    assert again.requests >= rules.REPROBE_QUERIES * len(old) and again.requests <= 2000
    assert again.confirmed == 1
    ask = _ask(sim, "m")
    same = asyncio.run(discover(ask, 400, now=T0, model_id="m", confirmed=1, previous=again, exclude=own, target=9))
    assert same.scanned > again.scanned  # no change since: a run by hand scans on where the last one stopped
    assert rules.Borders.from_json(json.loads(json.dumps(again.to_json()))) == again


# --- the daemon ---------------------------------------------------------------------------------------------


def test_the_daemon_discovers_in_the_background_while_the_model_learns(tmp_path: Path, sim: Simulator) -> None:
    """With the default budget the daemon discovers after the model's first good check, keeps checking meanwhile,
    and later checks send the discovered canaries; /metrics counts what discovery spent."""
    port = free_port()
    write_config(
        tmp_path / "fpwatch.toml",
        sim.base_url,
        extra=f'listen = "127.0.0.1:{port}"\n\n[defaults]\ninterval = "1s"\njitter = "0"\n',
    )
    with (tmp_path / "daemon.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fpwatch", "--config", str(tmp_path / "fpwatch.toml"), "run"],
            cwd=tmp_path,
            env=fpwatch_env(SIM_KEY=API_KEY),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def status() -> dict[str, Any]:
            try:
                return dict(httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=5).json()["models"][0])
            except (httpx.HTTPError, ValueError):
                return {}

        found = wait_for(lambda: status().get("discovery", {}).get("canaries"), timeout=90, what="discovery")
        assert set(found) <= {rules.canary_name(p) for p in given("a")}
        checks_then = status()["checks"]
        sim.clear_requests()
        wait_for(lambda: status()["checks"] >= checks_then + 2, timeout=30, what="two more checks")
        one_token = [r for r in sim.requests() if r["max_tokens"] == 1]
        assert len(one_token) >= rules.SAMPLES * len(found)  # the discovered canaries are checked now
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        spent = status()["discovery"]["requests"]
        assert f'fpwatch_discovery_requests_total{{model="sim/bordered"}} {float(spent)}' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    assert proc.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "daemon.log").read_text().splitlines() if x.startswith("{")]
    assert any(x.get("event") == "border-input discovery finished" for x in lines)
