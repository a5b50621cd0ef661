"""The decision of one check, in three pure steps that `run_check` and the detection benchmark both take:

1. `prejudge`: screen the check's answers against the model's drift reference, before anything is
   recorded: does the screen want a confirmation burst?
2. `judge`: the burst's verdict, by exact permutation tests (CPU-heavy: the caller runs it off the
   event loop and outside any database transaction);
3. `conclude`: the model's state and the check's observations (and burst) in, the new state and
   its events out: version signals and the grace window, fingerprint.missing, canary drift and the
   behaviour fingerprint, failing `expect`s, down and recovered.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from fpwatch.detect import drift
from fpwatch.detect.events import (
    VERSION_CHANGES,
    BehaviourChange,
    DriftDetails,
    Event,
    FingerprintMissing,
    Noise,
    ScreenFigures,
)
from fpwatch.detect.health import errors_summary, expectations, failed, latest, recovered
from fpwatch.detect.observation import Observation
from fpwatch.detect.signals import update_signals
from fpwatch.detect.state import ModelState, Policy, learning


def prejudge(state: ModelState, observations: Sequence[Observation], policy: Policy, now: datetime) -> drift.Prejudged:
    """Screen a check's answers as `conclude` (at `now`) will; `wants_burst` asks the caller for fresh samples."""
    samples = drift.samples_from(observations, policy.canary_keys)
    return drift.prescreen(state.drift, samples, policy.canary_keys, now)


def judge(prejudged: drift.Prejudged, burst: Sequence[Observation], policy: Policy) -> drift.Prejudged:
    """The confirmation burst's verdict, for `conclude` to use (it is computed again only if the state moved)."""
    assert prejudged.screen is not None, "a burst is only taken after a screen"
    samples = drift.samples_from(burst, policy.canary_keys)
    verdict = drift.confirm(prejudged.learned, prejudged.screen, samples, policy.canary_keys)
    return replace(prejudged, verdict=verdict, judged=True)


def conclude(
    state: ModelState,
    observations: Sequence[Observation],
    policy: Policy,
    now: datetime,
    burst: Sequence[Observation] = (),
    prejudged: drift.Prejudged | None = None,
) -> tuple[ModelState, list[Event]]:
    """Apply one check's observations to the model's state; return the new state and its events.

    `burst` holds the fresh samples of a confirmation burst, taken when `prejudge` asked for one; they count
    for fingerprints and resolved models like any other response. `prejudged` carries the screen and the
    burst's verdict computed before (`prejudge`, `judge`), used when `state` is still the one they saw.
    """
    ok = [o for o in observations if o.ok]
    if not ok:
        return failed(state, observations, policy, now)
    events: list[Event] = []
    baseline = learning(state, policy, now)
    ok_burst = [o for o in burst if o.ok]
    ok_all = [*ok, *ok_burst]
    fingerprint_values = [o.system_fingerprint for o in ok_all if o.system_fingerprint]
    fingerprints, fp_events = update_signals(
        state.model, state.fingerprints, fingerprint_values, policy.grace_period, now, baseline
    )
    models, model_events = update_signals(
        state.model,
        state.response_models,
        [o.response_model for o in ok_all if o.response_model],
        policy.grace_period,
        now,
        baseline,
    )
    events += fp_events + model_events
    missing = state.fingerprint_missing
    if any(o.system_fingerprint for o in ok_all):
        missing = False
    elif state.fingerprints.signals and not missing:
        missing = True
        events.append(_missing(state, ok, now))
    bfp = state.behaviour_fingerprint or behaviour_fingerprint(state.model, now)
    drift_state, finding = drift.observe(
        state.drift,
        drift.samples_from(ok, policy.canary_keys),
        drift.samples_from(ok_burst, policy.canary_keys),
        policy.canary_keys,
        now,
        signal_changes=[e.time for e in events if e.type in VERSION_CHANGES],
        prejudged=prejudged,
    )
    if finding is not None:
        new_bfp = behaviour_fingerprint(state.model, now)
        events.append(_drift_event(state.model, finding, bfp, new_bfp, now))
        bfp = new_bfp
    expect_failing, expect_events = expectations(state, ok, policy, now)
    events += expect_events
    if state.down:
        events.append(recovered(state, now))
    new_state = replace(
        state,
        checks=state.checks + 1,
        first_check=state.first_check or now,
        last_check=latest(state.last_check, now),
        last_ok=latest(state.last_ok, now),
        consecutive_failures=0,
        down=False,
        down_since=None,
        last_error=errors_summary(observations),
        fingerprint_missing=missing,
        expect_failing=expect_failing,
        behaviour_fingerprint=bfp,
        fingerprints=fingerprints,
        response_models=models,
        drift=drift_state,
    )
    return new_state, events


