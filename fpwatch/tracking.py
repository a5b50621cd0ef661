"""Fingerprint and resolved-model tracking: observations in, events out (DESIGN section 5).

Pure: takes the model's state, one check's observations and the time, and returns the new state and
the events. No I/O, no clock. Every "did this really change?" decision about version signals lives
here, so the grace-window rules can be tested table by table on a controlled clock.

The valid set of a model is every value that has not retired. A value retires once it has not been
seen for `grace_period` **and** the samples taken since make its absence significant given its
historical share: the chance of missing it that often by luck, (1 - share) ** misses, is under 1%.
A rare replica is therefore not retired by chance and then reported as a rollback.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from fpwatch import drift
from fpwatch.clock import human, iso_or_none
from fpwatch.drift import DriftState, Finding
from fpwatch.observation import Observation

SignalKind = Literal["fingerprint", "response_model"]
RETIRE_SIGNIFICANCE = 0.01
# A value seen only a handful of times can never make its absence significant (the chance settles
# near e**-count): after this many grace periods unseen it retires anyway.
RETIRE_CEILING = 7
SEVERITIES = ("info", "warning", "critical")
# A model that goes down again within FLAP_WINDOW of an earlier outage is flapping: that second
# model.down says so, and further down/recovered alerts are held until the window is quiet.
FLAP_WINDOW = timedelta(hours=1)

SEVERITY = {
    "fingerprint.first_seen": "info",
    "fingerprint.changed": "warning",
    "fingerprint.reverted": "critical",
    "fingerprint.retired": "info",
    "fingerprint.missing": "info",
    "model.first_seen": "info",
    "model.changed": "warning",
    "model.reverted": "critical",
    "model.retired": "info",
    "canary.drift": "warning",
    "canary.failed": "critical",
    "model.down": "warning",
    "model.recovered": "info",
}
_EVENT_NAMES = {
    # kind -> (first_seen, changed, reverted, retired)
    "fingerprint": (
        "fingerprint.first_seen",
        "fingerprint.changed",
        "fingerprint.reverted",
        "fingerprint.retired",
    ),
    "response_model": ("model.first_seen", "model.changed", "model.reverted", "model.retired"),
}
_LABEL = {"fingerprint": "fingerprint", "response_model": "resolved model"}


@dataclass(frozen=True)
class Signal:
    """One value of a version signal (a fingerprint or a resolved model name) and its history."""

    value: str
    first_seen: datetime
    last_seen: datetime
    count: int
    misses: int = 0  # samples carrying this kind of signal since this value was last seen
    retired_at: datetime | None = None
    since: int = 0  # how many samples of this kind the model had before this value first appeared

    @property
    def valid(self) -> bool:
        return self.retired_at is None


@dataclass(frozen=True)
class SignalSet:
    kind: SignalKind
    signals: Mapping[str, Signal] = field(default_factory=dict)
    samples: int = 0  # every sample that carried this kind of signal

    def valid(self) -> list[Signal]:
        """The valid set, most seen first."""
        return sorted((s for s in self.signals.values() if s.valid), key=lambda s: (-s.count, s.value))

    def share(self, value: str) -> float:
        """The value's share of every sample ever taken (what `history` shows)."""
        signal = self.signals.get(value)
        return signal.count / self.samples if signal and self.samples else 0.0

    def share_since_first_seen(self, value: str) -> float:
        """The value's share of the samples taken since it first appeared.

        This is the probability used to judge an absence. Over all history, a value that appeared
        late would look rarer than it is; over only its live window, a value seen once would look
        common and retire as soon as it skips a few samples. Since-first-seen keeps rare replicas
        (and values seen only a handful of times, which cannot reach 1% by chance) in the valid set.
        """
        signal = self.signals.get(value)
        if signal is None:
            return 0.0
        window = self.samples - signal.since
        return min(1.0, signal.count / window) if window > 0 else 0.0


