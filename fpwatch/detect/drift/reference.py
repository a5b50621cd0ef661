"""What drift detection remembers of a model, as per-check aggregates: for each check, each canary's answer
counts per fingerprint and the sums of its first-token logprobs (`Tally`, `CheckTally`). The reference of a
canary is the sum of its tallies in the latest reference checks; the window holds the latest checks being
judged; the model's own statistics (its noise) are histories. Also how samples compare with a reference:
contingency tables per fingerprint stratum, and LT's left-censored logprob means.

A check adds one small row (its `CheckTally`) and rewrites only the small state (`DriftState.to_json`): the
store keeps the rows apart, so what is written per check stays a few kilobytes however long the reference.
"""

from __future__ import annotations

import base64
import functools
import statistics
import struct
import sys
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
REFERENCE_CHECKS = 24  # checks kept in the reference (240 samples of a canary sampled 10 times a check)
STRATUM_MIN = 30  # reference samples a fingerprint needs to get its own stratum
TOP_TOKENS = 5  # top-k first tokens kept per sample
LOGPROB_TOKENS = 3  # the logprob statistic compares the reference's 3 most likely first tokens
OUTCOME_WORDS = 8  # an outcome is the answer's first words ...
OUTCOME_CHARS = 64  # ... at most this long
EXAMPLE_CHARS = 200
EXAMPLES = 2  # full answers kept per canary, for its two most common outcomes (a drift shows them)
CHI2_MEDIAN_RATIO = 0.93  # median of chi-square(df) / df for the usual 5-15 degrees of freedom
MAX_DISPERSION = 10.0
HISTORY_MAX = 120  # values kept of each statistic, for the running median and MAD


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


@dataclass(frozen=True, slots=True)
class Sample:
    key: CanaryKey
    outcome: str
    fingerprint: str = ""  # "" when the response carried none
    top: Mapping[str, float] | None = None  # the first token's top-k logprobs, when given
    text: str = ""  # the answer, cut to EXAMPLE_CHARS (examples only)


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
            top = dict(sorted(top.items(), key=lambda item: -item[1])[:TOP_TOKENS])
        out.append(Sample(key, outcome(o.output), o.system_fingerprint or "", top, (o.output or "")[:EXAMPLE_CHARS]))
    return out


def by_key(samples: Iterable[Sample]) -> dict[CanaryKey, list[Sample]]:
    """Samples grouped by canary."""
    out: dict[CanaryKey, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.key, []).append(s)
    return out


# --- aggregates ---------------------------------------------------------------------------------------------


