"""The decisions of drift detection: the screen every check runs, the confirmation burst's exact tests, and
what a confirmed change (a `Finding`) does to the model's drift state.

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
- A confirmed change is a `Finding`; the reference restarts from the new behaviour, so the same
  change is not reported twice.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from fpwatch.detect.drift.reference import (
    EMPTY,
    HISTORY_MAX,
    LEARNING_CHECKS,
    REFERENCE_CHECKS,
    CanaryKey,
    CheckTally,
    DriftState,
    LogprobSums,
    Sample,
    by_key,
    examples_for,
    forget,
    logprob_change,
    tables,
    tallies_of,
    with_late_learners,
    with_reference,
)
from fpwatch.detect.drift.statistics import (
    HISTORY_MIN,
    MAD_SCALE,
    PERMUTATIONS,
    chi2_logsf,
    frequencies,
    g_of,
    permutation_p,
    robust_threshold,
    surprise,
    total_variation,
)
from fpwatch.detect.shaped import Shaped

WINDOW_CHECKS = 8  # the screen compares this many latest checks with the reference
SCREEN_FLOOR = 2.0  # surprise (-log10 p) the answer screen needs at least: alpha = 0.01
SCREEN_K = 4.0  # robust standard deviations above the running median (B3IT's k)
LOGPROB_K = 12.0  # LT's k: logprob statistics are near-Gaussian and very stable
# The logprob channel is judged by the model's own noise once it is measured (HISTORY_MIN screens); until
# then by this conservative bound, as LT's production rule would. Below LOGPROB_PRECISION, JSON logprobs
# stop meaning anything (a self-hosted llama.cpp's own jitter is about 1e-6 nats).
LOGPROB_YOUNG = 0.2
LOGPROB_PRECISION = 1e-5
ELEVATED_SHARE = 0.5  # a canary whose own surprise passes this share of the threshold is elevated ...
BOOST_FACTOR, BOOST_CHECKS = 2, 2  # ... and takes this many times its samples for this many checks
BURST_FACTOR = 6  # the confirmation burst: this many times each canary's samples
CONFIRM_ALPHA = 1e-3  # the burst's permutation p-value (Bonferroni-adjusted) must be at most this
STRONG_SURPRISE = 8.0  # a confirming test this far past chance (p < 1e-8) raises at once ...
STRONG_LOGPROB = 3.0  # ... as does a logprob change 3x its threshold; weaker evidence must confirm twice


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
    elevated: frozenset[CanaryKey] = frozenset()  # canaries whose own surprise is up, short of a hit

    @property
    def hit(self) -> bool:
        logprob_hit = self.logprob is not None and self.logprob > self.logprob_threshold
        return self.surprise > self.threshold or logprob_hit or self.pending


def screen(state: DriftState, samples: Sequence[Sample], keys: Iterable[CanaryKey]) -> Screen | None:
    """Screen this check's samples with the window before them; None while the model is still learning.

    A change starts at some check and stays: the screen looks at every run of latest checks (this
    one alone, the last two, ..., the whole window), pooled over canaries and canary by canary, and
    keeps the largest surprise. This check alone reacts at once to a swap; longer runs gather the
    evidence of a subtle change; the per-canary view finds a change in one canary that pooling
    would dilute (its surprise pays for the number of canaries, Bonferroni).
    """
    judged = {k for k in keys if state.mature(k)}
    mine = [s for s in samples if s.key in judged]
    if not mine:
        return None
    refs = state.references
    runs = [c.tallies for c in state.window[-(WINDOW_CHECKS - 1) :]]
    runs.append(tallies_of(mine))
    penalty = math.log10(max(1, len(judged)))
    counts: dict[CanaryKey, dict[str, Counter[str]]] = {}  # canary -> stratum -> outcomes of the run so far
    sums: dict[CanaryKey, LogprobSums] = {}
    best, best_change, check_ratio = 0.0, None, None
    own: dict[CanaryKey, float] = {}
    for tallies in reversed(runs):  # runs of 1, 2, ... latest checks
        for key, tally in tallies.items():
            reference = refs.get(key)
            if key not in judged or reference is None or not len(reference):
                continue
            strata = counts.setdefault(key, {})
            for (fp, answer), n in tally.counts.items():
                strata.setdefault(reference.stratum(fp), Counter())[answer] += n
            if tally.logprobs is not None and reference.logprobs is not None:
                sums[key] = sums[key] + tally.logprobs if key in sums else tally.logprobs
        g_all, df_all = 0.0, 0
        for key, strata in counts.items():
            g, df = g_of((refs[key].stratum_counts(stratum), win) for stratum, win in strata.items())
            g_all, df_all = g_all + g, df_all + df
            own[key] = max(own.get(key, 0.0), surprise(g, df) - penalty)
        best = max(best, surprise(g_all, df_all), *own.values())
        if check_ratio is None and df_all:
            check_ratio = g_all / df_all
        if sums:
            change = statistics.fmean(m.change(refs[k].logprobs) for k, m in sums.items())  # type: ignore[arg-type]
            best_change = change if best_change is None else max(best_change, change)
    threshold = screen_threshold(state)
    elevated = frozenset(k for k, v in own.items() if ELEVATED_SHARE * threshold < v <= threshold)
    return Screen(
        best,
        threshold,
        best_change,
        logprob_threshold(state),
        sum(t.n for tallies in runs for k, t in tallies.items() if k in judged),
        state.pending is not None,
        check_ratio,
        elevated,
    )


def screen_threshold(state: DriftState) -> float:
    """The screen's surprise must pass this: the model's own history of it, never below SCREEN_FLOOR."""
    return robust_threshold(state.screens, SCREEN_K, SCREEN_FLOOR)


def logprob_threshold(state: DriftState) -> float:
    """The logprob statistic must pass this: median + 12 robust standard deviations of the model's own history
    of it (near its precision on a deterministic server), LOGPROB_YOUNG while that noise is not measured yet."""
    if len(state.logprob_screens) < HISTORY_MIN:
        return LOGPROB_YOUNG
    return robust_threshold(state.logprob_screens, LOGPROB_K, LOGPROB_PRECISION)


def noise(history: Sequence[float]) -> tuple[float, float] | None:
    """A statistic's typical no-change value and its robust spread (1.4826 x MAD), once measured."""
    if len(history) < HISTORY_MIN:
        return None
    median = statistics.median(history)
    return median, MAD_SCALE * statistics.median(abs(x - median) for x in history)


