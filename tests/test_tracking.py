"""The grace window and every tracking event, on a controlled clock (DESIGN section 5)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from fpwatch.observation import Observation
from fpwatch.tracking import ModelState, Policy, learning, track

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
        fingerprint=fingerprint,
        fingerprint_state=fp_state,  # type: ignore[arg-type]
        response_model=resolved,
        output=output,
    )


class Run:
    """Feeds checks to the tracker one interval apart and collects (check index, type, value)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy(timedelta(hours=24), 3, 3)
        self.state = ModelState(MODEL)
        self.now = T0
        self.index = 0
        self.events: list[tuple[int, str, str | None]] = []
        self.raw: list = []

    def check(self, observations: Sequence[Observation]) -> None:
        self.state, events = track(self.state, observations, self.policy, self.now)
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


def test_steady_rotation_among_three_fingerprints_for_days_is_quiet() -> None:
    """Three replicas alternating for a week raise only the three baseline events."""
    run = Run()
    pool = ["fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"]
    for i in range(4 * 24 * 7):
        run.check([obs(pool[(i + k) % 3]) for k in range(4)])
    assert run.types() == ["fingerprint.first_seen"] * 3 + ["model.first_seen"]
    assert {v for _, _, v in run.events} == {*pool, "gpt-4o-2024-08-06"}
    assert [s.value for s in run.state.fingerprints.valid()] == sorted(pool)


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


def test_retired_fingerprint_coming_back_is_a_reversion() -> None:
    """A retired fingerprint that appears again raises fingerprint.reverted (critical), once."""
    run = Run()
    run.checks(3, ["fp_a000000000"] * 4)
    run.checks(4 * 25, ["fp_b000000000"] * 4)
    run.checks(3, ["fp_a000000000", "fp_b000000000"])
    kinds = [(t, v) for _, t, v in run.events if t in ("fingerprint.retired", "fingerprint.reverted")]
    assert kinds == [("fingerprint.retired", "fp_a000000000"), ("fingerprint.reverted", "fp_a000000000")]
    reverted = next(e for e in run.raw if e.type == "fingerprint.reverted")
    assert reverted.severity == "critical"
    assert {s.value for s in run.state.fingerprints.valid()} == {"fp_a000000000", "fp_b000000000"}


def test_rare_replica_is_not_retired_by_chance() -> None:
    """A replica seen in 1 of 40 samples outlives a 1h grace: its absence is not significant yet."""
    run = Run(Policy(timedelta(hours=1), 3, 3))
    samples = ["fp_common0000"] * 39 + ["fp_rare000000"]
    stream = samples * 200
    for i in range(0, len(stream), 4):
        run.check([obs(fp) for fp in stream[i : i + 4]])
    assert "fingerprint.retired" not in run.types()
    assert "fingerprint.reverted" not in run.types()
    assert {s.value for s in run.state.fingerprints.valid()} == {"fp_common0000", "fp_rare000000"}


@pytest.mark.parametrize("missing_state", ["null", "empty", "absent"])
def test_missing_fingerprints_neither_add_nor_retire(missing_state: str) -> None:
    """Null, empty and absent fingerprints enter no set, retire nothing, and say "missing" once."""
    run = Run()
    run.checks(3, ["fp_a000000000"] * 4)
    run.checks(4 * 48, [None] * 4, state=missing_state)  # two days with no fingerprint at all
    run.checks(2, ["fp_a000000000", None], state=None)
    assert run.types() == ["fingerprint.first_seen", "model.first_seen", "fingerprint.missing"]
    missing = next(e for e in run.raw if e.type == "fingerprint.missing")
    assert missing.details["states"] == {missing_state: 4}
    assert [s.value for s in run.state.fingerprints.valid()] == ["fp_a000000000"]
    assert run.state.fingerprints.samples == 12 + 2


def test_mixed_null_and_present_fingerprints_in_steady_state_raise_nothing() -> None:
    """Replicas that sometimes omit the fingerprint are not a transition."""
    run = Run()
    for i in range(200):
        run.check([obs("fp_a000000000"), obs(None if i % 2 else "fp_a000000000")])
    assert run.types() == ["fingerprint.first_seen", "model.first_seen"]


def test_resolved_model_names_follow_the_same_rules() -> None:
    """Resolved models: baseline, one change in a rollout, retirement after grace, reversion on return."""
    run = Run()
    old, new = "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"
    run.checks(3, ["fp_a000000000"] * 4, resolved=old)
    run.checks(4, ["fp_a000000000"] * 4, resolved=None)  # a server that omits the model: nothing
    for _ in range(6):
        run.check([obs("fp_a000000000", resolved=old), obs("fp_a000000000", resolved=new)])
    run.checks(4 * 25, ["fp_a000000000"] * 4, resolved=new)
    run.checks(1, ["fp_a000000000"] * 4, resolved=old)
    model_events = [(t, v) for _, t, v in run.events if t.startswith("model.")]
    assert model_events == [
        ("model.first_seen", old),
        ("model.changed", new),
        ("model.retired", old),
        ("model.reverted", old),
    ]
    assert [e.severity for e in run.raw if e.type.startswith("model.")] == [
        "info",
        "warning",
        "info",
        "critical",
    ]


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
