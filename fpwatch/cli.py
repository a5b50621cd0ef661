"""The command line: thin click commands over config, store and run_check.

Anticipated failures (FpwatchError) become one `Error: ...` line on stderr and an exit code; a
traceback only with --debug. Heavy modules are imported inside commands so `fpwatch --help` starts
fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

from fpwatch import __version__
from fpwatch.errors import ConfigError, FpwatchError, UnknownModelError
from fpwatch.tracking import SEVERITIES

if TYPE_CHECKING:
    from fpwatch.check import CheckResult
    from fpwatch.config import Config, ModelConfig
    from fpwatch.notify import DeliveryReport
    from fpwatch.store import Store

_LEVELS = ["debug", "info", "warning", "error"]


class _Obj:
    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            from fpwatch.config import find_config_path, load_config

            self._config = load_config(find_config_path(self.config_path))
        return self._config


def _obj(ctx: click.Context) -> _Obj:
    obj = ctx.find_object(_Obj)
    assert obj is not None, "the cli group always sets ctx.obj"
    return obj


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $FPWATCH_CONFIG, ./fpwatch.toml, /etc/fpwatch/fpwatch.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="fpwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Watch hosted LLM APIs and say, with evidence, when the model behind them changed.

    \b
    Examples:
      fpwatch config check                 validate the config, listing every mistake
      fpwatch check                        one pass over every model (exit 0/1/2/3, Nagios-style)
      fpwatch check openai/gpt-4o --json   one model, machine-readable
      fpwatch status                       valid fingerprints, grace expiry, last check
      fpwatch events --since 7d --severity warning
      fpwatch simulate --port 8787         a local OpenAI-compatible simulator to try configs on
    """
    ctx.obj = _Obj(config_path, debug)


# --- check ------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("models", nargs=-1, metavar="[MODEL|TAG]...")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (fields documented in the README).")
@click.option("--dry-run", is_flag=True, help="Probe and report, but write nothing to the state database.")
@click.option("--no-notify", is_flag=True, help="Record events but send no notifications.")
@click.pass_context
def check(ctx: click.Context, models: tuple[str, ...], as_json: bool, dry_run: bool, no_notify: bool) -> None:
    """One pass now over all (or the named) models.

    Shares the state database with the daemon. The first line of the human output and the exit code
    follow the monitoring-plugin convention: 0 OK, 1 WARNING (a fingerprint or resolved model changed),
    2 CRITICAL (a silent change, a rollback, a failed expect), 3 UNKNOWN (a model could not be checked,
    or the config is invalid). The worst result applies; CRITICAL outranks UNKNOWN, which outranks WARNING.

    \b
    Examples:
      fpwatch check
      fpwatch check openai/gpt-4o prod --json
      fpwatch check --dry-run
    """
    import asyncio

    from fpwatch.check import STATUS_NAMES, UNKNOWN, worst

    obj = _obj(ctx)
    try:
        config = obj.config()
        selected = _select_models(config, models)
        _setup_logging(config, obj)
        results, delivery = asyncio.run(_run_pass(config, selected, dry_run, notify=not no_notify))
    except FpwatchError as exc:
        exc.exit_code = UNKNOWN  # for a monitor, "could not check" is UNKNOWN whatever the cause
        raise
    except Exception as exc:
        if obj.debug:
            raise
        raise InternalError(exc, UNKNOWN) from exc
    code = worst([r.status for r in results])
    if as_json:
        out: dict[str, Any] = {
            "exit_code": code,
            "status": STATUS_NAMES[code],
            "models": [r.to_dict() for r in results],
        }
        if delivery is not None:
            out["notifications"] = {
                "delivered": delivery.delivered,
                "failed": delivery.failed,
                "expired": delivery.expired,
            }
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_check_report(results, code, dry_run))
        if delivery is not None and (delivery.delivered or delivery.failed or delivery.expired):
            click.echo(
                f"\nNotifications: {delivery.delivered} delivered, {delivery.failed} failed "
                f"(queued for retry; `fpwatch status` shows why), {delivery.expired} expired"
            )
    ctx.exit(code)


