"""The HTML report's page (`fpwatch report`, the daemon's `/` and `/model/NAME`): one self-contained file.

Everything is inside it: BokehJS (inline, its core bundle only: no widgets, no MathJax), the styles, the data; its
fonts are the system's own. It opens from disk or from an e-mail attachment with no network. The overview table and
each model's facts are plain HTML (escaped by Jinja's autoescape: a provider's strings are text, never markup); each
model's charts are a Bokeh document (report/charts.py) kept as JSON in the page and embedded when it scrolls into
view, so that a report of many models opens as fast as its first screen draws.

The page says when it is drawn, for the tests and bench/report.py: `data-first-screen` on <html> (milliseconds from
navigation to the charts of the first screen drawn), `data-first-chart` (to the first chart drawn, wherever it is),
`data-drawn` (charts drawn so far), `data-all-drawn`; and
`window.fpwatchReport.drawAll()` draws the rest at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import bokeh
from bokeh.resources import Resources
from jinja2 import Environment

from fpwatch import __version__
from fpwatch.clock import iso, parse_iso
from fpwatch.report import charts
from fpwatch.report.history import History, ModelHistory, span_text

EVENTS_LISTED = 10  # the newest events of a model listed under its charts (all of them are markers)


@dataclass(frozen=True)
class Live:
    """The daemon's page: links to its other pages, and how often it reloads itself (seconds)."""

    refresh: int = 60
    feed: str = "/feed.atom"


def render(history: History, *, title: str = "fpwatch report", live: Live | None = None, intro: str = "") -> str:
    """The page of these models' history."""
    models = [_model(m, i, history, live) for i, m in enumerate(history.models, start=1)]
    window = history.window
    return _TEMPLATE.render(
        title=title,
        intro=intro,
        version=__version__,
        bokeh_version=bokeh.__version__,
        bokeh_js=Resources(mode="inline", components=["bokeh"], log_level="warn").render_js(),
        css=_CSS,
        icon=_ICON,
        script=_SCRIPT,
        models=models,
        start=_when(window.start),
        end=_when(window.end),
        generated=_when(history.generated),
        width=span_text(window.width),
        live=live,
        refresh=live.refresh if live else 0,
    )


def _model(m: ModelHistory, index: int, history: History, live: Live | None) -> dict[str, Any]:
    s = m.summary
    chart_id, details_id = f"chart-{index}", f"details-{index}"
    drift = s["drift"]
    return {
        "name": m.name,
        "anchor": f"model-{index}",
        "href": f"/model/{quote(m.name, safe='')}" if live else f"#model-{index}",
        "provider": s["provider"],
        "model_id": s["model"],
        "state": s["state"],
        "fingerprints": s["fingerprints"] or (["(missing)"] if s["fingerprint_missing"] else []),
        "resolved": s["resolved_models"],
        "behaviour": s["behaviour_fingerprint"] or "-",
        "last_check": _when(s["last_check"]),
        "last_check_ago": _ago(s["last_check"], history.generated),
        "open_drift": _when(drift["open_since"]) if drift["open_since"] else "",
        "last_error": s["last_error"] if s["consecutive_failures"] else "",
        "chart_id": chart_id,
        "details_id": details_id,
        "item": charts.item(m, history.window, chart_id, details_id),
        "height": 535 if m.screens.times else 330,
        "screened": bool(m.screens.times),
        "events": [e.to_dict() for e in reversed(m.events[-EVENTS_LISTED:])],
        "event_count": len(m.events) + m.events_left_out,
        "events_left_out": m.events_left_out,
        "signal": m.shares.signal,
    }


def _when(value: datetime | str | None) -> str:
    """A time as the page shows it: UTC, to the second."""
    if value is None:
        return "-"
    text = iso(value) if isinstance(value, datetime) else value
    return text[:19].replace("T", " ") + " UTC"


def _ago(value: str | None, now: datetime) -> str:
    """How long before the page was made: "4 min before this page"."""
    if value is None:
        return ""
    seconds = max(0.0, (now - parse_iso(value)).total_seconds())
    for unit, size, past in (("d", 86400, 2 * 86400), ("h", 3600, 2 * 3600), ("min", 60, 120)):
        if seconds >= past:
            return f"{seconds // size:.0f} {unit} before this page"
    return f"{seconds:.0f} s before this page"


