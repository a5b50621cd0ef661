"""`fpwatch demo`: the whole pipeline on the built-in simulator, no key and no network.

Starts the simulator on a free loopback port, writes a throwaway config and state database, and
plays a scripted story in accelerated time (grace period of seconds, checks a second apart) through
the same `run_check` that `fpwatch check` and the daemon use:

1. steady replica rotation: two fingerprints alternate; only the baseline is recorded;
2. a rollout with overlap: one replica's fingerprint is replaced; one change, later one retirement;
3. an outage and recovery: the provider fails; the model goes down, then recovers;
4. a silent model swap: same fingerprints, same resolved model, different answers; the drift screen
   fires, a confirmation burst confirms it, and `canary.drift` is critical because nothing else changed;
5. a rollback: the retired fingerprint comes back, which is critical.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fpwatch.check import CheckResult
from fpwatch.config import load_config
from fpwatch.detect.verdict import STATUS_NAMES
from fpwatch.notify import render
from fpwatch.providers import TYPES
from fpwatch.service.daemon import Daemon
from fpwatch.sim.server import Simulator
from fpwatch.store import StoredEvent

FP_A, FP_B, FP_C = "fp_44709d6fcb", "fp_6ca29cf396", "fp_9d50cd990b"
CONFIG = """
[fpwatch]
state = "demo.db"

[defaults]
interval = "{interval}"
jitter = "0"
learning_period = 3
grace_period = "3s"
failure_threshold = 2
timeout = "5s"

[discovery]
budget = 0  # the story is about fingerprints and drift; `fpwatch discover` finds border inputs on demand

[providers.simulator]
type = "openai-compatible"
base_url = "{base_url}"

[[models]]
provider = "simulator"
model = "gpt-4o"
name = "demo/gpt-4o"
canaries = ["one-token", "coin"]

[canaries.one-token]
prompt = "Reply in one token. 1+1="
max_tokens = 2
samples = 6
logprobs = true
top_logprobs = 3

