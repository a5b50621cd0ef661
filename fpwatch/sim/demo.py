"""`fpwatch demo`: the whole pipeline on the built-in simulator, no key and no network.

Starts the simulator on a free loopback port, writes a throwaway config and state database, and
plays a scripted story in accelerated time (grace period of seconds, checks a second apart) through
the same `run_check` that `fpwatch check` and the daemon use. The daemon watches one model of each
provider type, all served by the same simulator (`WATCHED`): gpt-4o (openai-compatible, with
`system_fingerprint`), Claude (anthropic: the resolved `model`, and its service tier as a derived
fingerprint), Gemini (gemini: `modelVersion`) and gpt-5.5 (openai-responses: the resolved snapshot,
and the sampling settings the server echoes as a derived fingerprint). The story:

1. steady: gpt-4o's two fingerprints alternate across replicas; Claude, Gemini and gpt-5.5, which send
   no system_fingerprint, learn their resolved model; only the baseline is recorded;
2. at Anthropic, Google and OpenAI's Responses API: Claude's alias moves to a new dated snapshot (one
   `model.changed`, and once the grace period has passed one `model.retired`); Gemini is rate-limited
   once and answers after the wait its 429 asks for (a retry, no event); the top_p gpt-5.5's server
   chooses moves from 0.98 to 0.97 (one `fingerprint.changed`, later one `fingerprint.retired`);
3. a rollout with overlap: one of gpt-4o's replicas changes fingerprint; one change, later one retirement;
4. an outage and recovery: the provider fails gpt-4o; the model goes down, then recovers;
5. a silent model swap: same fingerprints, same resolved model, different answers; the drift screen
   fires, a confirmation burst confirms it, and `canary.drift` is critical because nothing else changed;
6. a rollback: the retired fingerprint comes back, which is critical.

At the end, the story's HTML report (`fpwatch report`, from its state before the folder goes) is written where
`fpwatch demo --report FILE` says, and its path printed.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fpwatch.check import CheckResult
from fpwatch.clock import utcnow
from fpwatch.config import Config, load_config
from fpwatch.detect.verdict import STATUS_NAMES
from fpwatch.notify import render
from fpwatch.providers import TYPES
from fpwatch.service.daemon import Daemon
from fpwatch.sim.server import Simulator
from fpwatch.store import Store, StoredEvent, open_existing

FP_A, FP_B, FP_C = "fp_44709d6fcb", "fp_6ca29cf396", "fp_9d50cd990b"
GPT, CLAUDE, GEMINI, GPT5 = "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "gpt-5.5"
CLAUDE_SNAPSHOTS = ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20260115")
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

[canaries.capital]
prompt = "Capital of France? One word."
max_tokens = 3
samples = 4
"""
BEFORE = {"1+1=": {"2": 0.9, "Two": 0.1}, "Heads or tails": {"Heads": 0.6, "Tails": 0.4}}
SWAPPED = {"1+1=": {"Two": 0.7, "2": 0.3}, "Heads or tails": {"Tails": 0.85, "Heads": 0.15}}
STEADY = {"Capital of France": "Paris"}  # one answer, so these models' drift screens have nothing to see


@dataclass(frozen=True)
class Watched:
    """One model the story watches: its provider type (the provider is named after it), how to reach the
    simulator, its canaries, how the simulator serves it at the start, and the events the story gives it."""

    type: str
    model: str
    canaries: tuple[str, ...]
    settings: dict[str, object]
    expected: dict[str, int]
    base_url: str = "{url}"  # formatted with the simulator's url (no /v1) and base_url (with /v1)
    key: bool = False  # the type requires a key: the simulator takes any

    @property
    def name(self) -> str:
        return f"demo/{self.model}"

    def toml(self, url: str, base_url: str) -> str:
        """Its [providers] table (named after the type) and its [[models]] entry."""
        lines = [f"[providers.{self.type}]", f'type = "{self.type}"']
        lines.append(f'base_url = "{self.base_url.format(url=url, base_url=base_url)}"')
        if self.key:
            lines.append('api_key = "demo"  # any key: the simulator asks for none')
        lines += ["", "[[models]]", f'provider = "{self.type}"', f'model = "{self.model}"', f'name = "{self.name}"']
        lines.append(f"canaries = {json.dumps(list(self.canaries))}")
        return "\n".join(lines) + "\n"


