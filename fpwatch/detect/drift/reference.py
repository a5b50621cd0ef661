"""What drift detection remembers of a model: per-canary references of outcomes and logprobs, the window of
latest checks, and the history of its own statistics (the model's noise). Also how samples compare with
a reference: contingency tables per fingerprint stratum, and LT's logprob change.

The drift state's JSON form (`DriftState.to_json`) is what the store keeps per model; it is versioned.
"""

from __future__ import annotations

import functools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from fpwatch.clock import iso, parse_iso
from fpwatch.detect.drift.statistics import HISTORY_MIN, Table
from fpwatch.detect.observation import Observation

REFERENCE_MIN = 16  # samples per canary before the model leaves `learning` for drift ...
LEARNING_CHECKS = 4  # ... and checks: a canary with many samples gets a reference of many samples
REFERENCE_MAX = 240  # samples per canary kept as the reference, oldest dropped first
STRATUM_MIN = 30  # reference samples a fingerprint needs to get its own stratum
TOP_TOKENS = 5  # top-k tokens kept per sample (logprobs rounded to 1e-3; the jitter is larger)
LOGPROB_TOKENS = 3  # the logprob statistic compares the reference's 3 most likely first tokens
OUTCOME_WORDS = 8  # an outcome is the answer's first words ...
OUTCOME_CHARS = 64  # ... at most this long
EXAMPLE_CHARS = 200
CHI2_MEDIAN_RATIO = 0.93  # median of chi-square(df) / df for the usual 5-15 degrees of freedom
MAX_DISPERSION = 10.0


# --- samples ------------------------------------------------------------------------------------------------


class CanaryKey(NamedTuple):
    """Which reference a canary's samples belong to: the canary's name, and a digest of the request it sends
    (so an edited canary, or the same canary sent to another model id, relearns instead of alarming). A tuple:
    it keys every count of the screen, and hashes and compares at C speed."""

    name: str
    request: str = ""  # the digest; empty where nothing needs telling apart (synthetic streams)

    def __str__(self) -> str:
        """The stored form, "name#digest" (a reference key in the drift state's JSON)."""
        return f"{self.name}#{self.request}" if self.request else self.name

    @classmethod
    def parse(cls, text: str) -> CanaryKey:
        name, hashed, request = text.rpartition("#")
        return cls(name, request) if hashed else cls(text)


def outcome(output: str | None) -> str:
    """The categorical outcome of one answer: its first words, whitespace-normalised.

    Long answers reproduce exactly only ~7% of the time at temperature 0 and diverge late, so the
    whole text would make every sample its own category; the first words are what short canaries
    are about, and where a changed model shows first.
    """
    words = (output or "").split()
    return " ".join(words[:OUTCOME_WORDS])[:OUTCOME_CHARS]


@dataclass(frozen=True)
class Sample:
    key: CanaryKey
    outcome: str
    fingerprint: str = ""  # "" when the response carried none
    top: Mapping[str, float] | None = None  # the first token's top-k logprobs, when given
    text: str = ""  # the answer, cut to EXAMPLE_CHARS (examples only; not kept in the state)


def samples_from(observations: Iterable[Observation], keys: Mapping[str, CanaryKey]) -> list[Sample]:
    """The successful observations of known canaries as samples (`keys`: canary name -> its key)."""
    out = []
    for o in observations:
        key = keys.get(o.canary)
        if not o.ok or key is None:
            continue
        top: dict[str, float] | None = None
        if o.first_token is not None:
            top = dict(o.first_token.top) or {o.first_token.token: o.first_token.logprob}
            top.setdefault(o.first_token.token, o.first_token.logprob)
            top = {t: round(v, 3) for t, v in sorted(top.items(), key=lambda item: -item[1])[:TOP_TOKENS]}
        out.append(Sample(key, outcome(o.output), o.system_fingerprint or "", top, (o.output or "")[:EXAMPLE_CHARS]))
    return out


# --- state --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One canary's learned behaviour."""

    samples: tuple[tuple[str, str], ...] = ()  # (fingerprint, outcome), oldest first
    logprobs: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # token -> (running mean, weight)
    examples: Mapping[str, str] = field(default_factory=dict)  # outcome -> one full answer seen with it

    def __len__(self) -> int:
        return len(self.samples)

    def add(self, new: Sequence[Sample]) -> Reference:
        samples = (*self.samples, *((s.fingerprint, s.outcome) for s in new))[-REFERENCE_MAX:]
        logprobs = dict(self.logprobs)
        for s in new:
            if s.top:
                logprobs = _update_logprobs(logprobs, s.top)
        examples = dict(self.examples)
        for s in new:
            if s.text:
                examples[s.outcome] = s.text
        live = {o for _, o in samples}
        return Reference(samples, logprobs, {o: t for o, t in examples.items() if o in live})

    def distribution(self) -> dict[str, float]:
        return {o: n / len(self.samples) for o, n in self.counts.items()} if self.samples else {}

    @functools.cached_property
    def counts(self) -> Counter[str]:
        """Outcome counts over every reference sample (the pooled stratum)."""
        return Counter(o for _, o in self.samples)

    @functools.cached_property
    def strata(self) -> dict[str, Counter[str]]:
        """Outcome counts per fingerprint that has STRATUM_MIN samples or more: those compare with themselves."""
        by_fp: dict[str, Counter[str]] = {}
        for fp, o in self.samples:
            if fp:
                by_fp.setdefault(fp, Counter())[o] += 1
        return {fp: c for fp, c in by_fp.items() if c.total() >= STRATUM_MIN}

    def stratum(self, fingerprint: str) -> str:
        """The stratum a sample with this fingerprint is compared in: its own, or the pool ("")."""
        return fingerprint if fingerprint in self.strata else ""

    def stratum_counts(self, stratum: str) -> Counter[str]:
        return self.strata[stratum] if stratum else self.counts


