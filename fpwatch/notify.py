"""Notifications that are never lost and never spam (DESIGN section 7).

The path of an alert:

1. Routing, in the same transaction that records the event (store.record_check): every
   `[[notify]]` whose filters match gets an `alerts` row. `model.down` inhibits fingerprint and
   drift alerts for the model until it recovers; `send_resolved = false` drops `model.recovered`.
   Nothing is lost between "concluded" and "queued", even under `kill -9`.
2. Grouping: a notifier's pending alerts become one message once the oldest has waited
   `group_wait` (the daemon), or at the end of the pass (`fpwatch check`). Composing a message is one
   transaction that writes it to the outbox and ties its alerts to it, so each (event, notifier) is
   in exactly one message.
3. Delivery: one apprise object per notifier, `await async_notify(...)`. Success marks the message
   delivered; a failure is logged with apprise's reason (the URL masked), counted, and retried with
   exponential backoff and jitter until it is delivered or 24 h old (then it expires, loudly).
   Messages are claimed with a lease, so the daemon and a cron `check` never send the same one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fpwatch.clock import human, utcnow
from fpwatch.config import Config, NotifierConfig, mask_url
from fpwatch.logs import get_logger
from fpwatch.redact import Redactor
from fpwatch.store import Store, StoredEvent
from fpwatch.tracking import SEVERITIES, ModelState, flapping

EXPIRY = timedelta(hours=24)
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(hours=1)
LEASE = timedelta(minutes=2)  # longer than one send (apprise's own timeouts are 15-30 s)
INHIBITED_WHILE_DOWN = (
    "fingerprint.",
    "model.changed",
    "model.reverted",
    "model.retired",
    "model.first_seen",
    "canary.",
)
_NOTIFY_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}

log = get_logger("fpwatch.notify")


def routes(config: Config) -> Callable[[ModelState, StoredEvent], list[str]]:
    """The notifiers an event goes to, given the model's state after the check that raised it."""
    tags = {m.name: set(m.tags) for m in config.models}

    def route(state: ModelState, stored: StoredEvent) -> list[str]:
        event = stored.event
        if state.down and event.type.startswith(INHIBITED_WHILE_DOWN):
            return []  # the outage is the news; what a down model "changed" is noise
        if event.type == "model.recovered" and not config.alerts.send_resolved:
            return []
        downs = flapping(state, event.time)
        if (event.type == "model.down" and downs > 2) or (event.type == "model.recovered" and downs >= 2):
            return []  # flapping: the second outage said so; hold the rest until the hour is quiet
        return [n.name for n in config.notifiers if _matches(n, event.model, event.type, event.severity, tags)]

    return route


def _matches(n: NotifierConfig, model: str, kind: str, severity: str, tags: dict[str, set[str]]) -> bool:
    """`events` lists exactly what to send; without it, every event of at least `min_severity`.

    A recovery goes wherever the outage went (send_resolved), though it is only "info" itself.
    """
    if kind == "model.recovered" and (n.events is None or "model.recovered" not in n.events):
        kind, severity = "model.down", "warning"
    if n.events is not None:
        if kind not in n.events:
            return False
    elif SEVERITIES.index(severity) < SEVERITIES.index(n.min_severity):
        return False
    return n.models is None or model in n.models or bool(tags.get(model, set()) & set(n.models))


# --- messages ---------------------------------------------------------------------------------------------


def render(events: Sequence[StoredEvent]) -> tuple[str, str, str]:
    """(title, markdown body, apprise notify type) for one message carrying these events."""
    worst = max((e.event.severity for e in events), key=SEVERITIES.index)
    if len(events) == 1:
        title = f"[fpwatch] {events[0].event.summary}"
    else:
        models = sorted({e.event.model for e in events})
        title = f"[fpwatch] {len(events)} events on {', '.join(models[:3])}{' …' if len(models) > 3 else ''}"
    body = "\n\n".join(_render_event(e) for e in events)
    return title[:250], body, _NOTIFY_TYPE[worst]