@dataclass(frozen=True)
class ModelState:
    model: str
    checks: int = 0  # successful checks
    first_check: datetime | None = None
    last_check: datetime | None = None
    last_ok: datetime | None = None
    consecutive_failures: int = 0
    down: bool = False
    down_since: datetime | None = None
    last_error: str | None = None
    fingerprint_missing: bool = False
    expect_failing: frozenset[str] = frozenset()
    behaviour_fingerprint: str | None = None
    recent_downs: tuple[datetime, ...] = ()  # when it went down within FLAP_WINDOW: flap damping
    fingerprints: SignalSet = field(default_factory=lambda: SignalSet("fingerprint"))
    response_models: SignalSet = field(default_factory=lambda: SignalSet("response_model"))
    drift: DriftState = field(default_factory=DriftState)
    unsupported: frozenset[str] = frozenset()  # "option@model-id": options (canaries.CAPABILITIES) an id rejected


@dataclass(frozen=True)
class Policy:
    grace_period: timedelta
    learning_period: int | timedelta
    failure_threshold: int
    expects: Mapping[str, str] = field(default_factory=dict)  # canary name -> regex
    canary_keys: Mapping[str, str] = field(default_factory=dict)  # canary name -> drift.canary_key()


@dataclass(frozen=True)
class Event:
    time: datetime
    model: str
    type: str
    summary: str
    details: Mapping[str, Any]
    severity: str = ""

    def __post_init__(self) -> None:
        if not self.severity:
            object.__setattr__(self, "severity", SEVERITY[self.type])


def learning(state: ModelState, policy: Policy, now: datetime) -> bool:
    """Is this model still in its learning period (its baseline) at `now`?"""
    if isinstance(policy.learning_period, int):
        return state.checks < policy.learning_period
    return state.first_check is None or now - state.first_check < policy.learning_period


def track(
    state: ModelState,
    observations: Sequence[Observation],
    policy: Policy,
    now: datetime,
    burst: Sequence[Observation] = (),
    prejudged: drift.Prejudged | None = None,
) -> tuple[ModelState, list[Event]]:
    """Apply one check's observations to the model's state; return the new state and its events.

    `burst` holds the fresh samples of a confirmation burst, taken when the drift screen asked for one
    (drift.prescreen); they count for fingerprints and resolved models like any other response.
    `prejudged` carries the screen and the burst's verdict the caller computed before (drift.Prejudged).
    """
    ok = [o for o in observations if o.ok]
    if not ok:
        return _failed(state, observations, policy, now)
    events: list[Event] = []
    baseline = learning(state, policy, now)
    ok_burst = [o for o in burst if o.ok]
    ok_all = [*ok, *ok_burst]
    fingerprint_values = [o.system_fingerprint for o in ok_all if o.system_fingerprint]
    fingerprints, fp_events = _update_signals(
        state.model, state.fingerprints, fingerprint_values, policy, now, baseline
    )
    models, model_events = _update_signals(
        state.model,
        state.response_models,
        [o.response_model for o in ok_all if o.response_model],
        policy,
        now,
        baseline,
    )
    events += fp_events + model_events
    missing = state.fingerprint_missing
    carried = sum(1 for o in ok_all if o.system_fingerprint)
    if carried:
        missing = False
    elif state.fingerprints.signals and not missing:
        missing = True
        events.append(_missing_event(state, ok, now))
    bfp = state.behaviour_fingerprint or behaviour_fingerprint(state.model, now)
    drift_state, finding = drift.observe(
        state.drift,
        drift.samples_from(ok, policy.canary_keys),
        drift.samples_from(ok_burst, policy.canary_keys),
        policy.canary_keys.values(),
        now,
        signal_changes=[e.time for e in events if e.type in drift.SIGNAL_CHANGES],
        prejudged=prejudged,
    )
    if finding is not None:
        new_bfp = behaviour_fingerprint(state.model, now)
        events.append(_drift_event(state.model, finding, bfp, new_bfp, now))
        bfp = new_bfp
    expect_failing, expect_events = _expectations(state, ok, policy, now)
    events += expect_events
    if state.down:
        events.append(
            Event(
                now,
                state.model,
                "model.recovered",
                f"{state.model}: recovered after {state.consecutive_failures} failed checks"
                + (f" (down since {human(state.down_since)})" if state.down_since else ""),
                {"failed_checks": state.consecutive_failures, "down_since": iso_or_none(state.down_since)},
            )
        )
    new_state = replace(
        state,
        checks=state.checks + 1,
        first_check=state.first_check or now,
        last_check=_latest(state.last_check, now),
        last_ok=_latest(state.last_ok, now),
        consecutive_failures=0,
        down=False,
        down_since=None,
        last_error=_errors_summary(observations),
        fingerprint_missing=missing,
        expect_failing=expect_failing,
        behaviour_fingerprint=bfp,
        fingerprints=fingerprints,
        response_models=models,
        drift=drift_state,
    )
    return new_state, events


