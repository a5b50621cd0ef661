"""One check of one model: probe every canary, record, track, conclude (DESIGN section 2, "check").

`run_check(model, ctx)` is the unit of work that `fpwatch check`, the daemon, the demo and the tests
all call. Probing happens outside any database lock; recording, tracking and events happen in one
transaction (see store.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from fpwatch.clock import iso, iso_or_none
from fpwatch.config import ModelConfig
from fpwatch.logs import get_logger
from fpwatch.observation import Observation
from fpwatch.providers import Providers, probe
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

    @property
    def status(self) -> int:
        codes = [OK]
        if self.state.expect_failing:
            codes.append(CRITICAL)  # a failing expect stays CRITICAL until it matches again
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
            "events": [e.to_dict() for e in self.events],
        }


def policy_for(model: ModelConfig) -> Policy:
    return Policy(
        grace_period=model.grace_period,
        learning_period=model.learning_period,
        failure_threshold=model.failure_threshold,
        expects={c.name: c.expect for c in model.canaries if c.expect},
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
    if learning(state, policy_for(model), now):
        return "learning"
    return "ok"


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
    session = ctx.providers.session(model.provider)
    jobs = [
        probe(session, model, canary, sample, redact=ctx.redact, clock=ctx.clock)
        for canary in model.canaries
        for sample in range(canary.samples)
    ]
    observations = list(await asyncio.gather(*jobs))
    finished = ctx.clock()
    error = _check_error(model, observations)
    policy = policy_for(model)

    def apply(state: ModelState) -> tuple[ModelState, list[Event]]:
        return track(state, observations, policy, finished)

    if ctx.dry_run or ctx.store is None:
        before = ctx.store.load_state(model.name) if ctx.store is not None else ModelState(model.name)
        state, events = apply(before)
        stored = [StoredEvent(None, e, check_id) for e in events]
    else:
        record = CheckRecord(
            check_id,
            model.name,
            started,
            finished,
            len(observations),
            sum(1 for o in observations if not o.ok),
            error,
        )
        state, stored = ctx.store.record_check(record, observations, apply, ctx.route)
    result = CheckResult(model, check_id, started, finished, observations, state, stored, error)
    _log(result)
    return result


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