def behaviour_fingerprint(model: str, epoch_start: datetime) -> str:
    """`bfp_` + 10 hex: names one epoch of a model's canary behaviour; a confirmed drift starts a new one."""
    digest = hashlib.sha256(f"fpwatch-bfp-v1\n{model}\n{epoch_start.isoformat()}".encode()).hexdigest()
    return f"bfp_{digest[:10]}"


def _missing(state: ModelState, ok: Sequence[Observation], now: datetime) -> Event:
    states: Counter[str] = Counter(o.fingerprint_state or "absent" for o in ok)
    how = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return Event(
        now,
        state.model,
        "fingerprint.missing",
        f"{state.model}: responses stopped carrying a system_fingerprint ({how})",
        FingerprintMissing(dict(states), tuple(s.value for s in state.fingerprints.valid())),
    )


def _drift_event(model: str, finding: drift.Finding, old_bfp: str, new_bfp: str, now: datetime) -> Event:
    name, biggest = max(finding.canaries.items(), key=lambda item: item[1].tv)
    before = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest.before.items())[:2])
    after = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest.after.items())[:2])
    how = "silently (no fingerprint or resolved-model change)" if finding.silent else "with a version change"
    summary = (
        f"{model}: canary behaviour changed {how}: about {finding.effect_size:.0%} of answers moved; "
        f"{name}: {before} -> {after}"
    )
    screen = finding.screen
    details = DriftDetails(
        statistic=finding.statistic,
        value=_figure(finding.value),
        threshold=_figure(finding.threshold),
        p_value=finding.p_value,
        screen=ScreenFigures(
            round(screen.surprise, 3),
            round(screen.threshold, 3),
            None if screen.logprob is None else _figure(screen.logprob),
            _figure(screen.logprob_threshold),
            screen.samples,
        ),
        effect_size=round(finding.effect_size, 3),
        silent=finding.silent,
        burst_samples=finding.burst_samples,
        confirmations=tuple(finding.confirmations),
        fingerprints=tuple(finding.fingerprints),
        canaries=dict(finding.canaries),
        behaviour_fingerprint=BehaviourChange(old_bfp, new_bfp),
        channel=finding.channel,
        noise=Noise(_figure(finding.noise[0]), _figure(finding.noise[1])) if finding.noise else None,
        effect=effect_in_words(finding, name, biggest),
    )
    return Event(now, model, "canary.drift", summary, details)


def _figure(value: float) -> float:
    """Four significant digits: a logprob figure of a deterministic server is 1e-5 nats or less."""
    return float(f"{value:.4g}")


def effect_in_words(finding: drift.Finding, name: str, biggest: drift.CanaryShift) -> str:
    """What moved, against this model's own noise, for a person."""
    if finding.channel == "logprobs":
        moved = f"first-token log-probabilities moved by {finding.value:.2g} nats"
        if finding.noise is None:
            return f"{moved} (this model's own noise is not measured yet)"
        typical, floor = finding.noise[0], drift.LOGPROB_PRECISION
        if typical < floor:  # a deterministic server: its noise is below what JSON logprobs resolve
            return (
                f"{moved}, {finding.value / floor:,.0f}x the smallest change fpwatch trusts in JSON logprobs "
                f"({floor:.0e} nats; this model's own noise is {typical:.2g})"
            )
        return f"{moved}, {finding.value / typical:,.0f}x this model's noise ({typical:.2g} nats)"
    before = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest.before.items())[:2])
    after = ", ".join(f"{o!r} {p:.0%}" for o, p in list(biggest.after.items())[:2])
    said = f"answers moved: {biggest.tv:.0%} of {name}'s answers ({before} -> {after})"
    if finding.noise is None:
        return said
    return f"{said}; the answer screen's surprise {finding.screen.surprise:.1f}, typically {finding.noise[0]:.1f} here"