# One model per provider type: its model id, how the simulator serves it, the events it gets.
WATCHED: tuple[Watched, ...] = (
    Watched(
        "openai-compatible",
        GPT,
        ("one-token", "coin"),
        {"resolved": "gpt-4o-2024-08-06", "outputs": BEFORE, "logprob_jitter": 0.02},
        {
            "fingerprint.first_seen": 2,
            "model.first_seen": 1,
            "fingerprint.changed": 1,
            "fingerprint.retired": 1,
            "model.down": 1,
            "model.recovered": 1,
            "fingerprint.reverted": 1,
            "canary.drift": 1,
        },
        base_url="{base_url}",
    ),
    Watched(
        "anthropic",
        CLAUDE,
        ("capital",),
        {"resolved": CLAUDE_SNAPSHOTS[0], "outputs": STEADY},
        {"fingerprint.first_seen": 1, "model.first_seen": 1, "model.changed": 1, "model.retired": 1},
        key=True,
    ),
    Watched(
        "gemini",
        GEMINI,
        ("capital",),
        {"resolved": "gemini-2.5-flash-001", "outputs": STEADY},
        {"model.first_seen": 1},
        key=True,
    ),
    Watched(
        "openai-responses",
        GPT5,
        ("capital",),
        {"resolved": "gpt-5.5-2026-04-23", "outputs": STEADY, "echoes": {"top_p": 0.98}},
        {"fingerprint.first_seen": 1, "model.first_seen": 1, "fingerprint.changed": 1, "fingerprint.retired": 1},
        base_url="{base_url}",
        key=True,
    ),
)
# (title, what the simulator does per model id, checks each named model runs, seconds the chapter lasts at least)
STORY: list[tuple[str, dict[str, dict[str, object]], dict[str, int], float]] = [
    (
        "Steady: gpt-4o's two fingerprints alternate across replicas; the others learn their resolved model",
        {GPT: {"fingerprints": {FP_A: 1, FP_B: 1}}},
        {GPT: 6, CLAUDE: 4, GEMINI: 4, GPT5: 4},  # past every model's learning period
        0,
    ),
    (
        "Claude's alias moves to a new dated snapshot; Gemini is rate-limited once (429, retryDelay 1s); "
        "the top_p gpt-5.5's server chooses moves from 0.98 to 0.97",
        {
            CLAUDE: {"resolved": CLAUDE_SNAPSHOTS[1]},
            GEMINI: {"faults": [{"kind": "429", "retry_after": 1}]},  # RetryInfo.retryDelay "1s" in the body
            GPT5: {"echoes": {"top_p": 0.97}},
        },
        {CLAUDE: 2, GEMINI: 2, GPT5: 2},  # the second check is one that started after the change
        0,
    ),
    (
        "A rollout with overlap: gpt-4o's replicas serving fp_6ca29cf396 move to fp_9d50cd990b",
        {GPT: {"fingerprints": {FP_A: 2, FP_B: 1, FP_C: 1}}},
        {GPT: 2},
        0,
    ),
    # Longer than the 3s grace period, so the retirement always happens in this chapter.
    (
        "The rollout completes: fp_6ca29cf396 is no longer served",
        {GPT: {"fingerprints": {FP_A: 1, FP_C: 1}}},
        {GPT: 6},
        4.0,
    ),
    (
        "An outage: the provider answers gpt-4o with HTTP 500",
        {GPT: {"error_rate": 1.0, "error_kinds": ["500"]}},
        {GPT: 2},
        0,
    ),
    # Eight quiet checks: the retirement above leaves the drift screen's window (its last 8 checks), so
    # the swap below is judged against a window where no version signal changed.
    ("Recovery", {GPT: {"error_rate": 0.0}}, {GPT: 8}, 0),
    (
        "A silent model swap: same fingerprints, same resolved model, different answers",
        {GPT: {"outputs": SWAPPED}},
        {GPT: 3},
        0,
    ),
    ("A rollback: fp_6ca29cf396 comes back", {GPT: {"fingerprints": {FP_A: 1, FP_B: 1}}}, {GPT: 1}, 0),
]


