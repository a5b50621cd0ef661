"""Delivery (DESIGN section 7): notifications that are never lost and never spam.

- Grouping: a notifier's pending alerts become one message once the oldest has waited `group_wait`
  (the daemon), or at the end of the pass (`fpwatch check`). Composing a message is one transaction
  that writes it to the outbox and ties its alerts to it, so each (event, notifier) is in exactly one
  message.
- Sending: one apprise object per notifier, `await async_notify(...)`. Success marks the message
  delivered; a failure is logged with apprise's reason (the URL masked), counted, and retried with
  exponential backoff and jitter until it is delivered or 24 h old (then it expires, loudly).
  Messages are claimed with a lease, so the daemon and a cron `check` never send the same one.
- Reminders: with `repeat_interval`, an event whose condition is still open is sent again.
- Every message ends with the audit chain's head as it was when the message was composed (after its events
  were recorded), so the recipients hold copies of it that no one with the database alone can change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fpwatch.backoff import backoff
from fpwatch.clock import utcnow
from fpwatch.config import Config, NotifierConfig, mask_url
from fpwatch.detect.events import EVENTS, REMINDED
from fpwatch.logs import get_logger
from fpwatch.notify.render import reminder, render
from fpwatch.redact import Redactor
from fpwatch.store import Store, StoredEvent

EXPIRY = timedelta(hours=24)
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(hours=1)
LEASE = timedelta(minutes=2)  # longer than one send (apprise's own timeouts are 15-30 s)

log = get_logger("fpwatch.notify")


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    expired: int = 0


class Sender:
    """Sends one message to one notifier through apprise (one apprise object per notifier, kept)."""

    def __init__(self, config: Config) -> None:
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


class Notifier(Sender):
    """The outbox in the state database, drained through apprise."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(config)
        self.store = store
        self.on_failure = on_failure
        self.clock = clock

    async def deliver(self, now: datetime | None = None, *, flush: bool = False) -> DeliveryReport:
        """Group what is pending into messages (all of it when `flush`), then send every message that is due."""
        now = now or self.clock()
        for notifier in self.config.notifiers:
            pending = await self.store.pending_alerts(notifier.name)
            if not pending:
                continue
            oldest = min(created for _, created in pending)
            if flush or now - oldest >= self.config.alerts.group_wait:
                ids = [event_id for event_id, _ in pending]
                head = await self.store.chain_head()  # read after the events: it covers them
                title, body, kind = render(await self.store.events_by_id(ids), head)
                await self.store.compose_message(notifier.name, ids, title, body, kind, now)
        await self._remind(now)
        report = DeliveryReport()
        # Notifiers send side by side (a hanging SMTP server must not hold back the webhook); each claims one
        # message at a time, so a lease never runs out while the message waits behind others.
        await asyncio.gather(*(self._drain(n, report) for n in self.config.notifiers))
        for message_id, notifier_name in await self.store.orphaned_messages({n.name for n in self.config.notifiers}):
            await self.store.expire_message(message_id, self.clock(), "the notifier was removed from the config")
            report.expired += 1
            if self.on_failure is not None:
                self.on_failure(notifier_name)
            log.error("notification expired: its notifier was removed from the config", notifier=notifier_name)
        return report

    async def _remind(self, now: datetime) -> None:
        """`repeat_interval` reminders for states still unresolved and not acknowledged."""
        every = self.config.alerts.repeat_interval
        if every <= timedelta(0):
            return
        due = await self.store.due_reminders(REMINDED, every, now)
        for stored in await self.store.events_by_id(list(dict.fromkeys(event_id for event_id, _ in due))):
            if not await self._still_open(stored):
                continue
            title, body, kind = reminder(stored, await self.store.chain_head())
            for notifier in (name for event_id, name in due if event_id == stored.id):
                await self.store.add_reminder(stored.id or 0, notifier, title, body, kind, now, every)

    async def _still_open(self, stored: StoredEvent) -> bool:
        """Is the condition this event opened still open, and this event the one that opened it (an older
        outage that ended, or a second failure of the same canary, is not)?"""
        e = stored.event
        kind = EVENTS.get(e.type)
        if kind is None or kind.still_open is None:
            return False
        if not kind.still_open(await self.store.load_state(e.model), e.details):
            return False
        same = [
            x
            for x in await self.store.events(model=e.model, types=[e.type])
            if x.event.details.subject == e.details.subject
        ]
        return bool(same) and same[-1].id == stored.id

    async def _drain(self, notifier: NotifierConfig, report: DeliveryReport) -> None:
        while (message := await self.store.claim_next_message(notifier.name, self.clock(), lease=LEASE)) is not None:
            error = await self.send(notifier, message.title, message.body, message.notify_type)
            now = self.clock()
            if error is None:
                await self.store.mark_delivered(message.id, now)
                report.delivered += 1
                log.info("notification delivered", notifier=notifier.name, message_id=message.id)
                continue
            report.failed += 1
            if self.on_failure is not None:
                self.on_failure(notifier.name)
            url = mask_url(notifier.url.reveal())
            if now - message.created >= EXPIRY:
                await self.store.expire_message(message.id, now, error)
                report.expired += 1
                log.error("notification expired undelivered", notifier=notifier.name, url=url, reason=error)
                continue
            delay = timedelta(
                seconds=backoff(message.attempts, RETRY_BASE.total_seconds(), RETRY_CAP.total_seconds(), floor=0.5)
            )
            await self.store.retry_message(message.id, now + delay, error)
            log.warning(
                "notification failed; will retry",
                notifier=notifier.name,
                url=url,
                reason=error,
                attempt=message.attempts + 1,
                retry_in=round(delay.total_seconds(), 1),
            )
