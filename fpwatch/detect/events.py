"""The event vocabulary (DESIGN section 5): every event type fpwatch raises, declared once in `EVENTS`.

An entry says everything the rest of fpwatch needs to know about a type: its name and severity, the
typed details it carries (whose JSON shape the README documents, and which render themselves as the
message's facts), whether a model being down inhibits it, whether it counts as a version change (a
drift next to one is not silent), whether it is reminded while its condition stays open, which event it
resolves, whether flap damping holds it, and whether an ack signs off the state it opened. Routing,
rendering, reminders and `ack` read these flags instead of testing names. Adding an event type is one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fpwatch.clock import iso
from fpwatch.detect.drift.decide import CanaryShift
from fpwatch.detect.shaped import Shaped

SEVERITIES = ("info", "warning", "critical")


def _when(value: datetime) -> str:
    return f"{iso(value).replace('T', ' ')[:19]} UTC"


def _valid_line(valid: tuple[str, ...]) -> list[str]:
    return [f"- valid now: {', '.join(valid)}"] if valid else []


class Details(Shaped):
    """What an event carries besides its summary; subclasses are frozen dataclasses."""

    @property
    def subject(self) -> str | None:
        """What, within the model, the event is about (a canary's name), when events of one type can differ."""
        return None

    def severity(self, declared: str) -> str:
        """This event's severity; most types always have their declared one."""
        return declared

    def lines(self) -> list[str]:
        """The facts a notification shows, as Markdown list items."""
        return []


@dataclass(frozen=True)
class SignalChange(Details):
    """A fingerprint or resolved model appeared: first seen (baseline), changed (new), or reverted (back)."""

    kind: str  # "fingerprint" or "response_model"
    new: str
    old: tuple[str, ...]  # the valid set before this check
    valid: tuple[str, ...]  # the valid set after it
    first_seen: datetime | None
    count_this_check: int
    samples_this_check: int
    retired_at: datetime | None = None  # reverted only: when it had retired ...
    last_seen_before: datetime | None = None  # ... and when it was last seen before that

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.retired_at is None and self.last_seen_before is None:
            del out["retired_at"], out["last_seen_before"]  # reverted only
        return out

    def lines(self) -> list[str]:
        out = [f"- {', '.join(self.old) or '(none)'} → **{self.new}**", *_valid_line(self.valid)]
        if self.first_seen:
            out.append(f"- first seen: {_when(self.first_seen)}")
        if self.retired_at:
            out.append(f"- retired: {_when(self.retired_at)}")
        return out


@dataclass(frozen=True)
class SignalRetired(Details):
    """A value left the valid set: unseen for the grace period, and its absence significant."""

    kind: str
    value: str
    last_seen: datetime | None
    share: float  # its share of the samples since it first appeared
    missed_samples: int
    chance_of_missing: float  # (1 - share) ** missed_samples
    valid: tuple[str, ...]

    def lines(self) -> list[str]:
        return [*_valid_line(self.valid), *([f"- last seen: {_when(self.last_seen)}"] if self.last_seen else [])]


@dataclass(frozen=True)
class FingerprintMissing(Details):
    """Responses stopped carrying a fingerprint: how many came null, empty or absent."""

    states: Mapping[str, int]
    valid: tuple[str, ...]

    def lines(self) -> list[str]:
        return _valid_line(self.valid)


@dataclass(frozen=True)
class ScreenFigures(Shaped):
    """The drift screen's figures at the check that raised the drift."""

    surprise: float
    threshold: float
    logprob_change: float | None
    logprob_threshold: float
    samples: int


@dataclass(frozen=True)
class Noise(Shaped):
    """A statistic's no-change behaviour on this model: its typical value and robust spread (1.4826 x MAD)."""

    typical: float
    spread: float


@dataclass(frozen=True)
class BehaviourChange(Shaped):
    """The behaviour fingerprint before and after a confirmed drift."""

    old: str | None
    new: str | None


@dataclass(frozen=True)
class DriftDetails(Details):
    """The evidence of a confirmed canary drift (see the README's drift section for each figure)."""

    statistic: str  # "pooled_g", "g:CANARY" or "logprob"
    value: float
    threshold: float
    p_value: float | None
    screen: ScreenFigures
    effect_size: float
    silent: bool
    burst_samples: int
    confirmations: tuple[datetime, ...]
    fingerprints: tuple[str, ...]
    canaries: Mapping[str, CanaryShift]
    behaviour_fingerprint: BehaviourChange
    channel: str = "answers"  # which signal saw the change: "answers" or "logprobs" (older rows: answers)
    noise: Noise | None = None  # that channel's own noise on this model before the change
    effect: str = ""  # the change in words

    def severity(self, declared: str) -> str:
        return "critical" if self.silent else declared

    def lines(self) -> list[str]:
        """What moved, by how much, against what threshold, before and after."""
        silent = "yes: no fingerprint or resolved-model change" if self.silent else "no: a version signal changed too"
        lines = [
            *([f"- {self.effect}"] if self.effect else []),
            f"- silent: {silent}",
            f"- effect size: about {self.effect_size:.0%} of answers moved (estimated share of traffic)",
            f"- statistic: {self.statistic} {self.value} over threshold {self.threshold}"
            + (f" (p = {self.p_value:.2g})" if self.p_value is not None else ""),
        ]
        for name, c in sorted(self.canaries.items(), key=lambda item: -item[1].tv)[:4]:
            before = ", ".join(f"`{o[:40]}` {p:.0%}" for o, p in c.before.items())
            after = ", ".join(f"`{o[:40]}` {p:.0%}" for o, p in c.after.items())
            lines.append(f"- {name} (TV {c.tv}): before {before or '-'} → after {after or '-'}")
        if self.canaries:
            top = max(self.canaries.values(), key=lambda c: c.tv)
            examples = [f"`{x[:80]}`" for x in [*top.before_examples[:1], *top.after_examples[:1]]]
            if top.before_examples and top.after_examples:
                lines.append(f"- example: before {examples[0]}, after {examples[1]}")
        bfp = self.behaviour_fingerprint
        if bfp.old or bfp.new:
            lines.append(f"- behaviour fingerprint {bfp.old} → **{bfp.new}**")
        return lines


@dataclass(frozen=True)
class ExpectFailed(Details):
    """Most samples of a canary stopped matching its `expect` regex."""

    canary: str
    expect: str
    matched: int
    samples: int
    examples: tuple[str, ...]

    @property
    def subject(self) -> str | None:
        return self.canary

    def lines(self) -> list[str]:
        return ["- outputs: " + ", ".join(f"`{x[:60]}`" for x in self.examples[:3])] if self.examples else []


@dataclass(frozen=True)
class ModelDown(Details):
    """`failure_threshold` checks in a row failed; `flapping` when it went down before within the hour."""

    failed_checks: int
    last_error: str | None
    last_ok: datetime | None
    downs_last_hour: int = 1  # rows from before flap damping lack the last two
    flapping: bool = False

    def lines(self) -> list[str]:
        return [f"- last error: {self.last_error[:300]}"] if self.last_error else []


@dataclass(frozen=True)
class ModelRecovered(Details):
    """A check succeeded after `model.down`."""

    failed_checks: int
    down_since: datetime | None


@dataclass(frozen=True)
class RawDetails(Details):
    """Details of a type this fpwatch does not know (a row written by hand or by another tool): kept as is."""

    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RawDetails:
        return cls(dict(data))


class Standing(Protocol):
    """What a reminder asks of a model's state (detect.state.ModelState)."""

    @property
    def down(self) -> bool: ...

    @property
    def expect_failing(self) -> frozenset[str]: ...

    @property
    def drift_open(self) -> bool: ...


@dataclass(frozen=True)
class EventType:
    """One entry of the vocabulary."""

    name: str
    severity: str  # the declared severity (details may raise it: a silent drift is critical)
    details: type[Details]
    inhibited_while_down: bool = False  # while the model is down, the outage is the news: this is not sent
    version_change: bool = False  # changes the fingerprint valid set or the resolved model
    still_open: Callable[[Standing, Details], bool] | None = None  # reminded (repeat_interval) while this holds
    resolves: str | None = None  # goes wherever that event went; dropped with send_resolved = false
    flap_hold: int | None = None  # held from notifiers once the model went down this often within the hour
    ack_signs_off: bool = False  # acking the event that opened the model's current state ends that state

    @property
    def reminded(self) -> bool:
        return self.still_open is not None


def _down(state: Standing, details: Details) -> bool:
    return state.down


def _expect_failing(state: Standing, details: Details) -> bool:
    return details.subject in state.expect_failing


def _drift_open(state: Standing, details: Details) -> bool:
    return state.drift_open


EVENTS: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("fingerprint.first_seen", "info", SignalChange, inhibited_while_down=True),
        EventType("fingerprint.changed", "warning", SignalChange, inhibited_while_down=True, version_change=True),
        EventType("fingerprint.reverted", "critical", SignalChange, inhibited_while_down=True, version_change=True),
        EventType("fingerprint.retired", "info", SignalRetired, inhibited_while_down=True, version_change=True),
        EventType("fingerprint.missing", "info", FingerprintMissing, inhibited_while_down=True),
        EventType("model.first_seen", "info", SignalChange, inhibited_while_down=True),
        EventType("model.changed", "warning", SignalChange, inhibited_while_down=True, version_change=True),
        EventType("model.reverted", "critical", SignalChange, inhibited_while_down=True, version_change=True),
        EventType("model.retired", "info", SignalRetired, inhibited_while_down=True, version_change=True),
        EventType(
            "canary.drift",
            "warning",
            DriftDetails,
            inhibited_while_down=True,
            still_open=_drift_open,
            ack_signs_off=True,
        ),
        EventType("canary.failed", "critical", ExpectFailed, inhibited_while_down=True, still_open=_expect_failing),
        EventType("model.down", "warning", ModelDown, still_open=_down, flap_hold=3),
        EventType("model.recovered", "info", ModelRecovered, resolves="model.down", flap_hold=2),
    )
}
# The signal events by kind of signal: (first seen, changed, reverted, retired).
SIGNAL_EVENTS = {
    "fingerprint": ("fingerprint.first_seen", "fingerprint.changed", "fingerprint.reverted", "fingerprint.retired"),
    "response_model": ("model.first_seen", "model.changed", "model.reverted", "model.retired"),
}
VERSION_CHANGES = frozenset(name for name, t in EVENTS.items() if t.version_change)
REMINDED = tuple(name for name, t in EVENTS.items() if t.reminded)


def details_from_json(event_type: str, data: Mapping[str, Any]) -> Details:
    """The typed details of a stored event (an unknown type keeps its JSON as is)."""
    known = EVENTS.get(event_type)
    return known.details.from_json(data) if known is not None else RawDetails.from_json(data)


@dataclass(frozen=True)
class Event:
    """Something fpwatch concluded about a model (stored forever; the input to notifications)."""

    time: datetime
    model: str
    type: str
    summary: str
    details: Details
    severity: str = ""  # from the registry (and the details) unless given: a stored row keeps its own

    def __post_init__(self) -> None:
        if not self.severity:
            object.__setattr__(self, "severity", self.details.severity(EVENTS[self.type].severity))

    @property
    def kind(self) -> EventType | None:
        """This event's entry in the vocabulary (None for a type this fpwatch does not know)."""
        return EVENTS.get(self.type)
