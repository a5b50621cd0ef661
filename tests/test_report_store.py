"""What the HTML report reads from the store, on both backends: requests counted per time step, and the drift screens
recorded with the checks, the most alarming one per step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import Backend, BlockingStore

from fpwatch.detect.conclude import conclude
from fpwatch.detect.events import ScreenFigures
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import Policy
from fpwatch.store import CheckRecord
from fpwatch.store.history import STEPS, finest_step, step_start

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(timedelta(hours=24), 1, 3)


def answer(t: datetime, model: str, fingerprint: str | None, ok: bool = True) -> Observation:
    if not ok:
        return Observation(t, model, "c", 0, 1, ok=False, error_kind="server", error="HTTP 500")
    return Observation(
        t,
        model,
        "c",
        0,
        1,
        ok=True,
        system_fingerprint=fingerprint,
        fingerprint_state="present" if fingerprint else "absent",
        response_model="gpt-4o-2024-08-06",
        output="2",
    )


def record(
    store: BlockingStore,
    n: int,
    model: str,
    at: datetime,
    answers: list[Observation],
    screen: ScreenFigures | None = None,
) -> None:
    check = CheckRecord(f"{model}-{n}", model, at, at, len(answers), sum(not o.ok for o in answers), None, screen)
    store.record_check(check, answers, lambda s: conclude(s, answers, POLICY, at))


def test_answers_are_counted_per_model_step_fingerprint_and_outcome(backend: Backend) -> None:
    """Requests since a time, per model and hour: each fingerprint and resolved model apart, failures apart."""
    with BlockingStore(backend.state()) as store:
        for n, minutes in enumerate((0, 10, 70)):
            at = T0 + timedelta(minutes=minutes)
            answers = [answer(at, "a", fp) for fp in ("fp_1", "fp_2", None)] + [answer(at, "a", None, ok=False)]
            record(store, n, "a", at, answers)
        record(store, 9, "b", T0, [answer(T0, "b", "fp_1")])
        record(store, 10, "b", T0 - timedelta(hours=2), [answer(T0 - timedelta(hours=2), "b", "fp_old")])
        counts = store.answer_counts(T0, timedelta(hours=1))
    got = {(c.model, c.step, c.system_fingerprint, c.response_model, c.ok): c.count for c in counts}
    hour, next_hour = T0, T0 + timedelta(hours=1)
    assert got == {
        ("a", hour, "fp_1", "gpt-4o-2024-08-06", True): 2,
        ("a", hour, "fp_2", "gpt-4o-2024-08-06", True): 2,
        ("a", hour, None, "gpt-4o-2024-08-06", True): 2,
        ("a", hour, None, None, False): 2,
        ("a", next_hour, "fp_1", "gpt-4o-2024-08-06", True): 1,
        ("a", next_hour, "fp_2", "gpt-4o-2024-08-06", True): 1,
        ("a", next_hour, None, "gpt-4o-2024-08-06", True): 1,
        ("a", next_hour, None, None, False): 1,
        ("b", hour, "fp_1", "gpt-4o-2024-08-06", True): 1,  # fp_old is before `since`
    }


def test_a_check_keeps_its_drift_screen_and_the_most_alarming_one_of_a_step_is_read(backend: Backend) -> None:
    """The screens recorded with the checks come back oldest first, one per model and step: the one that came
    nearest its threshold (or passed it furthest) on either channel; a check that ran none has no row."""
    quiet, loud, lp_loud = (ScreenFigures(2.0, 10.0, 1e-4, 1e-3, 34), ScreenFigures(8.0, 10.0, 1e-4, 1e-3, 34),
                            ScreenFigures(1.0, 10.0, 9e-4, 1e-3, 34))  # fmt: skip
    with BlockingStore(backend.state()) as store:
        for n, (minutes, screen) in enumerate(((0, quiet), (5, loud), (9, None), (12, quiet), (15, lp_loud))):
            at = T0 + timedelta(minutes=minutes)
            record(store, n, "a", at, [answer(at, "a", "fp_1")], screen)
        every = store.drift_screens(T0, timedelta(minutes=1))
        per_ten = store.drift_screens(T0, timedelta(minutes=10))
        later = store.drift_screens(T0 + timedelta(minutes=13), timedelta(minutes=1))
    assert [(s.model, s.time, s.figures) for s in every] == [
        ("a", T0 + timedelta(minutes=m), f) for m, f in ((0, quiet), (5, loud), (12, quiet), (15, lp_loud))
    ]
    assert [(s.time, s.figures) for s in per_ten] == [
        (T0 + timedelta(minutes=5), loud),
        (T0 + timedelta(minutes=15), lp_loud),  # 0.9 of its logprob threshold beats 0.2 of the answers'
    ]
    assert [s.time for s in later] == [T0 + timedelta(minutes=15)]


def test_a_step_is_a_prefix_of_the_iso_time() -> None:
    """Each step's prefix names its start; a bucket width gets the coarsest step that divides it finely."""
    assert step_start("2026-11-22T20") == datetime(2026, 11, 22, 20, tzinfo=UTC)
    assert step_start("2026-11-22T20:4") == datetime(2026, 11, 22, 20, 40, tzinfo=UTC)
    assert step_start("2026-11-22T20:42:4") == datetime(2026, 11, 22, 20, 42, 40, tzinfo=UTC)
    assert step_start("2026-11-22") == datetime(2026, 11, 22, tzinfo=UTC)
    assert finest_step(timedelta(hours=6)) == timedelta(hours=1)
    assert finest_step(timedelta(minutes=28)) == timedelta(minutes=10)
    assert finest_step(timedelta(seconds=3)) == timedelta(seconds=1)
    assert finest_step(timedelta(milliseconds=10)) == timedelta(seconds=1)
    with pytest.raises(ValueError, match="a step is one of"):
        from fpwatch.store.history import answer_sql

        answer_sql(timedelta(minutes=7), "?")
    assert len(STEPS) == 6
