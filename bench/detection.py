"""Detection benchmark: does fpwatch find real changes fast and stay quiet on serving noise? (DESIGN section 6)

Every request goes through the simulator's noise model (`Simulator.respond`, the code that answers
HTTP requests, without the sockets) and fpwatch's own request builder and response parser; every check
is decided by the same three steps `run_check` takes (detect.conclude: prejudge, judge, conclude) with
the same policy (check.policy_for). Only the network and the database are left out, so 90 simulated
days take minutes. Side by side with the two naive rules:

- "output": alert when a canary's answer differs from the one the last check got;
- "fingerprint": alert when the system_fingerprint differs from the last check's.

Two kinds of model, with the same answer noise and the same changes (`KINDS`):

- "openai": type = "openai" (chat completions), which sends a system_fingerprint and first-token logprobs;
- "anthropic": type = "anthropic" (the Messages API, /v1/messages), which has no system fingerprint (its
  derived one, the service tier, stays the same), no seed and no logprobs: fpwatch judges it by its answers
  (and the resolved model) alone. Changes that only logprobs or a
  fingerprint could show are not run for it; the tables say so.

Usage: python bench/detection.py [--seeds 4] [--trials 100] [--days 90] [--kinds openai,anthropic]
       [--json FILE] [--quick]
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fpwatch.check import policy_for, sent_canaries
from fpwatch.config import Canary, parse_config
from fpwatch.detect import drift
from fpwatch.detect.borders import SAMPLES, Answers
from fpwatch.detect.conclude import conclude, judge, prejudge
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import ModelState
from fpwatch.discovery import border_canary, discover
from fpwatch.errors import ProbeError
from fpwatch.providers import ADAPTERS, TYPES
from fpwatch.providers.capabilities import adapt
from fpwatch.providers.http import Exchange
from fpwatch.sim import Simulator, perturbed_logprobs, realistic, routed, shifted, with_fingerprints

INTERVAL = timedelta(minutes=15)
WARMUP = 40  # checks before the change: learning (4 checks) plus a reference of 144 samples per canary
AFTER = 12  # checks watched after the change (3 hours at 15 minutes)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "sim/model"

CONFIG = """
[providers.sim]
type = "{type}"
base_url = "{base_url}"
api_key = "sk-bench"
[[models]]
provider = "sim"
model = "model"
"""

_NO_LOGPROBS = "not observable without logprobs (the Messages API has none); not run"


@dataclass(frozen=True)
class Kind:
    """A kind of model: the provider type fpwatch watches it as, and the simulator's route for that wire format."""

    title: str
    provider_type: str
    base_url: str
    path: str  # of Simulator.respond
    fingerprints: bool  # does its answer carry a system_fingerprint (the naive fingerprint rule's input)?
    unseen: Mapping[str, str] = field(default_factory=dict)  # change -> why this kind cannot show it (not run)
    notes: Mapping[str, str] = field(default_factory=dict)  # change -> what it amounts to for this kind


KINDS: dict[str, Kind] = {
    "openai": Kind(
        "OpenAI-style: fingerprint, logprobs", "openai", "http://127.0.0.1:9/v1", "/v1/chat/completions", True
    ),
    "anthropic": Kind(
        "Anthropic Messages API: no fingerprint, no logprobs",
        "anthropic",
        "http://127.0.0.1:9",
        "/v1/messages",
        False,
        unseen={
            "logprobs only, +0.5 nats": _NO_LOGPROBS,
            "logprobs only, +0.1 nats (5x the per-request jitter)": _NO_LOGPROBS,
            "logprobs only, +0.1 nats": _NO_LOGPROBS,
            "new fingerprint, same behaviour": "nothing changes on the wire (no fingerprint is sent); not run",
        },
        notes={"full swap, new fingerprint": "the resolved model changes (there is no fingerprint)"},
    ),
}


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
    """One model of a kind watched by fpwatch (built-in canaries) and by the two naive rules."""

    def __init__(self, kind: str, seed: int, settings: dict[str, Any], *, discovery: bool = True) -> None:
        self.kind = KINDS[kind]
        text = CONFIG.format(type=self.kind.provider_type, base_url=self.kind.base_url)
        text += "" if discovery else "discovery_budget = 0\n"
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

    def _payload(self, canary: Canary) -> dict[str, Any]:
        # As providers.probe sends it: without the options the provider type has no field for.
        return dict(self.adapter.build_request(self.model, adapt(canary, self.adapter.spec.unsupported)).payload)

    def _ask(self, burst: bool, tally: Tally) -> list[Observation]:
        out = []
        for canary in sent_canaries(self.model, self.state):  # as run_check sends them (adaptive sampling too)
            payload = self._payload(canary)
            count = drift.burst_size(canary.samples) if burst else canary.samples
            for i in range(count):
                status, body = self.sim.respond(payload, path=self.kind.path)
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
            payload = self._payload(border_canary(prompt, samples=1))
            tokens, logprobs, spent = [], [], 0
            for _ in range(n):
                status, body = self.sim.respond(payload, path=self.kind.path)
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