[canaries.coin]
prompt = "Heads or tails? Answer with one word only."
max_tokens = 2
samples = 6
logprobs = true
top_logprobs = 3
"""
BEFORE = {"1+1=": {"2": 0.9, "Two": 0.1}, "Heads or tails": {"Heads": 0.6, "Tails": 0.4}}
SWAPPED = {"1+1=": {"Two": 0.7, "2": 0.3}, "Heads or tails": {"Tails": 0.85, "Heads": 0.15}}
# (title, what the simulator does, checks to run, seconds the chapter lasts at least)
STORY: list[tuple[str, dict[str, object], int, float]] = [
    ("Steady replica rotation: two fingerprints alternate across replicas", {"fingerprints": {FP_A: 1, FP_B: 1}}, 6, 0),
    (
        "A rollout with overlap: the replicas serving fp_6ca29cf396 move to fp_9d50cd990b",
        {"fingerprints": {FP_A: 2, FP_B: 1, FP_C: 1}},
        2,
        0,
    ),
    # Longer than the 3s grace period, so the retirement always happens in this chapter.
    ("The rollout completes: fp_6ca29cf396 is no longer served", {"fingerprints": {FP_A: 1, FP_C: 1}}, 6, 4.0),
    ("An outage: the provider answers HTTP 500", {"error_rate": 1.0, "error_kinds": ["500"]}, 2, 0),
    # Eight quiet checks: the retirement above leaves the drift screen's window (its last 8 checks), so
    # the swap below is judged against a window where no version signal changed.
    ("Recovery", {"error_rate": 0.0}, 8, 0),
    (
        "A silent model swap: same fingerprints, same resolved model, different answers",
        {"outputs": SWAPPED},
        3,
        0,
    ),
    ("A rollback: fp_6ca29cf396 comes back", {"fingerprints": {FP_A: 1, FP_B: 1}}, 1, 0),
]


EXPECTED = {
    "fingerprint.first_seen": 2,
    "model.first_seen": 1,
    "fingerprint.changed": 1,
    "fingerprint.retired": 1,
    "model.down": 1,
    "model.recovered": 1,
    "fingerprint.reverted": 1,
    "canary.drift": 1,
}


async def play(echo: Callable[[str], None], interval: float = 1.0) -> int:
    """Run the daemon through the story, echoing each check, event and alert; 0 if it went as scripted."""
    with tempfile.TemporaryDirectory(prefix="fpwatch-demo-") as tmp, Simulator(seed=7) as sim:
        sim.update_model("gpt-4o", {"resolved": "gpt-4o-2024-08-06", "outputs": BEFORE, "logprob_jitter": 0.02})
        config_path = Path(tmp) / "fpwatch.toml"
        config_path.write_text(CONFIG.format(base_url=sim.base_url, interval=f"{int(interval * 1000)}ms"))
        config = load_config(config_path, TYPES, env={})
        echo(
            f"fpwatch demo: the daemon checks demo/gpt-4o every {interval:g}s on a simulated provider at {sim.base_url}"
        )
        echo("(grace period 3s, learning period 3 checks, 2 canaries x 6 samples; state in a temporary folder)\n")
        story = _Story(echo)
        daemon = Daemon(config_path, config, on_result=story.on_result, first_run_spread=0)
        running = asyncio.create_task(daemon.run())
        try:
            for chapter, (title, behaviour, checks, seconds) in enumerate(STORY, start=1):
                echo(f"== {chapter}. {title}")
                sim.update_model("gpt-4o", behaviour)
                ends = time.monotonic() + seconds
                target = story.checks + checks
                while story.checks < target or time.monotonic() < ends:
                    if running.done():
                        return await running  # the daemon stopped (Ctrl-C): end the story too
                    await asyncio.sleep(0.05)
                echo("")
        finally:
            daemon.stop_requested.set()
            await running
        echo("Summary: " + ", ".join(f"{n} {t}" for t, n in sorted(story.counts.items())))
        if dict(story.counts) != EXPECTED:
            echo(f"The story did not go as scripted: expected {EXPECTED}")
            return 1
        echo("Every rotation stayed quiet; the rollout gave one change and one retirement; the outage one")
        echo("model.down and one model.recovered; the silent swap one critical canary.drift with a new behaviour")
        echo("fingerprint; the rollback is critical. Next: `fpwatch check` on your own config.")
        return 0


class _Story:
    """Collects what the daemon reports and prints it as it happens."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.checks = 0
        self.counts: Counter[str] = Counter()

    def on_result(self, result: CheckResult) -> None:
        self.checks += 1
        self.echo(_line(self.checks, result))
        for stored in result.events:
            self.counts[stored.event.type] += 1
            self.echo(_alert(stored))


def _line(number: int, result: CheckResult) -> str:
    seen = Counter(o.system_fingerprint or "(none)" for o in result.observations if o.ok)
    shown = ", ".join(f"{fp} x{n}" for fp, n in sorted(seen.items())) or "no answer"
    answers = Counter((o.output or "").strip() for o in result.observations if o.ok)
    said = " ".join(f"{a!r}x{n}" for a, n in answers.most_common(4))
    burst = f"  (drift screen hit: +{result.burst} confirmation requests)" if result.burst else ""
    return f"  check {number:>2}  {STATUS_NAMES[result.status]:<8} {result.state_label():<8} {shown}  {said}{burst}"


def _alert(stored: StoredEvent) -> str:
    event = stored.event
    marker = {"info": "  ", "warning": "! ", "critical": "!!"}[event.severity]
    line = f"     {marker} [{event.severity}] {event.type}: {event.summary}"
    if event.severity != "info":  # what a notifier with the default min_severity = "warning" would get
        title, body, _ = render([stored])
        line += f"\n         alert -> {title}\n" + "\n".join(f"            {b}" for b in body.splitlines()[1:])
    return line
