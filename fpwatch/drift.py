"""Canary drift detection: does the model behind the API still behave as it did? (DESIGN section 6)

Pure: a model's drift state and one check's samples in, the new state and at most one finding out.
The design follows research/detection-science.md section 8:

- Every canary answer is a categorical outcome (its whitespace-normalised first words), and with
  logprobs the first token's top logprobs. A model's reference is the distribution of its recent
  outcomes per canary (the last `REFERENCE_MAX` samples), kept per fingerprint where counts allow
  (`STRATUM_MIN`) and pooled, plus the running mean of each top token's logprob.
- The **screen** compares every run of latest checks (this one, the last two, ..., `WINDOW_CHECKS`)
  with the reference: a G statistic on each canary's 2 x C tables (per fingerprint stratum), pooled
  and per canary, read as surprise = -log10 p against chi-square; and the mean absolute change of
  the reference's top logprobs (LT). Each has a threshold from the model's own history of that
  statistic, median + k * 1.4826 * MAD, never below an absolute floor (`SCREEN_FLOOR`, `LOGPROB_FLOOR`).
- A screen hit asks the caller for a **confirmation burst**: `BURST_FACTOR` x each canary's samples,
  fresh. The burst alone must reject at `CONFIRM_ALPHA` with exact permutation tests (labels
  shuffled within each canary and stratum, so rare answers and a small reference are handled
  honestly), its G first divided by the model's measured dispersion; or its logprob change must
  exceed the threshold. A false alarm needs a screen hit *and* an independent burst that rejects,
  and unless the evidence is overwhelming (`STRONG_SURPRISE`), a second burst at the next check.
- A confirmed change is a `Finding`. The caller raises `canary.drift`; the reference restarts from
  the new behaviour, so the same change is not reported twice.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from fpwatch.canaries import Canary
from fpwatch.clock import iso, parse_iso
from fpwatch.observation import Observation

REFERENCE_MIN = 16  # samples per canary before the model leaves `learning` for drift ...
LEARNING_CHECKS = 4  # ... and checks: a canary with many samples gets a reference of many samples
REFERENCE_MAX = 240  # samples per canary kept as the reference, oldest dropped first
WINDOW_CHECKS = 8  # the screen compares this many latest checks with the reference
STRATUM_MIN = 30  # reference samples a fingerprint needs to get its own stratum
HISTORY_MAX = 200  # screen statistics kept for the running median and MAD
HISTORY_MIN = 20  # below this many, only the absolute floors apply
SCREEN_FLOOR = 2.0  # surprise (-log10 p) the screen needs at least: alpha = 0.01
SCREEN_K = 4.0  # robust standard deviations above the running median (B3IT's k)
LOGPROB_FLOOR = 0.2  # nats of mean |change| in top-k logprobs the screen needs at least
LOGPROB_K = 12.0  # LT's k: logprob statistics are near-Gaussian and very stable
BURST_FACTOR = 6  # the confirmation burst: this many times each canary's samples
CONFIRM_ALPHA = 1e-3  # the burst's permutation p-value (Bonferroni-adjusted) must be at most this
PERMUTATIONS = 3000  # enough that the smallest p (1/3001) is under CONFIRM_ALPHA / 2
TOP_TOKENS = 5  # top-k tokens kept per sample (logprobs rounded to 1e-3; the jitter is larger)
LOGPROB_TOKENS = 3  # the logprob statistic compares the reference's 3 most likely first tokens
STRONG_SURPRISE = 8.0  # a confirming test this far past chance (p < 1e-8) raises at once ...
STRONG_LOGPROB = 3.0  # ... as does a logprob change 3x its threshold; weaker evidence must confirm twice
OUTCOME_WORDS = 8  # an outcome is the answer's first words ...
OUTCOME_CHARS = 64  # ... at most this long
EXAMPLE_CHARS = 200
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
CHI2_MEDIAN_RATIO = 0.93  # median of chi-square(df) / df for the usual 5-15 degrees of freedom
MAX_DISPERSION = 10.0

SIGNAL_CHANGES = frozenset(
    {
        "fingerprint.changed",
        "fingerprint.reverted",
        "fingerprint.retired",
        "model.changed",
        "model.reverted",
        "model.retired",
    }
)
"""Events that change the fingerprint valid set or the resolved model: a drift near one is not silent."""


# --- samples ------------------------------------------------------------------------------------------------


def canary_key(canary: Canary, context: object = None) -> str:
    """The reference's key: the canary's name plus a digest of what it sends (and `context`: the model id,
    provider type and extra request fields), so an edited canary or model relearns instead of alarming."""
    spec = repr(
        (
            [(m.role, m.content) for m in canary.messages],
            canary.seed,
            canary.temperature,
            canary.max_tokens,
            canary.logprobs,
            canary.top_logprobs,
            context,
        )
    )
    return f"{canary.name}#{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


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
    key: str  # canary_key()
    outcome: str
    fingerprint: str = ""  # "" when the response carried none
    top: Mapping[str, float] | None = None  # the first token's top-k logprobs, when given
    text: str = ""  # the answer, cut to EXAMPLE_CHARS (examples only; not kept in the state)


def samples_from(observations: Iterable[Observation], keys: Mapping[str, str]) -> list[Sample]:
    """The successful observations of known canaries as samples (`keys`: canary name -> canary_key)."""
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
    references: Mapping[str, Reference] = field(default_factory=dict)
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

    def mature(self, key: str) -> bool:
        """Does this canary have a reference to judge by? (Each canary learns on its own.)"""
        return self.learned >= LEARNING_CHECKS and len(self.references.get(key, _EMPTY)) >= REFERENCE_MIN

    def learning(self, keys: Iterable[str]) -> bool:
        return not all(self.mature(k) for k in keys)

    def reference_samples(self, keys: Iterable[str]) -> int:
        """The smallest reference among these canaries (what `status` shows while learning)."""
        return min((len(self.references.get(k, _EMPTY)) for k in keys), default=0)

    def to_json(self) -> dict[str, Any]:
        refs = {}
        for key, ref in self.references.items():
            fps = sorted({f for f, _ in ref.samples})
            outs = sorted({o for _, o in ref.samples})
            fi, oi = {f: i for i, f in enumerate(fps)}, {o: i for i, o in enumerate(outs)}
            refs[key] = {
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
                {"time": iso(w.time), "samples": [[s.key, s.fingerprint, s.outcome, s.top] for s in w.samples]}
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
            refs[key] = Reference(
                tuple((fps[f], outs[o]) for f, o in r["samples"]),
                {t: (float(m), int(n)) for t, (m, n) in r["logprobs"].items()},
                dict(r["examples"]),
            )
        window = tuple(
            WindowCheck(parse_iso(w["time"]), tuple(Sample(k, o, f, top) for k, f, o, top in w["samples"]))
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


_EMPTY = Reference()


def _update_logprobs(means: dict[str, tuple[float, int]], top: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Fold one sample's top-k into the running means; a token missing from the sample counts as its minimum."""
    floor = min(top.values())
    known_floor = min((m for m, _ in means.values()), default=floor)
    out: dict[str, tuple[float, int]] = {}
    for token in set(means) | set(top):
        mean, weight = means.get(token, (known_floor, 0))
        weight = min(weight + 1, REFERENCE_MAX)
        out[token] = (mean + (top.get(token, floor) - mean) / weight, weight)
    if len(out) > 2 * TOP_TOKENS:
        out = dict(sorted(out.items(), key=lambda item: -item[1][0])[: 2 * TOP_TOKENS])
    return out


