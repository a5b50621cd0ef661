"""Routing and rendering, called directly: which notifiers each event goes to, and what the message says."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fpwatch.config import Config, parse_config
from fpwatch.detect.drift import CanaryShift
from fpwatch.detect.events import (
    EVENTS,
    BehaviourChange,
    DriftDetails,
    Event,
    ExpectFailed,
    ModelDown,
    ModelRecovered,
    ScreenFigures,
    SignalChange,
    SignalRetired,
    details_from_json,
)
from fpwatch.detect.state import ModelState
from fpwatch.notify import reminder, render, routes
from fpwatch.providers import TYPES
from fpwatch.store import StoredEvent

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MODEL = "sim/gpt-4o"

CONFIG = """
[providers.sim]
type = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"

[[models]]
provider = "sim"
model = "gpt-4o"
tags = ["prod"]

[[models]]
provider = "sim"
model = "other"

[[notify]]
name = "warnings"
url = "json://127.0.0.1:9/w"

[[notify]]
name = "critical-prod"
url = "json://127.0.0.1:9/c"
min_severity = "critical"
models = ["prod"]

[[notify]]
name = "outages"
url = "json://127.0.0.1:9/o"
events = ["model.down"]
"""


def config(extra: str = "") -> Config:
    return parse_config(tomllib.loads(CONFIG + extra), TYPES, path=Path("routing.toml"), env={})


def changed(value: str = "fp_new0000000", model: str = MODEL) -> StoredEvent:
    details = SignalChange("fingerprint", value, ("fp_old0000000",), ("fp_old0000000", value), T0, 3, 4)
    event = Event(T0, model, "fingerprint.changed", f"{model}: fingerprint changed fp_old0000000 -> {value}", details)
    return StoredEvent(7, event, "check1")


def down(downs: int = 1) -> StoredEvent:
    details = ModelDown(3, "boom (HTTP 500)", T0 - timedelta(hours=1), downs, downs >= 2)
    return StoredEvent(8, Event(T0, MODEL, "model.down", f"{MODEL}: down, 3 checks in a row failed", details), "c")


def recovered() -> StoredEvent:
    details = ModelRecovered(3, T0 - timedelta(minutes=30))
    return StoredEvent(
        9, Event(T0, MODEL, "model.recovered", f"{MODEL}: recovered after 3 failed checks", details), "c"
    )


def drift_event(silent: bool = True) -> StoredEvent:
    shift = CanaryShift(0.9, 240, 60, {"Heads": 0.6, "Tails": 0.4}, {"Tails": 0.95}, ("Heads",), ("Tails.",))
    details = DriftDetails(
        "pooled_g", 81.2, 24.1, 0.0003, ScreenFigures(9.1, 4.2, None, 0.2, 34), 0.9, silent, 204, (T0,), ("fp_a",),
        {"default/coin": shift}, BehaviourChange("bfp_0000000001", "bfp_0000000002"),
    )  # fmt: skip
    return StoredEvent(10, Event(T0, MODEL, "canary.drift", f"{MODEL}: canary behaviour changed", details), "c")


def test_a_warning_goes_to_the_notifiers_whose_severity_and_models_match() -> None:
    """A fingerprint change (warning) reaches the default notifier, not the critical-only or events-only ones."""
    route = routes(config())
    assert route(ModelState(MODEL), changed()) == ["warnings"]


def test_a_silent_drift_is_critical_and_reaches_the_prod_notifier_by_tag() -> None:
    """A silent drift is critical: the notifier for critical events of models tagged prod gets it too."""
    route = routes(config())
    assert drift_event().event.severity == "critical" and drift_event(silent=False).event.severity == "warning"
    assert route(ModelState(MODEL), drift_event()) == ["warnings", "critical-prod"]
    other = replace(drift_event(), event=replace(drift_event().event, model="sim/other"))
    assert route(ModelState("sim/other"), other) == ["warnings"]  # not tagged prod


def test_an_events_list_means_exactly_those_types() -> None:
    """`events = ["model.down"]` gets the outage, whatever its severity filter would have said."""
    route = routes(config())
    assert route(ModelState(MODEL, down=True, recent_downs=(T0,)), down()) == ["warnings", "outages"]


def test_a_down_model_inhibits_its_changes_but_not_the_outage() -> None:
    """While the model is down, what it "changed" is noise: every type the vocabulary marks inhibited is held."""
    route = routes(config())
    state = ModelState(MODEL, down=True)
    assert route(state, changed()) == [] and route(state, drift_event()) == []
    inhibited = {name for name, kind in EVENTS.items() if kind.inhibited_while_down}
    assert "model.down" not in inhibited and "model.recovered" not in inhibited
    assert {"fingerprint.changed", "model.changed", "canary.drift", "canary.failed"} <= inhibited


def test_a_recovery_goes_where_the_outage_went_unless_send_resolved_is_off() -> None:
    """model.recovered is info, yet it reaches whoever got model.down; send_resolved = false drops it."""
    assert routes(config())(ModelState(MODEL), recovered()) == ["warnings", "outages"]
    quiet = routes(config("\n[alerts]\nsend_resolved = false\n"))
    assert quiet(ModelState(MODEL), recovered()) == []


def test_flap_damping_announces_the_second_outage_and_holds_the_rest() -> None:
    """Down twice within the hour: the second down is sent (it says flapping); a third, and recoveries, are held."""
    route = routes(config())
    twice = ModelState(MODEL, down=True, recent_downs=(T0 - timedelta(minutes=20), T0))
    thrice = replace(twice, recent_downs=(T0 - timedelta(minutes=40), T0 - timedelta(minutes=20), T0))
    assert route(twice, down(2)) == ["warnings", "outages"]
    assert route(thrice, down(3)) == []
    assert route(replace(twice, down=False), recovered()) == []
    later = ModelState(MODEL, recent_downs=(T0 - timedelta(hours=2), T0 - timedelta(minutes=90)))
    assert route(later, recovered()) == ["warnings", "outages"]  # the hour is quiet again


def test_render_one_event_titles_it_with_its_summary_and_lists_its_facts() -> None:
    """A single change: the summary is the title; the body says old -> new, the valid set, when, and how to ack."""
    title, body, kind = render([changed()])
    assert title == "[fpwatch] sim/gpt-4o: fingerprint changed fp_old0000000 -> fp_new0000000"
    assert kind == "warning"
    assert body.splitlines() == [
        "**WARNING** `fingerprint.changed` — sim/gpt-4o: fingerprint changed fp_old0000000 -> fp_new0000000",
        "- fp_old0000000 → **fp_new0000000**",
        "- valid now: fp_old0000000, fp_new0000000",
        "- first seen: 2026-05-01 12:00:00 UTC",
        "- at 2026-05-01 12:00:00 UTC; event 7 (`fpwatch ack 7` to acknowledge)",
    ]


def test_render_drift_carries_the_evidence() -> None:
    """A drift message shows silence, effect size, the statistic, each canary before and after, and the bfp."""
    _, body, kind = render([drift_event()])
    assert kind == "failure"  # apprise's name for critical
    assert "- silent: yes: no fingerprint or resolved-model change" in body
    assert "- effect size: about 90% of answers moved" in body
    assert "- statistic: pooled_g 81.2 over threshold 24.1 (p = 0.0003)" in body
    assert "- default/coin (TV 0.9): before `Heads` 60%, `Tails` 40% → after `Tails` 95%" in body
    assert "- example: before `Heads`, after `Tails.`" in body
    assert "- behaviour fingerprint bfp_0000000001 → **bfp_0000000002**" in body


def test_render_outages_expectations_and_retirements() -> None:
    """Each type renders its own facts: the last error, the failing outputs, the last sighting."""
    assert "- last error: boom (HTTP 500)" in render([down()])[1]
    failed = Event(T0, MODEL, "canary.failed", "s", ExpectFailed("math", "^391$", 1, 3, ("392", "390")))
    assert "- outputs: `392`, `390`" in render([StoredEvent(1, failed, None)])[1]
    retired = Event(
        T0, MODEL, "fingerprint.retired", "s", SignalRetired("fingerprint", "fp_b", T0, 0.3, 90, 0.0, ("fp_a",))
    )
    lines = render([StoredEvent(2, retired, None)])[1].splitlines()
    assert lines[1:3] == ["- valid now: fp_a", "- last seen: 2026-05-01 12:00:00 UTC"]


def test_several_events_make_one_message_at_the_worst_severity() -> None:
    """Grouped events: the title counts them and names the models; the notify type is the worst severity."""
    title, body, kind = render([changed(), changed("fp_x", model="sim/other"), drift_event()])
    assert title == "[fpwatch] 3 events on sim/gpt-4o, sim/other"
    assert kind == "failure" and body.count("`fpwatch ack") == 3


def test_a_reminder_says_how_long_and_how_to_stop_it() -> None:
    """A reminder repeats the event's message under a reminder title, with the ack that stops it."""
    title, body, _ = reminder(down())
    assert title.startswith("[fpwatch] reminder: sim/gpt-4o: down")
    assert body.startswith("Still unresolved since 2026-05-01 12:00:00 UTC (`fpwatch ack 8` stops reminders).")


