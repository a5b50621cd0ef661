"""The grace window, and every version-signal and health event of conclude(), on a controlled clock (DESIGN 5)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from fpwatch.detect.conclude import conclude
from fpwatch.detect.observation import Observation
from fpwatch.detect.state import ModelState, Policy, learning

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
MODEL = "openai/gpt-4o"


def obs(
    fingerprint: str | None,
    *,
    resolved: str | None = "gpt-4o-2024-08-06",
    state: str | None = None,
    ok: bool = True,
    canary: str = "c",
    output: str = "391",
) -> Observation:
    fp_state = state or ("present" if fingerprint else "null")
    if not ok:
        return Observation(T0, MODEL, canary, 0, 1, ok=False, error_kind="server_error", error="boom (HTTP 500)")
    return Observation(
        T0,
        MODEL,
        canary,
        0,
        1,
        ok=True,
        system_fingerprint=fingerprint,
        fingerprint_state=fp_state,  # type: ignore[arg-type]
        response_model=resolved,
        output=output,
    )


class Run:
    """Feeds checks to conclude() one interval apart and collects (check index, type, value)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy(timedelta(hours=24), 3, 3)
        self.state = ModelState(MODEL)
        self.now = T0
        self.index = 0
        self.events: list[tuple[int, str, str | None]] = []
        self.raw: list = []

    def check(self, observations: Sequence[Observation]) -> None:
        self.state, events = conclude(self.state, observations, self.policy, self.now)
        for e in events:
            value = e.details.get("new") or e.details.get("value") or e.details.get("canary")
            self.events.append((self.index, e.type, value))
            self.raw.append(e)
        self.index += 1
        self.now += STEP

    def checks(self, count: int, fingerprints: Sequence[str | None], **kw: object) -> None:
        for _ in range(count):
            self.check([obs(fp, **kw) for fp in fingerprints])  # type: ignore[arg-type]

    def types(self) -> list[str]:
        return [t for _, t, _ in self.events]


A, B, X = "fp_a000000000", "fp_b000000000", "fp_x000000000"
OLD, NEW = "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"


@dataclass(frozen=True)
class Phase:
    checks: int
    fingerprints: tuple[str | None, ...]  # one entry per sample; cycled through the checks when `rotate`
    resolved: tuple[str | None, ...] = (OLD,)
    state: str | None = None  # the missing form for None fingerprints
    rotate: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    phases: tuple[Phase, ...]
    expected: tuple[tuple[str, str], ...]  # (event type, value) in order
    grace: timedelta = timedelta(hours=24)
    learning: int = 3


def fps(*values: str | None) -> tuple[str | None, ...]:
    return values


RARE = tuple(["fp_common0000"] * 39 + ["fp_rare000000"])
GRACE_TABLE = [
    Case(
        "three replicas rotating for a week: baseline only",
        (Phase(4 * 24 * 7, ("fp_1111111111", "fp_2222222222", "fp_3333333333"), rotate=True),),
        (
            ("fingerprint.first_seen", "fp_1111111111"),
            ("fingerprint.first_seen", "fp_2222222222"),
            ("fingerprint.first_seen", "fp_3333333333"),
            ("model.first_seen", OLD),
        ),
    ),
    Case(
        "rollout A -> {A,B} -> B: one change, one retirement",
        (Phase(3, fps(A, A, A, A)), Phase(8, fps(A, B, A, B)), Phase(4 * 30, fps(B, B, B, B))),
        (
            ("fingerprint.first_seen", A),
            ("model.first_seen", OLD),
            ("fingerprint.changed", B),
            ("fingerprint.retired", A),
        ),
    ),
    Case(
        "A back after retirement: reverted",
        (Phase(3, fps(A, A, A, A)), Phase(4 * 25, fps(B, B, B, B)), Phase(3, fps(A, B))),
        (
            ("fingerprint.first_seen", A),
            ("model.first_seen", OLD),
            ("fingerprint.changed", B),
            ("fingerprint.retired", A),
            ("fingerprint.reverted", A),
        ),
    ),
    Case(
        "a 1-in-40 replica outlives a 1h grace period: never retired, never 'reverted'",
        (Phase(200 * 10, RARE, rotate=True),),
        (
            ("fingerprint.first_seen", "fp_common0000"),
            ("model.first_seen", OLD),
            ("fingerprint.changed", "fp_rare000000"),
        ),
        grace=timedelta(hours=1),
    ),
    Case(
        "a value seen once retires after 7 grace periods unseen (it can never be significant)",
        (Phase(3, fps(A, A, A, A)), Phase(1, fps(A, A, A, X)), Phase(4 * 24 * 8, fps(A, A, A, A))),
        (
            ("fingerprint.first_seen", A),
            ("model.first_seen", OLD),
            ("fingerprint.changed", X),
            ("fingerprint.retired", X),
        ),
    ),
    *(
        Case(
            f"{form} fingerprints for two days add nothing, retire nothing, say missing once",
            (Phase(3, fps(A, A, A, A)), Phase(4 * 48, fps(None, None, None, None), state=form), Phase(2, fps(A, None))),
            (("fingerprint.first_seen", A), ("model.first_seen", OLD), ("fingerprint.missing", "")),
        )
        for form in ("null", "empty", "absent")
    ),
    Case(
        "resolved model: baseline, rollout, retirement, reversion; absent names change nothing",
        (
            Phase(3, fps(A, A, A, A), resolved=(OLD,)),
            Phase(4, fps(A, A, A, A), resolved=(None,)),
            Phase(6, fps(A, A), resolved=(OLD, NEW)),
            Phase(4 * 25, fps(A, A, A, A), resolved=(NEW,)),
            Phase(1, fps(A, A, A, A), resolved=(OLD,)),
        ),
        (
            ("fingerprint.first_seen", A),
            ("model.first_seen", OLD),
            ("model.changed", NEW),
            ("model.retired", OLD),
            ("model.reverted", OLD),
        ),
    ),
]


