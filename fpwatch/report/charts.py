"""The charts of the HTML report, one Bokeh layout per model on one time axis: the requests' fingerprint shares
stacked per bucket (rotation reads as alternating colours, a rollout as one colour taking over), the resolved-model
and behaviour-fingerprint epochs above them, the events as markers (hover: the summary; click: the details), and
the drift screen against its threshold below (a log scale: a swap's surprise is a hundred times its noise).

Bokeh (BokehJS embedded in the page by report/page.py): hover and tap tools, one linked x range per model, legends
that hide a series on click, wheel zoom and pan along time; the page embeds each model's document when it scrolls
into view. Values from providers (fingerprints, model names, event summaries) reach the page only as data: the
tooltips show them as text, and a click puts the details in the page with `textContent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from bokeh.core.types import ID
from bokeh.document import Document
from bokeh.embed import json_item
from bokeh.layouts import gridplot
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataRange1d,
    FixedTicker,
    HoverTool,
    LogAxis,
    LogScale,
    Range1d,
    TapTool,
    WheelZoomTool,
)
from bokeh.models.annotations import Legend, LegendItem
from bokeh.plotting import figure
from bokeh.transform import factor_cmap

from fpwatch.clock import iso
from fpwatch.report.history import FAILED, NONE, OTHER, SCREEN_SPLIT, ModelHistory, Window, span_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")  # no red, no grey
FIXED = {NONE: "#c7c7c7", OTHER: "#8c8c8c", FAILED: "#d62728"}
EPOCH_COLOURS = ("#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9")
SEVERITY = {"info": ("#4c78a8", "circle"), "warning": ("#f58518", "triangle"), "critical": ("#d62728", "diamond")}
LABELLED = 0.1  # an epoch at least this share of the window wide is labelled with its value (hover tells the rest)
ROWS = {"resolved": (1.08, 1.28), "behaviour": (1.34, 1.54)}  # y bands above the shares (0 to 1)
EVENTS_Y = 1.63
DETAILS_CHARS = 6000  # an event's details shown on click, at most
FEW_SCREENS = 60
SURPRISE_FLOOR, LOGPROB_FLOOR = 0.01, 1e-9  # log scales: a screen of 0 is drawn at its floor
TOOLS = "xpan,xbox_zoom,reset,save"


def item(model: ModelHistory, window: Window, chart_id: str, details_id: str) -> str:
    """The model's charts as a Bokeh JSON item for `chart_id`, safe inside a <script type="application/json">."""
    layout = _layout(model, window, details_id)
    doc = Document()
    doc.add_root(layout)
    ready = "window.fpwatchReport && window.fpwatchReport.ready(chart)"
    doc.js_on_event("document_ready", CustomJS(args={"chart": chart_id}, code=ready))
    text = json.dumps(json_item(layout, ID(chart_id)), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _ms(time: datetime) -> float:
    return time.timestamp() * 1000.0


def _layout(model: ModelHistory, window: Window, details_id: str) -> Any:
    pad = (_ms(window.end) - _ms(window.start)) * 0.01  # a marker at either end is drawn whole
    start, end = _ms(window.start) - pad, _ms(window.end) + pad
    x_range = Range1d(start=start, end=end, bounds=(start, end), min_interval=1000.0)
    top = figure(
        height=285,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        x_range=x_range,
        y_range=Range1d(start=0, end=EVENTS_Y + 0.09),
        tools=TOOLS,
        toolbar_location=None,
        title=f"{model.shares.signal} shares of the requests, epochs and events",
    )
    _shares(top, model, window)
    _epochs(top, model, window)
    _events(top, model, details_id)
    top.yaxis.ticker = FixedTicker(ticks=[0, 0.5, 1, sum(ROWS["resolved"]) / 2, sum(ROWS["behaviour"]) / 2, EVENTS_Y])
    top.yaxis.major_label_overrides = {
        0: "0%",
        0.5: "50%",
        1: "100%",
        sum(ROWS["resolved"]) / 2: "resolved model",
        sum(ROWS["behaviour"]) / 2: "behaviour",
        EVENTS_Y: "events",
    }
    top.ygrid.visible = False
    _legend_below(top, hide=False)  # one renderer holds every value's bars
    rows: list[list[Any]] = [[top]]
    if model.screens.times:
        rows.append([_screens(model, window, x_range)])
        top.xaxis.visible = False  # the screen's axis below is the same time: one axis to lay out and label
    for row in rows:
        row[0].add_tools(WheelZoomTool(dimensions="width"))  # not active: the page's own scrolling stays the page's
    return gridplot(rows, sizing_mode="stretch_width", merge_tools=True, toolbar_location="right")


def _shares(fig: Any, model: ModelHistory, window: Window) -> None:
    """One rectangle per bucket and value (where its share is not 0), stacked: one renderer whatever the values."""
    shares = model.shares
    labels = list(shares.values)
    if not labels:
        return
    starts = [_ms(t) for t in window.starts()]
    width, end = window.width.total_seconds() * 1000.0, _ms(window.end)
    rows: list[tuple[float, float, float, float, float, int, str]] = []
    first: dict[str, int] = {}
    for i, requests in enumerate(shares.requests):
        bottom = 0.0
        for label in labels:
            share = shares.values[label][i]
            if share > 0:
                first.setdefault(label, len(rows))
                rows.append((starts[i], min(starts[i] + width, end), bottom, bottom + share, share, requests, label))
                bottom += share
    if not rows:
        return
    left, right, bottoms, tops, share_of, requests_of, value = (list(c) for c in zip(*rows, strict=True))
    source = ColumnDataSource(
        {
            "left": np.array(left, dtype=np.float64),
            "right": np.array(right, dtype=np.float64),
            "bottom": np.array(bottoms, dtype=np.float32),
            "top": np.array(tops, dtype=np.float32),
            "share": np.array(share_of, dtype=np.float32),
            "requests": np.array(requests_of, dtype=np.int32),
            "value": value,
        }
    )
    colours = [FIXED.get(label) or PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)]
    bars = _plain(
        fig.quad(
            left="left",
            right="right",
            bottom="bottom",
            top="top",
            fill_color=factor_cmap("value", colours, labels),
            line_width=0,
            source=source,
        )
    )
    shown = [label for label in labels if label in first]
    fig.add_layout(Legend(items=[LegendItem(label=label, renderers=[bars], index=first[label]) for label in shown]))
    fig.add_tools(
        HoverTool(
            renderers=[bars],
            tooltips=[
                (shares.signal, "@value"),
                ("share", "@share{0.0%}"),
                ("requests", "@requests"),
                ("from", "@left{%F %T} UTC"),
                ("to", "@right{%F %T} UTC"),
            ],
            formatters={"@left": "datetime", "@right": "datetime"},
            description="Hover: the shares",
        )
    )