# --- statistics ---------------------------------------------------------------------------------------------


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions: the share of probability that moved."""
    return 0.5 * sum(abs(p.get(c, 0.0) - q.get(c, 0.0)) for c in set(p) | set(q))


def frequencies(outcomes: Iterable[str]) -> dict[str, float]:
    counts = Counter(outcomes)
    n = sum(counts.values())
    return {c: k / n for c, k in counts.items()} if n else {}


def g_statistic(reference: Mapping[str, int], window: Mapping[str, int]) -> tuple[float, int]:
    """The G (log-likelihood ratio) statistic of the 2 x C table reference-vs-window, and its degrees of freedom."""
    n_ref, n_win = sum(reference.values()), sum(window.values())
    if not n_ref or not n_win:
        return 0.0, 0
    total = n_ref + n_win
    g = 0.0
    categories = set(reference) | set(window)
    for c in categories:
        r, w = reference.get(c, 0), window.get(c, 0)
        column = r + w
        if r:
            g += r * math.log(r * total / (column * n_ref))
        if w:
            g += w * math.log(w * total / (column * n_win))
    return 2.0 * g, len(categories) - 1


def chi2_logsf(x: float, df: int) -> float:
    """ln P(X >= x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2), in logs."""
    if df <= 0 or x <= 0:
        return 0.0
    a, z = df / 2.0, x / 2.0
    log_prefix = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:  # series for the lower function P, then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1.0
            term *= z / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        p = math.exp(log_prefix) * total
        return math.log1p(-p) if p < 1.0 else -math.inf
    # Continued fraction for Q (modified Lentz).
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return log_prefix + math.log(h)


def surprise(g: float, df: int) -> float:
    """-log10 of the chi-square p-value: 2 means p = 0.01, 6 means one in a million."""
    return -chi2_logsf(g, df) / math.log(10)


def robust_threshold(history: Sequence[float], k: float, floor: float) -> float:
    """max(floor, median + k * 1.4826 * MAD) over the model's own history; the floor alone while history is short."""
    if len(history) < HISTORY_MIN:
        return floor
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    return max(floor, median + k * MAD_SCALE * mad)