async def play(echo: Callable[[str], None], interval: float = 1.0, report: Path | None = None) -> int:
    """Run the daemon through the story, echoing each check, event and alert; 0 if it went as scripted. At the end,
    the HTML report of the story is written to `report` (if given)."""
    with tempfile.TemporaryDirectory(prefix="fpwatch-demo-") as tmp, Simulator(seed=7) as sim:
        for watched in WATCHED:
            sim.update_model(watched.model, watched.settings)
        config_path = Path(tmp) / "fpwatch.toml"
        tables = "\n".join(w.toml(sim.url, sim.base_url) for w in WATCHED)
        config_path.write_text(CONFIG.format(interval=f"{int(interval * 1000)}ms") + "\n" + tables)
        config = load_config(config_path, TYPES, env={})
        echo(f"fpwatch demo: the daemon checks every {interval:g}s, on a simulated provider at {sim.url}:")
        for watched in WATCHED:
            echo(f"  {watched.name} (type {watched.type}), canaries: {', '.join(watched.canaries)}")
        echo("(grace period 3s, learning period 3 checks; state in a temporary folder; every check of the first")
        echo(" model is shown, the others' while they learn and when they have something to say)\n")
        story = _Story(echo)
        daemon = Daemon(config_path, config, on_result=story.on_result, first_run_spread=0)
        running = asyncio.create_task(daemon.run())
        try:
            for chapter, (title, behaviour, checks, seconds) in enumerate(STORY, start=1):
                echo(f"== {chapter}. {title}")
                for model, settings in behaviour.items():
                    sim.update_model(model, settings)
                ends = time.monotonic() + seconds
                targets = {f"demo/{model}": story.checks[f"demo/{model}"] + n for model, n in checks.items()}
                while any(story.checks[m] < n for m, n in targets.items()) or time.monotonic() < ends:
                    if running.done():
                        return await running  # the daemon stopped (Ctrl-C): end the story too
                    await asyncio.sleep(0.05)
                echo("")
        finally:
            daemon.stop_requested.set()
            await running
        echo("Summary:")
        for watched in WATCHED:
            counts = story.counts[watched.name]
            echo(f"  {watched.name} ({watched.type}): " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))
        wrong = {w.name: w.expected for w in WATCHED if dict(story.counts[w.name]) != w.expected}
        if wrong:
            echo(f"The story did not go as scripted: expected {wrong}")
            return 1
        echo("Every rotation stayed quiet; Claude's new snapshot gave one model.changed and later one retirement;")
        echo("Gemini's rate limit was waited out; gpt-5.5's new top_p, echoed by the Responses API, one")
        echo("fingerprint.changed and later one retirement; gpt-4o's rollout gave one change and one retirement, the")
        echo("outage one model.down and one model.recovered, the silent swap one critical canary.drift with a new")
        echo("behaviour fingerprint; the rollback is critical. Next: `fpwatch check` on your own config.")
        if report is not None:
            await _write_report(echo, config, report)
        return 0


async def _write_report(echo: Callable[[str], None], config: Config, path: Path) -> None:
    """The story as `fpwatch report` shows it, from the story's state (before its folder goes)."""
    from fpwatch.report.html import ReportUnavailable, build

    now = utcnow()
    try:
        async with _reading(config) as store:
            html = await build(store, config.models, now - timedelta(days=1), now, title="fpwatch demo: the story")
    except ReportUnavailable as exc:
        echo(f"\n(No report of the story: {exc}.)")
        return
    path.write_text(html, encoding="utf-8")
    echo(f"\nThe report of this story, one self-contained page: {path.resolve()}")
    echo(f"  open it in a browser: {path.resolve().as_uri()}")


@asynccontextmanager
async def _reading(config: Config) -> AsyncIterator[Store | None]:
    store = await open_existing(config.settings.state)
    try:
        yield store
    finally:
        if store is not None:
            await store.close()


class _Story:
    """Collects what the daemon reports and prints it as it happens: every check of the first model watched, and
    of the others the checks that say something (learning, an event, a retry, a failure)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.checks: Counter[str] = Counter()  # per model name
        self.counts: dict[str, Counter[str]] = {w.name: Counter() for w in WATCHED}

    def on_result(self, result: CheckResult) -> None:
        name = result.model.name
        self.checks[name] += 1
        quiet = not result.events and result.status_name == "OK" and result.state_label() != "learning"
        if name == WATCHED[0].name or not quiet or _retries(result):
            self.echo(_line(self.checks[name], result))
        for stored in result.events:
            self.counts[name][stored.event.type] += 1
            self.echo(_alert(stored))


def _retries(result: CheckResult) -> int:
    """Retries of the requests that were answered in the end (a failed request's retries are in its error)."""
    return sum(o.attempts - 1 for o in result.observations if o.ok)


def _line(number: int, result: CheckResult) -> str:
    answered = [o for o in result.observations if o.ok]
    seen = Counter(o.system_fingerprint for o in answered if o.system_fingerprint)
    if not any(value.startswith("fp_") for value in seen):  # no system_fingerprint: the resolved model as well
        seen.update(f"model {o.response_model}" for o in answered)
    shown = ", ".join(f"{value} x{n}" for value, n in sorted(seen.items())) or "no answer"
    answers = Counter((o.output or "").strip() for o in answered)
    said = " ".join(f"{a!r}x{n}" for a, n in answers.most_common(4))
    notes = f"  (drift screen hit: +{result.burst} confirmation requests)" if result.burst else ""
    if retries := _retries(result):
        notes += f"  ({retries} {'retry' if retries == 1 else 'retries'}, then answered)"
    status, state = STATUS_NAMES[result.status], result.state_label()
    return f"  {result.model.model:<17} check {number:>2}  {status:<8} {state:<8} {shown}  {said}{notes}"


def _alert(stored: StoredEvent) -> str:
    event = stored.event
    marker = {"info": "  ", "warning": "! ", "critical": "!!"}[event.severity]
    line = f"     {marker} [{event.severity}] {event.type}: {event.summary}"
    if event.severity != "info":  # what a notifier with the default min_severity = "warning" would get
        title, body, _ = render([stored])
        line += f"\n         alert -> {title}\n" + "\n".join(f"            {b}" for b in body.splitlines()[1:])
    return line
