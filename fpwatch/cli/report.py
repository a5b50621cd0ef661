"""`fpwatch report`: the HTML report of the models' history (one self-contained file), or `--atom`, the events as
an Atom feed."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from fpwatch.cli.app import cli, obj_of, parse_since, reading, run_async, select_models
from fpwatch.clock import utcnow
from fpwatch.config.model import state_missing
from fpwatch.detect.events import SEVERITIES

DEFAULT_PAGE = "fpwatch-report.html"


@cli.command()
@click.argument("names", nargs=-1, metavar="[MODEL or TAG]...")
@click.option(
    "-o", "--output", metavar="FILE", help=f"Write here ('-': stdout); default {DEFAULT_PAGE}, or stdout for --atom."
)
@click.option(
    "--since", metavar="WHEN", help='From then: a duration ago or an ISO time (default "30d"; --atom: every event).'
)
@click.option("--atom", is_flag=True, help="The events as an Atom feed instead, newest first.")
@click.option("--severity", type=click.Choice(SEVERITIES), help="--atom: only events of at least this severity.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="--atom: at most this many.")
@click.pass_context
def report(
    ctx: click.Context,
    names: tuple[str, ...],
    output: str | None,
    since: str | None,
    atom: bool,
    severity: str | None,
    limit: int,
) -> None:
    """One self-contained HTML page of every model (or those named, by name or tag): an overview, and per model on
    one time axis its fingerprint shares, resolved-model and behaviour-fingerprint epochs, drift screen against
    its threshold and events (hover, click). It needs no network: open it from disk, attach it to an e-mail.

    \b
    Examples:
      fpwatch report                          fpwatch-report.html: the last 30 days of every model
      fpwatch report --since 90d prod -o prod.html
      fpwatch report --atom --severity warning > events.atom
    """
    config = obj_of(ctx).config()
    models = select_models(config, names)
    start = None if state_missing(config.settings.state) else parse_since(since or (None if atom else "30d"))
    if atom:
        _feed(ctx, [m.name for m in models] if names else None, severity, start, limit, output)
        return
    if severity is not None:
        raise click.UsageError("--severity goes with --atom (the page shows every event)")
    from fpwatch.report.html import build

    now = utcnow()

    async def page() -> str:
        async with reading(config) as store:
            return await build(store, models, start or now, now)

    html = run_async(page())
    if output == "-":
        sys.stdout.write(html)
        return
    path = Path(output or DEFAULT_PAGE)
    path.write_text(html, encoding="utf-8")
    size = path.stat().st_size
    plural = "s" if len(models) != 1 else ""
    click.echo(f"Wrote {path} ({size / 1e6:.1f} MB): {len(models)} model{plural}; open it in a browser")


def _feed(
    ctx: click.Context,
    models: list[str] | None,
    severity: str | None,
    since: datetime | None,
    limit: int,
    output: str | None,
) -> None:
    from fpwatch.report.atom import feed, feed_id, newest_events

    config = obj_of(ctx).config()

    async def gather() -> bytes:
        async with reading(config) as store:
            events = await newest_events(store, models, severity, since, limit)
        filters = f"models={','.join(models or [])} severity={severity or ''}"
        return feed(events, ident=feed_id(str(config.settings.state), filters), title=_title(models), now=utcnow())

    body = run_async(gather())
    if output in (None, "-"):
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(body)
        click.echo(f"Wrote {output}")


def _title(models: list[str] | None) -> str:
    return "fpwatch events" + (f": {', '.join(models)}" if models else "")
