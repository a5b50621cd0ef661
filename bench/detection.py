"""Detection benchmark: does fpwatch find real changes fast and stay quiet on serving noise? (DESIGN section 6)

Every request goes through the simulator's noise model (`Simulator.respond`, the code that answers
HTTP requests, without the sockets) and fpwatch's own request builder and response parser; every check
is decided by the same three steps `run_check` takes (detect.conclude: prejudge, judge, conclude) with
the same policy (check.policy_for). Only the network and the database are left out, so 90 simulated
days take minutes. Side by side with the two naive rules:

- "output": alert when a canary's answer differs from the one the last check got;
- "fingerprint": alert when the system_fingerprint differs from the last check's.

Usage: python bench/detection.py [--seeds 4] [--trials 100] [--days 90] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fpwatch.check import policy_for, sent_canaries
from fpwatch.config import parse_config
from fpwatch.detect import drift
from fpwatch.detect.borders import SAMPLES, Answers
from fpwatch.detect.conclude import conclude, judge, prejudge
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import ModelState
from fpwatch.discovery import border_canary, discover
from fpwatch.errors import ProbeError
from fpwatch.providers import ADAPTERS, TYPES
from fpwatch.providers.http import Exchange
from fpwatch.sim import Simulator, perturbed_logprobs, realistic, routed, shifted, with_fingerprints

INTERVAL = timedelta(minutes=15)
WARMUP = 40  # checks before the change: learning (4 checks) plus a reference of 144 samples per canary
AFTER = 12  # checks watched after the change (3 hours at 15 minutes)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "sim/model"

CONFIG = """
[providers.sim]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-bench"
[[models]]
provider = "sim"
model = "model"
"""


def _scenarios() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """name -> the model's settings after the change, given the settings before it."""

    def same_signals(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        out = with_fingerprints(after, before["fingerprints"])
        out["resolved"] = before["resolved"]
        return out

    coin = "Heads or tails? Answer with one word only."
    return {
        "full swap, silent": lambda a: same_signals(realistic("b"), a),
        "full swap, new fingerprint": lambda a: realistic("b"),
        "0.3 TV shift, every border canary": lambda a: shifted(a, 0.3),
        "0.3 TV shift, one canary only": lambda a: shifted(a, 0.3, prompts=[coin]),
        "30% of traffic routed elsewhere": lambda a: routed(a, same_signals(realistic("b"), a), 0.3),
        "10% of traffic routed elsewhere": lambda a: routed(a, same_signals(realistic("b"), a), 0.1),
        "logprobs only, +0.5 nats": lambda a: perturbed_logprobs(a, 0.5),
        "logprobs only, +0.1 nats (5x the per-request jitter)": lambda a: perturbed_logprobs(a, 0.1),
        "new fingerprint, same behaviour": lambda a: with_fingerprints(a, {"fp_0new000000": 1.0}),
    }


def _second_changes() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """name -> a second change, made while fpwatch re-learns after a first (a silent full swap), given the
    settings after the first."""
    coin = "Heads or tails? Answer with one word only."
    return {
        "0.3 TV shift, one canary only": lambda b: shifted(b, 0.3, prompts=[coin]),
        "30% of traffic routed elsewhere": lambda b: routed(b, realistic("c"), 0.3),
        "logprobs only, +0.1 nats": lambda b: perturbed_logprobs(b, 0.1),
    }


SECOND_AFTER = 2  # the second change comes this many checks after the first drift was raised


@dataclass
class Tally:
    alarms: list[int]  # check numbers (after the change) where fpwatch raised canary.drift
    silent: list[bool]
    naive_output: list[int]
    naive_fingerprint: list[int]
    checks: int = 0
    requests: int = 0
    output_tokens: int = 0
    bursts: int = 0
    discovery_requests: int = 0  # included in requests and output_tokens
    discovery_tokens: int = 0
    discovered: int = 0


class Monitor:
    """One model watched by fpwatch (built-in canaries) and by the two naive rules."""

    def __init__(self, seed: int, settings: dict[str, Any], *, discovery: bool = True) -> None:
        text = CONFIG if discovery else CONFIG + "discovery_budget = 0\n"
        config = parse_config(tomllib.loads(text), TYPES, path=Path("bench.toml"), env={})
        model = config.model(MODEL)
        assert model is not None
        self.model = model
        self.adapter = ADAPTERS[model.provider.type](model.provider)
        self.policy = policy_for(model)  # exactly the policy run_check judges this model by
        self.sim = Simulator({"models": {"model": settings}}, seed=seed, log_requests=False)
        self.state = ModelState(MODEL)
        self.now = T0
        self.last_outputs: dict[str, str] = {}
        self.last_fingerprint: str | None = None

    def set(self, settings: dict[str, Any]) -> None:
        # update_model, not set_scenario: a new scenario would re-seed the simulator and replay the
        # random numbers of the checks before the change.
        self.sim.update_model("model", settings)

    def _ask(self, burst: bool, tally: Tally) -> list[Observation]:
        out = []
        for canary in sent_canaries(self.model, self.state):  # as run_check sends them (adaptive sampling too)
            payload = self.adapter.build_request(self.model, canary).payload
            count = drift.burst_size(canary.samples) if burst else canary.samples
            for i in range(count):
                status, body = self.sim.respond(payload)
                tally.requests += 1
                exchange = Exchange(status, {}, json.dumps(body).encode(), 0.0)
                try:
                    parsed = self.adapter.parse(exchange)
                except ProbeError as error:
                    out.append(Observation(self.now, MODEL, canary.name, i, 1, False, error=str(error)))
                    continue
                tally.output_tokens += parsed.output_tokens or 0
                out.append(
                    Observation(
                        self.now,
                        MODEL,
                        canary.name,
                        i,
                        1,
                        True,
                        system_fingerprint=parsed.fingerprint,
                        fingerprint_state=parsed.fingerprint_state,
                        response_model=parsed.response_model,
                        output=parsed.output,
                        first_token=parsed.first_token,
                    )
                )
        return out

    def discover(self, tally: Tally) -> None:
        """Border-input discovery as the daemon runs it after a model's first check (fpwatch.discovery.discover)."""

        async def ask(prompt: str, n: int) -> Answers:
            payload = self.adapter.build_request(self.model, border_canary(prompt, samples=1)).payload
            tokens, logprobs, spent = [], [], 0
            for _ in range(n):
                status, body = self.sim.respond(payload)
                parsed = self.adapter.parse(Exchange(status, {}, json.dumps(body).encode(), 0.0))
                tokens.append(drift.outcome(parsed.output))
                logprobs.append(parsed.first_token.logprob if parsed.first_token else None)
                spent += parsed.output_tokens or 0
            return Answers(tuple(tokens), tuple(logprobs), spent)

        borders = asyncio.run(
            discover(
                ask,
                self.model.discovery_budget,
                now=self.now,
                model_id=self.model.model,
                confirmed=self.state.drift.confirmed,
                previous=self.state.borders if self.state.borders and self.state.borders.found else None,
                exclude={c.prompt for c in self.model.canaries},
            )
        )
        self.state = replace(self.state, borders=borders)
        tally.requests += borders.requests
        tally.output_tokens += borders.tokens
        tally.discovery_requests += borders.requests
        tally.discovery_tokens += borders.tokens
        tally.discovered = len(borders.found)

    def check(self, tally: Tally, number: int) -> None:
        # The three decision steps of run_check (detect.conclude), with its policy; only probing is in-process.
        self.policy = policy_for(self.model, self.state)  # its canaries include the discovered ones
        observations = self._ask(False, tally)
        prejudged = prejudge(self.state, observations, self.policy, self.now)
        burst: list[Observation] = []
        if prejudged.wants_burst:
            burst = self._ask(True, tally)
            prejudged = judge(prejudged, burst, self.policy)
        tally.bursts += bool(burst)
        self.state, events = conclude(self.state, observations, self.policy, self.now, burst, prejudged)
        for event in events:
            if event.type == "canary.drift":
                tally.alarms.append(number)
                tally.silent.append(bool(event.details["silent"]))
        firsts = {o.canary: o.output or "" for o in reversed(observations) if o.ok and o.sample == 0}
        if self.last_outputs and any(self.last_outputs.get(c) != text for c, text in firsts.items()):
            tally.naive_output.append(number)
        self.last_outputs = firsts
        fingerprint = next((o.system_fingerprint for o in observations if o.ok), None)
        if self.last_fingerprint is not None and fingerprint != self.last_fingerprint:
            tally.naive_fingerprint.append(number)
        self.last_fingerprint = fingerprint
        tally.checks += 1
        if self.state.discovery_due(self.model.model, self.now):  # the daemon's rule, after each good check
            self.discover(tally)
        self.now += INTERVAL


def steady(seed: int, checks: int) -> Tally:
    """A model that never changes, watched for `checks` checks; alarms after its learning are false."""
    monitor = Monitor(seed, realistic("a"))
    tally = Tally([], [], [], [])
    for number in range(checks):
        monitor.check(tally, number)
    return tally


def warmed(seed: int) -> tuple[Monitor, dict[str, Any], Tally]:
    """A model of realistic("a") after WARMUP quiet checks: the monitor, the settings, what the checks saw."""
    before = realistic("a")
    monitor = Monitor(seed, before)
    warm = Tally([], [], [], [])
    for number in range(WARMUP):
        monitor.check(warm, number)
    return monitor, before, warm


def trial(args: tuple[str, int]) -> Tally:
    """WARMUP quiet checks, then the change, then AFTER checks; alarm numbers count from the change (0 = first)."""
    name, seed = args
    monitor, before, warm = warmed(seed)
    monitor.set(_scenarios()[name](before))
    tally = Tally([], [], [], [])
    for number in range(AFTER):
        monitor.check(tally, number)
        if tally.alarms:
            break
    tally.alarms = [*(n - WARMUP for n in warm.alarms), *tally.alarms]  # negative: a false alarm before the change
    return tally


def second(args: tuple[str, int]) -> Tally:
    """A silent full swap, then SECOND_AFTER checks after its drift was raised a second change; alarm numbers
    count from the second change. No alarm for the first within AFTER checks: an empty tally (a miss)."""
    name, seed = args
    monitor, before, warm = warmed(seed)
    first = realistic("b")
    first["fingerprints"], first["resolved"] = before["fingerprints"], before["resolved"]
    monitor.set(first)
    for number in range(AFTER):
        monitor.check(warm, WARMUP + number)
        if any(n >= WARMUP for n in warm.alarms):
            break
    else:
        return Tally([], [], [], [])
    for number in range(SECOND_AFTER):
        monitor.check(warm, WARMUP + AFTER + number)
    monitor.set(_second_changes()[name](first))
    tally = Tally([], [], [], [])
    for number in range(AFTER):
        monitor.check(tally, number)
        if tally.alarms:
            break
    tally.alarms = [-1] * sum(1 for n in warm.alarms if n >= WARMUP + AFTER) + tally.alarms  # -1: before it
    return tally


def drift_samples(tally: Tally) -> int:
    return tally.discovered * SAMPLES


def _share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="steady-state runs (default 4)")
    parser.add_argument("--trials", type=int, default=100, help="trials per change scenario (default 100)")
    parser.add_argument("--days", type=float, default=90.0, help="length of each steady-state run (default 90)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed of 3 days, 10 trials")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.days = 1, 10, 3.0
    checks = int(args.days * 24 * 4)
    started = time.monotonic()
    with multiprocessing.Pool(2) as pool:
        steady_runs = pool.starmap(steady, [(1000 + s, checks) for s in range(args.seeds)])
        results = {name: pool.map(trial, [(name, 5000 + i) for i in range(args.trials)]) for name in _scenarios()}
        seconds = {name: pool.map(second, [(name, 7000 + i) for i in range(args.trials)]) for name in _second_changes()}
    elapsed = time.monotonic() - started

    learning = drift.REFERENCE_MIN  # checks counted as learning are excluded from false alarms
    days_watched = sum(t.checks - learning for t in steady_runs) / (24 * 4)
    per_90 = 90.0 / days_watched

    def per_90_days(pick: Callable[[Tally], list[int]]) -> float:
        return sum(sum(1 for n in pick(t) if n >= learning) for t in steady_runs) * per_90

    requests = sum(t.requests for t in steady_runs)
    tokens = sum(t.output_tokens for t in steady_runs)
    total_checks = sum(t.checks for t in steady_runs)
    bursts = sum(t.bursts for t in steady_runs)
    print(f"# fpwatch detection benchmark ({elapsed:.0f} s)\n")
    print(
        f"Steady state: {args.seeds} runs x {checks:,} checks at 15 minutes ({args.days:g} days each), "
        f"built-in canaries, realistic noise (rotating fingerprints, border flips, logprob jitter).\n"
    )
    print("| rule | false alarms per model per 90 days |")
    print("|---|---|")
    alarms = per_90_days(lambda t: t.alarms)
    bound = f" (none seen: 95% upper bound {3 * per_90:.2f}, rule of three)" if alarms == 0 else ""
    print(f"| fpwatch (screen + confirmation burst) | {alarms:.2f}{bound} |")
    print(f"| naive: output differs from the last check | {per_90_days(lambda t: t.naive_output):,.0f} |")
    print(f"| naive: fingerprint differs from the last check | {per_90_days(lambda t: t.naive_fingerprint):,.0f} |")
    print(
        f"\nCost: {requests / total_checks:.1f} requests and {tokens / total_checks:.1f} output tokens per check "
        f"on average, confirmation bursts included (a burst on {bursts / total_checks:.2%} of checks).\n"
    )
    d_requests = statistics.median(t.discovery_requests for t in steady_runs)
    d_tokens = statistics.median(t.discovery_tokens for t in steady_runs)
    d_found = statistics.median(t.discovered for t in steady_runs)
    print(
        f"Border-input discovery, once per model after its first check (included above): {d_requests:,.0f} requests, "
        f"{d_tokens:,.0f} output tokens, {d_found:.0f} border inputs kept (medians); then "
        f"{drift_samples(steady_runs[0])} one-token requests a check for them.\n"
    )
    young = sum(1 for tallies in results.values() for t in tallies for n in t.alarms if n < 0)
    young_checks = sum(len(tallies) for tallies in results.values()) * (WARMUP - drift.LEARNING_CHECKS)
    print(
        f"Young models (every trial's first {WARMUP} checks, a reference of at most a few hundred samples): "
        f"{young} false alarms in {young_checks:,} checks.\n"
    )
    print(f"Changes: {args.trials} trials each (other seeds); the change happens after {WARMUP} quiet checks.\n")
    print(
        f"| change | fpwatch: 1st check | within 3 | within {AFTER} | silent flag | "
        "naive output: 1st check | naive fingerprint: 1st check |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, tallies in results.items():
        first = _share([0 in t.alarms for t in tallies])
        within3 = _share([any(0 <= n <= 2 for n in t.alarms) for t in tallies])
        within_all = _share([any(n >= 0 for n in t.alarms) for t in tallies])
        silent = [t.silent[0] for t in tallies if t.silent]  # of the first alarm after the change
        silent_text = f"{_share(silent):.2f}" if silent else "-"
        naive_out = _share([0 in t.naive_output for t in tallies])
        naive_fp = _share([0 in t.naive_fingerprint for t in tallies])
        print(
            f"| {name} | {first:.2f} | {within3:.2f} | {within_all:.2f} | {silent_text} "
            f"| {naive_out:.2f} | {naive_fp:.2f} |"
        )
    print(
        f"\nA second change while re-learning: {SECOND_AFTER} checks after the drift of a silent full swap was "
        f"raised (the new reference then holds that check, its burst and the check after it).\n"
    )
    print(f"| second change | fpwatch: 1st check | within 3 | within {AFTER} | false alarms before it |")
    print("|---|---|---|---|---|")
    for name, tallies in seconds.items():
        first = _share([0 in t.alarms for t in tallies])
        within3 = _share([any(0 <= n <= 2 for n in t.alarms) for t in tallies])
        within_all = _share([any(n >= 0 for n in t.alarms) for t in tallies])
        early = sum(1 for t in tallies for n in t.alarms if n < 0)
        print(f"| {name} | {first:.2f} | {within3:.2f} | {within_all:.2f} | {early} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