@dataclass(frozen=True)
class WindowCheck:
    time: datetime
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class DriftState:
    references: Mapping[CanaryKey, Reference] = field(default_factory=dict)
    window: tuple[WindowCheck, ...] = ()  # the latest checks, not yet part of the reference
    screens: tuple[float, ...] = ()  # history of the screen's surprise
    logprob_screens: tuple[float, ...] = ()  # history of the logprob statistic
    ratios: tuple[float, ...] = ()  # history of G / df of single checks: how over-dispersed serving is
    signal_changes: tuple[datetime, ...] = ()  # recent changes of the valid set or resolved model
    open_since: datetime | None = None  # a confirmed drift nobody has acknowledged yet
    open_silent: bool = False  # ... and whether it was silent (what `check` keeps exiting with until the ack)
    pending: datetime | None = None  # a burst confirmed weakly: the next check's burst must confirm too
    learned: int = 0  # checks folded into the reference while learning (since the last confirmed drift)
    screen_hits: int = 0
    bursts: int = 0
    confirmed: int = 0

    def dispersion(self) -> float:
        """How much more single checks differ from the reference than independent samples would (at least 1).

        Serving noise depends on load: answers within one moment (a check and its burst) are alike and
        moments differ. The G statistic of one check against the reference is then inflated by a factor;
        its median over the model's history, against chi-square's (about 0.93 per degree of freedom),
        estimates it, and the confirmation divides the burst's G by it (quasi-likelihood).
        """
        if len(self.ratios) < HISTORY_MIN:
            return 1.0
        return min(MAX_DISPERSION, max(1.0, statistics.median(self.ratios) / CHI2_MEDIAN_RATIO))

    def mature(self, key: CanaryKey) -> bool:
        """Does this canary have a reference to judge by? (Each canary learns on its own.)"""
        return self.learned >= LEARNING_CHECKS and len(self.references.get(key, EMPTY)) >= REFERENCE_MIN

    def learning(self, keys: Iterable[CanaryKey]) -> bool:
        return not all(self.mature(k) for k in keys)

    def reference_samples(self, keys: Iterable[CanaryKey]) -> int:
        """The smallest reference among these canaries (what `status` shows while learning)."""
        return min((len(self.references.get(k, EMPTY)) for k in keys), default=0)

    def to_json(self) -> dict[str, Any]:
        refs = {}
        for key, ref in self.references.items():
            fps = sorted({f for f, _ in ref.samples})
            outs = sorted({o for _, o in ref.samples})
            fi, oi = {f: i for i, f in enumerate(fps)}, {o: i for i, o in enumerate(outs)}
            refs[str(key)] = {
                "fingerprints": fps,
                "outcomes": outs,
                "samples": [[fi[f], oi[o]] for f, o in ref.samples],
                "logprobs": {t: [round(m, 5), n] for t, (m, n) in ref.logprobs.items()},
                "examples": dict(ref.examples),
            }
        return {
            "v": 1,
            "references": refs,
            "window": [
                {"time": iso(w.time), "samples": [[str(s.key), s.fingerprint, s.outcome, s.top] for s in w.samples]}
                for w in self.window
            ],
            "screens": [round(x, 4) for x in self.screens],
            "logprob_screens": [round(x, 5) for x in self.logprob_screens],
            "ratios": [round(x, 4) for x in self.ratios],
            "signal_changes": [iso(t) for t in self.signal_changes],
            "open_since": iso(self.open_since) if self.open_since else None,
            "open_silent": self.open_silent,
            "pending": iso(self.pending) if self.pending else None,
            "counts": [self.learned, self.screen_hits, self.bursts, self.confirmed],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftState:
        if not data:
            return cls()
        refs = {}
        for key, r in data["references"].items():
            fps, outs = r["fingerprints"], r["outcomes"]
            refs[CanaryKey.parse(key)] = Reference(
                tuple((fps[f], outs[o]) for f, o in r["samples"]),
                {t: (float(m), int(n)) for t, (m, n) in r["logprobs"].items()},
                dict(r["examples"]),
            )
        window = tuple(
            WindowCheck(
                parse_iso(w["time"]), tuple(Sample(CanaryKey.parse(k), o, f, top) for k, f, o, top in w["samples"])
            )
            for w in data["window"]
        )
        learned, hits, bursts, confirmed = data["counts"]
        return cls(
            refs,
            window,
            tuple(data["screens"]),
            tuple(data["logprob_screens"]),
            tuple(data["ratios"]),
            tuple(parse_iso(t) for t in data["signal_changes"]),
            parse_iso(data["open_since"]) if data["open_since"] else None,
            bool(data["open_silent"]),
            parse_iso(data["pending"]) if data["pending"] else None,
            learned,
            hits,
            bursts,
            confirmed,
        )


EMPTY = Reference()


def _update_logprobs(means: dict[str, tuple[float, int]], top: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Fold one sample's top-k into the running means; a token missing from the sample counts as its minimum."""
    floor = min(top.values())
    known_floor = min((m for m, _ in means.values()), default=floor)
    out: dict[str, tuple[float, int]] = {}
    for token in sorted(set(means) | set(top)):  # sorted: the same state whatever the process's hash seed
        mean, weight = means.get(token, (known_floor, 0))
        weight = min(weight + 1, REFERENCE_MAX)
        out[token] = (mean + (top.get(token, floor) - mean) / weight, weight)
    if len(out) > 2 * TOP_TOKENS:
        out = dict(sorted(out.items(), key=lambda item: -item[1][0])[: 2 * TOP_TOKENS])
    return out


# --- comparing samples with references ------------------------------------------------------------------


def _strata(reference: Reference, samples: Iterable[Sample]) -> list[Table]:
    """One canary's tables: a fingerprint with a reference of its own is compared with it, the rest with the pool."""
    groups: dict[str, Counter[str]] = {}
    for s in samples:
        groups.setdefault(reference.stratum(s.fingerprint), Counter())[s.outcome] += 1
    return [(reference.stratum_counts(stratum), counts) for stratum, counts in sorted(groups.items())]


def tables(references: Mapping[CanaryKey, Reference], samples: Sequence[Sample]) -> dict[CanaryKey, list[Table]]:
    """Per canary (with a reference), its strata's tables."""
    out = {}
    for key, mine in by_key(samples).items():
        reference = references.get(key)
        if reference is not None and reference.samples:
            out[key] = _strata(reference, mine)
    return out


class LogprobMeans:
    """Running per-token means of samples' top-k logprobs, a token missing from a sample counting at its minimum."""

    def __init__(self) -> None:
        self.n = 0
        self.floor_sum = 0.0
        self.extra: dict[str, float] = {}  # token -> sum over samples that list it of (logprob - sample minimum)

    def add(self, top: Mapping[str, float]) -> None:
        floor = min(top.values())
        self.n += 1
        self.floor_sum += floor
        for token, value in top.items():
            self.extra[token] = self.extra.get(token, 0.0) + value - floor

    def change(self, reference: Reference) -> float:
        """LT's statistic against the reference: mean |difference| over the reference's most likely tokens.

        Only the top LOGPROB_TOKENS: deeper ranks come and go with the provider's top-k depth (a host
        capping 8 to 5 is not a new model), and a new model's other tokens show in the answers anyway.
        """
        ref = reference.logprobs
        tokens = sorted(ref, key=lambda t: -ref[t][0])[:LOGPROB_TOKENS]
        total = 0.0
        for token in tokens:
            mine = (self.floor_sum + self.extra.get(token, 0.0)) / self.n
            total += abs(mine - ref[token][0])
        return total / len(tokens)


def logprob_change(references: Mapping[CanaryKey, Reference], samples: Sequence[Sample]) -> float | None:
    """LT's statistic: the mean absolute change of the reference's top logprobs (a token missing from a sample
    counts at that sample's minimum), averaged over the canaries with logprobs on both sides; None if none has."""
    means: dict[CanaryKey, LogprobMeans] = {}
    for s in samples:
        if s.top and s.key in references and references[s.key].logprobs:
            means.setdefault(s.key, LogprobMeans()).add(s.top)
    return statistics.fmean(m.change(references[k]) for k, m in means.items()) if means else None


def by_key(samples: Iterable[Sample]) -> dict[CanaryKey, list[Sample]]:
    """Samples grouped by canary."""
    out: dict[CanaryKey, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.key, []).append(s)
    return out


def with_samples(references: Mapping[CanaryKey, Reference], samples: Sequence[Sample]) -> dict[CanaryKey, Reference]:
    """The references with these samples added to their canaries' (a canary with none gets one)."""
    out = dict(references)
    for key, mine in by_key(samples).items():
        out[key] = out.get(key, EMPTY).add(mine)
    return out


def forget(state: DriftState, keys: set[CanaryKey]) -> DriftState:
    """Drop what belongs to canaries no longer configured (or edited: their key changed)."""
    if set(state.references) <= keys and all(s.key in keys for w in state.window for s in w.samples):
        return state
    return replace(
        state,
        references={k: r for k, r in state.references.items() if k in keys},
        window=tuple(WindowCheck(w.time, tuple(s for s in w.samples if s.key in keys)) for w in state.window),
    )