@pytest.mark.parametrize("stored", [changed(), down(), recovered(), drift_event()], ids=lambda s: s.event.type)
def test_typed_details_round_trip_through_their_json(stored: StoredEvent) -> None:
    """What the store writes for an event's details reads back as the same typed value, shaped like its JSON."""
    details = stored.event.details
    again = details_from_json(stored.event.type, details.to_json())
    assert again == details and dict(again) == details.to_json()


def test_an_unknown_event_type_keeps_its_details_as_they_are() -> None:
    """A row of a type this fpwatch does not know (hand-written, another tool) loads; it is routed nowhere."""
    details = details_from_json("custom.thing", {"a": 1})
    assert details.to_json() == {"a": 1}
    stored = StoredEvent(1, Event(T0, MODEL, "custom.thing", "s", details, "info"), None)
    assert routes(config())(ModelState(MODEL), stored) == []


def test_every_event_type_and_its_details_are_documented_in_the_readme() -> None:
    """The README's event table names every type, and its details section every key each type's JSON carries."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    samples = [changed(), down(), recovered(), drift_event()]
    for name in EVENTS:
        assert f"`{name}`" in readme, name
    for stored in samples:
        for key in stored.event.details.to_json():
            assert f"`{key}`" in readme, (stored.event.type, key)