Table = tuple[Counter[str], Counter[str]]  # (reference counts, window counts) of one stratum


def _strata(reference: Reference, samples: Iterable[Sample]) -> list[Table]:
    """One canary's tables: a fingerprint with a reference of its own is compared with it, the rest with the pool."""
    groups: dict[str, Counter[str]] = {}
    for s in samples:
        groups.setdefault(reference.stratum(s.fingerprint), Counter())[s.outcome] += 1
    return [(reference.stratum_counts(stratum), counts) for stratum, counts in sorted(groups.items())]


def tables(references: Mapping[str, Reference], samples: Sequence[Sample]) -> dict[str, list[Table]]:
    """Per canary (with a reference), its strata's tables."""
    out = {}
    for key, mine in _by_key(samples).items():
        reference = references.get(key)
        if reference is not None and reference.samples:
            out[key] = _strata(reference, mine)
    return out


def g_of(strata: Iterable[Table]) -> tuple[float, int]:
    """The G statistic summed over these strata, with its degrees of freedom."""
    g_total, df_total = 0.0, 0
    for ref, win in strata:
        g, df = g_statistic(ref, win)
        g_total += g
        df_total += df
    return g_total, df_total


def permutation_p(
    strata: Sequence[Table],
    rng: random.Random,
    *,
    alpha: float,
    permutations: int = PERMUTATIONS,
    dispersion: float = 1.0,
) -> float:
    """The exact conditional p-value of `g_of(strata)`: window labels drawn again from each stratum's labels.

    With `dispersion` > 1 the observed G is divided by it first (serving noise wider than independent
    samples). Stops early once the p-value can no longer reach `alpha` (a burst of plain noise ends
    after a few dozen shuffles).
    """
    observed = g_of(strata)[0] / dispersion
    if not strata or observed <= 0:
        return 1.0
    prepared = []
    for ref, win in strata:
        totals = ref + win
        prepared.append((list(totals.elements()), win.total(), totals, ref.total()))
    limit = alpha * (permutations + 1)
    exceed = 0
    for done in range(1, permutations + 1):
        g = 0.0
        for labels, n_win, totals, n_ref in prepared:
            g += _g_given_margins(totals, Counter(rng.sample(labels, n_win)), n_ref, n_win)
        if g >= observed - 1e-9:
            exceed += 1
            if exceed + 1 > limit:
                return (exceed + 1) / (done + 1)
    return (exceed + 1) / (permutations + 1)


