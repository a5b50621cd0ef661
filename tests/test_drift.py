"""Drift statistics on fixed inputs with known answers, and the decision rules on seeded synthetic streams."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import BlockingStore

from fpwatch.check import canary_key
from fpwatch.config import BUILTIN_SET, Canary, Message
from fpwatch.detect import drift
from fpwatch.detect.conclude import conclude
from fpwatch.detect.drift import CheckTally, DriftState, Reference, Sample
from fpwatch.detect.observation import FirstToken, Observation
from fpwatch.detect.state import ModelState, Policy
from fpwatch.errors import ProbeError
from fpwatch.providers.capabilities import adapt, rejected_option
from fpwatch.store import CheckRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- the statistics, by hand ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),  # the textbook 95% point of chi-square(1)
        (6.634896601021214, 1, 0.01),
        (9.21034037197618, 2, 0.01),
        (18.46682695290317, 4, 0.001),
        (18.307038053275146, 10, 0.05),
        (0.5, 3, 0.9188914244),  # below the mean: the series branch
    ],
)
def test_chi_square_tail_matches_tables(x: float, df: int, p: float) -> None:
    """The chi-square upper tail matches the printed tables, in both branches of the computation."""
    assert math.exp(drift.chi2_logsf(x, df)) == pytest.approx(p, rel=1e-6)


def test_chi_square_tail_with_two_degrees_is_exactly_exponential() -> None:
    """With two degrees of freedom the tail is exp(-x/2): far tails stay finite because they are kept in logs."""
    for x in (0.1, 1.0, 10.0, 200.0, 2000.0):
        assert drift.chi2_logsf(x, 2) == pytest.approx(-x / 2, rel=1e-9)  # far tails stay finite in logs


def test_surprise_is_minus_log10_p() -> None:
    """Surprise is -log10 of the chi-square p-value: 2 means p = 0.01."""
    assert drift.surprise(6.634896601021214, 1) == pytest.approx(2.0, rel=1e-6)
    assert drift.surprise(0.0, 3) == 0.0


def test_g_statistic_of_a_two_by_two_table() -> None:
    # ref a:10 b:10, window a:10 b:0 -> G = 20 * (ln 0.75 + 2 ln 1.5) = 10.4650...
    """G of a 2 x 2 table equals the value worked out by hand; equal proportions give 0."""
    g, df = drift.g_statistic({"a": 10, "b": 10}, {"a": 10})
    assert g == pytest.approx(20 * (math.log(0.75) + 2 * math.log(1.5)), rel=1e-12)
    assert df == 1
    assert drift.g_statistic({"a": 5, "b": 5}, {"a": 1, "b": 1}) == (0.0, 1)  # same proportions: nothing


def test_total_variation() -> None:
    """Total variation is the share of probability that moved: 0.3, 1 for disjoint answers, 0 for the same."""
    assert drift.total_variation({"Heads": 0.5, "Tails": 0.5}, {"Heads": 0.8, "Tails": 0.2}) == pytest.approx(0.3)
    assert drift.total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert drift.total_variation({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0


def test_robust_threshold_is_median_plus_k_mad_with_a_floor() -> None:
    """The threshold is median + k x 1.4826 x MAD of the history, never below the floor, the floor alone when short."""
    history = [float(x) for x in range(1, 21)]  # median 10.5, MAD 5
    assert drift.robust_threshold(history, 4.0, 2.0) == pytest.approx(10.5 + 4 * 1.4826 * 5)
    assert drift.robust_threshold([1.0] * 30, 4.0, 2.0) == 2.0  # a calm history never goes under the floor
    assert drift.robust_threshold(history[:5], 4.0, 2.0) == 2.0  # too short: the floor alone


def test_logprob_change_is_the_mean_absolute_change_over_the_references_top_tokens() -> None:
    """LT's statistic compares only the reference's top 3 tokens, a missing token counting at the sample's minimum."""
    reference = {"k": Reference.of([Sample("k", "a", top={"a": -0.1, "b": -2.5, "c": -4.0, "d": -6.0})])}
    window = [Sample("k", "a", top={"a": -0.1, "b": -2.0, "c": -4.3, "d": -1.0})]
    # the reference's top 3 only (a, b, c): (0 + 0.5 + 0.3) / 3; d's rank depends on the host's top-k depth
    assert drift.logprob_change(reference, window) == pytest.approx(0.8 / 3)
    # A token the sample lacks counts at the sample's minimum; one the reference never had is not compared.
    window = [Sample("k", "a", top={"a": -0.1, "b": -2.5, "e": -3.0})]
    # a: 0; b: 0; c: |-3.0 - (-4.0)| = 1.0
    assert drift.logprob_change(reference, window) == pytest.approx(1.0 / 3)
    # two samples: the means are compared, sample by sample minimum imputation
    window = [Sample("k", "a", top={"a": -0.2, "b": -2.4, "c": -4.0}), Sample("k", "a", top={"a": 0.0, "b": -2.6})]
    # a: mean -0.1 -> 0; b: mean -2.5 -> 0; c: mean of -4.0 and -2.6 (the second sample's minimum) = -3.3 -> 0.7
    assert drift.logprob_change(reference, window) == pytest.approx(0.7 / 3)
    assert drift.logprob_change(reference, [Sample("k", "a")]) is None


