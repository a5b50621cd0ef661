"""One check of one model (DESIGN section 2, "check"): probe -> screen -> burst -> conclude -> record -> queue.

`run_check(model, ctx)` is the unit of work that `fpwatch check`, the daemon, the demo and the tests
all call. Probing happens outside any database lock; the drift screen and the burst's exact tests run
before the transaction (the tests off the event loop); concluding, recording the observations, the
state and the events, and queueing the alerts happen in one transaction (store.record_check).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from fpwatch.clock import utcnow
from fpwatch.config import Canary, ModelConfig
from fpwatch.detect import drift, verdict
from fpwatch.detect.borders import Borders
from fpwatch.detect.conclude import conclude, judge, prejudge
from fpwatch.detect.events import Event, ScreenFigures
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import ModelState, Policy
from fpwatch.discovery import discovered_canaries
from fpwatch.logs import get_logger
from fpwatch.providers import Providers, ProviderSession, probe
from fpwatch.providers.capabilities import adapt
from fpwatch.redact import Redactor
from fpwatch.store import CheckRecord, Route, Store, StoredEvent


@dataclass
class CheckContext:
    store: Store | None  # None: no history yet and nothing may be written (a dry run on a fresh machine)
    providers: Providers
    redact: Redactor = field(default_factory=Redactor)
    clock: Callable[[], datetime] = utcnow
    dry_run: bool = False
    route: Route | None = None  # notifiers per event; None: notify nobody


@dataclass(frozen=True)
class CheckResult:
    model: ModelConfig
    check_id: str
    started: datetime
    finished: datetime
    observations: list[Observation]
    state: ModelState
    events: list[StoredEvent]
    error: str | None
    burst: int = 0  # how many of the observations were a drift confirmation burst
    adapted: Mapping[str, str] = field(default_factory=dict)  # options the model rejected this check -> its words

    @property
    def status(self) -> int:
        return verdict.status(self.state, [e.event for e in self.events], self.error)

    @property
    def status_name(self) -> str:
        return verdict.STATUS_NAMES[self.status]

    def state_label(self) -> str:
        return verdict.state_label(self.state, policy_for(self.model, self.state), self.finished)


def canary_key(canary: Canary, context: object = None) -> drift.CanaryKey:
    """The drift reference a canary's answers belong to: its name and what it sends (with `context`)."""
    return drift.CanaryKey(canary.name, canary.digest(context))


def canaries_for(
    model: ModelConfig, unsupported: frozenset[str], boosted: Collection[str] = (), borders: Borders | None = None
) -> list[Canary]:
    """The model's canaries and its discovered border inputs, as it accepts them (without the options it
    rejected), those whose own drift statistic is up with more samples (adaptive sampling: drift.BOOST_FACTOR)."""
    adapted = [adapt(c, unsupported) for c in (*model.canaries, *discovered_canaries(borders, model.model))]
    return [replace(c, samples=c.samples * drift.BOOST_FACTOR) if c.name in boosted else c for c in adapted]


def sent_canaries(model: ModelConfig, state: ModelState) -> list[Canary]:
    """What a check of this model sends now."""
    boosted = {key.name for key in state.drift.boost}
    return canaries_for(model, state.rejected_by(model.model), boosted, state.borders)


def policy_for(model: ModelConfig, state: ModelState | None = None) -> Policy:
    """How this model's checks are judged, given the options its model id rejected (as `state` records)."""
    unsupported = state.rejected_by(model.model) if state is not None else frozenset()
    borders = state.borders if state is not None else None
    # What else shapes the request: a different model id, provider type or extra field starts a new reference.
    context = (model.model, model.provider.type, sorted((k, repr(v)) for k, v in model.params.items()))
    return Policy(
        grace_period=model.grace_period,
        learning_period=model.learning_period,
        failure_threshold=model.failure_threshold,
        expects={c.name: c.expect for c in model.canaries if c.expect},
        canary_keys={c.name: canary_key(c, context) for c in canaries_for(model, unsupported, borders=borders)},
    )


async def run_check(model: ModelConfig, ctx: CheckContext) -> CheckResult:
    """Probe every canary `samples` times, then record and conclude; never raises for provider trouble."""
    check_id = uuid.uuid4().hex[:16]
    # Every log line of this check, ours or a library's, carries the model and the check id.
    with structlog.contextvars.bound_contextvars(model=model.name, check_id=check_id):
        return await _run_check(model, ctx, check_id)


