"""What the HTML report shows of each model over a window of time, gathered from the store and reduced to a chart's
worth: fingerprint shares per time bucket, the resolved-model and behaviour-fingerprint epochs, the drift screens
against their thresholds, and the events.

The store counts the requests per model and time step (store/history.py: however many there were, what comes back
is bounded by the window, not by the traffic); here they are summed into BUCKETS buckets across the window, the
drift screens of the checks kept at their worst per finer bucket. 90 days of 20 models checked every 15 minutes
(172,800 checks) become 360 buckets of 6 hours per model: a page of the same size as one of a day's history.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fpwatch.config import ModelConfig
from fpwatch.detect.events import DriftDetails
from fpwatch.detect.state import ModelState
from fpwatch.report.summary import model_summary
from fpwatch.store import Store, StoredEvent
from fpwatch.store.history import finest_step
from fpwatch.store.protocol import AnswerCount, DriftScreen

BUCKETS = 360  # share buckets across the window (90 days: 6 hours each; a day: 4 minutes)
SCREEN_SPLIT = 2  # the drift screens are kept per half a share bucket, the most alarming check of each
STACKED = 8  # values stacked per model, by requests; the rest are summed as OTHER
NONE, FAILED, OTHER = "(none)", "(failed)", "(other)"  # answered without the signal, failed, the rest
EVENTS_MAX = 500  # the newest events per model that the page carries (each with its details)


@dataclass(frozen=True)
class Window:
    """The time the report covers, cut into buckets of `width`, the first starting at `start` (aligned on the
    store's step, so that no step straddles two buckets)."""

    start: datetime
    end: datetime
    width: timedelta
    step: timedelta

    @classmethod
    def of(cls, start: datetime, end: datetime, buckets: int = BUCKETS, at_least: timedelta = timedelta(0)) -> Window:
        """About `buckets` buckets from `start` to `end`, each `at_least` wide (a bucket narrower than the time
        between two checks would leave every other one empty)."""
        span = max(end - start, timedelta(seconds=buckets))  # at least a second a bucket
        wanted = max(span / buckets, at_least)
        step = finest_step(wanted)
        width = step * math.ceil(wanted / step)
        aligned = datetime.fromtimestamp(
            math.floor(start.timestamp() / step.total_seconds()) * step.total_seconds(), UTC
        )
        return cls(aligned, max(end, aligned + step), width, step)  # the last bucket ends now

    @property
    def buckets(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.width))

    def bucket(self, time: datetime) -> int:
        """The bucket a time falls in (clamped to the window)."""
        return min(self.buckets - 1, max(0, int((time - self.start) / self.width)))

    def starts(self) -> list[datetime]:
        return [self.start + i * self.width for i in range(self.buckets)]


def span_text(span: timedelta) -> str:
    """ "6 h", "30 min", "2 s": a bucket's width in words."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Shares:
    """A signal's share of the requests per bucket, stacked (they add up to 1 where there were requests)."""

    signal: str  # "fingerprint", or "resolved model" for a model whose responses carry no fingerprint
    values: Mapping[str, list[float]]  # label -> share per bucket, most requested first; NONE, OTHER, FAILED last
    requests: list[int]  # per bucket


@dataclass(frozen=True)
class Epoch:
    """A stretch of time over which a model showed one value (a resolved model, a behaviour fingerprint); epochs
    that overlap (a rollout) get different lanes."""

    value: str
    start: datetime
    end: datetime
    lane: int = 0


@dataclass(frozen=True)
class Screens:
    """The drift screens of the model's checks, the worst per screen bucket: the answers' surprise against its
    threshold, and the logprob statistic against its own (None where the model gives no logprobs)."""

    times: list[datetime] = field(default_factory=list)
    surprise: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    logprob: list[float | None] = field(default_factory=list)
    logprob_threshold: list[float] = field(default_factory=list)
    checks: int = 0  # screens read from the store (at most one a step)


@dataclass(frozen=True)
class ModelHistory:
    summary: Mapping[str, Any]  # the model as `status --json` shows it (report.summary.model_summary)
    shares: Shares
    resolved: list[Epoch]
    behaviour: list[Epoch]
    screens: Screens
    events: list[StoredEvent]  # oldest first
    events_left_out: int = 0  # older events of the window than the page carries

    @property
    def name(self) -> str:
        return str(self.summary["name"])


@dataclass(frozen=True)
class History:
    window: Window
    models: list[ModelHistory]
    generated: datetime


async def gather(store: Store | None, models: Sequence[ModelConfig], since: datetime, now: datetime) -> History:
    """Each model's history since `since` (from its first check, if later), as the report shows it."""
    states = {m.name: await store.load_state(m.name) if store else ModelState(m.name) for m in models}
    firsts = [s.first_check for s in states.values() if s.first_check is not None]
    intervals = [m.interval for m in models if m.interval is not None]
    window = Window.of(max(since, min(firsts, default=now)), now, at_least=2 * max(intervals, default=timedelta(0)))
    wanted = set(states)
    counts = await store.answer_counts(window.start, window.step) if store else []
    screens = await store.drift_screens(window.start, finest_step(window.width / SCREEN_SPLIT)) if store else []
    events = await store.events(since=window.start) if store else []
    counted: dict[str, list[AnswerCount]] = defaultdict(list)
    for c in counts:
        if c.model in wanted:
            counted[c.model].append(c)
    screened: dict[str, list[DriftScreen]] = defaultdict(list)
    for s in screens:
        if s.model in wanted:
            screened[s.model].append(s)
    happened: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in events:
        if e.event.model in wanted:
            happened[e.event.model].append(e)
    out = []
    for model in models:
        state, mine = states[model.name], happened[model.name]
        out.append(
            ModelHistory(
                summary=model_summary(model, state, now),
                shares=shares(window, counted[model.name]),
                resolved=resolved_epochs(window, counted[model.name]),
                behaviour=behaviour_epochs(window, state, mine),
                screens=screen_series(window, screened[model.name]),
                events=mine[-EVENTS_MAX:],
                events_left_out=max(0, len(mine) - EVENTS_MAX),
            )
        )
    return History(window, out, now)