def test_permutation_p_value() -> None:
    """The permutation p-value is 1 for nothing, tiny for a new answer, and the exact hypergeometric tail otherwise."""
    rng = random.Random(1)
    ref = Reference.of([Sample("k", o) for o in ["Heads"] * 30 + ["Tails"] * 30])

    def p_of(outcomes: list[str], alpha: float = 0.001, permutations: int = drift.PERMUTATIONS) -> float:
        strata = drift.tables({"k": ref}, [Sample("k", o) for o in outcomes])["k"]
        return drift.permutation_p(strata, rng, alpha=alpha, permutations=permutations)

    assert p_of(["Heads"] * 8 + ["Tails"] * 8) == 1.0  # G = 0: nothing to explain
    assert p_of(["Heads"] * 10 + ["Tails"] * 6) > 0.05
    assert p_of(["Purple"] * 16) == pytest.approx(1 / (drift.PERMUTATIONS + 1))  # no shuffle comes close
    # 14 of 16 Heads against a 30/30 reference: the exact answer is the hypergeometric probability of
    # every window whose G is at least as large (76 labels, 44 Heads, 16 drawn).
    observed = drift.g_statistic({"Heads": 30, "Tails": 30}, {"Heads": 14, "Tails": 2})[0]
    exact = sum(
        math.comb(44, h) * math.comb(32, 16 - h) / math.comb(76, 16)
        for h in range(17)
        if drift.g_statistic({"Heads": 44 - h, "Tails": 16 + h}, {"Heads": h, "Tails": 16 - h})[0] >= observed - 1e-9
    )
    estimate = p_of(["Heads"] * 14 + ["Tails"] * 2, alpha=1.0, permutations=20000)
    assert estimate == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20000))  # 4 standard errors


def test_fingerprint_strata_absorb_replica_differences() -> None:
    """Replica A always says Heads, replica B always Tails: a window served by B alone is not a change."""
    ref = Reference.of([Sample("k", "Heads", "fp_a")] * 40 + [Sample("k", "Tails", "fp_b")] * 40)
    only_b = [Sample("k", "Tails", "fp_b") for _ in range(12)]

    def pooled_g(samples: list[Sample]) -> tuple[float, int]:
        return drift.g_of(drift.tables({"k": ref}, samples)["k"])

    assert pooled_g(only_b)[0] == 0.0
    unknown_fp = [Sample("k", "Tails", "fp_new") for _ in range(12)]  # a new replica is compared with the pool
    assert pooled_g(unknown_fp)[0] > 5
    flipped = [Sample("k", "Heads", "fp_b") for _ in range(12)]  # B changed its answer
    assert drift.surprise(*pooled_g(flipped)) > 6


