"""The documented JSON summaries (README "JSON output"): one model as `status --json` and `check --json` show it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fpwatch.check import CheckResult, policy_for
from fpwatch.clock import iso, iso_or_none
from fpwatch.config import Config, ModelConfig
from fpwatch.detect import drift, verdict
from fpwatch.detect.state import ModelState, Policy
from fpwatch.store import ChainHead, Shared, Store


def drift_summary(state: ModelState, policy: Policy) -> dict[str, Any]:
    """Where drift detection stands for one model, judged by `policy` (check.policy_for)."""
    keys = policy.canary_keys.values()
    d = state.drift
    return {
        "state": "drift" if d.open_since else "learning" if d.learning(keys) else "ok",
        "reference_samples": d.reference_samples(keys),
        "reference_needed": drift.REFERENCE_MIN,
        "open_since": iso_or_none(d.open_since),
        "last_screen": round(d.screens[-1], 3) if d.screens else None,
        "screen_threshold": round(drift.screen_threshold(d), 3),
        "last_logprob_screen": float(f"{d.logprob_screens[-1]:.4g}") if d.logprob_screens else None,
        "logprob_threshold": float(f"{drift.logprob_threshold(d):.4g}"),
        "noise": {"answers": _noise(d.screens), "logprobs": _noise(d.logprob_screens)},
        "boosted": sorted(k.name for k in d.boost),
        "screen_hits": d.screen_hits,
        "bursts": d.bursts,
        "confirmed": d.confirmed,
    }


def discovery_summary(model: ModelConfig, state: ModelState) -> dict[str, Any]:
    """Border-input discovery for one model: its budget and, once it ran, what it found and spent."""
    borders = state.borders
    out: dict[str, Any] = {"budget": model.discovery_budget, "status": "pending" if model.discovery_budget else "off"}
    if borders is not None:
        out.update(borders.to_json())
        out["canaries"] = [b.canary for b in borders.found]
        out["words"] = borders.words()
    return out


def _noise(history: tuple[float, ...]) -> dict[str, float] | None:
    measured = drift.noise(history)
    return {"typical": float(f"{measured[0]:.4g}"), "spread": float(f"{measured[1]:.4g}")} if measured else None


def model_summary(model: ModelConfig, state: ModelState, now: datetime) -> dict[str, Any]:
    """The per-model fields shared by `check --json` and `status --json`."""
    grace = model.grace_period
    policy = policy_for(model, state)
    return {
        "name": model.name,
        "provider": model.provider.name,
        "model": model.model,
        "state": verdict.state_label(state, policy, now),
        "fingerprints": [s.value for s in state.fingerprints.valid()],
        "fingerprint_details": [
            {
                "system_fingerprint": s.value,
                "first_seen": iso(s.first_seen),
                "last_seen": iso(s.last_seen),
                "count": s.count,
                "share": round(state.fingerprints.share(s.value), 4),
                "grace_expires": iso(s.last_seen + grace),
            }
            for s in state.fingerprints.valid()
        ],
        "fingerprint_missing": state.fingerprint_missing,
        "resolved_models": [s.value for s in state.response_models.valid()],
        "behaviour_fingerprint": state.behaviour_fingerprint,
        "drift": drift_summary(state, policy),
        "discovery": discovery_summary(model, state),
        "unsupported": sorted(state.rejected_by(model.model)),
        "checks": state.checks,
        "consecutive_failures": state.consecutive_failures,
        "last_check": iso_or_none(state.last_check),
        "last_ok": iso_or_none(state.last_ok),
        "last_error": state.last_error,
    }


def check_summary(result: CheckResult) -> dict[str, Any]:
    """One model of `check --json`: its summary and what this pass did."""
    return {
        **model_summary(result.model, result.state, result.finished),
        "check_id": result.check_id,
        "status": result.status_name,
        "error": result.error,
        "requests": len(result.observations),
        "failed_requests": sum(1 for o in result.observations if not o.ok),
        "burst_requests": result.burst,
        "adapted": dict(result.adapted),
        "events": [e.to_dict() for e in result.events],
    }


async def status_report(config: Config, store: Store | None, now: datetime) -> dict[str, Any]:
    """`status --json` (and /api/v1/status): every configured model and notifier, and the audit chain's head
    (`head`, `rows`, `mode`, `keyed_from`: published here so it can be checked later with `export --verify --head`);
    on a state daemons share, which daemon took each model's latest scheduled check and the daemons registered."""
    models = [
        model_summary(m, await store.load_state(m.name) if store else ModelState(m.name), now) for m in config.models
    ]
    notifiers = [await store.notifier_status(n.name) for n in config.notifiers] if store else []
    head = await store.chain_head() if store else ChainHead(None, 0)
    shared = store if isinstance(store, Shared) else None  # several daemons on one database: who checked what
    claims = await shared.claims() if shared else {}
    for summary in models:
        claim = claims.get(summary["name"])
        summary["checked_by"] = claim.owner if claim else None
    instances = [i.to_json() for i in await shared.instances()] if shared else []
    return {"models": models, "notifiers": notifiers, "audit": head.to_json(), "instances": instances}


async def history_report(model: ModelConfig, store: Store | None) -> dict[str, Any]:
    """`history --json`: every value each version signal of the model has had."""
    out: dict[str, Any] = {"model": model.name, "fingerprints": [], "resolved_models": []}
    if store is None:
        return out
    state = await store.load_state(model.name)
    for key, signal_set in (("fingerprints", state.fingerprints), ("resolved_models", state.response_models)):
        for s in await store.signal_history(model.name, signal_set.kind):
            out[key].append(
                {
                    "value": s.value,
                    "first_seen": iso(s.first_seen),
                    "last_seen": iso(s.last_seen),
                    "count": s.count,
                    "share": round(signal_set.share(s.value), 4),
                    "status": "valid" if s.valid else "retired",
                    "retired_at": iso_or_none(s.retired_at),
                }
            )
    return out
