"""Real-server benchmark: which weight changes behind a self-hosted OpenAI-compatible server does fpwatch see?

The server is llama-cpp-python's (`python -m llama_cpp.server`, research/llamacpp-server.md) serving a tiny
llama model of random weights that tests/tinyllama.py writes (no download). fpwatch runs in this process
exactly as `fpwatch check` does: `fpwatch.check.run_check` with a `CheckContext` on a real SQLite store in a
temporary folder and `fpwatch.providers.Providers`, over HTTP to the server, with the default config (the
built-in canaries, temperature 0, top-5 logprobs).

First fpwatch learns model A and screens it until it has measured the server's logprob noise (4 learning
checks, then 20 screened ones). Then, for each change, from a copy of that learned database: the server
restarts with other weights on the same port and alias, and fpwatch checks it up to `--checks` times.

- other weights: a model of another seed;
- A perturbed by EPS x init std: every tensor plus EPS times its own init std times N(0, 1) (a retrained or
  re-quantised copy of the same model);
- three restarts of A: restarted before each of the first three checks (the first requests after a start take
  llama.cpp's other kernel path: the logprobs move by ~1e-6). Any alarm here is a false one.

The table: whether every greedy answer of the built-in canaries (all samples and bursts, through the check that
raised the drift, or all checks) stayed the same text as A's; the check (1 = the first check after the change)
at which `canary.drift` was raised, or "none within N"; whether it was silent (no fingerprint or
resolved-model change, so critical) and which channel saw it (answers or logprobs); and the statistic's value
as the event records it, over its threshold (answers: the confirmation test's, from the event; logprobs: the one
the check was judged by, from the state before it, since the event's `threshold` field is rounded to 4 decimals,
0.0 for the logprob floor of 1e-5). Then the measured noise (the `status` summary's drift.noise) and the wall
time.

Measured: llama.cpp keeps its KV cache in F16 by default, and with it any change of the weights moves the
first-token logprobs by ~2e-4 nats, even at 1e-5 or 1e-6 x init std (some cached keys and values round to another
F16 value). With an F32 cache (`--server-args="--type_k 0 --type_v 0"`) they move in proportion to the change:
~3e-5 nats at 1e-5, ~3e-6 at 1e-6 (below fpwatch's 1e-5 floor).

Usage: python bench/real_server.py [--checks 6] [--seed 1] [--other-seed 2] [--perturb-seed 7] [--keep DIR]
       [--server-args="--type_k 0 --type_v 0"]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tiny model and its server

from tinyllama import ALIAS, TinyServer, write_model

from fpwatch.check import CheckContext, CheckResult, run_check
from fpwatch.config import ModelConfig, parse_config
from fpwatch.detect import drift
from fpwatch.detect.events import DriftDetails
from fpwatch.logs import configure_logging
from fpwatch.providers import TYPES, Providers
from fpwatch.report.summary import drift_summary
from fpwatch.store import open_store

MAX_WARMUP = 60  # checks; the noise is measured after about 24
EPSILONS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
RESTARTS = 3


class BenchError(Exception):
    """A check did not do what the benchmark needs (an error, a failed request): the figures would mean nothing."""


@dataclass
class Outcome:
    name: str
    alarm: int | None = None  # the check number (1 = first after the change) that raised canary.drift
    silent: bool | None = None
    channel: str | None = None
    value: float | None = None
    threshold: float | None = None
    checks: int = 0
    requests: int = 0
    changed: list[str] = field(default_factory=list)  # canaries with an answer not the learned model's


def model_config(base_url: str) -> ModelConfig:
    text = f"""
[providers.local]
type = "openai-compatible"
base_url = "{base_url}"

