"""The HTML report in a real browser: Debian's headless Chromium (tests/browser.py, over the DevTools protocol) loads
the file `fpwatch report` writes and the page a real `fpwatch run` serves, and these tests check what a person would
see: the model names and fingerprints, drawn charts, an event marker whose hover shows its summary and whose click
shows its details, no console error, no request leaving the page (it is self-contained); a hostile fingerprint is
text. Each page's screenshot is written under the test's tmp folder and copied to $FPWATCH_ARTIFACTS, else to
tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser import Chromium, Page, find_chromium
from conftest import (
    FP_A,
    FP_B,
    FP_C,
    HOSTILE_FP,
    REPORT_MODELS,
    Cli,
    DaemonProcess,
    categories,
    report_story,
    valid_feed,
    wait_for,
)

from fpwatch.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent

# `expression` where deep(root, selector) finds every element under `root`, shadow roots included (Bokeh draws in
# shadow DOM).
DEEP = """(() => {
  function deep(root, selector) {
    const found = [...root.querySelectorAll(selector)];
    for (const el of root.querySelectorAll("*")) if (el.shadowRoot) found.push(...deep(el.shadowRoot, selector));
    return found;
  }
  return %s;
})()"""
# Where the chart in `chart` draws its event markers: page coordinates, with each marker's type and summary.
MARKERS = """
((chart) => {
  function* walk(view) { yield view; for (const child of view.children()) yield* walk(child); }
  for (const root of Bokeh.index) {
    if (!document.getElementById(chart).contains(root.el)) continue;
    for (const view of walk(root)) {
      if (view.model.type !== "GlyphRenderer" || view.model.name !== "events") continue;
      const canvas = view.parent.canvas_view.el.getBoundingClientRect();
      const data = view.model.data_source.data;
      return Array.from(view.glyph.sx, (x, i) => ({
        x: canvas.left + x, y: canvas.top + view.glyph.sy[i], type: data.type[i], summary: data.summary[i],
      }));
    }
  }
  return [];
})
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium on the PATH (.ci/setup installs Debian's chromium package)")
    with Chromium(binary, 1400, 2000) as chromium:
        yield chromium


def artifact(path: Path) -> Path:
    """Keep a screenshot where CI (or a person) finds it after the run."""
    folder = Path(os.environ.get("FPWATCH_ARTIFACTS") or ROOT / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, folder / path.name))


def drawn(page: Page) -> None:
    """Every chart of the page drawn."""
    page.wait_for("document.documentElement.dataset.firstScreen", what="the first screen's charts")
    page.evaluate("window.fpwatchReport.drawAll()")
    page.wait_for("document.documentElement.dataset.allDrawn", what="every chart")


def charts(page: Page) -> list[dict[str, Any]]:
    """Each chart: its state and how many canvases Bokeh drew in it."""
    return list(
        page.evaluate(
            DEEP % "[...document.querySelectorAll('div.chart')].map((el) => "
            "({id: el.id, state: el.dataset.state, canvases: deep(el, 'canvas').length}))"
        )
    )


def mouse(page: Page, x: float, y: float, click: bool = False) -> None:
    page.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
    if click:
        for kind in ("mousePressed", "mouseReleased"):
            page.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})