def _drift_event(model: str, finding: Finding, old_bfp: str, new_bfp: str, now: datetime) -> Event:
    moved = sorted(finding.canaries.items(), key=lambda item: -float(item[1]["tv"]))
    name, biggest = moved[0]
    before = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest["before"].items())[:2])
    after = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest["after"].items())[:2])
    how = "silently (no fingerprint or resolved-model change)" if finding.silent else "with a version change"
    summary = (
        f"{model}: canary behaviour changed {how}: about {finding.effect_size:.0%} of answers moved; "
        f"{name}: {before} -> {after}"
    )
    details = {**finding.details(), "behaviour_fingerprint": {"old": old_bfp, "new": new_bfp}}
    return Event(now, model, "canary.drift", summary, details, "critical" if finding.silent else "warning")


def behaviour_fingerprint(model: str, epoch_start: datetime) -> str:
    """`bfp_` + 10 hex: names one epoch of a model's canary behaviour; a confirmed drift starts a new one."""
    digest = hashlib.sha256(f"fpwatch-bfp-v1\n{model}\n{epoch_start.isoformat()}".encode()).hexdigest()
    return f"bfp_{digest[:10]}"


def _update_signals(
    model: str,
    current: SignalSet,
    values: Iterable[str],
    policy: Policy,
    now: datetime,
    baseline: bool,
) -> tuple[SignalSet, list[Event]]:
    first_seen_type, changed_type, reverted_type, retired_type = _EVENT_NAMES[current.kind]
    label = _LABEL[current.kind]
    seen = Counter(values)
    total = sum(seen.values())
    before = [s.value for s in current.valid()]
    signals = dict(current.signals)
    news: list[tuple[str, str]] = []  # (event type, value)
    for value, count in sorted(seen.items()):
        old = signals.get(value)
        if old is None:
            signals[value] = Signal(value, now, now, count, since=current.samples)
            news.append((first_seen_type if baseline else changed_type, value))
        else:
            if not old.valid:
                news.append((reverted_type, value))
            # max(): a check that finished earlier may commit later (two processes share the database).
            last_seen = max(old.last_seen, now)
            signals[value] = replace(old, last_seen=last_seen, count=old.count + count, misses=0, retired_at=None)
    for value, signal in signals.items():
        if value not in seen and signal.valid:
            signals[value] = replace(signal, misses=signal.misses + total)
    updated = SignalSet(current.kind, signals, current.samples + total)
    events: list[Event] = []
    valid_now = [s.value for s in updated.valid()]
    for kind, value in news:
        signal = updated.signals[value]
        details: dict[str, Any] = {
            "kind": current.kind,
            "new": value,
            "old": before,
            "valid": valid_now,
            "first_seen": iso_or_none(signal.first_seen),
            "count_this_check": seen[value],
            "samples_this_check": total,
        }
        if kind == first_seen_type:
            summary = f"{model}: {label} {value} seen (baseline)"
        elif kind == changed_type:
            summary = f"{model}: {label} changed {_list(before)} -> {value}"
        else:
            old_signal = current.signals[value]
            details["retired_at"] = iso_or_none(old_signal.retired_at)
            details["last_seen_before"] = iso_or_none(old_signal.last_seen)
            summary = f"{model}: {label} {value} is back after retiring on {human(old_signal.retired_at)} (rollback?)"
        events.append(Event(now, model, kind, summary, details))
    # Retirement: long enough unseen, and unseen often enough that chance cannot explain it.
    for value, signal in list(updated.signals.items()):
        if not signal.valid or value in seen:
            continue
        share = updated.share_since_first_seen(value)
        chance = (1.0 - share) ** signal.misses
        unseen = now - signal.last_seen
        if unseen >= policy.grace_period and (
            chance < RETIRE_SIGNIFICANCE or unseen >= RETIRE_CEILING * policy.grace_period
        ):
            signals[value] = replace(signal, retired_at=now)
            updated = SignalSet(current.kind, signals, updated.samples)
            events.append(
                Event(
                    now,
                    model,
                    retired_type,
                    f"{model}: {label} {value} retired, not seen since {human(signal.last_seen)}",
                    {
                        "kind": current.kind,
                        "value": value,
                        "last_seen": iso_or_none(signal.last_seen),
                        "share": round(share, 4),
                        "missed_samples": signal.misses,
                        "chance_of_missing": chance,
                        "valid": [s.value for s in updated.valid()],
                    },
                )
            )
    return updated, events


