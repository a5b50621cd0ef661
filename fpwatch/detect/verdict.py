"""The verdict on a model: its state label (learning, ok, drift, down, ...) and the monitoring-plugin status
that `fpwatch check` exits with (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; the worst applies)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from fpwatch.clock import human
from fpwatch.detect.events import Event
from fpwatch.detect.state import ModelState, Policy, learning

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# "The worst applies": a critical finding is never hidden by another model being unreachable,
# and an unreachable model is never hidden by a mere warning.
_RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
_BY_SEVERITY = {"info": OK, "warning": WARNING, "critical": CRITICAL}


def worst(codes: Iterable[int]) -> int:
    return max(codes, key=_RANK.__getitem__, default=OK)


def status(state: ModelState, events: Sequence[Event], error: str | None) -> int:
    """A check's status: its events' severities, what stays open until it resolves or is acked, and errors."""
    codes = [OK, *(_BY_SEVERITY.get(e.severity, OK) for e in events)]
    if state.expect_failing:
        codes.append(CRITICAL)  # a failing expect stays CRITICAL until it matches again
    if state.drift_open:  # a drift stays at its severity until someone acks it
        codes.append(CRITICAL if state.drift.open_silent else WARNING)
    if error:
        codes.append(UNKNOWN)
    return worst(codes)


def stale(state: ModelState, policy: Policy, now: datetime) -> bool:
    """No successful check for longer than the grace period: what we know may no longer hold."""
    return state.last_ok is not None and now - state.last_ok > policy.grace_period


def state_label(state: ModelState, policy: Policy, now: datetime) -> str:
    """learning, ok, drift, down, failing (never succeeded yet) or stale: what `status` shows."""
    if state.down:
        return "down"
    if state.checks == 0 and state.consecutive_failures:
        return "failing"
    if stale(state, policy, now):
        return "stale"
    if state.drift_open:
        return "drift"  # until a person acks the canary.drift event
    if learning(state, policy, now) or state.drift.learning(policy.canary_keys.values()):
        return "learning"
    return "ok"


def vouch(state: ModelState, policy: Policy, fingerprint: str, now: datetime) -> tuple[bool, str]:
    """`fpwatch verify`: is this fingerprint in the model's valid set, as of a check recent enough to say so?"""
    signal = state.fingerprints.signals.get(fingerprint)
    if signal is None:
        return False, f"{fingerprint} has never been seen for {state.model}"
    if not signal.valid:
        return False, f"{fingerprint} is not valid for {state.model}: retired {human(signal.retired_at)}"
    if state.last_ok is None or stale(state, policy, now):
        return False, (
            f"cannot vouch for {fingerprint}: {state.model} has not been checked successfully since "
            f"{human(state.last_ok)}, longer than its grace period; run `fpwatch check {state.model}` first"
        )
    return True, (
        f"{fingerprint} is valid for {state.model}: last seen {human(signal.last_seen)}, "
        f"in the valid set at the last check ({human(state.last_ok)})"
    )
