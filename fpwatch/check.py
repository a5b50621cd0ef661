"""One check of one model: probe every canary, record, track, conclude (DESIGN section 2, "check").

`run_check(model, ctx)` is the unit of work that `fpwatch check`, the daemon, the demo and the tests
all call. Probing happens outside any database lock; recording, tracking and events happen in one
transaction (see store.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from fpwatch import drift
from fpwatch.canaries import Canary, adapt
from fpwatch.clock import iso, iso_or_none
from fpwatch.config import ModelConfig
from fpwatch.logs import get_logger
from fpwatch.observation import Observation
from fpwatch.providers import Providers, ProviderSession, probe
from fpwatch.redact import Redactor
from fpwatch.store import CheckRecord, Store, StoredEvent
from fpwatch.tracking import Event, ModelState, Policy, learning, track

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# "The worst applies": a critical finding is never hidden by another model being unreachable,
# and an unreachable model is never hidden by a mere warning.
_RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}


def worst(codes: Sequence[int]) -> int:
    return max(codes, key=_RANK.__getitem__, default=OK)


@dataclass
class CheckContext:
    store: Store | None  # None: no history yet and nothing may be written (a dry run on a fresh machine)
    providers: Providers
    redact: Redactor = field(default_factory=Redactor)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    dry_run: bool = False
    route: Callable[[ModelState, StoredEvent], list[str]] | None = None  # notifiers per event; None: notify nobody


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
        codes = [OK]
        if self.state.expect_failing:
            codes.append(CRITICAL)  # a failing expect stays CRITICAL until it matches again
        if self.state.drift.open_since is not None:  # a drift stays at its severity until someone acks it
            codes.append(CRITICAL if self.state.drift.open_silent else WARNING)
        for stored in self.events:
            if stored.event.severity == "critical":
                codes.append(CRITICAL)
            elif stored.event.severity == "warning":
                codes.append(WARNING)
        if self.error:
            codes.append(UNKNOWN)
        return worst(codes)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    def state_label(self) -> str:
        return state_label(self.state, self.model, self.finished)

    def to_dict(self) -> dict[str, Any]:
        return {
            **model_summary(self.model, self.state, self.finished),
            "check_id": self.check_id,
            "status": STATUS_NAMES[self.status],
            "error": self.error,
            "requests": len(self.observations),
            "failed_requests": sum(1 for o in self.observations if not o.ok),
            "burst_requests": self.burst,
            "adapted": dict(self.adapted),
            "events": [e.to_dict() for e in self.events],
        }


def unsupported_by(model: ModelConfig, state: ModelState) -> frozenset[str]:
    """The options this model id rejected. They are kept as "option@model-id", so that another id under
    the same name (o3-mini swapped for gpt-4o in the config) starts with none."""
    suffix = f"@{model.model}"
    return frozenset(entry[: -len(suffix)] for entry in state.unsupported if entry.endswith(suffix))


def canaries_for(model: ModelConfig, unsupported: frozenset[str]) -> list[Canary]:
    """The model's canaries as it accepts them (without the options it rejected)."""
    return [adapt(c, unsupported) for c in model.canaries]


def policy_for(model: ModelConfig, unsupported: frozenset[str] = frozenset()) -> Policy:
    # What else shapes the request: a different model id, provider type or extra field starts a new reference.
    context = (model.model, model.provider.type, sorted((k, repr(v)) for k, v in model.params.items()))
    return Policy(
        grace_period=model.grace_period,
        learning_period=model.learning_period,
        failure_threshold=model.failure_threshold,
        expects={c.name: c.expect for c in model.canaries if c.expect},
        canary_keys={c.name: drift.canary_key(c, context) for c in canaries_for(model, unsupported)},
    )


def stale(state: ModelState, model: ModelConfig, now: datetime) -> bool:
    """No successful check for longer than the grace period: what we know may no longer hold."""
    return state.last_ok is not None and now - state.last_ok > model.grace_period


def state_label(state: ModelState, model: ModelConfig, now: datetime) -> str:
    if state.down:
        return "down"
    if state.checks == 0 and state.consecutive_failures:
        return "failing"
    if stale(state, model, now):
        return "stale"
    if state.drift.open_since is not None:
        return "drift"  # until a person acks the canary.drift event
    policy = policy_for(model, unsupported_by(model, state))
    if learning(state, policy, now) or state.drift.learning(policy.canary_keys.values()):
        return "learning"
    return "ok"


def drift_summary(model: ModelConfig, state: ModelState) -> dict[str, Any]:
    """Where drift detection stands for one model (documented in the README)."""
    keys = policy_for(model, unsupported_by(model, state)).canary_keys.values()
    d = state.drift
    return {
        "state": "drift" if d.open_since else "learning" if d.learning(keys) else "ok",
        "reference_samples": d.reference_samples(keys),
        "reference_needed": drift.REFERENCE_MIN,
        "open_since": iso_or_none(d.open_since),
        "last_screen": round(d.screens[-1], 3) if d.screens else None,
        "screen_threshold": round(drift.robust_threshold(d.screens, drift.SCREEN_K, drift.SCREEN_FLOOR), 3),
        "screen_hits": d.screen_hits,
        "bursts": d.bursts,
        "confirmed": d.confirmed,
    }