async def _run_pass(
    config: Config, models: Sequence[ModelConfig], dry_run: bool, *, notify: bool
) -> tuple[list[CheckResult], DeliveryReport | None]:
    import asyncio

    from fpwatch.check import CheckContext, run_check
    from fpwatch.notify import Notifier, routes
    from fpwatch.providers import Providers
    from fpwatch.redact import Redactor

    store = _open_store(config, readonly=dry_run)
    sending = notify and not dry_run and bool(config.notifiers)
    try:
        async with Providers(config.settings.max_concurrency) as providers:
            ctx = CheckContext(
                store=store,
                providers=providers,
                redact=Redactor(config.secrets),
                dry_run=dry_run,
                route=routes(config) if sending else None,
            )
            progress = _Progress(len(models))
            results = list(await asyncio.gather(*(progress.track(run_check(m, ctx)) for m in models)))
            progress.done()
        delivery = None
        if store is not None and not dry_run:
            store.prune_outputs(datetime.now(UTC) - config.settings.retention)
            if sending:
                # The pass is over: its events go out now, one message per notifier, through the same
                # outbox the daemon uses (so neither sends what the other already sent).
                delivery = await Notifier(config, store).deliver(flush=True)
        return results, delivery
    finally:
        if store is not None:
            store.close()


