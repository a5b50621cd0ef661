"""Routing, pure: which notifiers an event goes to, given the config and the model's state after its check.

Runs inside the transaction that records the event (store.record_check), so nothing concluded is lost
between "concluded" and "queued". The event vocabulary (detect.events) says what is inhibited while a
model is down, what resolves what, and what flap damping holds.
"""

from __future__ import annotations

from fpwatch.config import Config, NotifierConfig
from fpwatch.detect.events import EVENTS, SEVERITIES, EventType
from fpwatch.detect.state import ModelState, flapping
from fpwatch.store import Route, StoredEvent


def routes(config: Config) -> Route:
    """The notifiers an event goes to, given the model's state after the check that raised it."""
    tags = {m.name: set(m.tags) for m in config.models}

    def route(state: ModelState, stored: StoredEvent) -> list[str]:
        event = stored.event
        kind = EVENTS.get(event.type)
        if kind is None:
            return []
        if state.down and kind.inhibited_while_down:
            return []  # the outage is the news; what a down model "changed" is noise
        if kind.resolves and not config.alerts.send_resolved:
            return []
        if kind.flap_hold is not None and flapping(state, event.time) >= kind.flap_hold:
            return []  # flapping: the second outage said so; hold the rest until the hour is quiet
        return [n.name for n in config.notifiers if matches(n, event.model, kind, event.severity, tags)]

    return route


def matches(n: NotifierConfig, model: str, kind: EventType, severity: str, tags: dict[str, set[str]]) -> bool:
    """`events` lists exactly what to send; without it, every event of at least `min_severity`.

    A resolution goes wherever what it resolves went (send_resolved), though it is only "info" itself.
    """
    name = kind.name
    if kind.resolves and (n.events is None or name not in n.events):
        name, severity = kind.resolves, EVENTS[kind.resolves].severity
    if n.events is not None:
        if name not in n.events:
            return False
    elif SEVERITIES.index(severity) < SEVERITIES.index(n.min_severity):
        return False
    return n.models is None or model in n.models or bool(tags.get(model, set()) & set(n.models))