def _missing_event(state: ModelState, ok: Sequence[Observation], now: datetime) -> Event:
    states = Counter(o.fingerprint_state or "absent" for o in ok)
    how = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return Event(
        now,
        state.model,
        "fingerprint.missing",
        f"{state.model}: responses stopped carrying a system_fingerprint ({how})",
        {"states": dict(states), "valid": [s.value for s in state.fingerprints.valid()]},
    )


def _expectations(
    state: ModelState, ok: Sequence[Observation], policy: Policy, now: datetime
) -> tuple[frozenset[str], list[Event]]:
    """A canary fails its `expect` when most of this check's samples do not match it."""
    failing = set(state.expect_failing)
    events: list[Event] = []
    for canary, pattern in policy.expects.items():
        outputs = [(o.output or "").strip() for o in ok if o.canary == canary]
        if not outputs:
            continue
        regex = re.compile(pattern)
        misses = [text for text in outputs if not regex.search(text)]
        if len(misses) * 2 > len(outputs):
            if canary not in failing:
                examples = list(dict.fromkeys(misses))[:5]
                events.append(
                    Event(
                        now,
                        state.model,
                        "canary.failed",
                        f"{state.model}: canary {canary} no longer matches {pattern}: got {examples[0][:60]!r}",
                        {
                            "canary": canary,
                            "expect": pattern,
                            "matched": len(outputs) - len(misses),
                            "samples": len(outputs),
                            "examples": examples,
                        },
                    )
                )
            failing.add(canary)
        else:
            failing.discard(canary)
    return frozenset(failing), events


def _failed(
    state: ModelState, observations: Sequence[Observation], policy: Policy, now: datetime
) -> tuple[ModelState, list[Event]]:
    failures = state.consecutive_failures + 1
    error = _errors_summary(observations) or "no canary requests were sent"
    events = []
    down, since = state.down, state.down_since
    recent = tuple(t for t in state.recent_downs if now - t < FLAP_WINDOW)
    if not down and failures >= policy.failure_threshold:
        down, since = True, now
        recent = (*recent, now)
        summary = f"{state.model}: down, {failures} checks in a row failed: {error}"
        if len(recent) >= 2:
            summary = f"{state.model}: flapping, down {len(recent)} times within an hour: {error}"
        events.append(
            Event(
                now,
                state.model,
                "model.down",
                summary,
                {
                    "failed_checks": failures,
                    "last_error": error,
                    "last_ok": iso_or_none(state.last_ok),
                    "downs_last_hour": len(recent),
                    "flapping": len(recent) >= 2,
                },
            )
        )
    return (
        replace(
            state,
            last_check=_latest(state.last_check, now),
            consecutive_failures=failures,
            down=down,
            down_since=since,
            last_error=error,
            recent_downs=recent,
        ),
        events,
    )


def flapping(state: ModelState, now: datetime) -> int:
    """How many times the model went down within the flap window (2 or more: it is flapping)."""
    return sum(1 for t in state.recent_downs if now - t < FLAP_WINDOW)


def _errors_summary(observations: Sequence[Observation]) -> str | None:
    """The most common kind of failure, in the words of its latest message (messages carry request ids)."""
    failed = [o for o in observations if not o.ok and o.error]
    if not failed:
        return None
    kind, count = Counter(o.error_kind for o in failed).most_common(1)[0]
    text = next(o.error for o in reversed(failed) if o.error_kind == kind)
    return text if count == len(observations) else f"{text} ({count} of {len(observations)} requests)"


def _latest(old: datetime | None, now: datetime) -> datetime:
    return max(old, now) if old else now


def _list(values: Sequence[str], most: int = 3) -> str:
    if not values:
        return "(none)"
    shown = ", ".join(values[:most])
    return shown + (f" +{len(values) - most} more" if len(values) > most else "")
