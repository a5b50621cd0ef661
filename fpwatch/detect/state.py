"""A model's state between checks, and the policy a check is judged by: the values `conclude()` maps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from fpwatch.detect.borders import Borders
from fpwatch.detect.drift import CanaryKey, DriftState
from fpwatch.detect.events import EVENTS, Event
from fpwatch.detect.signals import SignalSet

# A model that goes down again within FLAP_WINDOW of an earlier outage is flapping: that second
# model.down says so, and further down/recovered alerts are held until the window is quiet.
FLAP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class ModelState:
    """Everything fpwatch remembers of one model between checks (the store keeps it; conclude() maps it)."""

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
    # (option, model id): request options (providers.capabilities) a model id rejected; kept per id, so that
    # another id under the same name (o3-mini swapped for gpt-4o in the config) starts with none.
    unsupported: frozenset[tuple[str, str]] = frozenset()
    borders: Borders | None = None  # border inputs discovered for it (None: discovery has not run)

    @property
    def drift_open(self) -> bool:
        """A confirmed canary drift nobody has acknowledged yet."""
        return self.drift.open_since is not None

    def drift_signed_off(self) -> ModelState:
        """A person acked the open canary.drift: the model leaves the `drift` state (the reference already
        follows the new behaviour)."""
        return replace(self, drift=replace(self.drift, open_since=None))

    def discovery_due(self, model_id: str, now: datetime) -> bool:
        """Should the daemon discover border inputs now? Never run, or due again (detect.borders.Borders.due)."""
        return self.borders is None or self.borders.due(self.drift.confirmed, model_id, now)

    def rejected_by(self, model_id: str) -> frozenset[str]:
        """The options this model id rejected."""
        return frozenset(option for option, rejecting in self.unsupported if rejecting == model_id)


@dataclass(frozen=True)
class Policy:
    """How a model's checks are judged: its config, as detection needs it (check.policy_for builds it)."""

    grace_period: timedelta
    learning_period: int | timedelta
    failure_threshold: int
    expects: Mapping[str, str] = field(default_factory=dict)  # canary name -> regex
    canary_keys: Mapping[str, CanaryKey] = field(default_factory=dict)  # canary name -> its drift reference


def learning(state: ModelState, policy: Policy, now: datetime) -> bool:
    """Is this model still in its learning period (its baseline) at `now`?"""
    if isinstance(policy.learning_period, int):
        return state.checks < policy.learning_period
    return state.first_check is None or now - state.first_check < policy.learning_period


def flapping(state: ModelState, now: datetime) -> int:
    """How many times the model went down within the flap window (2 or more: it is flapping)."""
    return sum(1 for t in state.recent_downs if now - t < FLAP_WINDOW)


def acknowledged(state: ModelState, event: Event) -> ModelState:
    """The state after a person acked `event`. Acking the canary.drift that opened the current `drift` state signs
    off the new behaviour (the reference already follows it): the model leaves the state; other acks change
    nothing here."""
    kind = EVENTS.get(event.type)
    opened = state.drift.open_since
    if kind is not None and kind.ack_signs_off and opened is not None and event.time >= opened:
        return state.drift_signed_off()
    return state