@pytest.mark.parametrize("case", GRACE_TABLE, ids=[c.id for c in GRACE_TABLE])
def test_grace_window_table(case: Case) -> None:
    """Each scenario of the grace window, checks 15 minutes apart, gives exactly its events."""
    run = Run(Policy(case.grace, case.learning, 3))
    for phase in case.phases:
        width = len(phase.fingerprints)
        for i in range(phase.checks):
            if phase.rotate:
                start = (i * 4) % width
                chosen = [phase.fingerprints[(start + k) % width] for k in range(4)]
            else:
                chosen = list(phase.fingerprints)
            resolved = [phase.resolved[k % len(phase.resolved)] for k in range(len(chosen))]
            run.check(
                [
                    obs(fp, resolved=r, state=phase.state if fp is None else None)
                    for fp, r in zip(chosen, resolved, strict=True)
                ]
            )
    assert [(t, v or "") for _, t, v in run.events] == list(case.expected)


def test_weighted_random_rotation_seen_in_learning_stays_quiet() -> None:
    """Randomly drawn replicas (seeded) raise nothing after the baseline, for 30 days."""
    rng = random.Random(4)
    pool, weights = ["fp_1111111111", "fp_2222222222", "fp_3333333333"], [0.5, 0.3, 0.2]
    run = Run(Policy(timedelta(hours=24), timedelta(hours=6), 3))
    for _ in range(4 * 24 * 30):
        run.check([obs(fp) for fp in rng.choices(pool, weights, k=4)])
    assert sorted(run.types()) == ["fingerprint.first_seen"] * 3 + ["model.first_seen"]


def test_rollout_gives_one_change_then_one_retirement_a_grace_period_after_last_sighting() -> None:
    """A -> {A,B} -> B: exactly one fingerprint.changed, and A retires one grace period after it was last seen."""
    run = Run()
    run.checks(3, ["fp_a000000000"] * 4)  # baseline
    run.checks(8, ["fp_a000000000", "fp_b000000000"] * 2)  # overlap: both replicas serve
    last_a = run.now - STEP
    run.checks(4 * 30, ["fp_b000000000"] * 4)  # 30 hours of B only
    notable = [(t, v) for _, t, v in run.events if t.startswith("fingerprint.") and t != "fingerprint.first_seen"]
    assert notable == [("fingerprint.changed", "fp_b000000000"), ("fingerprint.retired", "fp_a000000000")]
    retired = next(e for e in run.raw if e.type == "fingerprint.retired")
    assert last_a + timedelta(hours=24) <= retired.time < last_a + timedelta(hours=24) + STEP
    changed = next(e for e in run.raw if e.type == "fingerprint.changed")
    assert changed.details["old"] == ["fp_a000000000"]
    assert sorted(changed.details["valid"]) == ["fp_a000000000", "fp_b000000000"]
    assert changed.summary == f"{MODEL}: fingerprint changed fp_a000000000 -> fp_b000000000"
    assert [s.value for s in run.state.fingerprints.valid()] == ["fp_b000000000"]