async def _run_check(model: ModelConfig, ctx: CheckContext, check_id: str) -> CheckResult:
    started = ctx.clock()
    before = await ctx.store.load_state(model.name) if ctx.store is not None else ModelState(model.name)
    known = before.rejected_by(model.model)
    canaries = sent_canaries(model, before)
    session = ctx.providers.session(model.provider)
    rejected: dict[str, str] = {}  # options the model turned down during this check
    observations = await _probe_all(session, model, canaries, ctx, rejected)
    if "logprobs" not in known and "logprobs" not in rejected and _ignores_logprobs(session, canaries, observations):
        rejected["logprobs"] = IGNORED_LOGPROBS
    burst: list[Observation] = []
    prejudged: drift.Prejudged | None = None
    if not rejected:
        policy = policy_for(model, before)
        prejudged = prejudge(before, observations, policy, ctx.clock())
        if prejudged.wants_burst:
            assert prejudged.screen is not None
            # One noisy check pages nobody: fresh samples must show the change too.
            get_logger("fpwatch.check").info(
                "drift screen hit: confirming with fresh samples",
                surprise=round(prejudged.screen.surprise, 2),
                threshold=round(prejudged.screen.threshold, 2),
                logprob_change=prejudged.screen.logprob,
            )
            burst = await _probe_all(session, model, canaries, ctx, rejected, burst=True)
            # The exact tests can take a second on a real change: off the event loop, outside any transaction.
            prejudged = await asyncio.to_thread(judge, prejudged, burst, policy)
    finished = ctx.clock()
    error = _check_error(model, observations)
    adapted = {k: v for k, v in rejected.items() if k not in known}
    for option, words in adapted.items():
        get_logger("fpwatch.check").warning(
            f"the model rejects {option}: its canaries leave it out from now on", provider_said=words
        )

    def apply(state: ModelState) -> tuple[ModelState, list[Event]]:
        state = replace(state, unsupported=state.unsupported | {(option, model.model) for option in rejected})
        return conclude(state, observations, policy_for(model, state), finished, burst, prejudged)

    if ctx.dry_run or ctx.store is None:
        state, events = apply(before)
        stored = [StoredEvent(None, e, check_id) for e in events]
    else:
        everything = [*observations, *burst]
        failures = sum(1 for o in everything if not o.ok)
        screen = _figures(prejudged.screen) if prejudged is not None and prejudged.screen is not None else None
        record = CheckRecord(check_id, model.name, started, finished, len(everything), failures, error, screen)
        state, stored = await ctx.store.record_check(record, everything, apply, ctx.route)
    result = CheckResult(
        model, check_id, started, finished, [*observations, *burst], state, stored, error, len(burst), adapted
    )
    _log(result)
    return result


async def _probe_all(
    session: ProviderSession,
    model: ModelConfig,
    canaries: Sequence[Canary],
    ctx: CheckContext,
    rejected: dict[str, str],
    *,
    burst: bool = False,
) -> list[Observation]:
    """Every canary `samples` times (a confirmation burst: drift.burst_size times, numbered after them)."""
    jobs = [
        probe(session, model, canary, first + i, redact=ctx.redact, clock=ctx.clock, rejected=rejected)
        for canary in canaries
        for first, count in [(canary.samples, drift.burst_size(canary.samples)) if burst else (0, canary.samples)]
        for i in range(count)
    ]
    return list(await asyncio.gather(*jobs))


def _figures(screen: drift.Screen) -> ScreenFigures:
    """The screen as recorded with the check (the report charts it against its threshold)."""
    return ScreenFigures(screen.surprise, screen.threshold, screen.logprob, screen.logprob_threshold, screen.samples)


IGNORED_LOGPROBS = "the server accepted logprobs but answered without them"
IGNORED_AFTER = 3  # answers that were asked for logprobs and carried none before the model counts as ignoring them


def _ignores_logprobs(
    session: ProviderSession, canaries: Sequence[Canary], observations: Sequence[Observation]
) -> bool:
    """A server that takes the field and returns nothing: not asking it again saves the tokens and the noise."""
    asked = {c.name for c in canaries if session.adapter.asks_logprobs(c)}
    answers = [o for o in observations if o.ok and o.canary in asked]
    return len(answers) >= IGNORED_AFTER and all(o.first_token is None for o in answers)


def _log(result: CheckResult) -> None:
    log = get_logger("fpwatch.check")
    failed = [o for o in result.observations if not o.ok]
    if failed:
        log.warning(
            "requests failed",
            failed=len(failed),
            requests=len(result.observations),
            error=failed[-1].error,
            error_kind=failed[-1].error_kind,
        )
    for stored in result.events:
        level = "warning" if stored.event.severity != "info" else "info"
        getattr(log, level)(stored.event.summary, event_type=stored.event.type, event_id=stored.id)
    quiet = result.status == verdict.OK and not result.events  # 1,000 models a minute: only news at info
    finished_at = logging.DEBUG if quiet else logging.INFO
    if log.isEnabledFor(finished_at):  # the state label is work: none for a line the level drops (`check` logs errors)
        log.log(
            finished_at,
            "check finished",
            state=result.state_label(),
            status=result.status_name,
            requests=len(result.observations),
            seconds=round((result.finished - result.started).total_seconds(), 3),
        )


def _check_error(model: ModelConfig, observations: Sequence[Observation]) -> str | None:
    """Why (part of) this model could not be checked: every canary with no usable answer at all."""
    failures: dict[str, str | None] = {}
    for canary in model.canaries:
        mine = [o for o in observations if o.canary == canary.name]
        if mine and not any(o.ok for o in mine):
            failures[canary.name] = mine[-1].error
    if not failures:
        return None
    if len(failures) == len(model.canaries) and len(set(failures.values())) == 1:
        return f"every request failed: {next(iter(failures.values()))}"
    return "; ".join(f"canary {name}: {error}" for name, error in failures.items())


async def run_checks(models: Sequence[ModelConfig], ctx: CheckContext) -> list[CheckResult]:
    """One pass over several models, concurrently (each provider's own limit applies)."""
    return list(await asyncio.gather(*(run_check(m, ctx) for m in models)))