[[models]]
provider = "local"
model = "{ALIAS}"
"""
    config = parse_config(tomllib.loads(text), TYPES, path=Path("bench.toml"), env={})
    (model,) = config.models
    return model


def answers_of(result: CheckResult) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for o in result.observations:
        out.setdefault(o.canary, set()).add(o.output or "")
    return out


async def check(model: ModelConfig, ctx: CheckContext) -> CheckResult:
    result = await run_check(model, ctx)
    failed = [o for o in result.observations if not o.ok]
    if result.error or failed:
        raise BenchError(f"check failed: {result.error or failed[0].error}")
    if result.adapted:
        raise BenchError(f"the server rejected options fpwatch needs: {dict(result.adapted)}")
    return result


async def warm_up(model: ModelConfig, db: Path) -> tuple[int, dict[str, set[str]], dict[str, Any]]:
    """Check until the drift summary shows the logprob noise measured: (checks, A's answers, drift summary)."""
    store = await open_store(db)
    try:
        async with Providers() as providers:
            ctx = CheckContext(store=store, providers=providers)
            answers: dict[str, set[str]] = {}
            for n in range(1, MAX_WARMUP + 1):
                result = await check(model, ctx)
                for canary, outputs in answers_of(result).items():
                    answers.setdefault(canary, set()).update(outputs)
                if [e for e in result.events if e.event.type == "canary.drift"]:
                    raise BenchError(f"canary.drift while learning, at check {n}")
                summary = drift_summary(model, result.state)
                if summary["noise"]["logprobs"] is not None:
                    return n, answers, summary
        raise BenchError(f"the logprob noise was not measured after {MAX_WARMUP} checks")
    finally:
        await store.close()


async def watch(
    model: ModelConfig,
    db: Path,
    server: TinyServer,
    change: tuple[str, Path, int],
    reference: dict[str, set[str]],
    checks: int,
) -> Outcome:
    """Restart the server with the change's weights (again before each of its first `restarts` checks), then
    check up to `checks` times, until a canary.drift."""
    name, weights, restarts = change
    outcome = Outcome(name)
    store = await open_store(db)
    try:
        async with Providers() as providers:
            ctx = CheckContext(store=store, providers=providers)
            for n in range(1, checks + 1):
                if n <= restarts:
                    await asyncio.to_thread(server.restart, weights)
                before = (await store.load_state(model.name)).drift
                result = await check(model, ctx)
                outcome.checks, outcome.requests = n, outcome.requests + len(result.observations)
                moved = {c for c, outputs in answers_of(result).items() if outputs != reference.get(c)}
                outcome.changed = sorted({*outcome.changed, *moved})
                drifts = [e.event for e in result.events if e.event.type == "canary.drift"]
                if drifts:
                    details = drifts[0].details
                    assert isinstance(details, DriftDetails)
                    outcome.alarm, outcome.silent, outcome.channel = n, details.silent, details.channel
                    outcome.value = details.value
                    logprobs = details.channel == "logprobs"
                    # The event rounds a logprob threshold to 4 decimals: the one it was judged by, from the state.
                    outcome.threshold = drift.logprob_threshold(before) if logprobs else details.threshold
                    break
    finally:
        await store.close()
    return outcome


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of the learned state (SQLite's backup API: the WAL included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=6, help="checks after each change (default 6)")
    parser.add_argument("--seed", type=int, default=1, help="the learned model A's seed")
    parser.add_argument("--other-seed", type=int, default=2, help="the seed of the other weights")
    parser.add_argument("--perturb-seed", type=int, default=7, help="the perturbations' own RNG seed")
    parser.add_argument("--keep", type=Path, help="write the models, databases and server log here and keep them")
    parser.add_argument("--server-args", default="", help='more llama_cpp.server options, e.g. "--type_k 0"')
    args = parser.parse_args()
    configure_logging("error", "json")  # fpwatch's log lines on stderr only for errors: stdout is the table

    started = time.monotonic()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fpwatch-real-server-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        base = write_model(folder / "a.gguf", args.seed)
        changes: list[tuple[str, Path, int]] = [
            (f"other weights (seed {args.other_seed})", write_model(folder / "b.gguf", args.other_seed), 1)
        ]
        for eps in EPSILONS:
            path = write_model(folder / f"a-{eps:g}.gguf", args.seed, perturb=eps, perturb_seed=args.perturb_seed)
            changes.append((f"A + {eps:g} x init std", path, 1))
        changes.append((f"{RESTARTS} restarts of A (same weights)", base, RESTARTS))

        with TinyServer(folder, base, extra_args=shlex.split(args.server_args)) as server:
            model = model_config(server.base_url)
            learned = folder / "learned.db"
            warm_started = time.monotonic()
            warm_checks, answers, summary = asyncio.run(warm_up(model, learned))
            warm_seconds = time.monotonic() - warm_started
            if any(len(outputs) != 1 for outputs in answers.values()):
                raise BenchError(f"model A's greedy answers are not deterministic: {answers}")
            outcomes = []
            for change in changes:
                db = folder / f"scenario-{len(outcomes)}.db"
                copy_db(learned, db)
                outcomes.append(asyncio.run(watch(model, db, server, change, answers, args.checks)))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.monotonic() - started

    noise = summary["noise"]
    print(f"# fpwatch against a real llama-cpp-python server ({elapsed:.0f} s)\n")
    print(
        f"Model A (seed {args.seed}): a random 2-layer llama, n_embd 64, 811 tokens, F32, served by "
        f"`{' '.join(['python -m llama_cpp.server', *shlex.split(args.server_args)])}` on one thread; "
        "built-in canaries at temperature 0, top-5 logprobs.\n"
    )
    print(
        f"Learned in {warm_checks} checks ({warm_seconds:.0f} s, {warm_seconds / warm_checks:.2f} s a check): "
        f"logprob noise typical {fmt(noise['logprobs']['typical'])} nats, spread {fmt(noise['logprobs']['spread'])}; "
        f"logprob threshold {fmt(summary['logprob_threshold'])}; answer noise {noise['answers']}, "
        f"screen threshold {fmt(summary['screen_threshold'])}.\n"
    )
    print("A's greedy answers: " + ", ".join(f"{c} {sorted(o)[0]!r}" for c, o in sorted(answers.items())) + "\n")
    print("| change | greedy answers unchanged | canary.drift at check | silent | channel | value / threshold |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        same = "yes" if not o.changed else f"no ({', '.join(c.removeprefix('default/') for c in o.changed)})"
        alarm = str(o.alarm) if o.alarm is not None else f"none within {o.checks}"
        silent = "-" if o.silent is None else "yes" if o.silent else "no"
        ratio = "-" if o.value is None else f"{fmt(o.value)} / {fmt(o.threshold)}"
        print(f"| {o.name} | {same} | {alarm} | {silent} | {o.channel or '-'} | {ratio} |")
    requests = sum(o.requests for o in outcomes)
    print(f"\n{requests} requests after the changes (confirmation bursts included); wall time {elapsed:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