def _epochs(fig: Any, model: ModelHistory, window: Window) -> None:
    """The resolved-model and behaviour-fingerprint epochs, in their bands: one renderer, labels where they fit."""
    span = max(_ms(window.end) - _ms(window.start), 1.0)
    rows: list[tuple[float, float, float, float, str, str, str]] = []
    for band, epochs, what in (
        ("resolved", model.resolved, "resolved model"),
        ("behaviour", model.behaviour, "behaviour"),
    ):
        if not epochs:
            continue
        low, high = ROWS[band]
        height = (high - low) / (max(e.lane for e in epochs) + 1)
        colour_of: dict[str, str] = {}
        for e in epochs:
            colour = colour_of.setdefault(e.value, EPOCH_COLOURS[len(colour_of) % len(EPOCH_COLOURS)])
            bottom = low + e.lane * height
            left, right = _ms(e.start), max(_ms(e.end), _ms(e.start) + 1000.0)
            rows.append((left, right, bottom, bottom + height - 0.01, e.value, what, colour))
    if not rows:
        return
    columns = ("left", "right", "bottom", "top", "value", "kind", "colour")
    source = ColumnDataSource(dict(zip(columns, (list(c) for c in zip(*rows, strict=True)), strict=True)))
    labelled = [r for r in rows if (r[1] - r[0]) / span >= LABELLED]
    bars = _plain(
        fig.quad(
            left="left",
            right="right",
            bottom="bottom",
            top="top",
            fill_color="colour",
            line_color="#6b6b6b",
            line_width=0.5,
            source=source,
        )
    )
    if labelled:
        _plain(
            fig.text(
                x="x",
                y="y",
                text="text",
                source=ColumnDataSource(
                    {"x": [r[0] for r in labelled], "y": [r[2] for r in labelled], "text": [r[4] for r in labelled]}
                ),
                x_offset=4,
                y_offset=-2,
                text_font_size="8pt",
                text_baseline="bottom",
                text_color="#222222",
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=[bars],
            tooltips=[("@kind", "@value"), ("from", "@left{%F %T} UTC"), ("to", "@right{%F %T} UTC")],
            formatters={"@left": "datetime", "@right": "datetime"},
            description="Hover: the epochs",
        )
    )