def _g_given_margins(totals: Mapping[str, int], win: Mapping[str, int], n_ref: int, n_win: int) -> float:
    total = n_ref + n_win
    g = 0.0
    for c, column in totals.items():
        w = win.get(c, 0)
        r = column - w
        if r:
            g += r * math.log(r * total / (column * n_ref))
        if w:
            g += w * math.log(w * total / (column * n_win))
    return 2.0 * g


class _LogprobMeans:
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


def logprob_change(references: Mapping[str, Reference], samples: Sequence[Sample]) -> float | None:
    """LT's statistic: the mean absolute change of the reference's top logprobs (a token missing from a sample
    counts at that sample's minimum), averaged over the canaries with logprobs on both sides; None if none has."""
    means: dict[str, _LogprobMeans] = {}
    for s in samples:
        if s.top and s.key in references and references[s.key].logprobs:
            means.setdefault(s.key, _LogprobMeans()).add(s.top)
    return statistics.fmean(m.change(references[k]) for k, m in means.items()) if means else None


def _by_key(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.key, []).append(s)
    return out


# --- decisions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Screen:
    """The cheap test every check runs: the latest `WINDOW_CHECKS` checks against the reference."""

    surprise: float
    threshold: float
    logprob: float | None
    logprob_threshold: float
    samples: int
    pending: bool = False  # an earlier burst confirmed weakly: this check takes a burst whatever it shows
    check_ratio: float | None = None  # this check alone: pooled G / degrees of freedom (for the dispersion)

    @property
    def hit(self) -> bool:
        logprob_hit = self.logprob is not None and self.logprob > self.logprob_threshold
        return self.surprise > self.threshold or logprob_hit or self.pending


def screen(state: DriftState, samples: Sequence[Sample], keys: Iterable[str]) -> Screen | None:
    """Screen this check's samples with the window before them; None while the model is still learning.

    A change starts at some check and stays: the screen looks at every run of latest checks (this
    one alone, the last two, ..., the whole window), pooled over canaries and canary by canary, and
    keeps the largest surprise. This check alone reacts at once to a swap; longer runs gather the
    evidence of a subtle change; the per-canary view finds a change in one canary that pooling
    would dilute (its surprise pays for the number of canaries, Bonferroni).
    """
    keys = [k for k in keys if state.mature(k)]
    if not keys or not any(s.key in keys for s in samples):
        return None
    refs = state.references
    checks = [[s for s in w.samples if s.key in keys] for w in state.window[-(WINDOW_CHECKS - 1) :]]
    checks.append([s for s in samples if s.key in keys])
    penalty = math.log10(max(1, len(keys)))
    counts: dict[str, dict[str, Counter[str]]] = {}  # canary -> stratum -> outcomes of the run so far
    means: dict[str, _LogprobMeans] = {}
    best, best_change, check_ratio = 0.0, None, None
    for chunk in reversed(checks):  # runs of 1, 2, ... latest checks
        for s in chunk:
            reference = refs.get(s.key)
            if reference is None or not reference.samples:
                continue
            counts.setdefault(s.key, {}).setdefault(reference.stratum(s.fingerprint), Counter())[s.outcome] += 1
            if s.top and reference.logprobs:
                means.setdefault(s.key, _LogprobMeans()).add(s.top)
        g_all, df_all = 0.0, 0
        for key, strata in counts.items():
            g, df = g_of((refs[key].stratum_counts(stratum), win) for stratum, win in strata.items())
            g_all, df_all = g_all + g, df_all + df
            best = max(best, surprise(g, df) - penalty)
        best = max(best, surprise(g_all, df_all))
        if check_ratio is None and df_all:
            check_ratio = g_all / df_all
        if means:
            change = statistics.fmean(m.change(refs[k]) for k, m in means.items())
            best_change = change if best_change is None else max(best_change, change)
    return Screen(
        best,
        robust_threshold(state.screens, SCREEN_K, SCREEN_FLOOR),
        best_change,
        robust_threshold(state.logprob_screens, LOGPROB_K, LOGPROB_FLOOR),
        sum(len(c) for c in checks),
        state.pending is not None,
        check_ratio,
    )