def _render_event(stored: StoredEvent) -> str:
    e = stored.event
    d = e.details
    lines = [f"**{e.severity.upper()}** `{e.type}` — {e.summary}"]
    if "new" in d:
        old = ", ".join(d.get("old") or []) or "(none)"
        lines.append(f"- {old} → **{d['new']}**")
    if d.get("valid"):
        lines.append(f"- valid now: {', '.join(d['valid'])}")
    for key, label in (("first_seen", "first seen"), ("last_seen", "last seen"), ("retired_at", "retired")):
        if d.get(key):
            lines.append(f"- {label}: {d[key].replace('T', ' ')[:19]} UTC")
    if d.get("last_error"):
        lines.append(f"- last error: {d['last_error'][:300]}")
    if d.get("examples"):
        lines.append("- outputs: " + ", ".join(f"`{x[:60]}`" for x in d["examples"][:3]))
    if e.type == "canary.drift":
        lines += _drift_lines(d)
    lines.append(f"- at {human(e.time)}; event {stored.id} (`fpwatch ack {stored.id}` to acknowledge)")
    return "\n".join(lines)


def _drift_lines(d: Mapping[str, Any]) -> list[str]:
    """The evidence of a canary.drift: what moved, by how much, against what threshold, before and after."""
    silent = "yes: no fingerprint or resolved-model change" if d.get("silent") else "no: a version signal changed too"
    lines = [
        f"- silent: {silent}",
        f"- effect size: about {float(d.get('effect_size', 0)):.0%} of answers moved (estimated share of traffic)",
        f"- statistic: {d.get('statistic')} {d.get('value')} over threshold {d.get('threshold')}"
        + (f" (p = {d['p_value']:.2g})" if d.get("p_value") is not None else ""),
    ]
    canaries = d.get("canaries") or {}
    for name, c in sorted(canaries.items(), key=lambda item: -float(item[1].get("tv", 0)))[:4]:
        before = ", ".join(f"`{o[:40]}` {p:.0%}" for o, p in (c.get("before") or {}).items())
        after = ", ".join(f"`{o[:40]}` {p:.0%}" for o, p in (c.get("after") or {}).items())
        lines.append(f"- {name} (TV {c.get('tv')}): before {before or '-'} → after {after or '-'}")
    if canaries:
        top = max(canaries.values(), key=lambda c: float(c.get("tv", 0)))
        examples = [f"`{x[:80]}`" for x in (top.get("before_examples") or [])[:1]]
        examples += [f"`{x[:80]}`" for x in (top.get("after_examples") or [])[:1]]
        if len(examples) == 2:
            lines.append(f"- example: before {examples[0]}, after {examples[1]}")
    bfp = d.get("behaviour_fingerprint") or {}
    if bfp:
        lines.append(f"- behaviour fingerprint {bfp.get('old')} → **{bfp.get('new')}**")
    return lines


# --- delivery ---------------------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    expired: int = 0


