"""Between state objects and rows: what a backend writes for a model's state and an event, and reads back.

Values only (plain Python tuples, lists, strings, JSON text); the SQL that stores them is the backend's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fpwatch.clock import iso, iso_or_none, parse_iso, parse_iso_or_none
from fpwatch.detect.borders import Borders
from fpwatch.detect.drift import CheckTally, DriftState
from fpwatch.detect.events import Event, details_from_json
from fpwatch.detect.signals import Signal, SignalSet
from fpwatch.detect.state import ModelState
from fpwatch.store.protocol import StoredEvent

STATE_COLUMNS = (
    "model",
    "checks",
    "first_check",
    "last_check",
    "last_ok",
    "consecutive_failures",
    "down",
    "down_since",
    "last_error",
    "fingerprint_missing",
    "expect_failing",
    "behaviour_fingerprint",
    "fingerprint_samples",
    "response_model_samples",
    "recent_downs",
    "drift",
    "unsupported",
    "borders",
)
SIGNAL_COLUMNS = ("model", "kind", "value", "first_seen", "last_seen", "count", "misses", "retired_at", "since")
EVENT_COLUMNS = ("id", "time", "model", "type", "severity", "summary", "details", "check_id", "acked_at", "ack_comment")


def state_row(s: ModelState) -> tuple[Any, ...]:
    """A model's state as the values of STATE_COLUMNS (signals are rows of their own: `signal_rows`)."""
    return (
        s.model,
        s.checks,
        iso_or_none(s.first_check),
        iso_or_none(s.last_check),
        iso_or_none(s.last_ok),
        s.consecutive_failures,
        int(s.down),
        iso_or_none(s.down_since),
        s.last_error,
        int(s.fingerprint_missing),
        json.dumps(sorted(s.expect_failing)),
        s.behaviour_fingerprint,
        s.fingerprints.samples,
        s.response_models.samples,
        json.dumps([iso(t) for t in s.recent_downs]),
        json.dumps(s.drift.to_json(), separators=(",", ":")),
        json.dumps(sorted(f"{option}@{model_id}" for option, model_id in s.unsupported)),
        json.dumps(s.borders.to_json() if s.borders else {}, separators=(",", ":")),
    )


def drift_rows(s: ModelState) -> tuple[list[tuple[int, str]], list[int]]:
    """The drift state's check rows to write (those the store does not hold yet) and to delete (gone from it):
    a check writes its own row and the small state, never the whole reference again."""
    checks = {c.seq: c for c in s.drift.checks()}
    new = [
        (seq, json.dumps(c.to_json(), separators=(",", ":"))) for seq, c in checks.items() if seq not in s.drift.stored
    ]
    return new, sorted(s.drift.stored - set(checks))


def drift_row(seq: int, body: str) -> CheckTally:
    """One stored drift check row."""
    return CheckTally.from_json(seq, json.loads(body))


def signal_rows(s: ModelState) -> list[tuple[Any, ...]]:
    """Every signal of a model as the values of SIGNAL_COLUMNS."""
    return [
        (
            s.model,
            signal_set.kind,
            sig.value,
            iso(sig.first_seen),
            iso(sig.last_seen),
            sig.count,
            sig.misses,
            iso_or_none(sig.retired_at),
            sig.since,
        )
        for signal_set in (s.fingerprints, s.response_models)
        for sig in signal_set.signals.values()
    ]


def signal_from(row: Sequence[Any]) -> Signal:
    """A signal from (value, first_seen, last_seen, count, misses, retired_at, since)."""
    value, first, last, count, misses, retired, since = row
    return Signal(value, parse_iso(first), parse_iso(last), count, misses, parse_iso_or_none(retired), since)


def state_from(
    row: Sequence[Any] | None,
    model: str,
    signals: Iterable[tuple[str, Signal]],
    drift_rows: Mapping[int, CheckTally] | None = None,
) -> ModelState:
    """A model's state from its STATE_COLUMNS values (None: never checked), its (kind, signal) pairs and its
    drift check rows by seq (parsed with `drift_row`)."""
    if row is None:
        return ModelState(model)
    by_kind: dict[str, dict[str, Signal]] = {"fingerprint": {}, "response_model": {}}
    for kind, signal in signals:
        by_kind[kind][signal.value] = signal
    values = dict(zip(STATE_COLUMNS, row, strict=True))
    return ModelState(
        model=model,
        checks=values["checks"],
        first_check=parse_iso_or_none(values["first_check"]),
        last_check=parse_iso_or_none(values["last_check"]),
        last_ok=parse_iso_or_none(values["last_ok"]),
        consecutive_failures=values["consecutive_failures"],
        down=bool(values["down"]),
        down_since=parse_iso_or_none(values["down_since"]),
        last_error=values["last_error"],
        fingerprint_missing=bool(values["fingerprint_missing"]),
        expect_failing=frozenset(json.loads(values["expect_failing"])),
        behaviour_fingerprint=values["behaviour_fingerprint"],
        fingerprints=SignalSet("fingerprint", by_kind["fingerprint"], values["fingerprint_samples"]),
        response_models=SignalSet("response_model", by_kind["response_model"], values["response_model_samples"]),
        recent_downs=tuple(parse_iso(t) for t in json.loads(values["recent_downs"])),
        drift=DriftState.from_json(json.loads(values["drift"]), drift_rows),
        unsupported=frozenset(_rejected(entry) for entry in json.loads(values["unsupported"])),
        borders=Borders.from_json(json.loads(values["borders"])),
    )


def _rejected(entry: str) -> tuple[str, str]:
    """A rejected option as stored, "option@model-id" (an option's name has no "@"; a model id may)."""
    option, _, model_id = entry.partition("@")
    return option, model_id


def event_values(event: Event, check_id: str | None) -> tuple[Any, ...]:
    """(time, model, type, severity, summary, details JSON, check_id) of a new event row."""
    details = json.dumps(event.details.to_json(), sort_keys=True)
    return (iso(event.time), event.model, event.type, event.severity, event.summary, details, check_id)


def stored_json(text: str) -> Any:
    """Stored JSON text as the audit chain covers it: the parsed object (text that is not JSON stays text, and then
    does not match the object its hash was made of)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def event_from(row: Sequence[Any]) -> StoredEvent:
    """A stored event from the values of EVENT_COLUMNS."""
    v = dict(zip(EVENT_COLUMNS, row, strict=True))
    stored = json.loads(v["details"])
    details = details_from_json(v["type"], stored)
    event = Event(parse_iso(v["time"]), v["model"], v["type"], v["summary"], details, v["severity"])
    return StoredEvent(v["id"], event, v["check_id"], parse_iso_or_none(v["acked_at"]), v["ack_comment"], stored)
