"""Version signals and the grace window (DESIGN section 5): fingerprints and resolved model names, their valid
sets, and the events a check's values raise.

The valid set of a model is every value that has not retired. A value retires once it has not been
seen for `grace_period` **and** the samples taken since make its absence significant given its
historical share: the chance of missing it that often by luck, (1 - share) ** misses, is under 1%.
A rare replica is therefore not retired by chance and then reported as a rollback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from fpwatch.clock import human
from fpwatch.detect.events import SIGNAL_EVENTS, Event, SignalChange, SignalRetired

SignalKind = Literal["fingerprint", "response_model"]
RETIRE_SIGNIFICANCE = 0.01
# A value seen only a handful of times can never make its absence significant (the chance settles
# near e**-count): after this many grace periods unseen it retires anyway.
RETIRE_CEILING = 7
LABEL = {"fingerprint": "fingerprint", "response_model": "resolved model"}


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


def update_signals(
    model: str,
    current: SignalSet,
    values: Iterable[str],
    grace_period: timedelta,
    now: datetime,
    baseline: bool,
) -> tuple[SignalSet, list[Event]]:
    """Count one check's values of a signal; return the updated set and its events (new, back, retired)."""
    first_seen_type, changed_type, reverted_type, retired_type = SIGNAL_EVENTS[current.kind]
    label = LABEL[current.kind]
    seen = Counter(values)
    total = sum(seen.values())
    before = [s.value for s in current.valid()]
    signals = dict(current.signals)
    nothing_before = not signals
    news: list[tuple[str, str]] = []  # (event type, value)
    for value, count in sorted(seen.items()):
        old = signals.get(value)
        if old is None:
            signals[value] = Signal(value, now, now, count, since=current.samples)
            # No earlier value (a model whose answers never carried this signal, or one whose fpwatch only now reads
            # it, as an upgrade to a derived fingerprint does): there is nothing it changed from.
            news.append((first_seen_type if baseline or nothing_before else changed_type, value))
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
        details = SignalChange(
            current.kind,
            value,
            tuple(before),
            tuple(valid_now),
            updated.signals[value].first_seen,
            seen[value],
            total,
        )
        if kind == first_seen_type:
            summary = f"{model}: {label} {value} seen (baseline)"
        elif kind == changed_type:
            summary = f"{model}: {label} changed {_list(before)} -> {value}"
        else:
            old_signal = current.signals[value]
            details = replace(details, retired_at=old_signal.retired_at, last_seen_before=old_signal.last_seen)
            summary = f"{model}: {label} {value} is back after retiring on {human(old_signal.retired_at)} (rollback?)"
        events.append(Event(now, model, kind, summary, details))
    # Retirement: long enough unseen, and unseen often enough that chance cannot explain it.
    for value, signal in list(updated.signals.items()):
        if not signal.valid or value in seen:
            continue
        share = updated.share_since_first_seen(value)
        chance = (1.0 - share) ** signal.misses
        unseen = now - signal.last_seen
        if unseen >= grace_period and (chance < RETIRE_SIGNIFICANCE or unseen >= RETIRE_CEILING * grace_period):
            signals[value] = replace(signal, retired_at=now)
            updated = SignalSet(current.kind, signals, updated.samples)
            events.append(
                Event(
                    now,
                    model,
                    retired_type,
                    f"{model}: {label} {value} retired, not seen since {human(signal.last_seen)}",
                    SignalRetired(
                        current.kind,
                        value,
                        signal.last_seen,
                        round(share, 4),
                        signal.misses,
                        chance,
                        tuple(s.value for s in updated.valid()),
                    ),
                )
            )
    return updated, events


def _list(values: Sequence[str], most: int = 3) -> str:
    if not values:
        return "(none)"
    shown = ", ".join(values[:most])
    return shown + (f" +{len(values) - most} more" if len(values) > most else "")