def test_mixed_null_and_present_fingerprints_in_steady_state_raise_nothing() -> None:
    """Replicas that sometimes omit the fingerprint are not a transition."""
    run = Run()
    for i in range(200):
        run.check([obs("fp_a000000000"), obs(None if i % 2 else "fp_a000000000")])
    assert run.types() == ["fingerprint.first_seen", "model.first_seen"]


def test_new_fingerprints_during_learning_are_baseline_and_after_are_changes() -> None:
    """Everything seen in the first learning_period checks is first_seen; a new value later is a change."""
    run = Run()
    run.check([obs("fp_1000000000")])
    run.check([obs("fp_2000000000")])
    run.check([obs("fp_3000000000")])
    run.check([obs("fp_4000000000")])
    fp = [(i, t) for i, t, _ in run.events if t.startswith("fingerprint.")]
    assert fp == [
        (0, "fingerprint.first_seen"),
        (1, "fingerprint.first_seen"),
        (2, "fingerprint.first_seen"),
        (3, "fingerprint.changed"),
    ]


def test_a_first_fingerprint_after_learning_is_first_seen_not_a_change() -> None:
    """A model whose answers carried no fingerprint (or an fpwatch upgraded to read a derived one, as Anthropic's
    service tier now is) gets its first one after learning: there is nothing it changed from. The next one is a
    change."""
    run = Run()
    for _ in range(6):
        run.check([obs(None)])
    run.check([obs("service_tier=standard"), obs("service_tier=standard")])
    run.check([obs("service_tier=priority")])
    fp = [(i, t) for i, t, _ in run.events if t.startswith("fingerprint.")]
    assert fp == [(6, "fingerprint.first_seen"), (7, "fingerprint.changed")]


def test_learning_period_as_a_duration() -> None:
    """learning_period = "1h": the baseline is everything in the model's first hour."""
    policy = Policy(timedelta(hours=24), timedelta(hours=1), 3)
    state = ModelState(MODEL)
    assert learning(state, policy, T0)
    run = Run(policy)
    run.checks(4, ["fp_1000000000"])
    run.checks(1, ["fp_2000000000"])  # at 60 minutes: learning is over
    assert [t for _, t, _ in run.events if t.startswith("fingerprint")] == [
        "fingerprint.first_seen",
        "fingerprint.changed",
    ]


def test_down_after_threshold_then_recovered() -> None:
    """model.down once at the third failed check in a row; model.recovered at the next success."""
    run = Run()
    run.checks(3, ["fp_a000000000"])
    run.checks(2, [None], ok=False)
    run.checks(1, ["fp_a000000000"])  # a success resets the count
    run.checks(5, [None], ok=False)
    run.checks(1, ["fp_a000000000"])
    down_recovered = [(i, t) for i, t, _ in run.events if t in ("model.down", "model.recovered")]
    assert down_recovered == [(8, "model.down"), (11, "model.recovered")]
    down = next(e for e in run.raw if e.type == "model.down")
    assert "boom (HTTP 500)" in down.details["last_error"]
    assert not run.state.down and run.state.consecutive_failures == 0


def test_failed_checks_do_not_count_towards_learning() -> None:
    """Only successful checks make up the baseline."""
    run = Run()
    run.checks(5, [None], ok=False)
    assert run.state.checks == 0
    run.checks(3, ["fp_a000000000"])
    assert learning(run.state, run.policy, run.now) is False


def test_expect_failure_fires_once_per_transition() -> None:
    """canary.failed when most samples stop matching, not again while failing, again after recovering."""
    run = Run(Policy(timedelta(hours=24), 3, 3, expects={"math": "^391$"}))
    for outputs in (["391", "391", "392"], ["392", "392", "391"], ["392"] * 3, ["391"] * 3, ["390"] * 3):
        run.check([obs("fp_a000000000", canary="math", output=o) for o in outputs])
    failed = [(i, t) for i, t, _ in run.events if t == "canary.failed"]
    assert failed == [(1, "canary.failed"), (4, "canary.failed")]
    first = next(e for e in run.raw if e.type == "canary.failed")
    assert first.severity == "critical" and first.details["matched"] == 1 and first.details["examples"] == ["392"]


def test_behaviour_fingerprint_is_assigned_and_stable() -> None:
    """Every model gets a bfp_ identifier at its first successful check, and it stays put without drift."""
    run = Run()
    run.checks(1, ["fp_a000000000"])
    bfp = run.state.behaviour_fingerprint
    assert bfp is not None and bfp.startswith("bfp_") and len(bfp) == 14
    run.checks(10, ["fp_a000000000"])
    assert run.state.behaviour_fingerprint == bfp