class _Progress:
    """ "checked 120/200 models" on a TTY's stderr for long passes; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.enabled = total > 5 and sys.stderr.isatty()

    async def track(self, job: Any) -> Any:
        result = await job
        self.count += 1
        if self.enabled:
            click.echo(f"\rchecked {self.count}/{self.total} models", nl=False, err=True)
        return result

    def done(self) -> None:
        if self.enabled:
            click.echo("\r" + " " * 40 + "\r", nl=False, err=True)


def _check_report(results: Sequence[CheckResult], code: int, dry_run: bool) -> str:
    from fpwatch.check import STATUS_NAMES
    from fpwatch.output import shorten, table

    changed = [r for r in results if r.status != 0]
    headline = f"FPWATCH {STATUS_NAMES[code]} - {len(results)} model{'s' if len(results) != 1 else ''} checked"
    if changed:
        parts = []
        for r in changed:
            notable = [e.event.summary for e in r.events if e.event.severity != "info"]
            parts.append(notable[0] if notable else f"{r.model.name}: {shorten(r.error, 100)}")
        headline += ": " + "; ".join(parts[:3]) + (f"; +{len(parts) - 3} more" if len(parts) > 3 else "")
    if dry_run:
        headline += " (dry run: nothing recorded)"
    rows = []
    for r in results:
        summary = r.to_dict()
        rows.append(
            [
                r.model.name,
                STATUS_NAMES[r.status],
                summary["state"],
                ", ".join(summary["fingerprints"]) or ("(missing)" if r.state.fingerprint_missing else "-"),
                ", ".join(summary["resolved_models"]) or "-",
                f"{sum(o.ok for o in r.observations)}/{len(r.observations)}",
            ]
        )
    lines = [headline, "", table(["MODEL", "STATUS", "STATE", "FINGERPRINTS", "RESOLVED MODEL", "OK"], rows)]
    events = [e for r in results for e in r.events]
    if events:
        lines += ["", "Events:"]
        lines += [f"  [{e.event.severity}] {e.event.type}: {e.event.summary}" for e in events]
    bursts = [r for r in results if r.burst]
    if bursts:
        lines += ["", "Drift screen hits (confirmed with fresh samples before any alert):"]
        for r in bursts:
            confirmed = any(e.event.type == "canary.drift" for e in r.events)
            verdict = "confirmed: canary.drift" if confirmed else "not confirmed: serving noise"
            lines.append(f"  {r.model.name}: {r.burst} more requests, {verdict}")
    adapted = [(r.model.name, option) for r in results for option in r.adapted]
    if adapted:
        lines += ["", "Adapted canaries (the model rejects these options; they are left out from now on):"]
        lines += [f"  {name}: {option}" for name, option in adapted]
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", "Errors:"]
        lines += [f"  {r.model.name}: {r.error}" for r in errors]
    return "\n".join(lines)


# --- status, history, events, ack, verify -----------------------------------------------------------------


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
    from fpwatch.check import model_summary
    from fpwatch.clock import human, parse_iso_or_none
    from fpwatch.output import shorten, table

    config = _obj(ctx).config()
    now = datetime.now(UTC)
    with _store_or_empty(config) as store:
        summaries = [model_summary(m, store.load_state(m.name) if store else _fresh(m), now) for m in config.models]
        notifiers = [store.notifier_status(n.name) for n in config.notifiers] if store else []
    if as_json:
        click.echo(json.dumps({"models": summaries, "notifiers": notifiers}, indent=2))
        return
    rows = []
    for s in summaries:
        fps = ", ".join(
            f"{d['system_fingerprint']} (until {d['grace_expires'][5:16].replace('T', ' ')})"
            for d in s["fingerprint_details"]
        )
        state = s["state"]
        if state == "learning" and s["drift"]["state"] == "learning":
            state += f" ({s['drift']['reference_samples']}/{s['drift']['reference_needed']})"
        rows.append(
            [
                s["name"],
                state,
                fps or ("(missing)" if s["fingerprint_missing"] else "-"),
                ", ".join(s["resolved_models"]) or "-",
                s["behaviour_fingerprint"] or "-",
                human(parse_iso_or_none(s["last_check"])),
                shorten(s["last_error"], 50) if s["consecutive_failures"] else "-",
            ]
        )
    click.echo(
        table(
            [
                "MODEL",
                "STATE",
                "VALID FINGERPRINTS (GRACE UNTIL, UTC)",
                "RESOLVED MODEL",
                "BEHAVIOUR",
                "LAST CHECK",
                "LAST ERROR",
            ],
            rows,
        )
    )
    notes = [
        f"{x['name']}: rejects {', '.join(x['unsupported'])}; its canaries leave them out"
        for x in summaries
        if x["unsupported"]
    ]
    notes += [
        f"{x['name']}: canary behaviour changed at {x['drift']['open_since'][:16].replace('T', ' ')} UTC; see "
        f"`fpwatch events --model {x['name']} --type canary.drift`, then `fpwatch ack ID` to sign it off"
        for x in summaries
        if x["drift"]["open_since"]
    ]
    if notes:
        click.echo()
        click.echo("\n".join(notes))
    if notifiers:
        click.echo()
        notifier_rows = [
            [
                n["name"],
                str(n["pending_messages"] + n["queued_alerts"]),
                str(n["expired_messages"]),
                human(parse_iso_or_none(n["last_delivered"])),
                shorten(n["last_error"], 70),
            ]
            for n in notifiers
        ]
        click.echo(table(["NOTIFIER", "WAITING", "EXPIRED", "LAST DELIVERED", "LAST ERROR"], notifier_rows))


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
    from fpwatch.clock import human, iso, iso_or_none, parse_iso_or_none
    from fpwatch.output import table

    config = _obj(ctx).config()
    found = _select_models(config, (model,))[0]
    out: dict[str, list[dict[str, Any]]] = {"fingerprints": [], "resolved_models": []}
    with _store_or_empty(config) as store:
        state = store.load_state(found.name) if store else _fresh(found)
        for key, kind, signal_set in (
            ("fingerprints", "fingerprint", state.fingerprints),
            ("resolved_models", "response_model", state.response_models),
        ):
            history_rows = store.signal_history(found.name, kind) if store else []
            for s in history_rows:
                out[key].append(
                    {
                        "value": s.value,
                        "first_seen": iso(s.first_seen),
                        "last_seen": iso(s.last_seen),
                        "count": s.count,
                        "share": round(signal_set.share(s.value), 4),
                        "status": "valid" if s.valid else "retired",
                        "retired_at": iso_or_none(s.retired_at),
                    }
                )
    if as_json:
        click.echo(json.dumps({"model": found.name, **out}, indent=2))
        return
    for key, title in (("fingerprints", "system_fingerprint"), ("resolved_models", "resolved model")):
        rows = [
            [
                r["value"],
                r["status"] + (f" ({human(parse_iso_or_none(r['retired_at']))})" if r["retired_at"] else ""),
                human(parse_iso_or_none(r["first_seen"])),
                human(parse_iso_or_none(r["last_seen"])),
                str(r["count"]),
                f"{r['share']:.1%}",
            ]
            for r in out[key]
        ]
        click.echo(f"{found.name}: {title} history")
        click.echo(
            table([title.upper(), "STATUS", "FIRST SEEN", "LAST SEEN", "COUNT", "SHARE"], rows)
            if rows
            else "  (none recorded yet)"
        )
        click.echo()


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
    from fpwatch.clock import human
    from fpwatch.output import table

    config = _obj(ctx).config()
    severities = SEVERITIES[SEVERITIES.index(severity) :] if severity else None
    with _store_or_empty(config) as store:
        found = (
            store.events(
                since=_parse_since(since),
                model=model_name,
                severities=severities,
                types=types or None,
                limit=limit,
            )
            if store
            else []
        )
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2))
        return
    if not found:
        click.echo("no events")
        return
    rows = [
        [
            str(e.id),
            human(e.event.time),
            e.event.severity,
            e.event.type + (" (acked)" if e.acked_at else ""),
            e.event.summary,
        ]
        for e in found
    ]
    click.echo(table(["ID", "TIME", "SEVERITY", "TYPE", "SUMMARY"], rows))


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
    config = _obj(ctx).config()
    with _store_or_empty(config, write=True) as store:
        assert store is not None
        if store.event(event_id) is None:
            raise FpwatchError(f"no event with id {event_id}; list them with `fpwatch events`")
        store.ack(event_id, comment, datetime.now(UTC))
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
    from fpwatch.clock import human

    config = _obj(ctx).config()
    found = _select_models(config, (model,))[0]
    with _store_or_empty(config) as store:
        state = store.load_state(found.name) if store else _fresh(found)
    from fpwatch.check import stale

    signal = state.fingerprints.signals.get(fingerprint)
    valid = False
    if signal is None:
        reason = f"{fingerprint} has never been seen for {found.name}"
    elif not signal.valid:
        reason = f"{fingerprint} is not valid for {found.name}: retired {human(signal.retired_at)}"
    elif state.last_ok is None or stale(state, found, datetime.now(UTC)):
        reason = (
            f"cannot vouch for {fingerprint}: {found.name} has not been checked successfully since "
            f"{human(state.last_ok)}, longer than its grace period; run `fpwatch check {found.name}` first"
        )
    else:
        valid = True
        reason = (
            f"{fingerprint} is valid for {found.name}: last seen {human(signal.last_seen)}, "
            f"in the valid set at the last check ({human(state.last_ok)})"
        )
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
    help="Recompute the observation hash chain instead; exit 1 if broken.",
)
@click.pass_context
def export(ctx: click.Context, since: str | None, fmt: str, output: str | None, verify_chain: bool) -> None:
    """The audit trail: observations (with their hash chain) and events, as JSON lines or CSV.

    Every record has a "kind" ("observation" or "event"). Observations carry prev_hash and hash; the
    chain is documented in the README and `--verify` recomputes it over the whole database.

    \b
    Examples:
      fpwatch export --since 30d -o audit.jsonl
      fpwatch export --format csv > audit.csv
      fpwatch export --verify
    """
    import csv

    config = _obj(ctx).config()
    with _store_or_empty(config) as store:
        if verify_chain:
            if store is None:
                click.echo("chain OK: 0 observations (no state database yet)")
                return
            count, broken = store.verify_chain()
            if broken is not None:
                click.echo(f"Error: hash chain broken at observation {broken} (after {count} good rows)", err=True)
                ctx.exit(1)
            click.echo(f"chain OK: {count} observations")
            return
        records: list[dict[str, Any]] = []
        if store is not None:
            start = _parse_since(since)
            records += [{"kind": "observation", **row} for row in store.observation_rows(start)]
            records += [{"kind": "event", **e.to_dict()} for e in store.events(since=start)]
    with _open_output(output) as out:
        if fmt == "jsonl":
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        else:
            columns = sorted({k for r in records for k in r} - {"kind"})
            writer = csv.DictWriter(out, fieldnames=["kind", *columns], extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in record.items()})


@contextmanager
def _open_output(path: str | None) -> Iterator[Any]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        yield handle


# --- config -----------------------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Validate or show the config."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config and list every problem with its location (exit 3 when invalid).

    \b
    Example:
      fpwatch --config /etc/fpwatch/fpwatch.toml config check
    """
    from fpwatch.config import validate_notifier_urls

    config = _obj(ctx).config()
    problems = validate_notifier_urls(config)
    if problems:
        raise ConfigError(problems, str(config.path))
    click.echo(
        f"config OK: {config.path} — {len(config.providers)} provider(s), {len(config.models)} model(s), "
        f"{len(config.notifiers)} notifier(s); state in {config.settings.state}"
    )


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config (defaults filled in) with every secret redacted."""
    import tomli_w

    from fpwatch.config import effective_config
    from fpwatch.redact import Redactor

    config = _obj(ctx).config()
    shown = Redactor(config.secrets).scrub(effective_config(config))
    click.echo(json.dumps(shown, indent=2) if as_json else tomli_w.dumps(_drop_none(shown)), nl=as_json)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# --- notify -----------------------------------------------------------------------------------------------


@cli.group("notify")
def notify_group() -> None:
    """Notifications: try the configured notifiers."""


@notify_group.command("test")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def notify_test(ctx: click.Context, as_json: bool) -> None:
    """Send a test message to every notifier and report each one's success or its exact error (exit 1 if any failed).

    \b
    Example:
      fpwatch notify test
    """
    import asyncio

    from fpwatch.config import mask_url
    from fpwatch.notify import Notifier, test_message
    from fpwatch.redact import Redactor
    from fpwatch.store import Store

    config = _obj(ctx).config()
    if not config.notifiers:
        raise FpwatchError(f"no [[notify]] entries in {config.path}; add one (see config.example.toml)")
    notifier = Notifier(config, Store.memory())
    title, body, kind = test_message()

    async def send_all() -> list[str | None]:
        return list(await asyncio.gather(*(notifier.send(n, title, body, kind) for n in config.notifiers)))

    errors = asyncio.run(send_all())
    redact = Redactor(config.secrets)
    rows = [
        {"name": n.name, "url": redact(mask_url(n.url.reveal())), "ok": error is None, "error": error}
        for n, error in zip(config.notifiers, errors, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            click.echo(f"{row['name']}: {'sent' if row['ok'] else 'FAILED: ' + str(row['error'])}  ({row['url']})")
    ctx.exit(0 if all(r["ok"] for r in rows) else 1)


# --- run ------------------------------------------------------------------------------------------------


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The daemon: check every model on its own schedule until stopped.

    SIGHUP reloads the config (an invalid one is logged and the old one keeps running); SIGTERM or
    Ctrl-C drains in-flight checks and exits 0. Under systemd it speaks sd_notify (see systemd/).
    Logs go to stdout: JSON lines (with journald priorities under systemd), or readable on a terminal.

    \b
    Examples:
      fpwatch --config /etc/fpwatch/fpwatch.toml run
      systemctl reload fpwatch        (sends SIGHUP)
    """
    from fpwatch.config import find_config_path
    from fpwatch.daemon import run_daemon

    obj = _obj(ctx)
    ctx.exit(run_daemon(find_config_path(obj.config_path), debug=obj.debug))