def test_outcome_is_the_whitespace_normalised_first_words() -> None:
    """An outcome is the answer's first eight words, whitespace-normalised."""
    assert drift.outcome("  2\n") == drift.outcome("2") == "2"
    assert (
        drift.outcome("The  quick brown fox jumps over the lazy dog again") == "The quick brown fox jumps over the lazy"
    )
    assert drift.outcome(None) == ""


def test_canary_key_changes_when_the_request_changes() -> None:
    """A canary's reference key follows what it sends: more samples keep it, other tokens or options do not."""
    canary = BUILTIN_SET[1]
    assert canary_key(canary) == canary_key(replace(canary, samples=9))  # more samples: same question
    assert canary_key(canary) != canary_key(replace(canary, max_tokens=3))
    assert canary_key(canary) != canary_key(adapt(canary, frozenset({"temperature"})))


# --- capabilities ---------------------------------------------------------------------------------------------


def test_adapt_leaves_out_what_the_model_rejects() -> None:
    """Adapting a canary drops the options the model rejected; without temperature it takes twice the samples."""
    canary = Canary("c", (Message("user", "Heads or tails?"),), seed=1, temperature=0.0, samples=3, logprobs=True)
    assert adapt(canary, frozenset()) is canary
    reasoning = adapt(canary, frozenset({"temperature", "logprobs", "seed"}))
    assert (reasoning.temperature, reasoning.logprobs, reasoning.seed, reasoning.samples) == (None, False, None, 6)


def _fixture_message(name: str) -> str:
    body = json.loads((Path(__file__).parent / "fixtures" / "responses" / name).read_text())["body"]
    return str(body["error"]["message"] if isinstance(body["error"], dict) else body["error"])


def test_rejected_option_reads_the_providers_words() -> None:
    """The rejected option is read from the provider's words, never from fpwatch's hint, and only if it was sent."""
    canary = BUILTIN_SET[0]
    assert rejected_option(_fixture_message("openai-400-unsupported-temperature.json"), canary) == "temperature"
    said = (
        "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported."
    )
    assert rejected_option(said, canary) == "temperature"
    said = "Unsupported parameter: 'top_logprobs' is not supported with this model."
    assert rejected_option(said, canary) == "logprobs"
    assert rejected_option(said, replace(canary, logprobs=False)) is None  # not sent: not the cause
    assert rejected_option(_fixture_message("openai-400-unsupported-value-o1-mini.json"), canary) is None
    # fpwatch's own hint after the dash never counts as the provider's words
    hinted = ProbeError("bad_request", "Invalid value for 'n' (HTTP 400)", 'set temperature = "default" (unsupported)')
    assert rejected_option(hinted, canary) is None


# --- decisions on synthetic streams ------------------------------------------------------------------------

STEADY = {
    "x": {"Hello": 0.5, "Hi": 0.3, "Hey": 0.2},
    "one": {"2": 1.0},
    "coin": {"Heads": 0.6, "Tails": 0.4},
    "color": {"Blue": 0.55, "Red": 0.3, "Green": 0.15},
}
OTHER = {
    "x": {"Greetings": 0.6, "Yo": 0.4},
    "one": {"2": 1.0},
    "coin": {"Tails": 0.7, "Heads": 0.3},
    "color": {"Purple": 0.5, "Green": 0.5},
}
FINGERPRINTS = {"fp_a": 0.6, "fp_b": 0.3, "fp_c": 0.1}


