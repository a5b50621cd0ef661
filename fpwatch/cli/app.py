"""The command line's frame: the `fpwatch` group, what every command shares (the config, the store, logging,
model selection), and `main`, which turns anticipated failures into one `Error: ...` line and an exit code
(a traceback only with --debug). The commands live beside it: `passes` (check, run, reload, demo, simulate),
`state` (status, history, events, ack, verify, export), `state_copy` (state copy), `setup` (config, notify test).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from fpwatch import __version__
from fpwatch.clock import parse_iso, utcnow
from fpwatch.errors import ConfigError, FpwatchError, UnknownModelError

if TYPE_CHECKING:
    from fpwatch.config import Config, ModelConfig
    from fpwatch.store import Store

T = TypeVar("T")


class _Obj:
    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            from fpwatch.config import find_config_path, load_config
            from fpwatch.providers import TYPES

            self._config = load_config(find_config_path(self.config_path), TYPES)
        return self._config


def obj_of(ctx: click.Context) -> _Obj:
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


# --- what commands share ---------------------------------------------------------------------------


def run_async(job: Coroutine[Any, Any, T]) -> T:
    """Run one command's async work (every store call is awaited) to completion."""
    import asyncio

    return asyncio.run(job)


@asynccontextmanager
async def reading(config: Config) -> AsyncIterator[Store | None]:
    """Reading commands must not create a database; with none yet they see an empty history."""
    from fpwatch.store import open_existing

    store = await open_existing(config.settings.state, audit_key=config.settings.audit_key)
    if store is None:
        yield None
        return
    try:
        yield store
    finally:
        await store.close()


def setup_logging(config: Config, obj: _Obj) -> None:
    """Logging for a one-shot command: the report on stdout already says what happened (events, errors,
    failed deliveries), so stderr carries only errors (cron does not mail everything twice); --debug all."""
    from fpwatch.config.model import LOG_LEVELS
    from fpwatch.logs import configure_logging
    from fpwatch.redact import Redactor

    level = "debug" if obj.debug else max(config.settings.log_level, "error", key=LOG_LEVELS.index)
    configure_logging(level, config.settings.log_format, Redactor(config.secrets))


def select_models(config: Config, names: Sequence[str]) -> list[ModelConfig]:
    """The models named (by name or tag), or all of them; an unknown name is an error with a hint."""
    if not names:
        return list(config.models)
    chosen: dict[str, ModelConfig] = {}
    for name in names:
        matches = [m for m in config.models if m.name == name or name in m.tags]
        if not matches:
            from fpwatch.hints import did_you_mean

            advice = did_you_mean(name, [m.name for m in config.models], "see `fpwatch status` for the model names")
            raise UnknownModelError(f'no model or tag named "{name}" in {config.path}; {advice}')
        chosen.update((m.name, m) for m in matches)
    return list(chosen.values())


def parse_since(text: str | None) -> datetime | None:
    """`--since`: a duration ago ("7d") or an ISO time."""
    if not text:
        return None
    from fpwatch.durations import parse_duration

    try:
        return utcnow() - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_iso(text)
    except ValueError:
        raise click.BadParameter(
            f'"{text}" is neither a duration like "7d" nor an ISO time', param_hint="--since"
        ) from None


def json_text(value: Any) -> str:
    """What `--json` prints: indented on a terminal, one line for a pipe or a file (what scripts and jq read; the
    indenting encoder is pure Python, four times slower: 16 ms of a 200-model `check --json`)."""
    return json.dumps(value, indent=2) if sys.stdout.isatty() else json.dumps(value)


def echo_error(line: str) -> None:
    """A line on stderr that is an error: under systemd, marked so (`<3>`) that the journal files it as one, not
    at the info priority of a service's plain output."""
    from fpwatch.service.systemd import stdout_is_journal

    click.echo(f"<3>{line}" if stdout_is_journal(2) else line, err=True)


def _fail(message: str, code: int) -> NoReturn:
    echo_error(f"Error: {message}")
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


# Optional packages that structlog, httpx and httpcore import at once whenever they are installed: rich (tracebacks
# and reprs of locals), colorama and better_exceptions (console colours and tracebacks), pygments (httpx's own
# command line), trio (httpcore's other event loop). fpwatch renders plain tracebacks without locals, in plain text,
# on asyncio, so it uses none of them, and where they are installed (rich comes with import-linter) they cost every
# command about 100 ms of start-up.
_UNUSED_EXTRAS = ("rich", "colorama", "better_exceptions", "pygments", "trio")
_entry_point = False  # True once `main` runs: this process is fpwatch's own, and ends when the command does


def leave(ctx: click.Context, code: int) -> NoReturn:
    """End a command that has closed everything it opened (its store, connections and threads) with `code`.

    As the process's own entry point, it leaves without the interpreter's teardown, which takes apart every
    module and object start-up built one by one (13-40 ms at the end of a 200-model `check`, for nothing a
    cron job sees); what it still writes (the output, the log handlers) is flushed first. Called in-process
    (a test, an embedding program), it exits through click as any command does."""
    if not _entry_point:
        ctx.exit(code)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning anticipated failures into one line and an exit code."""
    for name in _UNUSED_EXTRAS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: `import name` fails as if not installed
    global _entry_point
    _entry_point = True
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
        echo_error(f"Error: {exc.format_message()}{hint}")
        sys.exit(3 if exc.ctx is not None and exc.ctx.command.name == "check" else 1)
    except ConfigError as exc:
        if debug:
            raise
        if len(exc.problems) == 1:
            _fail(str(exc), 3)
        echo_error(f"Error: {len(exc.problems)} problems in {exc.path or 'the config'}:")
        for problem in exc.problems:
            echo_error(f"  {problem}")
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