# --- demo -----------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds between the daemon's checks.",
)
@click.pass_context
def demo(ctx: click.Context, interval: float) -> None:
    """Watch a scripted story on the built-in simulator: no key, no network, under a minute.

    Steady replica rotation stays quiet; a rollout with overlap raises one change and later one
    retirement; an outage raises model.down then model.recovered; a rollback is critical.

    \b
    Example:
      fpwatch demo
    """
    import asyncio

    from fpwatch.demo import play
    from fpwatch.logs import configure_logging

    configure_logging("error")  # the story itself is the output
    ctx.exit(asyncio.run(play(click.echo, interval=interval)))


# --- simulate ---------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False), help="A scenario file (.json or .toml).")
@click.option("--api-key", envvar="FPWATCH_SIMULATOR_API_KEY", help="Require this key (default: accept any request).")
@click.option("--seed", type=int, help="Seed the simulator's randomness for reproducible runs.")
def simulate(host: str, port: int, scenario: str | None, api_key: str | None, seed: int | None) -> None:
    """Serve the simulated OpenAI-compatible provider, for trying configs and alert routing.

    Point a provider at it with type = "openai-compatible" and base_url = "http://127.0.0.1:8787/v1"
    (or type = "azure" and base_url = "http://127.0.0.1:8787"). The scenario format is documented in
    fpwatch/sim/scenario.py and the README; /_sim/... endpoints change behaviour at run time.

    \b
    Example:
      fpwatch simulate --port 8787 --scenario rollout.toml
    """
    from fpwatch.sim import load_scenario, serve

    try:
        loaded = load_scenario(scenario) if scenario else None
    except ValueError as exc:
        raise FpwatchError(str(exc)) from None
    try:
        serve(host, port, loaded, api_key, seed)
    except OSError as exc:
        raise FpwatchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