def model_summary(model: ModelConfig, state: ModelState, now: datetime) -> dict[str, Any]:
    """The per-model fields shared by `check --json` and `status --json` (documented in the README)."""
    grace = model.grace_period
    return {
        "name": model.name,
        "provider": model.provider.name,
        "model": model.model,
        "state": state_label(state, model, now),
        "fingerprints": [s.value for s in state.fingerprints.valid()],
        "fingerprint_details": [
            {
                "system_fingerprint": s.value,
                "first_seen": iso(s.first_seen),
                "last_seen": iso(s.last_seen),
                "count": s.count,
                "share": round(state.fingerprints.share(s.value), 4),
                "grace_expires": iso(s.last_seen + grace),
            }
            for s in state.fingerprints.valid()
        ],
        "fingerprint_missing": state.fingerprint_missing,
        "resolved_models": [s.value for s in state.response_models.valid()],
        "behaviour_fingerprint": state.behaviour_fingerprint,
        "drift": drift_summary(model, state),
        "unsupported": sorted(unsupported_by(model, state)),
        "checks": state.checks,
        "consecutive_failures": state.consecutive_failures,
        "last_check": iso_or_none(state.last_check),
        "last_ok": iso_or_none(state.last_ok),
        "last_error": state.last_error,
    }


async def run_check(model: ModelConfig, ctx: CheckContext) -> CheckResult:
    """Probe every canary `samples` times, then record and track them; never raises for provider trouble."""
    check_id = uuid.uuid4().hex[:16]
    # Every log line of this check, ours or a library's, carries the model and the check id.
    with structlog.contextvars.bound_contextvars(model=model.name, check_id=check_id):
        return await _run_check(model, ctx, check_id)


async def _run_check(model: ModelConfig, ctx: CheckContext, check_id: str) -> CheckResult:
    started = ctx.clock()
    before = ctx.store.load_state(model.name) if ctx.store is not None else ModelState(model.name)
    known = unsupported_by(model, before)
    canaries = canaries_for(model, known)
    session = ctx.providers.session(model.provider)
    rejected: dict[str, str] = {}  # options the model turned down during this check
    observations = await _probe_all(session, model, canaries, ctx, rejected)
    policy = policy_for(model, known | frozenset(rejected))
    burst: list[Observation] = []
    prejudged: drift.Prejudged | None = None
    if not rejected:
        samples = drift.samples_from(observations, policy.canary_keys)
        prejudged = drift.prescreen(before.drift, samples, policy.canary_keys.values())
        screened = prejudged.screen
        if screened is not None and screened.hit:
            # One noisy check pages nobody: fresh samples must show the change too.
            get_logger("fpwatch.check").info(
                "drift screen hit: confirming with fresh samples",
                surprise=round(screened.surprise, 2),
                threshold=round(screened.threshold, 2),
                logprob_change=screened.logprob,
            )
            burst = await _probe_all(session, model, canaries, ctx, rejected, burst=True)
            # The exact tests can take a second on a real change: off the event loop, outside any transaction.
            burst_samples = drift.samples_from(burst, policy.canary_keys)
            verdict = await asyncio.to_thread(drift.confirm, prejudged.learned, screened, burst_samples)
            prejudged = replace(prejudged, verdict=verdict, judged=True)
    finished = ctx.clock()
    error = _check_error(model, observations)
    adapted = {k: v for k, v in rejected.items() if k not in known}
    for option, words in adapted.items():
        get_logger("fpwatch.check").warning(
            f"the model rejects {option}: its canaries leave it out from now on", provider_said=words
        )

    def apply(state: ModelState) -> tuple[ModelState, list[Event]]:
        state = replace(state, unsupported=state.unsupported | {f"{option}@{model.model}" for option in rejected})
        policy = policy_for(model, unsupported_by(model, state))
        return track(state, observations, policy, finished, burst, prejudged)

    if ctx.dry_run or ctx.store is None:
        state, events = apply(before)
        stored = [StoredEvent(None, e, check_id) for e in events]
    else:
        everything = [*observations, *burst]
        record = CheckRecord(
            check_id,
            model.name,
            started,
            finished,
            len(everything),
            sum(1 for o in everything if not o.ok),
            error,
        )
        state, stored = ctx.store.record_check(record, everything, apply, ctx.route)
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
        for first, count in [(canary.samples, drift.burst_size(canary)) if burst else (0, canary.samples)]
        for i in range(count)
    ]
    return list(await asyncio.gather(*jobs))


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
    quiet = result.status == OK and not result.events  # 1,000 models a minute: only news at info
    (log.debug if quiet else log.info)(
        "check finished",
        state=result.state_label(),
        status=STATUS_NAMES[result.status],
        requests=len(result.observations),
        seconds=round((result.finished - result.started).total_seconds(), 3),
    )


def _check_error(model: ModelConfig, observations: Sequence[Observation]) -> str | None:
    """Why (part of) this model could not be checked: every canary with no usable answer at all."""
    problems = []
    for canary in model.canaries:
        mine = [o for o in observations if o.canary == canary.name]
        if mine and not any(o.ok for o in mine):
            problems.append(f"canary {canary.name}: {mine[-1].error}")
    if not problems:
        return None
    if len(problems) == len(model.canaries):
        errors = {p.split(": ", 1)[1] for p in problems}
        if len(errors) == 1:
            return f"every request failed: {errors.pop()}"
    return "; ".join(problems)


async def run_checks(models: Sequence[ModelConfig], ctx: CheckContext) -> list[CheckResult]:
    """One pass over several models, concurrently (each provider's own limit applies)."""
    return list(await asyncio.gather(*(run_check(m, ctx) for m in models)))