def test_the_report_file_shows_the_models_charts_and_events_offline(
    cli: Cli, sim: Simulator, browser: Chromium, tmp_path: Path
) -> None:
    """The file `fpwatch report` writes, opened from disk: the overview names every model with its fingerprints,
    each chart is drawn, the fingerprint change is a marker (hover: its summary; click: its details, acked), the
    console stays clean and nothing is fetched from anywhere."""
    events = report_story(cli, sim)
    result = cli("report", "-o", "report.html")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("Wrote report.html (") and "2 models" in result.stdout
    page = browser.open((tmp_path / "report.html").as_uri())
    drawn(page)
    text = page.evaluate("document.body.innerText")
    for name in REPORT_MODELS:
        assert name in text
    overview = page.evaluate("document.querySelector('#overview').innerText")
    assert FP_A in overview and FP_C in overview and HOSTILE_FP in overview  # the valid sets
    assert "gpt-4o-2024-08-06" in overview and "bfp_" in overview
    # The hostile fingerprint stayed text: no element made of it, no script run by it.
    assert page.evaluate("document.querySelectorAll('main img').length") == 0
    assert page.evaluate("window.pwned") is None
    for chart in charts(page):
        assert chart["state"] == "drawn" and chart["canvases"] >= 1, chart
    markers = page.evaluate(MARKERS + "('chart-1')")
    assert len(markers) == sum(e["model"] == REPORT_MODELS[0] for e in events)
    change = next(m for m in markers if m["type"] == "fingerprint.changed")
    summary = next(e["summary"] for e in events if e["type"] == "fingerprint.changed")
    assert change["summary"] == summary
    page.evaluate(f"window.scrollTo(0, {change['y']} - 300)")
    markers = page.evaluate(MARKERS + "('chart-1')")
    change = next(m for m in markers if m["type"] == "fingerprint.changed")
    mouse(page, change["x"], change["y"])
    tooltip = wait_for(
        lambda: (
            summary in page.evaluate(DEEP % "deep(document, '.bk-tooltip-row-value').map((t) => t.textContent.trim())")
        ),
        timeout=10,
        what="the marker's tooltip",
    )
    assert tooltip
    mouse(page, change["x"], change["y"], click=True)
    details = wait_for(
        lambda: page.evaluate("document.getElementById('details-1').dataset.shown && "
                              "document.getElementById('details-1').textContent"),
        timeout=10,
        what="the event's details under the chart",
    )  # fmt: skip
    assert summary in details and f'"new": "{FP_C}"' in details and "planned rollout" in details
    shot = page.screenshot(tmp_path / "report-file.png", full_page=True)
    artifact(shot)
    assert [str(m) for m in page.errors()] == []
    assert {url.split(":", 1)[0] for url in page.requests} <= {"file", "data", "blob"}, page.requests
    page.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Simulator]]:
    """A DaemonProcess (its config takes no key) on a simulator that asks for none; killed if a test left it."""
    with Simulator(seed=5) as sim:
        process = DaemonProcess(tmp_path, sim)
        yield process, sim
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_the_daemon_serves_the_live_report_its_model_pages_and_the_feed(
    live: tuple[DaemonProcess, Simulator], browser: Chromium, tmp_path: Path
) -> None:
    """`fpwatch run` with `listen`: `/` is the same page, live (it reloads itself), built from the daemon's state;
    `/model/NAME` one model; `/feed.atom` the events, filtered by `?model=` and `?severity=`."""
    daemon, sim = live
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1, FP_B: 1}, "resolved": "gpt-4o-2024-08-06"})
    daemon.write(interval="1s", grace="1h")
    daemon.start()
    wait_for(lambda: daemon.checks() >= 4, timeout=30, what="four checks")
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1, FP_C: 1}})
    wait_for(lambda: ("fingerprint.changed", FP_C) in daemon.events(), timeout=30, what="the fingerprint change")
    base = f"http://127.0.0.1:{daemon.port}"
    time.sleep(1.5)  # past a check: the page is built anew, not from a cache of before the change
    reply = httpx.get(f"{base}/", timeout=60)
    assert reply.status_code == 200 and reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "<script src=" not in reply.text and 'href="/feed.atom"' in reply.text
    page = browser.open(f"{base}/", timeout=60)
    drawn(page)
    text = page.evaluate("document.body.innerText")
    assert "sim/gpt-4o" in text and FP_C in text and "This page reloads every 60 s" in text
    assert page.evaluate("document.documentElement.dataset.refresh") == "60"
    assert [c["state"] for c in charts(page)] == ["drawn"]
    markers = page.evaluate(MARKERS + "('chart-1')")
    assert "fingerprint.changed" in {m["type"] for m in markers}
    artifact(page.screenshot(tmp_path / "report-live.png", full_page=True))
    assert [str(m) for m in page.errors()] == []
    # The model's own page, linked from the overview.
    link = page.evaluate("document.querySelector('#overview a').getAttribute('href')")
    assert link == f"/model/{quote('sim/gpt-4o', safe='')}"
    one = httpx.get(base + link, timeout=60)
    assert one.status_code == 200 and "<title>fpwatch: sim/gpt-4o</title>" in one.text
    missing = httpx.get(f"{base}/model/nope", timeout=10)
    assert missing.status_code == 404 and "no model named &#x27;nope&#x27;" in missing.text
    # The feed, filtered.
    warnings = httpx.get(f"{base}/feed.atom", params={"model": "sim/gpt-4o", "severity": "warning"}, timeout=30)
    assert warnings.status_code == 200 and warnings.headers["content-type"].startswith("application/atom+xml")
    entries = valid_feed(warnings.content)
    assert [categories(e)["type"] for e in entries] == ["fingerprint.changed"]
    link_of = entries[0].find("{http://www.w3.org/2005/Atom}link")
    assert link_of is not None and link_of.get("href") == f"{base}/model/sim%2Fgpt-4o"
    every = valid_feed(httpx.get(f"{base}/feed.atom", timeout=30).content)
    assert len(every) >= 3 and {categories(e)["severity"] for e in every} == {"info", "warning"}
    assert httpx.get(f"{base}/feed.atom", params={"severity": "loud"}, timeout=10).status_code == 400
    assert httpx.get(f"{base}/feed.atom", params={"model": "nope"}, timeout=10).status_code == 404
    assert daemon.stop() == 0