def burst_size(samples: int) -> int:
    """How many fresh samples a confirmation burst takes of a canary sent `samples` times a check."""
    return BURST_FACTOR * samples


@dataclass(frozen=True)
class CanaryShift(Shaped):
    """How one canary's answers moved between the reference and the burst that confirmed a drift."""

    tv: float  # total-variation distance, rounded to 1e-3
    reference_samples: int
    burst_samples: int
    before: Mapping[str, float]  # the most common outcomes and their shares
    after: Mapping[str, float]
    before_examples: tuple[str, ...]  # full answers seen with the top outcomes
    after_examples: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """A confirmed change of canary behaviour: what `canary.drift` reports (events.DriftDetails is its record)."""

    statistic: str  # "pooled_g", "g:<canary>" or "logprob"
    value: float
    threshold: float
    p_value: float | None
    screen: Screen
    effect_size: float
    canaries: Mapping[str, CanaryShift]  # by canary name
    burst_samples: int
    fingerprints: Sequence[str]
    strong: bool  # far past chance: raised at once; otherwise a second burst must confirm
    silent: bool = False  # set by `observe`, which knows the version signals
    confirmations: Sequence[datetime] = ()
    noise: tuple[float, float] | None = None  # the channel's typical value and spread before the change

    @property
    def channel(self) -> str:
        """Which signal saw the change: "answers" (the answer distribution) or "logprobs"."""
        return "logprobs" if self.statistic == "logprob" else "answers"


@dataclass(frozen=True)
class Prejudged:
    """What a check concluded before its database transaction: the screen (which decides on a burst) and,
    when a burst was taken, its verdict. `observe` uses them when the state it is handed is still `state`."""

    state: DriftState  # the state as read before the check
    learned: DriftState  # ... with this check's learning applied: what the screen and the burst are judged by
    screen: Screen | None
    verdict: Finding | None = None
    judged: bool = False  # `verdict` is confirm()'s answer for the burst (None: not confirmed)

    @property
    def wants_burst(self) -> bool:
        """The screen hit (or a weak confirmation awaits this check's): take a confirmation burst."""
        return self.screen is not None and self.screen.hit


def prescreen(state: DriftState, samples: Sequence[Sample], keys: Mapping[str, CanaryKey], now: datetime) -> Prejudged:
    """Screen a check's samples as `observe` will; a hit asks for a burst, for `confirm` to judge."""
    learned, mature_samples, mature = _learn(state, samples, list(keys.values()), now)
    return Prejudged(state, learned, screen(learned, mature_samples, mature) if mature_samples else None)


def _learn(
    state: DriftState, samples: Sequence[Sample], keys: list[CanaryKey], now: datetime
) -> tuple[DriftState, list[Sample], set[CanaryKey]]:
    """Forget canaries no longer configured, fold the samples of learning canaries into their reference, and
    return the samples of the canaries that are judged."""
    state = forget(state, set(keys))
    if not samples:
        return state, [], set()
    mature = {k for k in keys if state.mature(k)}
    young = [s for s in samples if s.key not in mature]
    if young and state.learned >= LEARNING_CHECKS and state.reference:
        state = with_late_learners(state, tallies_of(young), young)
    elif young or state.learned < LEARNING_CHECKS:
        state = replace(
            with_reference(state, tallies_of(young), now, young), learned=min(state.learned + 1, LEARNING_CHECKS)
        )
    return state, [s for s in samples if s.key in mature], mature


