"""What the HTML report makes of a window of history (report/history.py), values in and out: the buckets, the
stacked shares, the epochs and their lanes, the drift screens kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fpwatch.detect.events import BehaviourChange, DriftDetails, Event, ScreenFigures
from fpwatch.detect.state import ModelState
from fpwatch.report.history import (
    FAILED,
    NONE,
    OTHER,
    STACKED,
    Epoch,
    Window,
    behaviour_epochs,
    lanes,
    resolved_epochs,
    screen_series,
    shares,
)
from fpwatch.store import StoredEvent
from fpwatch.store.protocol import AnswerCount, DriftScreen

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def count(hours: float, fingerprint: str | None, n: int, ok: bool = True, resolved: str | None = "r1") -> AnswerCount:
    return AnswerCount("m", T0 + hours * HOUR, fingerprint, resolved if ok else None, ok, n)


def test_ninety_days_are_360_buckets_of_six_hours_aligned_on_the_hour() -> None:
    """The window is cut in about 360 buckets, each a whole number of the store's steps, from a step's start."""
    window = Window.of(T0 + timedelta(minutes=17), T0 + timedelta(days=90))
    assert (window.width, window.step, window.start) == (6 * HOUR, HOUR, T0)
    assert window.buckets == 360
    assert window.bucket(T0 + 7 * HOUR) == 1 and window.bucket(T0 + timedelta(days=200)) == 359


def test_a_bucket_is_never_narrower_than_twice_the_check_interval() -> None:
    """A 40-second story checked every second: 2-second buckets, not 360 one-second ones half of them empty."""
    window = Window.of(T0, T0 + timedelta(seconds=40), at_least=timedelta(seconds=2))
    assert window.width == timedelta(seconds=2) and window.buckets == 20
    assert window.end == T0 + timedelta(seconds=40)  # the last bucket ends now, not in the future


def test_shares_stack_to_one_with_answers_without_a_fingerprint_and_failures_apart() -> None:
    """Per bucket, every request counts once: each fingerprint, "(none)" answered without one, "(failed)"."""
    window = Window(T0, T0 + 2 * HOUR, HOUR, HOUR)
    got = shares(window, [count(0, "fp_a", 2), count(0, "fp_b", 1), count(0, None, 1), count(1, None, 3, ok=False)])
    assert got.signal == "fingerprint"
    assert list(got.values) == ["fp_a", "fp_b", NONE, FAILED]
    assert got.values["fp_a"] == [0.5, 0.0] and got.values[NONE] == [0.25, 0.0] and got.values[FAILED] == [0.0, 1.0]
    assert got.requests == [4, 3]
    for i in range(2):
        assert abs(sum(v[i] for v in got.values.values()) - 1) < 1e-9


def test_a_model_without_fingerprints_stacks_its_resolved_models_and_the_rarest_values_are_other() -> None:
    """No fingerprint at all: the resolved models are stacked; past STACKED values, the least requested are summed."""
    window = Window(T0, T0 + HOUR, HOUR, HOUR)
    resolved = shares(window, [count(0, None, 3, resolved="r1"), count(0, None, 1, resolved="r2")])
    assert resolved.signal == "resolved model" and resolved.values == {"r1": [0.75], "r2": [0.25]}
    many = shares(window, [count(0, f"fp_{i:02d}", 100 - i) for i in range(STACKED + 3)])
    assert list(many.values)[:STACKED] == [f"fp_{i:02d}" for i in range(STACKED)]
    assert list(many.values)[STACKED:] == [OTHER]


def test_resolved_models_overlap_in_lanes_and_an_empty_bucket_does_not_end_an_epoch() -> None:
    """A rollout: r1 and r2 seen together for a while, in two lanes; hours with no answers (an outage) do not cut
    r2's epoch in two."""
    window = Window(T0, T0 + 10 * HOUR, HOUR, HOUR)
    counts = [count(h, "fp", 1, resolved="r1") for h in (0, 1, 2, 3)]
    counts += [count(h, "fp", 1, resolved="r2") for h in (2, 3, 4, 8, 9)] + [count(6, None, 2, ok=False)]
    assert resolved_epochs(window, counts) == [
        Epoch("r1", T0, T0 + 4 * HOUR, 0),
        Epoch("r2", T0 + 2 * HOUR, T0 + 10 * HOUR, 1),
    ]
    assert [e.lane for e in lanes([Epoch("a", T0, T0 + HOUR), Epoch("b", T0 + HOUR, T0 + 2 * HOUR)])] == [0, 0]


def drift(at: datetime, old: str, new: str) -> StoredEvent:
    details = DriftDetails(
        "pooled_g", 80.0, 20.0, None, ScreenFigures(40.0, 12.0, None, 0.1, 34), 0.6, True, 200, (at,), (), {},
        BehaviourChange(old, new),
    )  # fmt: skip
    return StoredEvent(1, Event(at, "m", "canary.drift", "m: canary behaviour changed", details), "c")


def test_each_confirmed_drift_ends_a_behaviour_epoch_and_starts_the_next() -> None:
    """From the first check (or the window's start) to the last: one epoch per behaviour fingerprint."""
    window = Window(T0, T0 + 10 * HOUR, HOUR, HOUR)
    state = ModelState("m", first_check=T0 + HOUR, last_check=T0 + 9 * HOUR, behaviour_fingerprint="bfp_3")
    events = [drift(T0 + 3 * HOUR, "bfp_1", "bfp_2"), drift(T0 + 6 * HOUR, "bfp_2", "bfp_3")]
    assert behaviour_epochs(window, state, events) == [
        Epoch("bfp_1", T0 + HOUR, T0 + 3 * HOUR),
        Epoch("bfp_2", T0 + 3 * HOUR, T0 + 6 * HOUR),
        Epoch("bfp_3", T0 + 6 * HOUR, T0 + 9 * HOUR),
    ]
    assert behaviour_epochs(window, ModelState("m"), events) == []  # never checked: no behaviour yet


def test_the_most_alarming_screen_of_a_bucket_is_kept_on_either_channel() -> None:
    """Per half bucket, the check nearest (or furthest past) its threshold, answers or logprobs, with its figures."""
    window = Window(T0, T0 + 2 * HOUR, HOUR, HOUR)

    def screen(minutes: int, surprise: float, logprob: float | None) -> DriftScreen:
        return DriftScreen("m", T0 + timedelta(minutes=minutes), ScreenFigures(surprise, 10.0, logprob, 1e-3, 34))

    kept = screen_series(
        window, [screen(0, 2.0, 1e-4), screen(10, 5.0, None), screen(40, 1.0, 9e-4), screen(95, 3.0, None)]
    )
    assert [t - T0 for t in kept.times] == [timedelta(minutes=10), timedelta(minutes=40), timedelta(minutes=95)]
    assert kept.surprise == [5.0, 1.0, 3.0] and kept.logprob == [None, 9e-4, None] and kept.threshold == [10.0] * 3