# In the page too: a browser asks a server for /favicon.ico otherwise.
_ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect x='1' y='6' width='3' height='9' fill='%231f77b4'/%3E%3Crect x='6' y='3' width='3' height='12' "
    "fill='%23ff7f0e'/%3E%3Crect x='11' y='1' width='3' height='14' fill='%232ca02c'/%3E%3C/svg%3E"
)
_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d9dde3; --panel: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header, main, footer { max-width: 1500px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; border-bottom: 1px solid var(--line); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 26px 0 4px; }
p.sub, p.facts, footer { color: var(--muted); margin: 4px 0 12px; }
code, .mono, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); background: var(--panel); }
td.mono { font-size: 12.5px; word-break: break-all; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         background: #e8eaee; }
.state-ok { background: #d8f0dc; color: #17602a; }
.state-learning { background: #dbe8f7; color: #1e4f8a; }
.state-drift { background: #fde2c8; color: #8a4300; }
.state-down, .state-failing { background: #f9d3d3; color: #8f1d1d; }
.state-stale { background: #ececec; color: #555; }
.drift { color: #8a4300; font-weight: 600; }
section.model { border-top: 1px solid var(--line); margin-top: 18px; }
div.chart { width: 100%; }
pre.details { background: var(--panel); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px;
              white-space: pre-wrap; word-break: break-word; font-size: 12.5px; max-height: 360px; overflow: auto;
              margin: 6px 0; }
pre.details:not([data-shown]) { color: var(--muted); }
details > summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
.sev-warning { color: #a35200; } .sev-critical { color: #b00020; font-weight: 600; } .sev-info { color: var(--muted); }
a { color: #1f5fa8; }
"""

# Glue, not chart code: embed each model's Bokeh document when it nears the viewport, and say when they are drawn.
_SCRIPT = """
(() => {
  "use strict";
  const root = document.documentElement;
  const charts = Array.from(document.querySelectorAll("div.chart[data-item]"));
  const pending = new Map();
  let drawn = 0;
  const report = {
    ready(id) {
      const el = document.getElementById(id);
      if (el && el.dataset.state !== "drawn") {
        el.dataset.state = "drawn";
        root.dataset.drawn = String(++drawn);
        if (drawn === 1) root.dataset.firstChart = performance.now().toFixed(1);
        if (drawn === charts.length) root.dataset.allDrawn = performance.now().toFixed(1);
      }
      const done = pending.get(id);
      if (done) done.resolve();
    },
    draw(el) {
      if (!pending.has(el.id)) {
        let resolve;
        const promise = new Promise((r) => { resolve = r; });
        pending.set(el.id, { promise, resolve });
        el.dataset.state = "drawing";
        const item = JSON.parse(document.getElementById(el.dataset.item).textContent);
        Bokeh.embed.embed_item(item, el.id).catch((error) => {
          el.dataset.state = "failed";
          console.error("fpwatch report: chart " + el.id + " failed: " + error);
          resolve();
        });
      }
      return pending.get(el.id).promise;
    },
    drawAll() { return Promise.all(charts.map((el) => report.draw(el))); },
  };
  window.fpwatchReport = report;
  if (charts.length === 0) root.dataset.allDrawn = "0";
  const onScreen = (el) => { const r = el.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; };
  Promise.all(charts.filter(onScreen).map((el) => report.draw(el))).then(() => {
    root.dataset.firstScreen = performance.now().toFixed(1);
  });
  const near = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) { near.unobserve(entry.target); report.draw(entry.target); }
    }
  }, { rootMargin: "600px 0px" });
  charts.forEach((el) => near.observe(el));
  const refresh = Number(root.dataset.refresh || 0);
  if (refresh > 0) {
    let touched = 0;
    for (const kind of ["pointerdown", "keydown", "wheel"]) addEventListener(kind, () => { touched = Date.now(); });
    setInterval(() => {
      if (!document.hidden && Date.now() - touched > refresh * 1000) location.reload();
    }, refresh * 1000);
  }
})();
"""

_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_TEMPLATE = _ENV.from_string(
    """<!DOCTYPE html>
<html lang="en" data-refresh="{{ refresh }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="fpwatch {{ version }}, Bokeh {{ bokeh_version }}">
<title>{{ title }}</title>
<link rel="icon" href="{{ icon }}">
{% if live %}
<link rel="alternate" type="application/atom+xml" title="fpwatch events" href="{{ live.feed }}">
{% endif %}
<style>{{ css }}</style>
{{ bokeh_js | safe }}
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p class="sub">{{ models | length }} model{{ "" if models | length == 1 else "s" }}, {{ start }} to {{ end }}
 (buckets of {{ width }}); generated {{ generated }} by fpwatch {{ version }}.
{% if live %} This page reloads every {{ refresh }} s; <a href="/">all models</a>,
 <a href="{{ live.feed }}">the events as an Atom feed</a>, <a href="/api/v1/status">status JSON</a>.{% endif %}
{{ intro }}</p>
</header>
<main>
<section id="overview">
<h2>Overview</h2>
<table>
<thead><tr><th>Model</th><th>State</th><th>Valid fingerprints</th><th>Resolved model</th>
<th>Behaviour fingerprint</th><th>Last check</th><th>Open drift</th></tr></thead>
<tbody>
{% for m in models %}
<tr>
<td><a href="{{ m.href }}">{{ m.name }}</a><br><span class="sub">{{ m.provider }}: {{ m.model_id }}</span></td>
<td><span class="state state-{{ m.state }}">{{ m.state }}</span></td>
<td class="mono">{{ m.fingerprints | join(", ") or "-" }}</td>
<td class="mono">{{ m.resolved | join(", ") or "-" }}</td>
<td class="mono">{{ m.behaviour }}</td>
<td>{{ m.last_check }}{% if m.last_check_ago %}<br><span class="sub">{{ m.last_check_ago }}</span>{% endif %}</td>
<td>{% if m.open_drift %}<span class="drift">since {{ m.open_drift }}</span>{% else %}-{% endif %}</td>
</tr>
{% endfor %}
</tbody>
</table>
</section>
{% for m in models %}
<section class="model" id="{{ m.anchor }}">
<h2><a href="{{ m.href }}">{{ m.name }}</a> <span class="state state-{{ m.state }}">{{ m.state }}</span></h2>
<p class="facts">{{ m.provider }}: <code>{{ m.model_id }}</code>; valid fingerprints
 <code>{{ m.fingerprints | join(", ") or "-" }}</code>;
 resolved model <code>{{ m.resolved | join(", ") or "-" }}</code>;
 behaviour <code>{{ m.behaviour }}</code>; last check {{ m.last_check }}
{% if m.open_drift %}; <span class="drift">canary drift open since {{ m.open_drift }}</span>{% endif %}
{% if m.last_error %}; last error: {{ m.last_error }}{% endif %}.
{% if not m.screened %} No drift screen in this window yet (the model learns its reference first).{% endif %}</p>
<div class="chart" id="{{ m.chart_id }}" data-item="{{ m.chart_id }}-data" style="min-height: {{ m.height }}px"></div>
<script type="application/json" id="{{ m.chart_id }}-data">{{ m.item | safe }}</script>
<pre class="details" id="{{ m.details_id }}">Click an event marker for its summary and details.</pre>
{% if m.events %}
<details>
<summary>{{ m.event_count }} event{{ "" if m.event_count == 1 else "s" }} in this window; the newest
 {{ m.events | length }}</summary>
<table>
<thead><tr><th>Time</th><th>Event</th><th>Summary</th><th>Acked</th></tr></thead>
<tbody>
{% for e in m.events %}
<tr><td>{{ e.time[:19] | replace("T", " ") }}</td><td class="sev-{{ e.severity }}">{{ e.type }}</td>
<td>{{ e.summary }}</td><td>{{ e.acked_at[:19] | replace("T", " ") if e.acked_at else "no" }}</td></tr>
{% endfor %}
</tbody>
</table>
</details>
{% endif %}
</section>
{% endfor %}
<noscript><p>The charts need JavaScript; the tables do not.</p></noscript>
</main>
<footer><p>fpwatch {{ version }}; charts by Bokeh {{ bokeh_version }}, embedded in this file (it needs no network).</p>
</footer>
<script>{{ script | safe }}</script>
</body>
</html>
"""
)
