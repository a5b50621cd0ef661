"""`fpwatch state copy`: move a history to PostgreSQL, every row of a SQLite state, its audit chain verified there."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fpwatch.cli.app import cli, json_text, obj_of, run_async, setup_logging
from fpwatch.config.model import PostgresState
from fpwatch.errors import ConfigError, FpwatchError, StateError

if TYPE_CHECKING:
    from fpwatch.store.copy import Copied


@cli.group(name="state")
def state_group() -> None:
    """The state database itself: move a SQLite history to PostgreSQL.

    \b
    Example:
      fpwatch state copy --to postgresql://fpwatch@db.internal:5432/fpwatch
    """


@state_group.command(name="copy")
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="The PostgreSQL database to fill, postgresql://user@host:5432/db: it must hold no fpwatch history. Read "
    "as [fpwatch] state is (${VAR} substituted); printed without its password.",
)
@click.option(
    "--from",
    "source",
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite state to copy (default: the config's [fpwatch] state).",
)
@click.option(
    "--password-file",
    metavar="FILE",
    help="A file holding the database's password, read like state_password_file (or give none: libpq's "
    "~/.pgpass or PGPASSFILE, or ${VAR} in the URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary: rows per table, the chain head, seconds.")
@click.pass_context
def copy(ctx: click.Context, url: str, source: Path | None, password_file: str | None, as_json: bool) -> None:
    """Copy a SQLite state with its full history into an empty PostgreSQL database, and verify it there.

    Every table, every row as stored (ids and the audit chain's hashes included), read from one snapshot of
    the source (a daemon may go on running on it: what it records afterwards is not in the copy) and written
    in one transaction: all or nothing. The copy's chain is then verified (a keyed chain with the config's
    audit_key_file) and must end at the source's head, or nothing counts (exit 1). Then set [fpwatch] state to
    the URL the summary prints.

    \b
    Examples:
      fpwatch state copy --to postgresql://fpwatch@db.internal:5432/fpwatch
      fpwatch state copy --to postgresql://fpwatch@db/fpwatch --password-file /run/credentials/pg
      fpwatch state copy --from /var/lib/fpwatch/fpwatch.db --to 'postgresql://fpwatch:${PG_PASSWORD}@db/fpwatch'
      fpwatch state copy --to postgresql://fpwatch@db/fpwatch --json
    """
    from fpwatch.config import parse_postgres_url
    from fpwatch.redact import Redactor

    obj = obj_of(ctx)
    config = obj.config()
    try:
        destination, secrets = parse_postgres_url(url, password_file=password_file)
    except ConfigError as exc:
        said = [f"{_OPTIONS.get(p.location, '--to')}: {p.message}" for p in exc.problems]
        raise click.UsageError("; ".join(said)) from None
    if source is None:
        state = config.settings.state
        if isinstance(state, PostgresState):
            raise click.UsageError(
                f"the config's [fpwatch] state is a PostgreSQL database already ({state.url}); name the SQLite "
                "state to copy with --from PATH"
            )
        source = state
    redact = Redactor({*config.secrets, *secrets})
    setup_logging(config, obj)
    try:
        from fpwatch.store.copy import copy_state
    except ImportError as exc:
        raise StateError(f"a copy to PostgreSQL needs its driver ({exc}): pip install 'fpwatch[postgresql]'") from None
    progress = _Progress()
    try:
        copied = run_async(copy_state(source, destination, audit_key=config.settings.audit_key, progress=progress))
    except FpwatchError as exc:  # masked: a password or sslpassword in a server's words
        raise StateError(redact(_in_options(str(exc)))) from None
    finally:
        progress.close()
    line = f'[fpwatch] state = "{destination.url}"'
    if as_json:
        click.echo(redact(json_text({**copied.to_json(), "config": line})))
    else:
        click.echo(redact(_summary(copied, line, config.path)))


_OPTIONS = {"fpwatch.state_password_file": "--password-file"}


def _in_options(message: str) -> str:
    """The store says what to fix in its config's words; the database here is the one --to names."""
    message = message.replace("[fpwatch] state_password_file", "--password-file")
    return re.sub(r"\[fpwatch\] state\b", "--to", message)


def _summary(copied: Copied, line: str, config: Path) -> str:
    head = copied.head
    ends = head.line().removeprefix("audit head: ") if head.hash else "empty (row 0)"
    width = max(len(table) for table in copied.rows)
    return "\n".join(
        [
            f"copied {copied.source} into {copied.destination} in {copied.seconds:.1f}s",
            *(f"  {table:<{width}}  {rows:>9,}" for table, rows in copied.rows.items()),
            f"audit chain verified there ({head.mode}); its head is the source's: {ends}",
            f"next: set {line} in {config} (its password in state_password_file, ~/.pgpass or ${{VAR}}) and restart "
            f"fpwatch; what is recorded in {copied.source} from now on is not in the copy",
        ]
    )


class _Progress:
    """One line on a TTY's stderr, rewritten as the copy goes (a table and its rows, then the walk); nothing
    otherwise. Called from the copy's thread."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        from fpwatch.store.copy import CHECKING, VERIFYING

        now = time.monotonic()
        if not self.enabled or (now - self.shown < 0.1 and 0 < done < total):
            return
        if step == CHECKING:
            said = f"verifying the copy again, as fpwatch opens it ({total:,} links)"
        else:
            said = f"{'verifying the copy' if step == VERIFYING else f'copying {step}'}: {done:,} of {total:,}"
        click.echo(f"\r\x1b[K{said}", err=True, nl=False)
        self.shown = now

    def close(self) -> None:
        if self.enabled and self.shown:
            click.echo("\r\x1b[K", err=True, nl=False)