def shares(window: Window, counts: Sequence[AnswerCount]) -> Shares:
    """Fingerprint shares per bucket; resolved-model shares for a model whose answers carry no fingerprint."""
    has_fingerprints = any(c.ok and c.system_fingerprint for c in counts)
    signal = "fingerprint" if has_fingerprints or not counts else "resolved model"
    per: dict[str, list[int]] = defaultdict(lambda: [0] * window.buckets)
    requests = [0] * window.buckets
    for c in counts:
        i = window.bucket(c.step)
        value = c.system_fingerprint if has_fingerprints else c.response_model
        label = FAILED if not c.ok else value or NONE
        per[label][i] += c.count
        requests[i] += c.count
    ranked = sorted((v for v in per if v not in (NONE, FAILED)), key=lambda v: (-sum(per[v]), v))
    stacked, rest = ranked[:STACKED], ranked[STACKED:]
    if rest:
        per[OTHER] = [sum(per[v][i] for v in rest) for i in range(window.buckets)]
    labels = [*stacked, *(label for label in (NONE, OTHER, FAILED) if label in per)]
    values = {
        label: [n / total if total else 0.0 for n, total in zip(per[label], requests, strict=True)] for label in labels
    }
    return Shares(signal, values, requests)


def resolved_epochs(window: Window, counts: Sequence[AnswerCount]) -> list[Epoch]:
    """Each resolved model's runs of buckets: a run goes on while every bucket with answers shows the value (a
    bucket without answers, the model down or unchecked, does not end it)."""
    seen: dict[str, set[int]] = defaultdict(set)
    answered: set[int] = set()
    for c in counts:
        if c.ok:
            i = window.bucket(c.step)
            answered.add(i)
            if c.response_model:
                seen[c.response_model].add(i)
    order = sorted(answered)
    epochs = []
    for value, buckets in seen.items():
        run: list[int] = []
        for i in order:
            if i in buckets:
                run.append(i)
            elif run:
                epochs.append(_epoch(window, value, run))
                run = []
        if run:
            epochs.append(_epoch(window, value, run))
    return lanes(sorted(epochs, key=lambda e: (e.start, e.value)))


def _epoch(window: Window, value: str, run: Sequence[int]) -> Epoch:
    return Epoch(
        value, window.start + run[0] * window.width, min(window.end, window.start + (run[-1] + 1) * window.width)
    )


def lanes(epochs: Sequence[Epoch]) -> list[Epoch]:
    """Each epoch in the first lane free at its start (epochs sorted by start)."""
    ends: list[datetime] = []
    out = []
    for e in epochs:
        lane = next((i for i, end in enumerate(ends) if end <= e.start), len(ends))
        if lane == len(ends):
            ends.append(e.end)
        ends[lane] = e.end
        out.append(Epoch(e.value, e.start, e.end, lane))
    return out


def behaviour_epochs(window: Window, state: ModelState, events: Sequence[StoredEvent]) -> list[Epoch]:
    """The behaviour fingerprint's epochs: each confirmed drift ends one and starts the next."""
    if state.behaviour_fingerprint is None or state.first_check is None:
        return []
    start = max(window.start, state.first_check)
    end = max(start, min(window.end, state.last_check or window.end))
    epochs = []
    for stored in events:
        details = stored.event.details
        if not isinstance(details, DriftDetails):
            continue
        at = stored.event.time
        if details.behaviour_fingerprint.old is not None:
            epochs.append(Epoch(details.behaviour_fingerprint.old, start, at))
        start = at
    epochs.append(Epoch(state.behaviour_fingerprint, start, end))
    return epochs


def screen_series(window: Window, screens: Sequence[DriftScreen]) -> Screens:
    """The drift screens, the most alarming check per screen bucket (half a share bucket: the store has kept the
    most alarming one per step already), with that check's thresholds."""
    fine = Window(window.start, window.end, window.width / SCREEN_SPLIT, window.step)
    worst: dict[int, DriftScreen] = {}
    for s in screens:
        key = fine.bucket(s.time)
        if key not in worst or _alarm(s) > _alarm(worst[key]):
            worst[key] = s
    out = Screens(checks=len(screens))
    for key in sorted(worst):
        f = worst[key].figures
        out.times.append(worst[key].time)
        out.surprise.append(f.surprise)
        out.threshold.append(f.threshold)
        out.logprob.append(f.logprob_change)
        out.logprob_threshold.append(f.logprob_threshold)
    return out


def _alarm(s: DriftScreen) -> float:
    """How far past its threshold the screen came on either channel (it hits above 1), as the store ranks them."""
    f = s.figures
    return max(f.surprise / f.threshold, (f.logprob_change or 0.0) / f.logprob_threshold)