def _events(fig: Any, model: ModelHistory, details_id: str) -> None:
    events = model.events
    if not events:
        return
    rows = [e.to_dict() for e in events]
    source = ColumnDataSource(
        {
            "x": [_ms(e.event.time) for e in events],
            "y": [EVENTS_Y] * len(events),
            "time": [r["time"] for r in rows],
            "type": [r["type"] for r in rows],
            "severity": [r["severity"] for r in rows],
            "summary": [r["summary"] for r in rows],
            "acked": [_acked(r) for r in rows],
            "colour": [SEVERITY.get(r["severity"], SEVERITY["info"])[0] for r in rows],
            "marker": [SEVERITY.get(r["severity"], SEVERITY["info"])[1] for r in rows],
            "alpha": [0.3 if r["acked_at"] else 1.0 for r in rows],
            "details": [_details(r) for r in rows],
        }
    )
    # Where the warnings and critical events fall, through the shares: what changed lines up with them.
    notable = [e for e in events if e.event.severity != "info"]
    if notable:
        _plain(
            fig.segment(
                x0=[_ms(e.event.time) for e in notable],
                x1=[_ms(e.event.time) for e in notable],
                y0=[0.0] * len(notable),
                y1=[EVENTS_Y] * len(notable),
                line_color=[SEVERITY.get(e.event.severity, SEVERITY["info"])[0] for e in notable],
                line_alpha=0.45,
                line_dash="dashed",
            )
        )
    markers = fig.scatter(
        x="x",
        y="y",
        marker="marker",
        size=13,
        fill_color="colour",
        fill_alpha="alpha",
        line_color="colour",
        line_width=1.5,
        source=source,
        name="events",
    )
    fig.add_tools(
        HoverTool(
            renderers=[markers],
            tooltips=[
                ("event", "@type (@severity)"),
                ("time", "@time"),
                ("summary", "@summary"),
                ("acked", "@acked"),
            ],
            description="Hover: the events",
        )
    )
    show = CustomJS(
        args={"source": source, "target": details_id},
        code=(  # every marker under the click (events close in time overlap), newest first; as text, never markup
            "const picked = [...source.selected.indices].sort((a, b) => b - a);"
            " const pre = document.getElementById(target);"
            " if (pre && picked.length) {"
            " pre.textContent = picked.map((i) => source.data.details[i]).join('\\n\\n' + '-'.repeat(40) + '\\n\\n');"
            " pre.dataset.shown = String(picked.length); }"
        ),
    )
    source.selected.js_on_change("indices", show)
    fig.add_tools(TapTool(renderers=[markers], description="Click: an event's details"))


def _acked(row: Mapping[str, Any]) -> str:
    if not row["acked_at"]:
        return "no"
    return f"{row['acked_at']}" + (f": {row['ack_comment']}" if row.get("ack_comment") else "")


def _details(row: Mapping[str, Any]) -> str:
    """What a click shows: the event's summary, its time and acknowledgement, and its details as JSON."""
    details = json.dumps(row["details"], indent=2, ensure_ascii=False, sort_keys=True)
    if len(details) > DETAILS_CHARS:
        details = details[:DETAILS_CHARS] + f"\n... ({len(details) - DETAILS_CHARS} more characters: `fpwatch events`)"
    head = f"#{row['id']} {row['time']}  {row['type']} ({row['severity']})\n{row['summary']}\nacked: {_acked(row)}"
    return f"{head}\n\n{details}"