class Stream:
    """A seeded model answering the four canaries, checked every 15 minutes through drift.observe."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.state = DriftState()
        self.now = T0
        self.keys = {name: name for name in STEADY}  # canary name -> its reference key (the name will do here)

    def draw(
        self, behaviour: Mapping[str, Mapping[str, float]], n: int, shift: float = 0.0, jitter: float = 0.02
    ) -> list[Sample]:
        out = []
        for key, dist in behaviour.items():
            top_answer = max(dist, key=lambda a: dist[a])
            for _ in range(n):
                answer = self.rng.choices(list(dist), weights=list(dist.values()))[0]
                top = {
                    a: min(-1e-4, math.log(p) + self.rng.gauss(0, jitter) + (shift if a != top_answer else 0.0))
                    for a, p in dist.items()
                }
                if len(top) == 1:  # a sure answer: its runners-up, far below, carry the logprob statistic
                    top.update({f"{top_answer}?": -9.0 + self.rng.gauss(0, jitter) + shift, "…": -11.0 + shift})
                fp = self.rng.choices(list(FINGERPRINTS), weights=list(FINGERPRINTS.values()))[0]
                out.append(Sample(key, answer, fp, top, answer))
        return out

    def check(
        self,
        behaviour: Mapping[str, Mapping[str, float]] = STEADY,
        shift: float = 0.0,
        changes: tuple[datetime, ...] = (),
        jitter: float = 0.02,
    ) -> drift.Finding | None:
        samples = self.draw(behaviour, 4, shift, jitter)
        prejudged = drift.prescreen(self.state, samples, self.keys, self.now)
        burst = self.draw(behaviour, 16, shift, jitter) if prejudged.wants_burst else []
        self.state, finding = drift.observe(
            self.state, samples, burst, self.keys, self.now, signal_changes=changes, prejudged=prejudged
        )
        self.now += timedelta(minutes=15)
        return finding


def test_learning_then_quiet_through_a_long_noisy_steady_state() -> None:
    """After learning, three weeks of noisy checks raise nothing: the screen fires on noise, bursts keep it quiet."""
    stream = Stream(seed=7)
    for _ in range(3):
        assert stream.check() is None
    assert stream.state.learning(stream.keys)  # 12 samples per canary: still learning
    assert stream.check() is None
    assert not stream.state.learning(stream.keys)
    findings = [stream.check() for _ in range(2000)]  # three weeks at 15 minutes
    assert not any(findings)
    assert stream.state.screen_hits > 0  # the screen did fire on noise; the bursts kept it quiet
    assert stream.state.bursts == stream.state.screen_hits
    assert len(stream.state.references["coin"]) == drift.REFERENCE_CHECKS * 4  # the last 24 checks' 4 samples


def test_a_silent_swap_is_confirmed_on_its_first_check_and_then_relearned() -> None:
    """A full swap is raised on its first check as strong and silent, then the new behaviour is the reference."""
    stream = Stream(seed=8)
    for _ in range(40):
        assert stream.check() is None
    finding = stream.check(OTHER)
    assert finding is not None and finding.silent and finding.strong  # a swap is raised on its first check
    assert finding.statistic == "pooled_g" and finding.p_value is not None and finding.p_value < drift.CONFIRM_ALPHA
    assert finding.effect_size > 0.8  # a full swap: nearly every answer of the most-moved canary changed
    assert finding.canaries["color"]["before"]["Blue"] > 0.3 and "Purple" in finding.canaries["color"]["after"]
    assert stream.state.open_since is not None and stream.state.confirmed == 1
    for _ in range(200):  # the new behaviour is the reference now: it is not reported again
        assert stream.check(OTHER) is None


def test_a_change_next_to_a_fingerprint_change_is_not_silent() -> None:
    """A drift within the screen's window of a version-signal change is reported as not silent."""
    stream = Stream(seed=9)
    for _ in range(40):
        stream.check()
    finding = stream.check(OTHER, changes=(stream.now,))
    assert finding is not None and not finding.silent


def test_a_logprob_only_perturbation_is_found_by_the_logprob_statistic_and_confirmed_twice() -> None:
    """Logprobs moved, answers not: the logprob statistic finds it, and the weak evidence must confirm twice."""
    stream = Stream(seed=10)
    for _ in range(60):
        assert stream.check() is None
    # 0.1 nats on the runners-up, five times the logprob jitter: the burst confirms, but once is not enough
    assert stream.check(shift=0.1) is None
    assert stream.state.pending is not None
    finding = stream.check(shift=0.1)  # the next check's burst confirms again: now it is raised
    assert finding is not None and finding.statistic == "logprob" and finding.value > finding.threshold
    assert not finding.strong and len(finding.confirmations) == 2 and stream.state.pending is None