class Notifier:
    """Sends outbox messages through apprise, one apprise object per notifier."""

    def __init__(self, config: Config, store: Store, *, on_failure: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_failure = on_failure
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.config = config
        self.redact = Redactor(config.secrets)
        self._apprise: dict[str, Any] = {}

    def _target(self, notifier: NotifierConfig) -> Any:
        import apprise

        target = self._apprise.get(notifier.name)
        if target is None:
            target = apprise.Apprise(asset=apprise.AppriseAsset(app_id="fpwatch", app_desc="fpwatch alerts"))
            if not target.add(notifier.url.reveal()):
                return None
            self._apprise[notifier.name] = target
        return target

    async def send(self, notifier: NotifierConfig, title: str, body: str, notify_type: str) -> str | None:
        """Deliver one message now; None on success, else apprise's reason (secrets masked)."""
        import apprise

        target = self._target(notifier)
        if target is None:
            return (
                f"apprise does not understand the URL of notifier {notifier.name} ({mask_url(notifier.url.reveal())}); "
                "`fpwatch config check` says more"
            )
        try:
            result = await target.async_notify(
                body=body,
                title=title,
                notify_type=apprise.NotifyType(notify_type),
                body_format=apprise.NotifyFormat.MARKDOWN,
            )
        except Exception as exc:  # a plugin bug must not take the daemon down with it
            return self.redact(f"{type(exc).__name__}: {exc}")
        if result.status is apprise.AppriseResultStatus.SUCCESS:
            return None
        reasons = [entry.message for service in result for attempt in service.attempts for entry in attempt.logs]
        reason = "; ".join(dict.fromkeys(reasons)) or f"apprise reported {result.status.name}"
        return self.redact(reason)

    def _remind(self, now: datetime) -> None:
        """`repeat_interval` reminders for states still unresolved and not acknowledged."""
        every = self.config.alerts.repeat_interval
        if every <= timedelta(0):
            return
        for event_id, notifier in self.store.due_reminders(REMINDED, every, now):
            stored = self.store.event(event_id)
            if stored is None or not _still_open(self.store, stored):
                continue
            title, body, kind = render([stored])
            title = title.replace("[fpwatch] ", "[fpwatch] reminder: ", 1)
            body = (
                f"Still unresolved since {human(stored.event.time)} (`fpwatch ack {event_id}` stops reminders).\n\n"
                + body
            )
            self.store.add_reminder(event_id, notifier, title, body, kind, now, every)

    async def deliver(self, now: datetime | None = None, *, flush: bool = False) -> DeliveryReport:
        """Group what is pending into messages (all of it when `flush`), then send every message that is due."""
        now = now or utcnow()
        for notifier in self.config.notifiers:
            pending = self.store.pending_alerts(notifier.name)
            if not pending:
                continue
            oldest = min(created for _, created in pending)
            if flush or now - oldest >= self.config.alerts.group_wait:
                ids = [event_id for event_id, _ in pending]
                events = [e for e in (self.store.event(i) for i in ids) if e is not None]
                title, body, kind = render(events)
                self.store.compose_message(notifier.name, ids, title, body, kind, now)
        self._remind(now)
        report = DeliveryReport()
        # Notifiers send side by side (a hanging SMTP server must not hold back the webhook); each claims one
        # message at a time, so a lease never runs out while the message waits behind others.
        await asyncio.gather(*(self._drain(n, report) for n in self.config.notifiers))
        for message_id, notifier_name in self.store.orphaned_messages({n.name for n in self.config.notifiers}):
            self.store.expire_message(message_id, utcnow(), "the notifier was removed from the config")
            report.expired += 1
            if self.on_failure is not None:
                self.on_failure(notifier_name)
            log.error("notification expired: its notifier was removed from the config", notifier=notifier_name)
        return report

    async def _drain(self, notifier: NotifierConfig, report: DeliveryReport) -> None:
        while (message := self.store.claim_next_message(notifier.name, utcnow(), lease=LEASE)) is not None:
            error = await self.send(notifier, message.title, message.body, message.notify_type)
            now = utcnow()
            if error is None:
                self.store.mark_delivered(message.id, now)
                report.delivered += 1
                log.info("notification delivered", notifier=notifier.name, message_id=message.id)
                continue
            report.failed += 1
            if self.on_failure is not None:
                self.on_failure(notifier.name)
            url = mask_url(notifier.url.reveal())
            if now - message.created >= EXPIRY:
                self.store.expire_message(message.id, now, error)
                report.expired += 1
                log.error("notification expired undelivered", notifier=notifier.name, url=url, reason=error)
                continue
            delay = min(RETRY_CAP, RETRY_BASE * 2**message.attempts) * random.uniform(0.5, 1.0)
            self.store.retry_message(message.id, now + delay, error)
            log.warning(
                "notification failed; will retry",
                notifier=notifier.name,
                url=url,
                reason=error,
                attempt=message.attempts + 1,
                retry_in=round(delay.total_seconds(), 1),
            )


# Unresolved states worth a reminder: the event that opened each (canary.drift joins with drift detection).
REMINDED = ("model.down", "canary.failed", "canary.drift")


def _still_open(store: Store, event: StoredEvent) -> bool:
    """Is the state this event opened still the open one? (An older outage that ended is not.)"""
    e = event.event
    state = store.load_state(e.model)
    if e.type == "model.down":
        if not state.down:
            return False
    elif e.type == "canary.failed":
        if e.details.get("canary") not in state.expect_failing:
            return False
    elif e.type == "canary.drift":
        if state.drift.open_since is None:
            return False
    else:
        return False
    same = [
        x
        for x in store.events(model=e.model, types=[e.type])
        if x.event.details.get("canary") == e.details.get("canary")
    ]
    return bool(same) and same[-1].id == event.id


def test_message() -> tuple[str, str, str]:
    return (
        "[fpwatch] test notification",
        "This is a test from `fpwatch notify test`: this notifier is set up correctly.",
        "info",
    )