# --- shared helpers ---------------------------------------------------------------------------------------


def _setup_logging(config: Config, obj: _Obj) -> None:
    from fpwatch.logs import configure_logging
    from fpwatch.redact import Redactor

    # The report on stdout already says what happened (events, errors, failed deliveries): stderr carries
    # only errors, so cron does not mail everything twice; --debug shows every log line.
    level = "debug" if obj.debug else max(config.settings.log_level, "error", key=_LEVELS.index)
    configure_logging(level, config.settings.log_format, Redactor(config.secrets))


def _select_models(config: Config, names: Sequence[str]) -> list[ModelConfig]:
    if not names:
        return list(config.models)
    chosen: dict[str, ModelConfig] = {}
    for name in names:
        matches = [m for m in config.models if m.name == name or name in m.tags]
        if not matches:
            import difflib

            hint = difflib.get_close_matches(name, [m.name for m in config.models], n=1)
            advice = f'did you mean "{hint[0]}"?' if hint else "see `fpwatch status` for the model names"
            raise UnknownModelError(f'no model or tag named "{name}" in {config.path}; {advice}')
        chosen.update((m.name, m) for m in matches)
    return list(chosen.values())


def _open_store(config: Config, readonly: bool = False) -> Store | None:
    from fpwatch.store import Store

    path = config.settings.state
    if readonly and not path.exists():
        return None
    return Store.open(path, readonly=readonly)