def steady(kind: str, seed: int, checks: int) -> Tally:
    """A model that never changes, watched for `checks` checks; alarms after its learning are false."""
    monitor = Monitor(kind, seed, realistic("a"))
    tally = Tally([], [], [], [])
    for number in range(checks):
        monitor.check(tally, number)
    return tally


def warmed(kind: str, seed: int) -> tuple[Monitor, dict[str, Any], Tally]:
    """A model of realistic("a") after WARMUP quiet checks: the monitor, the settings, what the checks saw."""
    before = realistic("a")
    monitor = Monitor(kind, seed, before)
    warm = Tally([], [], [], [])
    for number in range(WARMUP):
        monitor.check(warm, number)
    return monitor, before, warm


def trial(kind: str, name: str, seed: int) -> Tally:
    """WARMUP quiet checks, then the change, then AFTER checks; alarm numbers count from the change (0 = first)."""
    monitor, before, warm = warmed(kind, seed)
    monitor.set(_scenarios()[name](before))
    tally = Tally([], [], [], [])
    for number in range(AFTER):
        monitor.check(tally, number)
        if tally.alarms:
            break
    tally.alarms = [*(n - WARMUP for n in warm.alarms), *tally.alarms]  # negative: a false alarm before the change
    return tally


def second(kind: str, name: str, seed: int) -> Tally:
    """A silent full swap, then SECOND_AFTER checks after its drift was raised a second change; alarm numbers
    count from the second change. No alarm for the first within AFTER checks: an empty tally (a miss)."""
    monitor, before, warm = warmed(kind, seed)
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


Task = tuple[str, str, str, int]  # "trial" or "second", kind, change, seed


def run(task: Task) -> Tally:
    what, kind, name, seed = task
    return (trial if what == "trial" else second)(kind, name, seed)


def drift_samples(tally: Tally) -> int:
    return tally.discovered * SAMPLES


def _share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def _detection(tallies: list[Tally]) -> dict[str, Any]:
    """How soon the change was found: shares of the trials, by the number of checks after it."""
    silent = [t.silent[0] for t in tallies if t.silent]  # of the first alarm after the change
    return {
        "trials": len(tallies),
        "first_check": _share([0 in t.alarms for t in tallies]),
        "within_3": _share([any(0 <= n <= 2 for n in t.alarms) for t in tallies]),
        f"within_{AFTER}": _share([any(n >= 0 for n in t.alarms) for t in tallies]),
        "silent": _share(silent) if silent else None,
        "false_alarms_before": sum(1 for t in tallies for n in t.alarms if n < 0),
    }


