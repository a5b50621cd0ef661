"""Health, pure: failed checks, model.down (with flap damping), model.recovered, and failing `expect`s."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from fpwatch.clock import human
from fpwatch.detect.events import Event, ExpectFailed, ModelDown, ModelRecovered
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import FLAP_WINDOW, ModelState, Policy


def failed(
    state: ModelState, observations: Sequence[Observation], policy: Policy, now: datetime
) -> tuple[ModelState, list[Event]]:
    failures = state.consecutive_failures + 1
    error = errors_summary(observations) or "no canary requests were sent"
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
                ModelDown(failures, error, state.last_ok, len(recent), len(recent) >= 2),
            )
        )
    return (
        replace(
            state,
            last_check=latest(state.last_check, now),
            consecutive_failures=failures,
            down=down,
            down_since=since,
            last_error=error,
            recent_downs=recent,
        ),
        events,
    )


def recovered(state: ModelState, now: datetime) -> Event:
    """model.recovered: a check succeeded while the model was down."""
    since = f" (down since {human(state.down_since)})" if state.down_since else ""
    return Event(
        now,
        state.model,
        "model.recovered",
        f"{state.model}: recovered after {state.consecutive_failures} failed checks{since}",
        ModelRecovered(state.consecutive_failures, state.down_since),
    )


def expectations(
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
                        ExpectFailed(canary, pattern, len(outputs) - len(misses), len(outputs), tuple(examples)),
                    )
                )
            failing.add(canary)
        else:
            failing.discard(canary)
    return frozenset(failing), events


def errors_summary(observations: Sequence[Observation]) -> str | None:
    """The most common kind of failure, in the words of its latest message (messages carry request ids)."""
    failed = [o for o in observations if not o.ok and o.error]
    if not failed:
        return None
    kind, count = Counter(o.error_kind for o in failed).most_common(1)[0]
    text = next(o.error for o in reversed(failed) if o.error_kind == kind)
    return text if count == len(observations) else f"{text} ({count} of {len(observations)} requests)"


def latest(old: datetime | None, now: datetime) -> datetime:
    """The later of the two (a check that finished earlier may commit later: two processes share the state)."""
    return max(old, now) if old else now