@contextmanager
def _store_or_empty(config: Config, write: bool = False) -> Iterator[Store | None]:
    """Reading commands must not create a database; they see an empty history instead."""
    store = _open_store(config, readonly=not write)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def _fresh(model: ModelConfig) -> Any:
    from fpwatch.tracking import ModelState

    return ModelState(model.name)


def _parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    from fpwatch.durations import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f'"{text}" is neither a duration like "7d" nor an ISO time', param_hint="--since"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class InternalError(FpwatchError):
    """A bug or an unforeseen failure: still one line (the traceback is behind --debug)."""

    def __init__(self, exc: BaseException, exit_code: int = 1) -> None:
        from fpwatch.redact import Redactor

        detail = Redactor()(str(exc).splitlines()[0] if str(exc) else "")
        super().__init__(
            f"internal error: {type(exc).__name__}{': ' + detail if detail else ''}; "
            "run again with --debug for the traceback, and please report it"
        )
        self.exit_code = exit_code


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning anticipated failures into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="fpwatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    except click.UsageError as exc:
        # A monitoring system treats a usage mistake in `check` as UNKNOWN (3), not CRITICAL (2).
        hint = f"\nTry '{exc.ctx.command_path} --help' for help." if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(3 if exc.ctx is not None and exc.ctx.command.name == "check" else 1)
    except ConfigError as exc:
        if debug:
            raise
        if len(exc.problems) == 1:
            _fail(str(exc), 3)
        click.echo(f"Error: {len(exc.problems)} problems in {exc.path or 'the config'}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(3)
    except FpwatchError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if debug:
            raise
        _fail(str(InternalError(exc)), 1)
    sys.exit(code if isinstance(code, int) else 0)