def figures(
    kind: Kind, steady_runs: list[Tally], changes: dict[str, list[Tally]], seconds: dict[str, list[Tally]]
) -> dict[str, Any]:
    """Everything measured for one kind of model, as the JSON output holds it (the tables print from it)."""
    learning = drift.REFERENCE_MIN  # checks counted as learning are excluded from false alarms
    days_watched = sum(t.checks - learning for t in steady_runs) / (24 * 4)
    per_90 = 90.0 / days_watched

    def per_90_days(pick: Callable[[Tally], list[int]]) -> float:
        return sum(sum(1 for n in pick(t) if n >= learning) for t in steady_runs) * per_90

    total_checks = sum(t.checks for t in steady_runs)
    alarms = per_90_days(lambda t: t.alarms)
    young_trials = [t for tallies in changes.values() for t in tallies]

    def change(name: str, tallies: list[Tally] | None) -> dict[str, Any]:
        if tallies is None:
            return {"observable": False, "why": kind.unseen[name]}
        row = {"observable": True, **_detection(tallies)}
        row["naive_output_first_check"] = _share([0 in t.naive_output for t in tallies])
        fingerprint = _share([0 in t.naive_fingerprint for t in tallies])
        row["naive_fingerprint_first_check"] = fingerprint if kind.fingerprints else None
        if name in kind.notes:
            row["note"] = kind.notes[name]
        return row

    return {
        "title": kind.title,
        "provider_type": kind.provider_type,
        "path": kind.path,
        "steady": {
            "runs": len(steady_runs),
            "checks_per_run": steady_runs[0].checks if steady_runs else 0,
            "checks": total_checks,
            "false_alarms_per_90_days": {
                "fpwatch": alarms,
                "fpwatch_upper_95": 3 * per_90 if alarms == 0 else None,  # none seen: the rule of three
                "naive_output": per_90_days(lambda t: t.naive_output),
                "naive_fingerprint": per_90_days(lambda t: t.naive_fingerprint) if kind.fingerprints else None,
            },
            "by_run": [  # false alarms: the check numbers, learning excluded
                {"false_alarms": [n for n in t.alarms if n >= learning], "bursts": t.bursts, "discovered": t.discovered}
                for t in steady_runs
            ],
            "requests_per_check": sum(t.requests for t in steady_runs) / total_checks,
            "output_tokens_per_check": sum(t.output_tokens for t in steady_runs) / total_checks,
            "burst_share": sum(t.bursts for t in steady_runs) / total_checks,
            "discovery": {  # medians over the runs; included in the figures per check above
                "requests": statistics.median(t.discovery_requests for t in steady_runs),
                "output_tokens": statistics.median(t.discovery_tokens for t in steady_runs),
                "kept": statistics.median(t.discovered for t in steady_runs),
                "requests_per_check_after": drift_samples(steady_runs[0]),
            },
        },
        "young": {
            "false_alarms": sum(1 for t in young_trials for n in t.alarms if n < 0),
            "checks": len(young_trials) * (WARMUP - drift.LEARNING_CHECKS),
        },
        "changes": {name: change(name, changes.get(name)) for name in _scenarios()},
        "second_changes": {
            name: (
                {"observable": True, **_detection(seconds[name])}
                if name in seconds
                else {"observable": False, "why": kind.unseen[name]}
            )
            for name in _second_changes()
        },
    }


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: dict[str, Any]) -> None:
    """The figures as markdown tables: the kinds of model side by side."""
    kinds: dict[str, dict[str, Any]] = results["kinds"]
    options = results["options"]
    names = list(kinds)

    def row(label: str, cells: list[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    print(f"# fpwatch detection benchmark ({results['seconds']:.0f} s)\n")
    print(
        f"Steady state: {options['seeds']} runs x {options['checks']:,} checks at 15 minutes ({options['days']:g} "
        "days each) per kind of model, built-in canaries, realistic noise (rotating fingerprints, border flips, "
        "logprob jitter; a kind without fingerprints or logprobs does not see them).\n"
    )
    for name, kind in kinds.items():
        print(f'- {name}: type = "{kind["provider_type"]}" ({kind["path"]}), {kind["title"]}')
    print()
    row("figure", names)
    print("|---|" + "---|" * len(names))

    def steady(pick: Callable[[dict[str, Any]], str]) -> list[str]:
        return [pick(kind["steady"]) for kind in kinds.values()]

    def alarms(s: dict[str, Any]) -> str:
        rate, bound = s["false_alarms_per_90_days"]["fpwatch"], s["false_alarms_per_90_days"]["fpwatch_upper_95"]
        return f"{rate:.2f}" + (f" (none seen: 95% upper bound {bound:.2f}, rule of three)" if bound else "")

    def naive(value: float | None) -> str:
        return "- (no fingerprint)" if value is None else f"{value:,.0f}"

    row("false alarms per 90 days: fpwatch (screen + confirmation burst)", steady(alarms))
    row(
        "false alarms per 90 days: naive, output differs from the last check",
        steady(lambda s: naive(s["false_alarms_per_90_days"]["naive_output"])),
    )
    row(
        "false alarms per 90 days: naive, fingerprint differs from the last check",
        steady(lambda s: naive(s["false_alarms_per_90_days"]["naive_fingerprint"])),
    )
    row("requests per check (bursts and discovery included)", steady(lambda s: f"{s['requests_per_check']:.1f}"))
    row("output tokens per check", steady(lambda s: f"{s['output_tokens_per_check']:.1f}"))
    row("checks with a confirmation burst", steady(lambda s: f"{s['burst_share']:.2%}"))
    row(
        "border-input discovery once (medians): requests, output tokens, border inputs kept",
        steady(lambda s: "{requests:,.0f}, {output_tokens:,.0f}, {kept:.0f}".format(**s["discovery"])),
    )
    row("then one-token requests a check for them", steady(lambda s: str(s["discovery"]["requests_per_check_after"])))
    row(
        f"young models (every trial's first {WARMUP} checks): false alarms",
        [f"{k['young']['false_alarms']} in {k['young']['checks']:,} checks" for k in kinds.values()],
    )
    print(
        f"\nChanges: {options['trials']} trials each (other seeds); the change happens after {WARMUP} quiet checks.\n"
    )
    columns = ["fpwatch: 1st check", "within 3", f"within {AFTER}", "silent flag"]
    row("change | model", [*columns, "naive output: 1st check", "naive fingerprint: 1st check"])
    print("|---|---|" + "---|" * (len(columns) + 2))
    notes: list[str] = []

    def detected(c: dict[str, Any]) -> list[str]:
        return [_rate(c["first_check"]), _rate(c["within_3"]), _rate(c[f"within_{AFTER}"]), _rate(c["silent"])]

    for change in _scenarios():
        for i, (name, kind) in enumerate(kinds.items()):
            c = kind["changes"][change]
            label = f"{change if i == 0 else ''} | {name}"
            if not c["observable"]:
                row(label, [c["why"], *[""] * (len(columns) + 1)])
                continue
            if "note" in c:
                notes.append(f"{name}, {change}: {c['note']}")
                label += f" [{len(notes)}]"
            naive_fp = c["naive_fingerprint_first_check"]
            row(
                label,
                [*detected(c), _rate(c["naive_output_first_check"]), "-" if naive_fp is None else _rate(naive_fp)],
            )
    for number, note in enumerate(notes, 1):
        print(f"\n[{number}] {note}.")
    print(
        f"\nA second change while re-learning: {SECOND_AFTER} checks after the drift of a silent full swap was "
        f"raised (the new reference then holds that check, its burst and the check after it).\n"
    )
    row("second change | model", [*columns[:3], "false alarms before it"])
    print("|---|---|" + "---|" * 4)
    for change in _second_changes():
        for i, (name, kind) in enumerate(kinds.items()):
            c = kind["second_changes"][change]
            label = f"{change if i == 0 else ''} | {name}"
            if c["observable"]:
                row(label, [*detected(c)[:3], str(c["false_alarms_before"])])
            else:
                row(label, [c["why"], "", "", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="steady-state runs per kind (default 4)")
    parser.add_argument("--trials", type=int, default=100, help="trials per change scenario (default 100)")
    parser.add_argument("--days", type=float, default=90.0, help="length of each steady-state run (default 90)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"kinds of model, comma-separated (default {','.join(KINDS)})"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed of 3 days, 10 trials")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"--kinds: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(KINDS)}")
    if args.quick:
        args.seeds, args.trials, args.days = 1, 10, 3.0
    checks = int(args.days * 24 * 4)
    tasks: list[Task] = []
    for kind in kinds:
        unseen = KINDS[kind].unseen
        tasks += [("trial", kind, n, 5000 + i) for n in _scenarios() if n not in unseen for i in range(args.trials)]
        tasks += [
            ("second", kind, n, 7000 + i) for n in _second_changes() if n not in unseen for i in range(args.trials)
        ]
    started = time.monotonic()
    with multiprocessing.Pool(2) as pool:
        # One queue for all: the trials keep both cores busy while the last steady run ends.
        long_runs = pool.starmap_async(steady, [(kind, 1000 + s, checks) for kind in kinds for s in range(args.seeds)])
        tallies = pool.map(run, tasks, chunksize=4)
        steady_runs = long_runs.get()
    elapsed = time.monotonic() - started

    def of(what: str, kind: str) -> dict[str, list[Tally]]:
        out: dict[str, list[Tally]] = {}
        for (w, k, name, _), tally in zip(tasks, tallies, strict=True):
            if (w, k) == (what, kind):
                out.setdefault(name, []).append(tally)
        return out

    results = {
        "seconds": elapsed,
        "options": {"seeds": args.seeds, "trials": args.trials, "days": args.days, "checks": checks, "kinds": kinds},
        "kinds": {
            kind: figures(
                KINDS[kind], steady_runs[i * args.seeds : (i + 1) * args.seeds], of("trial", kind), of("second", kind)
            )
            for i, kind in enumerate(kinds)
        },
    }
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
