"""Alerting (DESIGN section 7): `routing` (pure: which notifiers), `render` (pure: the message),
`delivery` (the outbox drained through apprise, with backoff, expiry, leases and reminders)."""

from fpwatch.notify.delivery import DeliveryReport, Notifier, Sender
from fpwatch.notify.render import notify_test_message, reminder, render, render_event
from fpwatch.notify.routing import matches, routes

__all__ = [
    "DeliveryReport",
    "Notifier",
    "Sender",
    "matches",
    "notify_test_message",
    "reminder",
    "render",
    "render_event",
    "routes",
]
