"""Commands that read (and sign) the state: `status`, `history`, `events`, `ack`, `verify`, `export`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from fpwatch.cli.app import cli, json_text, obj_of, parse_since, reading, run_async, select_models
from fpwatch.clock import utcnow
from fpwatch.config.model import state_missing
from fpwatch.detect.events import SEVERITIES
from fpwatch.errors import FpwatchError


@cli.command()
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"models": [...]}.')
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per model: state, valid fingerprints with grace expiry, resolved model, behaviour fingerprint, last check.

    \b
    Examples:
      fpwatch status
      fpwatch status --json | jq '.models[] | select(.state == "down")'
    """
    from fpwatch.report.summary import status_report
    from fpwatch.report.tables import status_table

    config = obj_of(ctx).config()

    async def gather() -> dict[str, Any]:
        async with reading(config) as store:
            return await status_report(config, store, utcnow())

    report = run_async(gather())
    if as_json:
        click.echo(json_text(report))
    else:
        click.echo(status_table(report["models"], report["notifiers"], report["audit"], report["instances"]))


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history(ctx: click.Context, model: str, as_json: bool) -> None:
    """The fingerprint and resolved-model timeline of MODEL: first seen, last seen, count, share.

    \b
    Example:
      fpwatch history openai/gpt-4o
    """
    from fpwatch.report.summary import history_report
    from fpwatch.report.tables import history_tables

    config = obj_of(ctx).config()
    found = select_models(config, (model,))[0]

    async def gather() -> dict[str, Any]:
        async with reading(config) as store:
            return await history_report(found, store)

    report = run_async(gather())
    click.echo(json_text(report) if as_json else history_tables(report))


@cli.command()
@click.option("--since", metavar="WHEN", help='Only events since then: a duration ago ("7d", "24h") or an ISO time.')
@click.option("--model", "model_name", metavar="MODEL", help="Only this model's events.")
@click.option("--severity", type=click.Choice(SEVERITIES), help="Only events of at least this severity.")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable).")
@click.option("--limit", type=int, default=None, help="At most this many (the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of event objects.")
@click.pass_context
def events(
    ctx: click.Context,
    since: str | None,
    model_name: str | None,
    severity: str | None,
    types: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """The event log, oldest first.

    \b
    Examples:
      fpwatch events --since 7d
      fpwatch events --model openai/gpt-4o --severity warning --json
    """
    from fpwatch.report.tables import events_table

    config = obj_of(ctx).config()
    severities = SEVERITIES[SEVERITIES.index(severity) :] if severity else None
    # No state: no events, whatever --since.
    start = None if state_missing(config.settings.state) else parse_since(since)

    async def gather() -> list[Any]:
        async with reading(config) as store:
            if store is None:
                return []
            return await store.events(
                since=start, model=model_name, severities=severities, types=types or None, limit=limit
            )

    found = run_async(gather())
    click.echo(json_text([e.to_dict() for e in found]) if as_json else events_table(found))


@cli.command()
@click.argument("event_id", type=int)
@click.option("--comment", help="Why, for the audit trail.")
@click.pass_context
def ack(ctx: click.Context, event_id: int, comment: str | None) -> None:
    """Acknowledge an event: a human has seen it.

    \b
    Example:
      fpwatch ack 42 --comment "planned rollout, confirmed with the vendor"
    """
    from fpwatch.store import open_store

    config = obj_of(ctx).config()

    async def sign() -> None:
        store = await open_store(config.settings.state, audit_key=config.settings.audit_key)
        try:
            if await store.event(event_id) is None:
                raise FpwatchError(f"no event with id {event_id}; list them with `fpwatch events`")
            await store.ack(event_id, comment, utcnow())
        finally:
            await store.close()

    run_async(sign())
    click.echo(f"acknowledged event {event_id}")


@cli.command()
@click.argument("model")
@click.argument("fingerprint")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(ctx: click.Context, model: str, fingerprint: str, as_json: bool) -> None:
    """Exit 0 if FINGERPRINT is currently valid for MODEL (within grace), 1 if not.

    The response-integrity check: verify that the system_fingerprint of a response you got is one
    fpwatch currently considers valid for that model.

    \b
    Example:
      fpwatch verify openai/gpt-4o fp_44709d6fcb && echo trusted
    """
    from fpwatch.check import policy_for
    from fpwatch.detect.state import ModelState
    from fpwatch.detect.verdict import vouch

    config = obj_of(ctx).config()
    found = select_models(config, (model,))[0]

    async def load() -> ModelState:
        async with reading(config) as store:
            return await store.load_state(found.name) if store else ModelState(found.name)

    state = run_async(load())
    valid, reason = vouch(state, policy_for(found, state), fingerprint, utcnow())
    if as_json:
        click.echo(
            json.dumps({"model": found.name, "system_fingerprint": fingerprint, "valid": valid, "reason": reason})
        )
    else:
        click.echo(reason)
    ctx.exit(0 if valid else 1)


# --- export -----------------------------------------------------------------------------------------------


@cli.command()
@click.option("--since", metavar="WHEN", help='Only records since then: a duration ago ("30d") or an ISO time.')
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to a file instead of stdout.",
)
@click.option(
    "--verify",
    "verify_chain",
    is_flag=True,
    help="Recompute the audit chain (observations, events, acks) instead; exit 1 if broken.",
)
@click.option(
    "--head",
    metavar="HASH",
    help="With --verify: also exit 1 unless the chain contains this published head (the hash or 16+ hex of it).",
)
@click.pass_context
def export(
    ctx: click.Context, since: str | None, fmt: str, output: str | None, verify_chain: bool, head: str | None
) -> None:
    """The audit trail: observations and events (with their acks), each a link of the hash chain, as JSON lines
    or CSV.

    Every record has a "kind" ("observation" or "event") and carries seq, prev_hash and hash; the chain is
    documented in the README. `--verify` recomputes it over the whole database; `--head` checks it still
    contains a head fpwatch published earlier (in a notification, `status --json` or the daemon's log), which
    catches rows cut from the end.

    \b
    Examples:
      fpwatch export --since 30d -o audit.jsonl
      fpwatch export --format csv > audit.csv
      fpwatch export --verify
      fpwatch export --verify --head 1a2b3c4d5e6f7a8b
    """
    from fpwatch.report.export import verdict, write
    from fpwatch.store.chain import Audit, parse_head

    config = obj_of(ctx).config()
    if head is not None and not verify_chain:
        raise click.UsageError("--head goes with --verify: fpwatch export --verify --head HASH")
    try:
        wanted = parse_head(head) if head is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--head") from None

    async def verify() -> Audit | None:
        async with reading(config) as store:
            return await store.verify_audit(wanted) if store is not None else None

    if verify_chain:
        ok, line = verdict(run_async(verify()), wanted)
        click.echo(line if ok else f"Error: {line}", err=not ok)
        ctx.exit(0 if ok else 1)

    start = None if state_missing(config.settings.state) else parse_since(since)

    async def dump(out: Any) -> None:
        async with reading(config) as store:
            await write(store, start, out, fmt)

    with _open_output(output) as out:
        run_async(dump(out))


@contextmanager
def _open_output(path: str | None) -> Iterator[Any]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        yield handle
