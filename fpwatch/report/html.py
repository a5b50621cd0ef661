"""The HTML report, built: what `fpwatch report`, the daemon's live page and `fpwatch demo` call.

Bokeh is the `report` extra (`pip install 'fpwatch[report]'`): imported here only when a page is built, so the
daemon, `check` and the feed never load it, and a missing one is one line that says what to install.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from fpwatch.config import ModelConfig
from fpwatch.errors import FpwatchError
from fpwatch.report.history import gather
from fpwatch.store import Store

if TYPE_CHECKING:
    from fpwatch.report.page import Live


class ReportUnavailable(FpwatchError):
    """Bokeh (the `report` extra) is not installed."""


def available() -> None:
    """Raise ReportUnavailable, saying what to install, unless the page can be built."""
    try:
        import bokeh  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        raise ReportUnavailable(
            f"the HTML report needs Bokeh ({exc}): pip install 'fpwatch[report]' (the Atom feed needs nothing more)"
        ) from None


async def build(
    store: Store | None,
    models: Sequence[ModelConfig],
    since: datetime,
    now: datetime,
    *,
    title: str = "fpwatch report",
    live: Live | None = None,
    intro: str = "",
) -> str:
    """The page of these models since `since`: the store read on this loop, the page drawn on a worker thread (a
    few hundred milliseconds of Python for 20 models, which must not hold up the daemon's loop)."""
    available()
    from fpwatch.report import page

    history = await gather(store, models, since, now)
    return await asyncio.to_thread(page.render, history, title=title, live=live, intro=intro)