def test_a_weak_confirmation_that_does_not_persist_is_dropped() -> None:
    """One moment of odd serving: the screen and its burst agree, the next check's burst does not."""
    stream = Stream(seed=12)
    for _ in range(60):
        assert stream.check() is None
    assert stream.check(shift=0.1) is None and stream.state.pending is not None
    assert stream.check() is None  # back to normal: the forced burst does not confirm
    assert stream.state.pending is None and stream.state.confirmed == 0


def test_dispersion_is_the_median_check_ratio_over_chi_squares_and_scales_the_confirmation() -> None:
    """The dispersion factor is the median single-check G/df over chi-square's, at least 1, and damps the exact test."""
    assert DriftState().dispersion() == 1.0  # no history: independent samples assumed
    assert DriftState(ratios=(1.86,) * 30).dispersion() == pytest.approx(2.0)  # 1.86 / 0.93
    assert DriftState(ratios=(0.5,) * 30).dispersion() == 1.0  # never below 1
    assert DriftState(ratios=(100.0,) * 30).dispersion() == drift.MAX_DISPERSION
    # a reference of m moments adds 1/m of the excess again: the reference's own moments differ too
    young = DriftState(reference=(CheckTally(1, T0, {}),), ratios=(1.86,) * 30)
    assert young.dispersion() == pytest.approx(3.0)
    many = DriftState(reference=(CheckTally(1, T0, {}, drift.REFERENCE_CHECKS),), ratios=(1.86,) * 30)
    assert many.dispersion() == pytest.approx(2.0 + 1 / drift.REFERENCE_CHECKS)
    ref = Reference.of([Sample("k", o) for o in ["Heads"] * 30 + ["Tails"] * 30])
    strata = drift.tables({"k": ref}, [Sample("k", o) for o in ["Heads"] * 14 + ["Tails"] * 2])["k"]
    observed = drift.g_statistic({"Heads": 30, "Tails": 30}, {"Heads": 14, "Tails": 2})[0]

    def exact(at_least: float) -> float:  # hypergeometric: 76 labels, 44 Heads, 16 drawn
        return sum(
            math.comb(44, h) * math.comb(32, 16 - h) / math.comb(76, 16)
            for h in range(17)
            if drift.g_statistic({"Heads": 44 - h, "Tails": 16 + h}, {"Heads": h, "Tails": 16 - h})[0]
            >= at_least - 1e-9
        )

    damped = drift.permutation_p(strata, random.Random(2), alpha=1.0, permutations=20000, dispersion=3.0)
    expected = exact(observed / 3)  # shuffles are compared with G / 3
    assert expected > 5 * exact(observed)
    assert damped == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 20000))


def test_quiet_when_serving_noise_varies_from_moment_to_moment() -> None:
    """Load-dependent serving: each check and its burst share a moment whose coin odds differ by up to 0.2."""
    stream = Stream(seed=13)
    rng = random.Random(14)
    for _ in range(1500):
        p = 0.6 + rng.uniform(-0.2, 0.2)
        moment = {**STEADY, "coin": {"Heads": p, "Tails": 1 - p}, "color": {"Blue": p, "Red": 1 - p}}
        assert stream.check(moment) is None
    assert stream.state.dispersion() > 1.0  # measured, and used by the confirmation


def test_observe_uses_the_prescreen_only_for_the_state_it_was_computed_on() -> None:
    """A prescreen is reused for the state it saw; for a state another process changed, the screen is run again."""
    stream = Stream(seed=15)
    for _ in range(30):
        stream.check()
    steady = stream.draw(STEADY, 4)
    burst = stream.draw(OTHER, 16)
    prejudged = drift.prescreen(stream.state, steady, stream.keys, stream.now)
    assert prejudged.screen is not None and not prejudged.screen.hit
    forced = replace(prejudged, screen=replace(prejudged.screen, pending=True))  # as if the screen had hit
    _, used = drift.observe(stream.state, steady, burst, stream.keys, stream.now, prejudged=forced)
    assert used is not None  # the prescreen's hit was taken as is, and the burst judged
    elsewhere = replace(forced, state=replace(stream.state, screen_hits=stream.state.screen_hits + 1))
    _, recomputed = drift.observe(stream.state, steady, burst, stream.keys, stream.now, prejudged=elsewhere)
    assert recomputed is None  # another state: screened again, and the steady samples do not hit


