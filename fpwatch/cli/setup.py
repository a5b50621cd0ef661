"""Commands that set fpwatch up: `config check`, `config show`, `config rules`, `notify test`."""

from __future__ import annotations

from typing import Any

import click

from fpwatch.cli.app import cli, json_text, obj_of, run_async
from fpwatch.errors import FpwatchError


@cli.group("config")
def config_group() -> None:
    """Validate or show the config; print the Prometheus alerting rules."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config and list every problem with its location (exit 3 when invalid).

    \b
    Example:
      fpwatch --config /etc/fpwatch/fpwatch.toml config check
    """
    from fpwatch.config import require_notifier_urls

    config = require_notifier_urls(obj_of(ctx).config())
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

    config = obj_of(ctx).config()
    shown = Redactor(config.secrets).scrub(effective_config(config))
    click.echo(json_text(shown) if as_json else tomli_w.dumps(_drop_none(shown)), nl=as_json)


@config_group.command("rules")
def config_rules() -> None:
    """Print the recommended Prometheus alerting rules for the daemon's /metrics (needs no config).

    \b
    Example:
      fpwatch config rules > /etc/prometheus/fpwatch-rules.yml
      # then in prometheus.yml: rule_files: [/etc/prometheus/fpwatch-rules.yml]
    """
    from importlib.resources import files

    click.echo((files("fpwatch.service") / "prometheus" / "fpwatch-rules.yml").read_text(), nl=False)


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
    from fpwatch.notify import Sender, notify_test_message
    from fpwatch.redact import Redactor

    config = obj_of(ctx).config()
    if not config.notifiers:
        raise FpwatchError(f"no [[notify]] entries in {config.path}; add one (see config.example.toml)")
    sender = Sender(config)
    title, body, kind = notify_test_message()

    async def send_all() -> list[str | None]:
        return list(await asyncio.gather(*(sender.send(n, title, body, kind) for n in config.notifiers)))

    errors = run_async(send_all())
    redact = Redactor(config.secrets)
    rows = [
        {"name": n.name, "url": redact(mask_url(n.url.reveal())), "ok": error is None, "error": error}
        for n, error in zip(config.notifiers, errors, strict=True)
    ]
    if as_json:
        click.echo(json_text(rows))
    else:
        for row in rows:
            click.echo(f"{row['name']}: {'sent' if row['ok'] else 'FAILED: ' + str(row['error'])}  ({row['url']})")
    ctx.exit(0 if all(r["ok"] for r in rows) else 1)
