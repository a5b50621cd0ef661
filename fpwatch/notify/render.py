"""Rendering, pure: the title and Markdown body of a message carrying one or more events (apprise converts
the Markdown per service). Each event type's facts come from its details (detect.events). A message ends with
the audit chain's head, so every recipient keeps a copy of it out of a tamperer's reach (store/chain.py).
Notifications are read by people: the title and every line of the body are escaped (config.fields.printable,
as the tables are), so a fingerprint or answer with a right-to-left override or a newline is shown, not obeyed."""

from __future__ import annotations

from collections.abc import Sequence

from fpwatch.clock import human
from fpwatch.config.fields import printable
from fpwatch.detect.events import SEVERITIES
from fpwatch.store import ChainHead, StoredEvent

NOTIFY_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}  # apprise's names
TITLE_MAX = 250


def render(events: Sequence[StoredEvent], head: ChainHead | None = None) -> tuple[str, str, str]:
    """(title, markdown body, apprise notify type) for one message carrying these events (and the audit head
    after them: `fpwatch export --verify --head` checks it later)."""
    worst = max((e.event.severity for e in events), key=SEVERITIES.index)
    if len(events) == 1:
        title = f"[fpwatch] {events[0].event.summary}"
    else:
        models = sorted({e.event.model for e in events})
        title = f"[fpwatch] {len(events)} events on {', '.join(models[:3])}{' …' if len(models) > 3 else ''}"
    body = "\n\n".join([*(render_event(e) for e in events), *([head.line()] if head is not None else [])])
    return printable(title)[:TITLE_MAX], body, NOTIFY_TYPE[worst]


def render_event(stored: StoredEvent) -> str:
    """One event: severity, type and summary, its facts, when, and how to acknowledge it."""
    e = stored.event
    lines = [f"**{e.severity.upper()}** `{e.type}` — {e.summary}", *e.details.lines()]
    lines.append(f"- at {human(e.time)}; event {stored.id} (`fpwatch ack {stored.id}` to acknowledge)")
    return "\n".join(printable(line) for line in lines)


def reminder(stored: StoredEvent, head: ChainHead | None = None) -> tuple[str, str, str]:
    """A `repeat_interval` reminder of an event whose condition is still open."""
    title, body, kind = render([stored], head)
    title = title.replace("[fpwatch] ", "[fpwatch] reminder: ", 1)
    body = f"Still unresolved since {human(stored.event.time)} (`fpwatch ack {stored.id}` stops reminders).\n\n" + body
    return title, body, kind


def notify_test_message() -> tuple[str, str, str]:
    """What `fpwatch notify test` sends."""
    return (
        "[fpwatch] test notification",
        "This is a test from `fpwatch notify test`: this notifier is set up correctly.",
        "info",
    )