def _screens(model: ModelHistory, window: Window, x_range: Range1d) -> Any:
    s, per = model.screens, span_text(window.width / SCREEN_SPLIT)
    fig = figure(
        height=205,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        x_range=x_range,
        y_axis_type="log",
        tools=TOOLS,
        toolbar_location=None,
        title=f"drift screen against its threshold (per {per}: the most alarming check)",
    )
    data: dict[str, Any] = {
        "x": np.array([_ms(t) for t in s.times], dtype=np.float64),
        "time": [iso(t) for t in s.times],
        "surprise": np.maximum(np.array(s.surprise, dtype=np.float32), SURPRISE_FLOOR),
        "threshold": np.array(s.threshold, dtype=np.float32),
        "logprob": np.array([np.nan if v is None else v for v in s.logprob], dtype=np.float32),
        "logprob_threshold": np.array(s.logprob_threshold, dtype=np.float32),
    }
    source = ColumnDataSource(data)
    line = fig.line("x", "surprise", source=source, color="#4c78a8", line_width=1.5, legend_label="answers: surprise")
    limit = fig.line(
        "x", "threshold", source=source, color="#d62728", line_dash="dashed", legend_label="answers: threshold"
    )
    answers: list[Any] = [line, limit]
    if len(s.times) <= FEW_SCREENS:  # a line of a few points may be one point: draw each
        answers.append(_plain(fig.scatter("x", "surprise", source=source, size=5, color="#4c78a8")))
    if any(v is not None for v in s.logprob):
        low, high = _log_span([*filter(None, s.logprob), *s.logprob_threshold])
        fig.extra_y_ranges = {"logprob": Range1d(start=low, end=high)}
        fig.extra_y_scales = {"logprob": LogScale()}
        fig.add_layout(LogAxis(y_range_name="logprob", axis_label="logprobs (nats)"), "right")
        lp = ColumnDataSource(
            {
                "x": data["x"],
                "change": np.maximum(data["logprob"], LOGPROB_FLOOR),  # a check without logprobs: a gap
                "threshold": data["logprob_threshold"],
            }
        )
        fig.line("x", "change", source=lp, y_range_name="logprob", color="#9467bd", legend_label="logprobs: change")
        fig.line(
            "x",
            "threshold",
            source=lp,
            y_range_name="logprob",
            color="#9467bd",
            line_dash="dotted",
            legend_label="logprobs: threshold",
        )
    fig.yaxis[0].axis_label = "surprise"
    fig.y_range = DataRange1d(renderers=answers)  # the logprob lines have their own range, on the right
    _legend_below(fig, hide=True)
    fig.add_tools(
        HoverTool(
            renderers=[line],
            mode="vline",
            tooltips=[
                ("check", "@time"),
                ("surprise", "@surprise{0.00}"),
                ("threshold", "@threshold{0.00}"),
                ("logprobs", "@logprob{%.3g} (threshold @logprob_threshold{%.3g})"),
            ],
            formatters={"@logprob": "printf", "@logprob_threshold": "printf"},
            description="Hover: the drift screen",
        )
    )
    return fig


def _plain(renderer: Any) -> Any:
    """A renderer with no look of its own when selected, hovered or muted: fewer models for BokehJS to build."""
    renderer.selection_glyph = renderer.nonselection_glyph = renderer.hover_glyph = renderer.muted_glyph = None
    return renderer


def _legend_below(fig: Any, hide: bool) -> None:
    """The legend under the plot, in one row (inside, it would cover the epochs or the screen's spikes); `hide`: a
    click on an item hides its line."""
    if not fig.legend:
        return
    legend = fig.legend[0]
    legend.orientation = "horizontal"
    legend.click_policy = "hide" if hide else "none"
    legend.label_text_font_size = "8pt"
    legend.spacing = 12
    legend.padding = 2
    legend.margin = 2
    legend.border_line_alpha = 0
    fig.center = [r for r in fig.center if r is not legend]
    fig.add_layout(legend, "below")


def _log_span(values: Sequence[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0] or [LOGPROB_FLOOR]
    return max(min(positive) / 3, LOGPROB_FLOOR), max(positive) * 3
