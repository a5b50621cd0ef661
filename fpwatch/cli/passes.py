"""Commands that run checks: `check` (one pass), `run` (the daemon), `reload` (ask it to reload), `demo`, `simulate`."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import Any

import click

from fpwatch.cli.app import (
    InternalError,
    cli,
    echo_error,
    json_text,
    leave,
    obj_of,
    run_async,
    select_models,
    setup_logging,
)
from fpwatch.errors import FpwatchError


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
    with _start_up():
        from fpwatch.check import CheckResult
        from fpwatch.detect.verdict import STATUS_NAMES, UNKNOWN, worst
        from fpwatch.report.summary import check_summary
        from fpwatch.report.tables import check_report, delivery_line
        from fpwatch.service.once import run_pass

    obj = obj_of(ctx)
    try:
        with _start_up():
            config = obj.config()
            selected = select_models(config, models)
            setup_logging(config, obj)
        progress = _Progress(len(selected))
        summaries: dict[str, dict[str, Any]] = {}

        def done(result: CheckResult) -> None:
            progress(result)
            if as_json:  # each model's part as its check ends, while others wait on the network (not all at the end)
                summaries[result.check_id] = check_summary(result)

        results, delivery = run_async(run_pass(config, selected, dry_run=dry_run, notify=not no_notify, on_done=done))
        progress.done()
    except FpwatchError as exc:
        exc.exit_code = UNKNOWN  # for a monitor, "could not check" is UNKNOWN whatever the cause
        raise
    except Exception as exc:
        if obj.debug:
            raise
        raise InternalError(exc, UNKNOWN) from exc
    code = worst(r.status for r in results)
    if as_json:
        out: dict[str, Any] = {
            "exit_code": code,
            "status": STATUS_NAMES[code],
            "models": [summaries.get(r.check_id) or check_summary(r) for r in results],
        }
        if delivery is not None:
            out["notifications"] = {
                "delivered": delivery.delivered,
                "failed": delivery.failed,
                "expired": delivery.expired,
            }
        click.echo(json_text(out))
    else:
        click.echo(check_report(results, code, dry_run))
        line = delivery_line(delivery) if delivery is not None else None
        if line:
            click.echo("\n" + line)
    leave(ctx, code)


@contextlib.contextmanager
def _start_up() -> Iterator[None]:
    """No collection while start-up builds what lives until exit (the modules, the config: some 70,000 objects),
    then that frozen: collecting walked it again and again (10-30 ms of a check's start here), and a full
    collection at the start of a pass of 200 models walked it once more (30-50 ms). The pass collects as usual."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class _Progress:
    """ "checked 120/200 models" on a TTY's stderr for long passes; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.enabled = total > 5 and sys.stderr.isatty()

    def __call__(self, result: object) -> None:
        self.count += 1
        if self.enabled:
            click.echo(f"\rchecked {self.count}/{self.total} models", nl=False, err=True)

    def done(self) -> None:
        if self.enabled:
            click.echo("\r" + " " * 40 + "\r", nl=False, err=True)


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    metavar="N",
    help="Spend at most N one-token requests (default: the model's discovery_budget, 2,000 unless configured).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def discover(ctx: click.Context, model: str, budget: int | None, as_json: bool) -> None:
    """Find MODEL's own border inputs now: prompts whose temperature-0 first token is not unique for it.

    A tiny change of the weights moves such a border, so they are the most sensitive canaries a hosted
    API allows (B3IT). Candidate prompts are asked 3 times each with one output token; those that answer
    two ways are measured 20 more times and the best balanced (up to 6) join the model's canaries as
    discovered/... from its next check, 2 one-token requests each. Run again after a change: the old ones
    are re-probed, survivors kept, the set topped up. The daemon does this by itself while a model learns
    and after a confirmed drift (unless its discovery_budget is 0).

    \b
    Examples:
      fpwatch discover openai/gpt-4o
      fpwatch discover local/llama --budget 500 --json
    """
    from fpwatch.report.tables import discovery_report
    from fpwatch.service.once import discover_once

    obj = obj_of(ctx)
    config = obj.config()
    chosen = select_models(config, [model])[0]
    if chosen.name != model:
        raise click.BadParameter(f'"{model}" is a tag; name one model', param_hint="MODEL")
    limit = budget if budget is not None else chosen.discovery_budget
    if limit == 0:
        raise FpwatchError(
            f"discovery is off for {chosen.name} (its discovery_budget is 0); pass --budget N to run it once anyway"
        )
    setup_logging(config, obj)
    bar = _Bar(limit)
    try:
        result = run_async(discover_once(config, chosen, limit, bar))
    finally:
        bar.close()
    if as_json:
        click.echo(json_text({"model": chosen.name, "budget": limit, **result.to_json()}))
    else:
        click.echo(discovery_report(chosen.name, result))
    ctx.exit(1 if result.status == "failed" else 0)


class _Bar:
    """A progress bar of requests spent on a TTY's stderr; nothing otherwise."""

    def __init__(self, total: int) -> None:
        self.enabled = sys.stderr.isatty()
        self.spent = 0
        self.bar = click.progressbar(length=total, label="discovering", file=sys.stderr) if self.enabled else None
        if self.bar is not None:
            self.bar.__enter__()

    def __call__(self, spent: int) -> None:
        if self.bar is not None:
            self.bar.update(spent - self.spent)
        self.spent = spent

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


# --- run ---------------------------------------------------------------------------------------------


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
      systemctl reload fpwatch        (fpwatch reload $MAINPID: SIGHUP, then the daemon's answer)
    """
    from fpwatch.config import find_config_path
    from fpwatch.service.daemon import run_daemon

    obj = obj_of(ctx)
    ctx.exit(run_daemon(find_config_path(obj.config_path), debug=obj.debug))


@cli.command()
@click.argument("pid", type=int)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for the daemon's answer.",
)
@click.pass_context
def reload(ctx: click.Context, pid: int, timeout: float) -> None:
    """Ask the daemon PID to reload its config, wait for its answer and print it.

    Sends SIGHUP; the daemon validates the new config itself (it can read its credentials) and keeps the
    old one if the new one is invalid. Under systemd (RuntimeDirectory=) it reports the outcome in
    $RUNTIME_DIRECTORY/reload.json: this prints each problem on a line and exits 0 when the new config is in
    force, 3 when it was rejected, 1 when the daemon is not there or did not answer within --timeout.
    Without $RUNTIME_DIRECTORY it only sends the signal. This is what systemd's ExecReload= runs, so
    `systemctl reload fpwatch` fails on an invalid config. It reads no config, so --config does not apply.

    \b
    Examples:
      systemctl reload fpwatch                (ExecReload=/usr/local/bin/fpwatch reload $MAINPID)
      fpwatch reload "$(systemctl show -p MainPID --value fpwatch)"
      fpwatch reload 1234 --timeout 60
    """
    from fpwatch.service.reloading import outcome_path, request_reload

    path = outcome_path()
    answer = request_reload(pid, timeout, path)
    outcome = answer.outcome
    if outcome is None:
        click.echo(
            f"sent SIGHUP to {pid}; $RUNTIME_DIRECTORY is not set, so there is no answer to wait for: see its log"
        )
    elif outcome.ok:
        click.echo(f"config reloaded by {pid}: {outcome.models} model(s)")
    else:
        echo_error(f"config rejected by {pid}, which keeps running the previous one:")
        for problem in outcome.problems:
            echo_error(f"  {problem}")
    ctx.exit(answer.exit_code)


# --- demo -----------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds between the daemon's checks.",
)
@click.option(
    "--report",
    "report_path",
    metavar="FILE",
    help="Where to write the report of the story at the end (default: fpwatch-demo.html in the temporary folder).",
)
@click.pass_context
def demo(ctx: click.Context, interval: float, report_path: str | None) -> None:
    """Watch a scripted story on the built-in simulator: no key, no network, under a minute.

    One model of each provider type (openai-compatible, anthropic, gemini, openai-responses) on the
    same simulator. Steady replica rotation stays quiet; Claude's new snapshot raises one
    model.changed; a new top_p echoed by the Responses API one fingerprint.changed; a rollout
    with overlap raises one change and later one retirement; an outage raises model.down then
    model.recovered; a silent swap is a critical canary.drift; a rollback is critical. At the end
    it writes the story's HTML report (`fpwatch report`) and prints its path.

    \b
    Example:
      fpwatch demo
    """
    import tempfile
    from pathlib import Path

    from fpwatch.logs import configure_logging
    from fpwatch.sim.demo import play

    configure_logging("error")  # the story itself is the output
    report = Path(report_path) if report_path else Path(tempfile.gettempdir()) / "fpwatch-demo.html"
    ctx.exit(run_async(play(click.echo, interval=interval, report=report)))


# --- simulate ---------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False), help="A scenario file (.json or .toml).")
@click.option("--api-key", envvar="FPWATCH_SIMULATOR_API_KEY", help="Require this key (default: accept any request).")
@click.option("--seed", type=int, help="Seed the simulator's randomness for reproducible runs.")
def simulate(host: str, port: int, scenario: str | None, api_key: str | None, seed: int | None) -> None:
    """Serve the simulated provider (every wire format fpwatch speaks), for trying configs and alert routing.

    Point a provider at it with type = "openai-compatible" (or "openai-responses") and base_url =
    "http://127.0.0.1:8787/v1", or type = "azure", "anthropic" or "gemini" and base_url =
    "http://127.0.0.1:8787". The scenario format is documented in
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
