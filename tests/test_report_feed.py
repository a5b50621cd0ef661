"""The events as an Atom feed (`fpwatch report --atom`; the daemon's /feed.atom is in test_report_html.py), checked
as XML against the Atom namespace: the elements RFC 4287 requires, one entry per event newest first, the filters;
and `fpwatch report` itself where the browser is not needed: a page without a state, and without Bokeh."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from conftest import ATOM_NS as NS
from conftest import HOSTILE_FP, REPORT_MODELS, Cli, categories, report_story, rfc3339, valid_feed

from fpwatch.detect.events import Event, SignalChange
from fpwatch.report.atom import feed
from fpwatch.sim import Simulator
from fpwatch.store import StoredEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_feed_has_one_entry_per_event_newest_first_with_summary_details_and_ack(cli: Cli, sim: Simulator) -> None:
    """`report --atom`: every event an entry, its summary the title, its details the content; an acked one says so
    and is updated when it was acked."""
    events = report_story(cli, sim)
    result = cli("report", "--atom")
    assert result.code == 0, result.stderr
    entries = valid_feed(result.stdout.encode())
    assert len(entries) == len(events)
    newest_first = sorted(events, key=lambda e: (e["time"], e["id"]), reverse=True)
    assert [e.findtext("a:title", namespaces=NS) for e in entries] == [e["summary"] for e in newest_first]
    changed = next(x for x in entries if categories(x)["type"] == "fingerprint.changed")
    assert categories(changed) == {"type": "fingerprint.changed", "severity": "warning", "model": "sim/gpt-4o"}
    content = changed.findtext("a:content", namespaces=NS, default="")
    assert "acked: " in content and "planned rollout" in content and '"new": "fp_cccccccccc"' in content
    stored = next(e for e in events if e["type"] == "fingerprint.changed")
    assert rfc3339(changed.findtext("a:updated", namespaces=NS)) == rfc3339(stored["acked_at"])
    # The hostile fingerprint is text in the feed, exactly as the provider sent it.
    assert any(HOSTILE_FP in (e.findtext("a:title", namespaces=NS) or "") for e in entries)


def test_the_feed_filters_by_model_or_tag_severity_and_limit(cli: Cli, sim: Simulator) -> None:
    """`--severity warning` keeps warnings and worse; models by name or tag; `--limit` the newest N; `-o` a file."""
    events = report_story(cli, sim)
    warnings = valid_feed(cli("report", "--atom", "--severity", "warning").stdout.encode())
    assert [categories(e)["type"] for e in warnings] == ["fingerprint.changed"]
    mini = valid_feed(cli("report", "--atom", REPORT_MODELS[1]).stdout.encode())
    assert {categories(e)["model"] for e in mini} == {REPORT_MODELS[1]}
    assert len(mini) == sum(e["model"] == REPORT_MODELS[1] for e in events)
    prod = valid_feed(cli("report", "--atom", "prod").stdout.encode())  # a tag: gpt-4o
    assert {categories(e)["model"] for e in prod} == {REPORT_MODELS[0]}
    assert len(valid_feed(cli("report", "--atom", "--limit", "2").stdout.encode())) == 2
    written = cli("report", "--atom", "-o", "events.atom")
    assert written.code == 0 and written.stdout.strip() == "Wrote events.atom"
    assert len(valid_feed((cli.tmp_path / "events.atom").read_bytes())) == len(events)
    unknown = cli("report", "--atom", "nope")
    assert unknown.code == 1 and 'no model or tag named "nope"' in unknown.stderr


def stored(summary: str, minutes: int, ident: int, acked: datetime | None = None) -> StoredEvent:
    details = SignalChange("fingerprint", "fp_b", ("fp_a",), ("fp_a", "fp_b"), T0, 1, 1)
    event = Event(T0 + timedelta(minutes=minutes), "m", "fingerprint.changed", summary, details)
    return StoredEvent(ident, event, "c", acked_at=acked, ack_comment="ok" if acked else None)


def test_what_xml_cannot_carry_is_replaced_and_the_rest_escaped() -> None:
    """Markup in a summary is text; characters XML 1.0 forbids become U+FFFD; the feed always parses."""
    hostile = "m: <script>alert(1)</script> & ]]> \x07\x00 bell"
    events: Sequence[StoredEvent] = [stored(hostile, 2, 2), stored("plain", 1, 1, acked=T0 + timedelta(hours=1))]
    body = feed(events, ident="urn:uuid:0", title="t", now=T0, self_url="http://h/feed.atom?a=1&b=2")
    entries = valid_feed(body)
    assert entries[0].findtext("a:title", namespaces=NS) == "m: <script>alert(1)</script> & ]]> \ufffd\ufffd bell"
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    root = ET.fromstring(body)
    assert root.find("a:link", NS).get("href") == "http://h/feed.atom?a=1&b=2"  # type: ignore[union-attr]
    assert rfc3339(root.findtext("a:updated", namespaces=NS)) == T0 + timedelta(hours=1)  # the newest change: an ack
    empty = ET.fromstring(feed([], ident="urn:uuid:0", title="t", now=T0))
    assert rfc3339(empty.findtext("a:updated", namespaces=NS)) == T0 and not empty.findall("a:entry", NS)


def test_an_entry_keeps_its_id_between_feeds() -> None:
    """An entry's id depends on the event alone: a feed reader shows it once, whatever else the feed holds."""
    one, two = stored("a", 1, 1), stored("b", 2, 2)
    first = [e.findtext("a:id", namespaces=NS) for e in valid_feed(feed([one], ident="urn:uuid:0", title="t", now=T0))]
    both = [
        e.findtext("a:id", namespaces=NS) for e in valid_feed(feed([two, one], ident="urn:uuid:0", title="t", now=T0))
    ]
    assert both[1] == first[0] and both[0] != first[0]


def test_a_report_without_a_state_is_a_page_of_no_history(cli: Cli) -> None:
    """Before the first check there is no database: the page still comes, every model without history, and no
    database is created."""
    cli.write()
    result = cli("report", "-o", "empty.html")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("Wrote empty.html (") and "1 model;" in result.stdout
    html = (cli.tmp_path / "empty.html").read_text()
    assert "sim/gpt-4o" in html and "<script src=" not in html
    assert not (cli.tmp_path / "state.db").exists()
    feed_result = cli("report", "--atom")
    assert feed_result.code == 0 and valid_feed(feed_result.stdout.encode()) == []


def run_without_bokeh(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    """`fpwatch ARGS` in a Python where Bokeh cannot be imported (as without the report extra)."""
    code = "import sys; sys.modules['bokeh'] = None; from fpwatch.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(cli.config), *args],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.tmp_path,
        timeout=60,
    )


def test_without_bokeh_the_page_says_what_to_install_and_the_feed_still_works(cli: Cli) -> None:
    """The report extra missing: one line naming it (exit 1), no traceback; --atom needs only the standard library."""
    cli.write()
    page = run_without_bokeh(cli, "report")
    assert page.returncode == 1
    assert (
        page.stderr.startswith("Error: the HTML report needs Bokeh") and "pip install 'fpwatch[report]'" in page.stderr
    )
    assert "Traceback" not in page.stderr
    atom = run_without_bokeh(cli, "report", "--atom")
    assert atom.returncode == 0, atom.stderr
    valid_feed(atom.stdout.encode())


def test_severity_is_for_the_feed(cli: Cli) -> None:
    """The page shows every event: --severity without --atom is a usage mistake."""
    cli.write()
    result = cli("report", "--severity", "warning")
    assert result.code == 1 and "--severity goes with --atom" in result.stderr