def observe(
    state: DriftState,
    samples: Sequence[Sample],
    burst: Sequence[Sample],
    keys: Mapping[str, CanaryKey],
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
        learned, samples, mature = _learn(state, samples, list(keys.values()), now)
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
    # Adaptive sampling: a canary whose own surprise is up takes more samples for the next checks.
    boost = {k: n - 1 for k, n in state.boost.items() if n > 1}
    if not result.hit:
        boost.update({k: BOOST_CHECKS for k in result.elevated})
    state = replace(state, boost=boost)
    finding = None
    if result.hit:
        state = replace(state, screen_hits=state.screen_hits + 1)
        if burst:
            state = replace(state, bursts=state.bursts + 1)
            judged = prejudged is not None and prejudged.judged
            found = prejudged.verdict if prejudged is not None and judged else confirm(learned, result, burst, keys)
            if found is None:
                state = replace(state, pending=None)
            elif found.strong or state.pending is not None:
                times = (state.pending, now) if state.pending is not None else (now,)
                history = learned.logprob_screens if found.channel == "logprobs" else learned.screens
                finding = replace(found, silent=not changes, confirmations=times, noise=noise(history))
            else:
                state = replace(state, pending=now)  # serving noise of the moment, or a change? Ask again next check.
    if finding is not None:
        # Re-learning: the new behaviour is the reference from now on, of post-change answers only. This check
        # and its burst start it and it judges at once (a second change is caught as the first was); the
        # window, which mixes old and new, is forgotten, and grows back with the reference (below).
        fresh = replace(state, reference=(), window=(), boost={}, open_since=now, open_silent=finding.silent)
        fresh = with_reference(fresh, tallies_of([*samples, *burst]), now, [*samples, *burst])
        return replace(fresh, pending=None, confirmed=state.confirmed + 1), finding
    # Burst samples stay out of the window: one moment's many answers would weigh as much as several checks.
    # The window holds at most as many checks as the reference has moments, so a young reference (after
    # learning, or after a drift) grows from judged checks, one in two, and no check joins it unjudged.
    seq = state.seq + 1
    window = (*state.window, CheckTally(seq, now, tallies_of(samples)))
    size = min(WINDOW_CHECKS, max(1, state.moments))
    leaving, window = window[:-size], window[-size:]
    state = replace(state, window=window, seq=seq)
    if leaving:  # the oldest window check joins the reference: the same row, now counted there
        reference = (*state.reference, *leaving)[-REFERENCE_CHECKS:]
        state = replace(state, reference=reference, examples=examples_for(state.examples, reference, samples))
    return state, None


def confirm(
    state: DriftState, result: Screen, burst: Sequence[Sample], keys: Mapping[str, CanaryKey]
) -> Finding | None:
    """Test the fresh burst alone; a Finding when it rejects too (its `silent` is for `observe` to set).

    Exact tests share CONFIRM_ALPHA (Bonferroni): the pooled G across canaries gets half, and each
    canary's own G an equal share of the other half, so a change confined to one canary is confirmed
    without being diluted by the others. Failing those, the burst's logprob change must pass the
    threshold. The first test that rejects decides.
    """
    names = {key: name for name, key in keys.items()}
    judged = [k for k in by_key(burst) if state.mature(k) and k in names]
    burst = [s for s in burst if s.key in judged]
    content = repr([(str(s.key), s.outcome, s.fingerprint) for s in burst]).encode()
    rng = random.Random(hashlib.sha256(content).digest()[:8])  # the same samples always give the same verdict
    by_canary = tables(state.references, burst)
    pooled = [t for strata in by_canary.values() for t in strata]
    share = CONFIRM_ALPHA / 2 / max(1, len(by_canary))
    tests = [("pooled_g", pooled, CONFIRM_ALPHA / 2, PERMUTATIONS)]
    tests += [(f"g:{names[key]}", strata, share, _permutations_for(share)) for key, strata in by_canary.items()]
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
    canaries: dict[str, CanaryShift] = {}
    for key, mine in by_key(burst).items():
        reference = state.references.get(key, EMPTY)
        before = reference.distribution()
        after = frequencies(s.outcome for s in mine)
        canaries[names[key]] = CanaryShift(
            tv=round(total_variation(before, after), 3),
            reference_samples=len(reference),
            burst_samples=len(mine),
            before=_top(before),
            after=_top(after),
            before_examples=tuple(reference.examples.get(o, o) for o in list(_top(before))[:2]),
            after_examples=tuple(dict.fromkeys(s.text or s.outcome for s in mine))[:2],
        )
    effect = max((c.tv for c in canaries.values()), default=0.0)
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


def _window_span(state: DriftState, now: datetime) -> timedelta:
    return now - state.window[0].time if state.window else timedelta(0)