def test_drift_state_survives_json() -> None:
    """The drift state's JSON form (what the store keeps) reads back to the same state."""
    stream = Stream(seed=11)
    for _ in range(10):
        stream.check()
    stored = json.loads(json.dumps(stream.state.to_json()))
    rows = {c.seq: CheckTally.from_json(c.seq, json.loads(json.dumps(c.to_json()))) for c in stream.state.checks()}
    again = DriftState.from_json(stored, rows)
    assert again.to_json() == stream.state.to_json()
    assert [c.to_json() for c in again.checks()] == [c.to_json() for c in stream.state.checks()]
    assert DriftState.from_json({}) == DriftState()


def test_a_second_change_while_relearning_is_caught_like_the_first() -> None:
    """Re-learning judges at once from post-change answers: a one-canary change two checks after a swap is
    found within three checks, and the state holds only post-change checks."""
    stream = Stream(seed=16)
    for _ in range(40):
        assert stream.check() is None
    assert stream.check(OTHER) is not None
    swapped_at = stream.now - timedelta(minutes=15)
    assert all(c.time >= swapped_at for c in stream.state.checks())  # nothing from before the change
    for _ in range(2):
        assert stream.check(OTHER) is None
    moved = {**OTHER, "coin": {"Tails": 0.1, "Heads": 0.9}}
    findings = [stream.check(moved) for _ in range(3)]
    assert any(f is not None and "coin" in f.canaries for f in findings)


def test_the_window_grows_with_a_young_reference_and_every_check_is_judged_before_it_joins() -> None:
    """After a drift the reference starts from that check and its burst; the window holds at most as many checks as
    the reference has moments, so the reference grows from checks that were screened first."""
    stream = Stream(seed=17)
    for _ in range(40):
        stream.check()
    assert stream.check(OTHER) is not None
    assert stream.state.moments == 1 and stream.state.window == ()
    sizes = []
    for _ in range(20):
        assert stream.check(OTHER) is None
        sizes.append((stream.state.moments, len(stream.state.window)))
    assert all(window <= max(1, moments) for moments, window in sizes)
    assert sizes[-1] == (13, drift.WINDOW_CHECKS)  # 1 + 12 judged checks in the reference, 8 in the window


def _steady_run(stream: Stream, behaviour: Mapping[str, Mapping[str, float]], checks: int, jitter: float) -> None:
    for _ in range(checks):
        assert stream.check(behaviour, jitter=jitter) is None


DETERMINISTIC = {"x": {"Hello": 1.0}, "one": {"2": 1.0}, "coin": {"Heads": 1.0}, "color": {"Blue": 1.0}}


def test_a_deterministic_model_is_judged_near_its_own_precision_and_stays_quiet() -> None:
    """A self-hosted server answering the same every time, logprobs jittering by 1e-6 nats: after a long quiet
    run the logprob threshold sits near that noise (not at LOGPROB_YOUNG), and a 0.005-nat change of the
    first-token logprobs (no answer changes) is found; 0.005 nats is 25 times below the young bound."""
    stream = Stream(seed=18)
    _steady_run(stream, DETERMINISTIC, 1000, 1e-6)
    threshold = drift.logprob_threshold(stream.state)
    assert threshold < 1e-4, threshold
    assert drift.noise(stream.state.logprob_screens)[0] < 1e-5  # measured: about the jitter
    findings = [stream.check(DETERMINISTIC, shift=0.005, jitter=1e-6) for _ in range(3)]
    found = next(f for f in findings if f is not None)
    assert found.channel == "logprobs" and found.value > 100 * found.noise[0]