def burst_size(canary: Canary) -> int:
    """How many fresh samples of this canary a confirmation burst takes."""
    return BURST_FACTOR * canary.samples


@dataclass(frozen=True)
class Finding:
    """A confirmed change of canary behaviour: what `canary.drift` reports."""

    statistic: str  # "pooled_g", "g:<canary>" or "logprob"
    value: float
    threshold: float
    p_value: float | None
    screen: Screen
    effect_size: float
    canaries: Mapping[str, Mapping[str, Any]]  # canary name -> tv, samples, before/after
    burst_samples: int
    fingerprints: Sequence[str]
    strong: bool  # far past chance: raised at once; otherwise a second burst must confirm
    silent: bool = False  # set by `observe`, which knows the version signals
    confirmations: Sequence[datetime] = ()

    def details(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "value": round(self.value, 4),
            "threshold": round(self.threshold, 4),
            "p_value": self.p_value,
            "screen": {
                "surprise": round(self.screen.surprise, 3),
                "threshold": round(self.screen.threshold, 3),
                "logprob_change": None if self.screen.logprob is None else round(self.screen.logprob, 4),
                "logprob_threshold": round(self.screen.logprob_threshold, 4),
                "samples": self.screen.samples,
            },
            "effect_size": round(self.effect_size, 3),
            "silent": self.silent,
            "burst_samples": self.burst_samples,
            "confirmations": [iso(t) for t in self.confirmations],
            "fingerprints": list(self.fingerprints),
            "canaries": {k: dict(v) for k, v in self.canaries.items()},
        }


@dataclass(frozen=True)
class Prejudged:
    """What a check concluded before its database transaction: the screen (which decides on a burst) and,
    when a burst was taken, its verdict. `observe` uses them when the state it is handed is still `state`."""

    state: DriftState  # the state as read before the check
    learned: DriftState  # ... with this check's learning applied: what the screen and the burst are judged by
    screen: Screen | None
    verdict: Finding | None = None
    judged: bool = False  # `verdict` is confirm()'s answer for the burst (None: not confirmed)


def prescreen(state: DriftState, samples: Sequence[Sample], keys: Iterable[str]) -> Prejudged:
    """Screen a check's samples as `observe` will; a hit asks for a burst, for `confirm` to judge."""
    learned, mature_samples, mature = _learn(state, samples, list(keys))
    return Prejudged(state, learned, screen(learned, mature_samples, mature) if mature_samples else None)


def _learn(state: DriftState, samples: Sequence[Sample], keys: list[str]) -> tuple[DriftState, list[Sample], set[str]]:
    """Forget canaries no longer configured, fold the samples of learning canaries into their reference, and
    return the samples of the canaries that are judged."""
    state = _forget(state, set(keys))
    if not samples:
        return state, [], set()
    mature = {k for k in keys if state.mature(k)}
    young = [s for s in samples if s.key not in mature]
    if young or state.learned < LEARNING_CHECKS:
        state = replace(
            state, references=_add(state.references, young), learned=min(state.learned + 1, LEARNING_CHECKS)
        )
    return state, [s for s in samples if s.key in mature], mature


