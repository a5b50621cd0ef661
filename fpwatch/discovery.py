"""Border-input discovery for one model (DESIGN section 11, `fpwatch discover`): ask candidate prompts within
a budget of one-token requests; detect.borders decides what is a border input and which to keep.

`discover` takes the asking as a function (`Ask`), so the daemon, `fpwatch discover`, the benchmark and the
tests run the same steps against a provider, the simulator in-process, or anything else. `run_discovery`
asks the model's provider through the usual probe (retries, deadlines, adaptation to rejected options) and
keeps the result in the model's state; from its next check on, the border inputs are canaries of their own
(`discovered_canaries`), learned and judged like every other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime

from fpwatch.config import Canary, Message, ModelConfig
from fpwatch.config.candidates import border_candidates
from fpwatch.detect import borders as rules
from fpwatch.detect.borders import Answers, Border, Borders
from fpwatch.detect.drift import outcome
from fpwatch.detect.state import ModelState
from fpwatch.logs import get_logger
from fpwatch.providers import Providers, probe
from fpwatch.providers.capabilities import adapt
from fpwatch.store import Store

Ask = Callable[[str, int], Awaitable[Answers]]
"""Ask one prompt this many times (temperature 0, one output token); what came back."""
Progress = Callable[[int], None]
"""Called with the requests spent so far."""

BATCH = 8  # prompts scanned at once (the provider's own concurrency limit applies underneath)
FAILED_IN_A_ROW = 5  # prompts whose every request failed, one after another: discovery stops and says why


def border_canary(prompt: str, samples: int = rules.SAMPLES) -> Canary:
    """The request discovery sends for a prompt, and the canary a border input becomes: one output token."""
    return Canary(
        name=rules.canary_name(prompt),
        messages=(Message("user", prompt),),
        max_tokens=1,
        samples=samples,
    )


def discovered_canaries(borders: Borders | None, model_id: str) -> tuple[Canary, ...]:
    """The model's border inputs as canaries (none when they were found for another model id)."""
    if borders is None or borders.model_id != model_id:
        return ()
    return tuple(border_canary(b.prompt) for b in borders.found)