def test_a_noisy_model_keeps_its_false_alarm_budget_with_thresholds_from_its_own_noise() -> None:
    """Border flips and 0.05-nat logprob jitter: thresholds come from the model's own (larger) noise, and four
    weeks of checks raise nothing."""
    noisy = {"x": {"Hello": 0.5, "Hi": 0.5}, "coin": {"Heads": 0.55, "Tails": 0.45}, "color": STEADY["color"]}
    stream = Stream(seed=19)
    _steady_run(stream, noisy, 2700, 0.05)
    assert drift.logprob_threshold(stream.state) > 10 * drift.LOGPROB_PRECISION
    assert drift.screen_threshold(stream.state) >= drift.SCREEN_FLOOR
    assert len(stream.state.logprob_screens) == drift.HISTORY_MAX  # measured and kept up to date
    assert stream.state.confirmed == 0 and stream.state.screen_hits > 0


def test_a_v1_drift_state_converts_with_the_same_screen(tmp_path: Path) -> None:
    """A drift state written by fpwatch before the per-check rows (fixtures/state/drift_state_v1.json, written by
    commit 72e91e7: 40 checks of three canaries, and its screen's figures on two more) converts to the new form:
    the same reference counts and logprob means, the same screen on the same samples, and it keeps judging."""
    fixture = json.loads((Path(__file__).parent / "fixtures/state/drift_state_v1.json").read_text())
    v1 = fixture["state"]
    state = DriftState.from_json(v1)
    keys = {text.partition("#")[0]: drift.CanaryKey.parse(text) for text in v1["references"]}
    for text, old in v1["references"].items():
        reference = state.references[drift.CanaryKey.parse(text)]
        assert len(reference) == len(old["samples"])
        for token, (mean, _) in old["logprobs"].items():
            assert reference.logprobs is not None and reference.logprobs.mean(token) == pytest.approx(mean, abs=1e-9)
    assert state.screens == tuple(v1["screens"])[-drift.HISTORY_MAX :]
    now = datetime.fromisoformat(fixture["now"])
    for name in ("steady", "swapped"):
        old = fixture[name]
        samples = [Sample(drift.CanaryKey.parse(k), o, fp, top, text) for k, o, fp, top, text in old["samples"]]
        screen = drift.prescreen(state, samples, keys, now).screen
        assert screen is not None
        assert screen.surprise == pytest.approx(old["surprise"], rel=1e-9)
        assert screen.threshold == pytest.approx(old["threshold"], rel=1e-9)
        assert screen.logprob == pytest.approx(old["logprob"], abs=1e-6)
        assert screen.hit == old["hit"]  # the steady check passes, the swapped one asks for a burst
    # stored and read back as v2 (the converted reference is one row of many moments), then judged on
    with BlockingStore(tmp_path / "state.db") as store:
        seed = CheckRecord("seed", "m", now, now, 0, 0, None)
        store.record_check(seed, [], lambda _: (replace(ModelState("m"), drift=state), []))
        again = store.load_state("m").drift
    assert again.to_json()["v"] == 2 and again.moments == drift.REFERENCE_CHECKS
    assert again.references.keys() == state.references.keys()
    for key, reference in state.references.items():  # sums are stored to 10 significant digits
        stored_lp, lp = again.references[key].logprobs, reference.logprobs
        assert again.references[key].counts == reference.counts and stored_lp is not None and lp is not None
        assert all(stored_lp.mean(t) == pytest.approx(lp.mean(t), abs=1e-9) for t in lp.lift)
    steady = fixture["steady"]["samples"]
    samples = [Sample(drift.CanaryKey.parse(k), o, fp, top, text) for k, o, fp, top, text in steady]
    judged, finding = drift.observe(again, samples, [], keys, now)
    assert finding is None and [c.seq for c in judged.window] == [*(c.seq for c in again.window[1:]), again.seq + 1]
    assert judged.moments == again.moments + 1  # the window's oldest check joined the converted reference


# --- through conclude() and the store -----------------------------------------------------------------------


