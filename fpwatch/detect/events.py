"""The event vocabulary (DESIGN section 5): every event type fpwatch raises, declared once in `EVENTS`.

An entry says everything the rest of fpwatch needs to know about a type: its name and severity, the
typed details it carries (whose JSON shape the README documents, and which render themselves as the
message's facts), whether a model being down inhibits it, whether it counts as a version change (a
drift next to one is not silent), whether it is reminded while its condition stays open, which event it
resolves, and whether flap damping holds it. Routing, rendering, reminders, the exit status and the CLI
read these flags; none of them tests an event's name. Adding an event type is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fpwatch.clock import iso, iso_or_none, parse_iso, parse_iso_or_none
from fpwatch.detect.drift.decide import CanaryShift
from fpwatch.detect.shaped import Shaped

SEVERITIES = ("info", "warning", "critical")


def _when(value: datetime) -> str:
    return f"{iso(value).replace('T', ' ')[:19]} UTC"


def _valid_line(valid: tuple[str, ...]) -> list[str]:
    return [f"- valid now: {', '.join(valid)}"] if valid else []


class Details(Shaped):
    """What an event carries besides its summary; subclasses are frozen dataclasses."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Details:
        raise NotImplementedError

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
        out: dict[str, Any] = {
            "kind": self.kind,
            "new": self.new,
            "old": list(self.old),
            "valid": list(self.valid),
            "first_seen": iso_or_none(self.first_seen),
            "count_this_check": self.count_this_check,
            "samples_this_check": self.samples_this_check,
        }
        if self.retired_at is not None or self.last_seen_before is not None:
            out.update(retired_at=iso_or_none(self.retired_at), last_seen_before=iso_or_none(self.last_seen_before))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignalChange:
        return cls(
            str(data.get("kind", "")),
            str(data.get("new", "")),
            tuple(data.get("old") or ()),
            tuple(data.get("valid") or ()),
            parse_iso_or_none(data.get("first_seen")),
            int(data.get("count_this_check", 0)),
            int(data.get("samples_this_check", 0)),
            parse_iso_or_none(data.get("retired_at")),
            parse_iso_or_none(data.get("last_seen_before")),
        )

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

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "last_seen": iso_or_none(self.last_seen),
            "share": self.share,
            "missed_samples": self.missed_samples,
            "chance_of_missing": self.chance_of_missing,
            "valid": list(self.valid),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignalRetired:
        return cls(
            str(data.get("kind", "")),
            str(data.get("value", "")),
            parse_iso_or_none(data.get("last_seen")),
            float(data.get("share", 0.0)),
            int(data.get("missed_samples", 0)),
            float(data.get("chance_of_missing", 0.0)),
            tuple(data.get("valid") or ()),
        )

    def lines(self) -> list[str]:
        return [*_valid_line(self.valid), *([f"- last seen: {_when(self.last_seen)}"] if self.last_seen else [])]


@dataclass(frozen=True)
class FingerprintMissing(Details):
    """Responses stopped carrying a fingerprint: how many came null, empty or absent."""

    states: Mapping[str, int]
    valid: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"states": dict(self.states), "valid": list(self.valid)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FingerprintMissing:
        return cls(dict(data.get("states") or {}), tuple(data.get("valid") or ()))

    def lines(self) -> list[str]:
        return _valid_line(self.valid)


@dataclass(frozen=True)
class ScreenFigures:
    """The drift screen's figures at the check that raised the drift."""

    surprise: float
    threshold: float
    logprob_change: float | None
    logprob_threshold: float
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "surprise": self.surprise,
            "threshold": self.threshold,
            "logprob_change": self.logprob_change,
            "logprob_threshold": self.logprob_threshold,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScreenFigures:
        change = data.get("logprob_change")
        return cls(
            float(data.get("surprise", 0.0)),
            float(data.get("threshold", 0.0)),
            None if change is None else float(change),
            float(data.get("logprob_threshold", 0.0)),
            int(data.get("samples", 0)),
        )


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
    behaviour_fingerprint: tuple[str | None, str | None]  # (old, new)

    def to_json(self) -> dict[str, Any]:
        old, new = self.behaviour_fingerprint
        return {
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "screen": self.screen.to_json(),
            "effect_size": self.effect_size,
            "silent": self.silent,
            "burst_samples": self.burst_samples,
            "confirmations": [iso(t) for t in self.confirmations],
            "fingerprints": list(self.fingerprints),
            "canaries": {name: shift.to_json() for name, shift in self.canaries.items()},
            "behaviour_fingerprint": {"old": old, "new": new},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftDetails:
        bfp = data.get("behaviour_fingerprint") or {}
        p_value = data.get("p_value")
        return cls(
            str(data.get("statistic", "")),
            float(data.get("value", 0.0)),
            float(data.get("threshold", 0.0)),
            None if p_value is None else float(p_value),
            ScreenFigures.from_json(data.get("screen") or {}),
            float(data.get("effect_size", 0.0)),
            bool(data.get("silent", False)),
            int(data.get("burst_samples", 0)),
            tuple(parse_iso(t) for t in data.get("confirmations") or ()),
            tuple(data.get("fingerprints") or ()),
            {name: CanaryShift.from_json(c) for name, c in (data.get("canaries") or {}).items()},
            (bfp.get("old"), bfp.get("new")),
        )

    def severity(self, declared: str) -> str:
        return "critical" if self.silent else declared

    def lines(self) -> list[str]:
        """What moved, by how much, against what threshold, before and after."""
        silent = "yes: no fingerprint or resolved-model change" if self.silent else "no: a version signal changed too"
        lines = [
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
            examples = [f"`{x[:80]}`" for x in top.before_examples[:1]] + [
                f"`{x[:80]}`" for x in top.after_examples[:1]
            ]
            if len(examples) == 2:
                lines.append(f"- example: before {examples[0]}, after {examples[1]}")
        old, new = self.behaviour_fingerprint
        if old or new:
            lines.append(f"- behaviour fingerprint {old} → **{new}**")
        return lines


@dataclass(frozen=True)
class ExpectFailed(Details):
    """Most samples of a canary stopped matching its `expect` regex."""

    canary: str
    expect: str
    matched: int
    samples: int
    examples: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "canary": self.canary,
            "expect": self.expect,
            "matched": self.matched,
            "samples": self.samples,
            "examples": list(self.examples),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExpectFailed:
        return cls(
            str(data.get("canary", "")),
            str(data.get("expect", "")),
            int(data.get("matched", 0)),
            int(data.get("samples", 0)),
            tuple(data.get("examples") or ()),
        )

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
    downs_last_hour: int
    flapping: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "failed_checks": self.failed_checks,
            "last_error": self.last_error,
            "last_ok": iso_or_none(self.last_ok),
            "downs_last_hour": self.downs_last_hour,
            "flapping": self.flapping,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelDown:
        return cls(
            int(data.get("failed_checks", 0)),
            data.get("last_error"),
            parse_iso_or_none(data.get("last_ok")),
            int(data.get("downs_last_hour", 1)),
            bool(data.get("flapping", False)),
        )

    def lines(self) -> list[str]:
        return [f"- last error: {self.last_error[:300]}"] if self.last_error else []


@dataclass(frozen=True)
class ModelRecovered(Details):
    """A check succeeded after `model.down`."""

    failed_checks: int
    down_since: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"failed_checks": self.failed_checks, "down_since": iso_or_none(self.down_since)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRecovered:
        return cls(int(data.get("failed_checks", 0)), parse_iso_or_none(data.get("down_since")))


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
        EventType("canary.drift", "warning", DriftDetails, inhibited_while_down=True, still_open=_drift_open),
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