async def discover(
    ask: Ask,
    budget: int,
    *,
    now: datetime,
    model_id: str,
    confirmed: int = 0,
    previous: Borders | None = None,
    candidates: Sequence[str] | None = None,
    exclude: Collection[str] = (),
    progress: Progress | None = None,
    target: int = rules.TARGET,
) -> Borders:
    """Find up to `target` border inputs spending at most `budget` requests (each of one output token).

    With `previous` (an earlier discovery for this model id), its border inputs are re-probed first and the
    survivors kept; the scan tops the set up, from where it stopped (no change since: `confirmed` is the same) or
    from the start (after a change). Prompts in `exclude` (the model's own canaries)
    are not tried.
    """
    pool = list(border_candidates() if candidates is None else candidates)
    spent, tokens = 0, 0

    async def asked(prompt: str, n: int) -> Answers:
        nonlocal spent, tokens
        answers = await ask(prompt, n)
        spent, tokens = spent + n, tokens + answers.output_tokens
        if progress is not None:
            progress(spent)
        return answers

    kept: list[Border] = []
    start = 0
    if previous is not None and previous.model_id == model_id:
        # Run again on the same model: scan on where it stopped. After a change, earlier "no border here" verdicts
        # were about the model before: scan from the start again.
        start = previous.scanned if previous.confirmed == confirmed else 0
        old = list(previous.found)[: max(0, budget // rules.REPROBE_QUERIES)]
        reprobed = await asyncio.gather(*(asked(b.prompt, rules.REPROBE_QUERIES) for b in old))
        kept = rules.survivors(old, {b.prompt: a for b, a in zip(old, reprobed, strict=True)})
    need = max(0, target - len(kept))
    taken = {b.prompt for b in kept} | set(exclude)
    n = max(1, len(pool))
    order = [(start + i) % n for i in range(len(pool)) if pool[(start + i) % n] not in taken]  # indices into pool
    scanned: dict[str, Answers] = {}
    found: list[str] = []
    status: rules.Status | None = None
    error: str | None = None
    failed_run = 0
    position = 0
    while need and position < len(order) and len(found) < rules.CANDIDATE_RATIO * need:
        # keep enough to measure every candidate found so far, and one more per prompt of this batch
        room = budget - spent - rules.MEASURE_QUERIES * len(found)
        size = min(BATCH, room // (rules.SCAN_QUERIES + rules.MEASURE_QUERIES), len(order) - position)
        if size <= 0:
            break
        batch = [pool[i] for i in order[position : position + size]]
        position += size
        asked_batch = await asyncio.gather(*(asked(p, rules.SCAN_QUERIES) for p in batch))
        for prompt, answers in zip(batch, asked_batch, strict=True):
            scanned[prompt] = answers
            if rules.is_candidate(answers):
                found.append(prompt)
            failed_run = failed_run + 1 if answers.failed else 0
            error = answers.error or error
        if failed_run >= FAILED_IN_A_ROW:
            status = "failed"
            break
        status = rules.gate(scanned, len(found))
        if status is not None:
            break
    if status is None:
        status = rules.gate(scanned, len(found), final=True)
    measured: dict[str, Answers] = {}
    if status is None and found:
        found = found[: max(0, (budget - spent) // rules.MEASURE_QUERIES)]
        more = await asyncio.gather(*(asked(p, rules.MEASURE_QUERIES) for p in found))
        measured = {p: scanned[p] + a for p, a in zip(found, more, strict=True)}
    chosen = [*kept, *rules.choose(measured, need)] if status is None else kept
    if status is None:
        status = "found" if chosen else "none"
    scanned_to = (order[position - 1] + 1) % n if position else start  # where a top-up goes on
    return Borders(
        status=status,
        found=tuple(chosen),
        at=now,
        requests=spent,
        tokens=tokens,
        scanned=scanned_to,
        confirmed=confirmed,
        model_id=model_id,
        error=error if status == "failed" else None,
    )


async def run_discovery(
    model: ModelConfig,
    *,
    store: Store | None,
    providers: Providers,
    redact: Callable[[str], str],
    clock: Callable[[], datetime],
    budget: int,
    progress: Progress | None = None,
) -> Borders:
    """Discover the model's border inputs through its provider and keep them in its state (when there is a store)."""
    state = await store.load_state(model.name) if store is not None else ModelState(model.name)
    session = providers.session(model.provider)
    rejected: dict[str, str] = {}
    unsupported = state.rejected_by(model.model)

    async def ask(prompt: str, n: int) -> Answers:
        canary = adapt(border_canary(prompt, samples=1), unsupported | frozenset(rejected))
        observations = await asyncio.gather(
            *(probe(session, model, canary, i, redact=redact, clock=clock, rejected=rejected) for i in range(n))
        )
        return Answers(
            tuple(outcome(o.output) if o.ok else None for o in observations),
            tuple(o.first_token.logprob if o.ok and o.first_token else None for o in observations),
            sum(o.output_tokens or 0 for o in observations),
            next((o.error for o in reversed(observations) if not o.ok), None),
        )

    previous = state.borders if state.borders is not None and state.borders.found else None
    log = get_logger("fpwatch.discovery")
    log.info("border-input discovery started", budget=budget, reprobe=len(previous.found) if previous else 0)
    result = await discover(
        ask,
        budget,
        now=clock(),
        model_id=model.model,
        confirmed=state.drift.confirmed,
        previous=previous,
        exclude={c.prompt for c in model.canaries},
        progress=progress,
    )
    log.info(
        "border-input discovery finished",
        status=result.status,
        found=len(result.found),
        requests=result.requests,
        tokens=result.tokens,
        error=result.error,
    )
    if store is not None:

        def keep(s: ModelState) -> ModelState:
            return replace(s, borders=result, unsupported=s.unsupported | {(o, model.model) for o in rejected})

        await store.update_state(model.name, keep)
    return result