def _observations(
    model: str,
    behaviour: Mapping[str, Mapping[str, float]],
    rng: random.Random,
    n: int,
    now: datetime,
    shift: float = 0.0,
) -> list[Observation]:
    out = []
    for canary, dist in behaviour.items():
        for i in range(n):
            answer = rng.choices(list(dist), weights=list(dist.values()))[0]
            top = {a: math.log(p) + rng.gauss(0, 0.02) + (shift if a != answer else 0.0) for a, p in dist.items()}
            out.append(
                Observation(
                    now,
                    model,
                    canary,
                    i,
                    1,
                    True,
                    system_fingerprint="fp_a",
                    fingerprint_state="present",
                    response_model="m-1",
                    output=answer,
                    first_token=FirstToken(answer, top[answer], {a: min(-1e-4, v) for a, v in top.items()}),
                )
            )
    return out


def test_conclude_raises_a_critical_silent_drift_with_a_new_behaviour_fingerprint_and_ack_signs_it_off(
    tmp_path: Path,
) -> None:
    """conclude() raises a critical silent canary.drift with a new bfp; acking it in the store ends the drift state."""
    policy = Policy(timedelta(hours=1), 3, 3, canary_keys={name: name for name in STEADY})
    rng = random.Random(3)
    state, now = ModelState("m"), T0
    bfp = None
    for _ in range(30):
        state, events = conclude(state, _observations("m", STEADY, rng, 4, now), policy, now)
        assert not [e for e in events if e.type == "canary.drift"]
        bfp = bfp or state.behaviour_fingerprint
        now += timedelta(minutes=15)
    assert state.behaviour_fingerprint == bfp
    screen_obs = _observations("m", OTHER, rng, 4, now)
    burst = _observations("m", OTHER, rng, 16, now)
    state, events = conclude(state, screen_obs, policy, now, burst)
    (event,) = [e for e in events if e.type == "canary.drift"]
    assert event.severity == "critical" and event.details["silent"] is True
    assert "silently" in event.summary
    assert event.details["channel"] == "answers" and event.details["noise"]["typical"] >= 0
    assert (
        event.details["effect"].startswith("answers moved: ")
        and f"- {event.details['effect']}" in event.details.lines()
    )
    assert event.details["behaviour_fingerprint"] == {"old": bfp, "new": state.behaviour_fingerprint}
    assert state.behaviour_fingerprint != bfp

    with BlockingStore(tmp_path / "state.db") as store:
        seed = CheckRecord("seed", "m", now, now, 0, 0, None)
        _, (stored,) = store.record_check(seed, [], lambda _: (state, [event]))  # seeding the state directly
        assert store.load_state("m").drift.open_since == now
        assert stored.id is not None
        store.ack(stored.id, "expected: vendor upgrade", now + timedelta(minutes=5))
        assert store.load_state("m").drift.open_since is None


def test_a_logprob_drift_names_its_channel_the_models_noise_and_the_effect_in_words() -> None:
    """A change of first-token logprobs only: the event says "logprobs", the measured noise, and how many times
    that noise the logprobs moved, in words."""
    policy = Policy(timedelta(hours=1), 3, 3, canary_keys={name: name for name in STEADY})
    rng = random.Random(5)
    state, now = ModelState("m"), T0
    for _ in range(40):
        state, _ = conclude(state, _observations("m", STEADY, rng, 4, now), policy, now)
        now += timedelta(minutes=15)
    drifts = []
    for _ in range(3):
        burst = _observations("m", STEADY, rng, 16, now, shift=0.3)
        state, events = conclude(state, _observations("m", STEADY, rng, 4, now, shift=0.3), policy, now, burst)
        drifts += [e for e in events if e.type == "canary.drift"]
        now += timedelta(minutes=15)
    (event,) = drifts
    details = event.details
    assert details["channel"] == "logprobs" and details["statistic"] == "logprob"
    typical = details["noise"]["typical"]
    assert 0 < typical < 0.05 and details["noise"]["spread"] > 0
    times = details["value"] / typical
    assert details["effect"] == (
        f"first-token log-probabilities moved by {details['value']:.2g} nats, {times:,.0f}x this model's noise "
        f"({typical:.2g} nats)"
    )
    assert f"- {details['effect']}" in event.details.lines()  # the notification says it too
