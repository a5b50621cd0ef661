"""Human output: aligned tables, shortened text and escaped lines (times: fpwatch.clock.human).

Everything here passes `printable` (config.fields, the rule the config's names obey too): a fingerprint, a
resolved model, an answer or an error a provider sent with a right-to-left override or a newline in it is
shown as <U+202E> or <U+000A>, never obeyed by the terminal. JSON outputs keep the exact value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fpwatch.config.fields import printable


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table of escaped cells; the last column is not padded (it may be long)."""
    return "\n".join(table_lines(headers, rows))


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """`table`, line by line (to go into `lines` with the text around it)."""
    cells = [[printable(str(c)) for c in row] for row in [headers, *rows]]
    if not rows:
        return ["  ".join(cells[0])]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)).rstrip() for row in cells
    ]


def shorten(text: str | None, width: int = 60) -> str:
    """One escaped line of at most `width` characters: runs of whitespace (newlines too) become one space."""
    if not text:
        return "-"
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def lines(items: Iterable[str]) -> str:
    """Lines of human output, each item one line, escaped on its own: a newline inside an item is shown, not
    obeyed (a table goes in as its `table_lines`)."""
    return "\n".join(printable(item) for item in items)