def _sum_maps(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def _short(value: float) -> float:
    """A sum as stored: 10 significant digits (a mean of 60 logprobs stays exact to 1e-9 nats, far below the
    1e-5 that JSON logprobs mean anything to), a third of full repr's length."""
    return float(f"{value:.10g}")


@dataclass(frozen=True, slots=True)
class LogprobSums:
    """First-token top logprobs of some samples, summed so that samples and checks add up: LT's left-censored
    mean, where a token a sample does not list counts at that sample's lowest listed logprob."""

    n: int = 0
    floor: float = 0.0  # sum of each sample's lowest listed logprob
    lift: Mapping[str, float] = field(default_factory=dict)  # token -> sum of (logprob - floor) where listed

    @classmethod
    def of(cls, tops: Iterable[Mapping[str, float]]) -> LogprobSums:
        n, floor = 0, 0.0
        lift: dict[str, float] = {}
        for top in tops:
            low = min(top.values())
            n, floor = n + 1, floor + low
            for token, value in top.items():
                lift[token] = lift.get(token, 0.0) + value - low
        return cls(n, floor, lift)

    def __add__(self, other: LogprobSums) -> LogprobSums:
        return LogprobSums(self.n + other.n, self.floor + other.floor, _sum_maps(self.lift, other.lift))

    def mean(self, token: str) -> float:
        return (self.floor + self.lift.get(token, 0.0)) / self.n

    def top(self, k: int = LOGPROB_TOKENS) -> list[str]:
        """The k most likely tokens, by mean logprob."""
        return sorted(self.lift, key=lambda t: (-self.lift[t], t))[:k]

    def change(self, reference: LogprobSums) -> float:
        """LT's statistic against the reference: mean |difference| over the reference's most likely tokens.

        Only the top LOGPROB_TOKENS: deeper ranks come and go with the provider's top-k depth (a host
        capping 8 to 5 is not a new model), and a new model's other tokens show in the answers anyway.
        """
        tokens = reference.top()
        return statistics.fmean(abs(self.mean(t) - reference.mean(t)) for t in tokens)

    def to_json(self) -> list[Any]:
        return [self.n, _short(self.floor), {t: _short(v) for t, v in self.lift.items()}]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> LogprobSums:
        n, floor, lift = data
        return cls(int(n), float(floor), {sys.intern(t): v for t, v in lift.items()})


@dataclass(frozen=True, slots=True)
class Tally:
    """One canary's answers in some samples: outcome counts per fingerprint, and their first-token logprobs."""

    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (fingerprint or "", outcome) -> samples
    logprobs: LogprobSums | None = None  # None when no sample carried logprobs

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Tally:
        tops = [s.top for s in samples if s.top]
        return cls(dict(Counter((s.fingerprint, s.outcome) for s in samples)), LogprobSums.of(tops) if tops else None)

    def __add__(self, other: Tally) -> Tally:
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        if self.logprobs is None or other.logprobs is None:
            logprobs = self.logprobs or other.logprobs
        else:
            logprobs = self.logprobs + other.logprobs
        return Tally(counts, logprobs)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        """{"c": {fingerprint: {outcome: count}}, "lp": the logprob sums}: each fingerprint written once."""
        counts: dict[str, dict[str, int]] = {}
        for (fp, o), n in sorted(self.counts.items()):
            counts.setdefault(fp, {})[o] = n
        out: dict[str, Any] = {"c": counts}
        if self.logprobs is not None:
            out["lp"] = self.logprobs.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        lp = data.get("lp")
        # Interned: the same few fingerprints and answers recur in every row a store keeps parsed.
        counts = {(sys.intern(fp), sys.intern(o)): int(n) for fp, by in data["c"].items() for o, n in by.items()}
        return cls(counts, LogprobSums.from_json(lp) if lp else None)


def total(checks: Iterable[CheckTally]) -> dict[CanaryKey, Tally]:
    """Each canary's tallies over these checks, summed in place (a reference of 24 checks is summed every check)."""
    counts: dict[CanaryKey, dict[tuple[str, str], int]] = {}
    sums: dict[CanaryKey, list[Any]] = {}  # key -> [n, floor, lift]
    for check in checks:
        for key, tally in check.tallies.items():
            mine = counts.setdefault(key, {})
            for k, n in tally.counts.items():
                mine[k] = mine.get(k, 0) + n
            lp = tally.logprobs
            if lp is not None:
                acc = sums.setdefault(key, [0, 0.0, {}])
                acc[0] += lp.n
                acc[1] += lp.floor
                lift = acc[2]
                for token, value in lp.lift.items():
                    lift[token] = lift.get(token, 0.0) + value
    return {key: Tally(mine, LogprobSums(*sums[key]) if key in sums else None) for key, mine in counts.items()}


def tallies_of(samples: Sequence[Sample]) -> dict[CanaryKey, Tally]:
    return {key: Tally.of(mine) for key, mine in by_key(samples).items()}


@dataclass(frozen=True, slots=True)
class CheckTally:
    """What one check (or, after a confirmed drift, one check and its burst) added, per canary: one stored row."""

    seq: int
    time: datetime
    tallies: Mapping[CanaryKey, Tally]
    moments: int = 1  # the serving moments it holds (a row converted from an older state holds many)

    def to_json(self) -> dict[str, Any]:
        out = {"time": iso(self.time), "tallies": {str(k): t.to_json() for k, t in self.tallies.items()}}
        return out if self.moments == 1 else {**out, "moments": self.moments}

    @classmethod
    def from_json(cls, seq: int, data: Mapping[str, Any]) -> CheckTally:
        tallies = {CanaryKey.parse(k): Tally.from_json(t) for k, t in data["tallies"].items()}
        return cls(seq, parse_iso(data["time"]), tallies, int(data.get("moments", 1)))


# --- the reference ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One canary's learned behaviour: the sum of its reference tallies, and a few full answers."""

    tally: Tally = field(default_factory=Tally)
    examples: Mapping[str, str] = field(default_factory=dict)  # outcome -> one full answer seen with it

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Reference:
        """A reference of these samples (tests, and a check that starts a new one)."""
        return cls(Tally.of(samples))

    def __len__(self) -> int:
        return self.tally.n

    @property
    def logprobs(self) -> LogprobSums | None:
        return self.tally.logprobs

    def distribution(self) -> dict[str, float]:
        n = len(self)
        return {o: c / n for o, c in self.counts.items()} if n else {}

    @functools.cached_property
    def counts(self) -> Counter[str]:
        """Outcome counts over every reference sample (the pooled stratum)."""
        out: Counter[str] = Counter()
        for (_, o), n in self.tally.counts.items():
            out[o] += n
        return out

    @functools.cached_property
    def strata(self) -> dict[str, Counter[str]]:
        """Outcome counts per fingerprint that has STRATUM_MIN samples or more: those compare with themselves."""
        by_fp: dict[str, Counter[str]] = {}
        for (fp, o), n in self.tally.counts.items():
            if fp:
                by_fp.setdefault(fp, Counter())[o] += n
        return {fp: c for fp, c in by_fp.items() if c.total() >= STRATUM_MIN}

    def stratum(self, fingerprint: str) -> str:
        """The stratum a sample with this fingerprint is compared in: its own, or the pool ("")."""
        return fingerprint if fingerprint in self.strata else ""

    def stratum_counts(self, stratum: str) -> Counter[str]:
        return self.strata[stratum] if stratum else self.counts


EMPTY = Reference()


def _f32(values: Sequence[float]) -> str:
    """A history as 4-byte floats (7 significant digits: plenty for a threshold), base64: compact in the JSON."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _unf32(text: str) -> tuple[float, ...]:
    raw = base64.b64decode(text)
    return struct.unpack(f"<{len(raw) // 4}f", raw)


@dataclass(frozen=True)
class DriftState:
    reference: tuple[CheckTally, ...] = ()  # the reference checks, oldest first
    window: tuple[CheckTally, ...] = ()  # the latest judged checks, not yet part of the reference
    examples: Mapping[CanaryKey, Mapping[str, str]] = field(default_factory=dict)
    screens: tuple[float, ...] = ()  # history of the answer screen's surprise
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
    boost: Mapping[CanaryKey, int] = field(default_factory=dict)  # canary -> checks left with extra samples
    seq: int = 0  # the last check row's number
    stored: frozenset[int] = field(default=frozenset(), compare=False)  # rows the store holds (set when loaded)

    @functools.cached_property
    def references(self) -> dict[CanaryKey, Reference]:
        """Each canary's reference: the sum of its tallies in the reference checks."""
        return {key: Reference(tally, self.examples.get(key, {})) for key, tally in total(self.reference).items()}

    def dispersion(self) -> float:
        """How much more single checks differ from the reference than independent samples would (at least 1).

        Serving noise depends on load: answers within one moment (a check and its burst) are alike and
        moments differ. The G statistic of one check against the reference is then inflated by a factor;
        its median over the model's history, against chi-square's (about 0.93 per degree of freedom),
        estimates it, and the confirmation divides the burst's G by it (quasi-likelihood). A reference of m
        moments adds 1/m of that excess again.
        """
        if len(self.ratios) < HISTORY_MIN:
            return 1.0
        phi = min(MAX_DISPERSION, max(1.0, statistics.median(self.ratios) / CHI2_MEDIAN_RATIO))
        # A reference of few moments (just after a drift) carries its own moments' excess variance too.
        return 1.0 + (phi - 1.0) * (1.0 + 1.0 / self.moments) if self.moments else phi

    @property
    def moments(self) -> int:
        """How many serving moments (checks) the reference holds."""
        return sum(c.moments for c in self.reference)

    def mature(self, key: CanaryKey) -> bool:
        """Does this canary have a reference to judge by? (Each canary learns on its own.)"""
        return self.learned >= LEARNING_CHECKS and len(self.references.get(key, EMPTY)) >= REFERENCE_MIN

    def learning(self, keys: Iterable[CanaryKey]) -> bool:
        return not all(self.mature(k) for k in keys)

    def reference_samples(self, keys: Iterable[CanaryKey]) -> int:
        """The smallest reference among these canaries (what `status` shows while learning)."""
        return min((len(self.references.get(k, EMPTY)) for k in keys), default=0)

    def checks(self) -> tuple[CheckTally, ...]:
        """Every stored row: the reference checks, then the window."""
        return (*self.reference, *self.window)

    def to_json(self) -> dict[str, Any]:
        """The small part of the state (the rows are `checks()`, stored apart)."""
        return {
            "v": 2,
            "reference": [c.seq for c in self.reference],
            "window": [c.seq for c in self.window],
            "seq": self.seq,
            "examples": {str(k): dict(v) for k, v in self.examples.items()},
            "screens": _f32(self.screens),
            "logprob_screens": _f32(self.logprob_screens),
            "ratios": _f32(self.ratios),
            "signal_changes": [iso(t) for t in self.signal_changes],
            "open_since": iso(self.open_since) if self.open_since else None,
            "open_silent": self.open_silent,
            "pending": iso(self.pending) if self.pending else None,
            "counts": [self.learned, self.screen_hits, self.bursts, self.confirmed],
            "boost": {str(k): n for k, n in self.boost.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], rows: Mapping[int, CheckTally] | None = None) -> DriftState:
        """The state from its JSON and its check rows (by seq, parsed: `CheckTally.from_json`; rows are written
        once and never change, so a store may keep them parsed). An older fpwatch's state (v1: samples in the
        JSON itself) is converted: its reference becomes one row, each window check one row."""
        if not data:
            return cls()
        if data.get("v", 1) == 1:
            return _from_v1(data)
        checks = rows or {}
        return cls(
            reference=tuple(checks[s] for s in data["reference"]),
            window=tuple(checks[s] for s in data["window"]),
            examples={CanaryKey.parse(k): dict(v) for k, v in data["examples"].items()},
            screens=_unf32(data["screens"]),
            logprob_screens=_unf32(data["logprob_screens"]),
            ratios=_unf32(data["ratios"]),
            boost={CanaryKey.parse(k): int(n) for k, n in data.get("boost", {}).items()},
            seq=int(data["seq"]),
            stored=frozenset(checks),
            **_episode(data),
        )


def _episode(data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields both state versions store alike: recent signal changes, an open drift, a pending confirmation,
    the counters."""
    learned, hits, bursts, confirmed = data["counts"]
    return {
        "signal_changes": tuple(parse_iso(t) for t in data["signal_changes"]),
        "open_since": parse_iso(data["open_since"]) if data["open_since"] else None,
        "open_silent": bool(data["open_silent"]),
        "pending": parse_iso(data["pending"]) if data["pending"] else None,
        "learned": learned,
        "screen_hits": hits,
        "bursts": bursts,
        "confirmed": confirmed,
    }


def _from_v1(data: Mapping[str, Any]) -> DriftState:
    """A state written before the per-check rows: 240 samples per canary and running logprob means."""
    tallies: dict[CanaryKey, Tally] = {}
    examples: dict[CanaryKey, dict[str, str]] = {}
    for text, r in data["references"].items():
        key = CanaryKey.parse(text)
        fps, outs = r["fingerprints"], r["outcomes"]
        counts = Counter((fps[f], outs[o]) for f, o in r["samples"])
        means = {t: (float(m), int(n)) for t, (m, n) in r["logprobs"].items()}
        logprobs = None
        if means:  # running means with a weight: as many samples, each at the mean
            n = max(w for _, w in means.values())
            low = min(m for m, _ in means.values())
            logprobs = LogprobSums(n, low * n, {t: (m - low) * n for t, (m, _) in means.items()})
        tallies[key] = Tally(dict(counts), logprobs)
        examples[key] = dict(list(r["examples"].items())[:EXAMPLES])
    start = parse_iso(data["window"][0]["time"]) if data["window"] else _EPOCH
    reference = (CheckTally(1, start, tallies, REFERENCE_CHECKS),)  # v1 kept up to this many checks' samples
    window = tuple(
        CheckTally(
            2 + i,
            parse_iso(w["time"]),
            tallies_of([Sample(CanaryKey.parse(k), o, f, top) for k, f, o, top in w["samples"]]),
        )
        for i, w in enumerate(data["window"])
    )
    return DriftState(
        reference=reference if tallies else (),
        window=window,
        examples=examples,
        screens=tuple(data["screens"])[-HISTORY_MAX:],
        logprob_screens=tuple(data["logprob_screens"])[-HISTORY_MAX:],
        ratios=tuple(data["ratios"])[-HISTORY_MAX:],
        seq=1 + len(window),
        **_episode(data),
    )


_EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


# --- changing the state ---------------------------------------------------------------------------------


def with_reference(
    state: DriftState, tallies: Mapping[CanaryKey, Tally], time: datetime, samples: Sequence[Sample]
) -> DriftState:
    """The state with one more reference check (oldest dropped beyond REFERENCE_CHECKS) and fresh examples."""
    if not tallies:
        return state
    seq = state.seq + 1
    reference = (*state.reference, CheckTally(seq, time, dict(tallies)))[-REFERENCE_CHECKS:]
    return replace(state, reference=reference, seq=seq, examples=examples_for(state.examples, reference, samples))


def with_late_learners(state: DriftState, tallies: Mapping[CanaryKey, Tally], samples: Sequence[Sample]) -> DriftState:
    """The state with the samples of canaries that joined after the model learned (discovered, added, edited)
    folded into its newest reference check: they learn without pushing older checks out of the others'
    reference. The row is a new one for the store (a fresh seq)."""
    last = state.reference[-1]
    merged = dict(last.tallies)
    for key, tally in tallies.items():
        merged[key] = merged[key] + tally if key in merged else tally
    seq = state.seq + 1
    reference = (*state.reference[:-1], CheckTally(seq, last.time, merged, last.moments))
    return replace(state, reference=reference, seq=seq, examples=examples_for(state.examples, reference, samples))


def examples_for(
    old: Mapping[CanaryKey, Mapping[str, str]], reference: Sequence[CheckTally], samples: Sequence[Sample]
) -> dict[CanaryKey, dict[str, str]]:
    """One full answer for each of a canary's most common reference outcomes (for the evidence of a drift)."""
    counts: dict[CanaryKey, Counter[str]] = {}
    for check in reference:
        for key, tally in check.tallies.items():
            mine = counts.setdefault(key, Counter())
            for (_, o), n in tally.counts.items():
                mine[o] += n
    fresh: dict[CanaryKey, dict[str, str]] = {}
    for s in samples:
        if s.text:
            fresh.setdefault(s.key, {})[s.outcome] = s.text
    out = {}
    for key, mine in counts.items():
        known = {**old.get(key, {}), **fresh.get(key, {})}
        out[key] = {o: known[o] for o, _ in mine.most_common() if o in known}
        out[key] = dict(list(out[key].items())[:EXAMPLES])
    return out


def forget(state: DriftState, keys: set[CanaryKey]) -> DriftState:
    """Drop what belongs to canaries no longer configured (or edited: their key changed). A row that loses
    some of its tallies is a new row for the store (a fresh seq); one that loses all of them goes."""
    if all(k in keys for c in state.checks() for k in c.tallies):
        return state
    seq = state.seq

    def kept(checks: tuple[CheckTally, ...]) -> tuple[CheckTally, ...]:
        nonlocal seq
        out = []
        for c in checks:
            tallies = {k: t for k, t in c.tallies.items() if k in keys}
            if len(tallies) == len(c.tallies):
                out.append(c)
            elif tallies:
                seq += 1
                out.append(CheckTally(seq, c.time, tallies, c.moments))
        return tuple(out)

    return replace(
        state,
        reference=kept(state.reference),
        window=kept(state.window),
        examples={k: v for k, v in state.examples.items() if k in keys},
        boost={k: v for k, v in state.boost.items() if k in keys},
        seq=seq,
    )


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
        if reference is not None and len(reference):
            out[key] = _strata(reference, mine)
    return out


def logprob_change(references: Mapping[CanaryKey, Reference], samples: Sequence[Sample]) -> float | None:
    """LT's statistic: the mean absolute change of the reference's top logprobs (a token missing from a sample
    counts at that sample's minimum), averaged over the canaries with logprobs on both sides; None if none has."""
    changes = []
    for key, mine in by_key(samples).items():
        reference = references.get(key)
        tops = [s.top for s in mine if s.top]
        if reference is not None and reference.logprobs is not None and tops:
            changes.append(LogprobSums.of(tops).change(reference.logprobs))
    return statistics.fmean(changes) if changes else None