def observe(
    state: DriftState,
    samples: Sequence[Sample],
    burst: Sequence[Sample],
    keys: Iterable[str],
    now: datetime,
    *,
    signal_changes: Sequence[datetime] = (),
    prejudged: Prejudged | None = None,
) -> tuple[DriftState, Finding | None]:
    """Apply one check's samples, and its confirmation burst if one was taken, to the drift state.

    With `prejudged` from `prescreen` (and `confirm`) on this same state, neither is computed again;
    if another process changed the state meanwhile, both are.
    """
    if prejudged is not None and prejudged.state == state:
        learned, result = prejudged.learned, prejudged.screen
        samples = [s for s in samples if learned.mature(s.key)]
    else:
        prejudged = None
        learned, samples, mature = _learn(state, samples, list(keys))
        result = screen(learned, samples, mature) if samples else None
    # "Silent" means no fingerprint or resolved-model change within the screen's window.
    horizon = _window_span(learned, now)
    changes = tuple(t for t in (*learned.signal_changes, *signal_changes) if now - t <= horizon)
    state = replace(learned, signal_changes=changes[-20:])
    if result is None:
        return state, None
    state = replace(
        state,
        screens=(*state.screens, result.surprise)[-HISTORY_MAX:],
        ratios=state.ratios if result.check_ratio is None else (*state.ratios, result.check_ratio)[-HISTORY_MAX:],
        logprob_screens=(
            state.logprob_screens if result.logprob is None else (*state.logprob_screens, result.logprob)[-HISTORY_MAX:]
        ),
    )
    finding = None
    if result.hit:
        state = replace(state, screen_hits=state.screen_hits + 1)
        if burst:
            state = replace(state, bursts=state.bursts + 1)
            judged = prejudged is not None and prejudged.judged
            found = prejudged.verdict if prejudged is not None and judged else confirm(learned, result, burst)
            if found is None:
                state = replace(state, pending=None)
            elif found.strong or state.pending is not None:
                times = (state.pending, now) if state.pending is not None else (now,)
                finding = replace(found, silent=not changes, confirmations=times)
            else:
                state = replace(state, pending=now)  # serving noise of the moment, or a change? Ask again next check.
    if finding is not None:
        # The new behaviour is the reference from now on: this check and its burst start it, two more checks
        # add other moments to it before it judges; the window, which mixes old and new, is forgotten.
        fresh = _add({}, [*samples, *burst])
        changed = replace(state, references=fresh, window=(), open_since=now, open_silent=finding.silent, pending=None)
        return replace(changed, learned=LEARNING_CHECKS - 2, confirmed=state.confirmed + 1), finding
    # Burst samples stay out of the window: one moment's many answers would weigh as much as several checks.
    window = (*state.window, WindowCheck(now, tuple(replace(s, text="") for s in samples)))
    leaving, window = window[:-WINDOW_CHECKS], window[-WINDOW_CHECKS:]
    references = _add(state.references, [s for w in leaving for s in w.samples])
    return replace(state, references=references, window=window), None


def confirm(state: DriftState, result: Screen, burst: Sequence[Sample]) -> Finding | None:
    """Test the fresh burst alone; a Finding when it rejects too (its `silent` is for `observe` to set).

    Exact tests share CONFIRM_ALPHA (Bonferroni): the pooled G across canaries gets half, and each
    canary's own G an equal share of the other half, so a change confined to one canary is confirmed
    without being diluted by the others. Failing those, the burst's logprob change must pass the
    threshold. The first test that rejects decides.
    """
    keys = [k for k in _by_key(burst) if state.mature(k)]
    burst = [s for s in burst if s.key in keys]
    content = repr([(s.key, s.outcome, s.fingerprint) for s in burst]).encode()
    rng = random.Random(hashlib.sha256(content).digest()[:8])  # the same samples always give the same verdict
    by_canary = tables(state.references, burst)
    pooled = [t for strata in by_canary.values() for t in strata]
    share = CONFIRM_ALPHA / 2 / max(1, len(by_canary))
    tests = [("pooled_g", pooled, CONFIRM_ALPHA / 2, PERMUTATIONS)]
    tests += [(f"g:{key.split('#')[0]}", strata, share, _permutations_for(share)) for key, strata in by_canary.items()]
    statistic, value, threshold, p, strong = "", 0.0, 0.0, None, False
    phi = state.dispersion()
    for name, strata, alpha, permutations in tests:
        g, df = g_of(strata)
        g /= phi
        if not df or surprise(g, df) <= -math.log10(alpha) - 2:  # hopeless even for the anti-conservative chi-square
            continue
        p_test = permutation_p(strata, rng, alpha=alpha, permutations=permutations, dispersion=phi)
        if p_test <= alpha:
            statistic, value, threshold = name, g, _g_critical(df, alpha)
            p, strong = min(1.0, p_test * CONFIRM_ALPHA / alpha), surprise(g, df) >= STRONG_SURPRISE
            break
    if not statistic:
        change = logprob_change(state.references, burst)
        if change is None or change <= result.logprob_threshold:
            return None
        statistic, value, threshold = "logprob", change, result.logprob_threshold
        strong = change >= STRONG_LOGPROB * result.logprob_threshold
    canaries: dict[str, dict[str, Any]] = {}
    for key, mine in _by_key(burst).items():
        reference = state.references.get(key, _EMPTY)
        before = reference.distribution()
        after = frequencies(s.outcome for s in mine)
        canaries[key.split("#")[0]] = {
            "tv": round(total_variation(before, after), 3),
            "reference_samples": len(reference),
            "burst_samples": len(mine),
            "before": _top(before),
            "after": _top(after),
            "before_examples": [reference.examples.get(o, o) for o in list(_top(before))[:2]],
            "after_examples": list(dict.fromkeys(s.text or s.outcome for s in mine))[:2],
        }
    effect = max((c["tv"] for c in canaries.values()), default=0.0)
    return Finding(
        statistic,
        value,
        threshold,
        p,
        result,
        effect,
        canaries,
        len(burst),
        sorted({s.fingerprint for s in burst if s.fingerprint}),
        strong,
    )


def _permutations_for(alpha: float) -> int:
    """Enough shuffles that the smallest possible p-value is under `alpha` with room to spare."""
    return max(PERMUTATIONS, math.ceil(1.25 / alpha))


def _g_critical(df: int, alpha: float) -> float:
    """The G value whose chi-square p is `alpha` (roughly what the burst had to beat, for people)."""
    lo, hi = 0.0, 10.0 * df + 100.0
    target = math.log(alpha)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_logsf(mid, df) > target else (lo, mid)
    return hi


def _top(distribution: Mapping[str, float], most: int = 4) -> dict[str, float]:
    return {o: round(p, 3) for o, p in sorted(distribution.items(), key=lambda item: -item[1])[:most]}


def _add(references: Mapping[str, Reference], samples: Sequence[Sample]) -> dict[str, Reference]:
    out = dict(references)
    for key, mine in _by_key(samples).items():
        out[key] = out.get(key, _EMPTY).add(mine)
    return out


def _forget(state: DriftState, keys: set[str]) -> DriftState:
    """Drop what belongs to canaries no longer configured (or edited: their key changed)."""
    if set(state.references) <= keys and all(s.key in keys for w in state.window for s in w.samples):
        return state
    return replace(
        state,
        references={k: r for k, r in state.references.items() if k in keys},
        window=tuple(WindowCheck(w.time, tuple(s for s in w.samples if s.key in keys)) for w in state.window),
    )


def _window_span(state: DriftState, now: datetime) -> timedelta:
    return now - state.window[0].time if state.window else timedelta(0)
