"""The real CLI and daemon (subprocesses) on a PostgreSQL state: every command that opens the state, the errors a
person meets (server out of reach, wrong password), the password never printed, and a daemon that rides out a
restart of the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, DaemonProcess, HttpSink, wait_for
from postgres import PASSWORD

from fpwatch.sim import Simulator

FP_A, FP_B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"
MODEL = "sim/gpt-4o"


def use_postgres(config: Path, url: str, *, password: str | None = PASSWORD) -> None:
    """Point a config the test helpers wrote at this database, the password in a file of its own."""
    text = config.read_text()
    line = f'state = "{url}"'
    if password is not None:
        (config.parent / "pg.pw").write_text(password + "\n")
        line += '\nstate_password_file = "pg.pw"'
    config.write_text(text.replace('state = "state.db"', line, 1))


@pytest.fixture
def keyless_sim() -> Iterator[Simulator]:
    """The daemon's config sends no key (as in test_daemon.py)."""
    with Simulator(seed=5) as simulator:
        yield simulator


@pytest.fixture
def database(postgres_server: Any) -> str:
    """A fresh database's URL, without its password."""
    from conftest import _DATABASES

    name = f"e2e{next(_DATABASES)}"
    postgres_server.createdb(name)
    return str(postgres_server.url(name, password=False))


def test_every_command_works_on_a_postgresql_state(cli: Cli, sim: Simulator, sink: HttpSink, database: str) -> None:
    """check, status, history, events, ack, verify, export --verify and notify test on PostgreSQL; nothing ever
    prints the password, and no folder named "postgresql:" appears."""
    cli.write(extra=f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n')
    use_postgres(cli.config, database)
    outputs = []

    def run(*args: str, code: int = 0) -> Any:
        result = cli(*args)
        outputs.append(result.stdout + result.stderr)
        assert result.code == code, (args, result.stdout, result.stderr)
        return result

    assert run("events", "--json").json() == []  # no state yet: an empty history, and nothing created
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert run("check", "--json").json()["models"][0]["fingerprints"] == [FP_A]
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    run("check", code=1)
    status = run("status", "--json").json()
    assert status["models"][0]["checks"] == 2 and status["audit"]["rows"] > 6
    events = run("events", "--json").json()
    changed = next(e for e in events if e["type"] == "fingerprint.changed")
    run("ack", str(changed["id"]), "--comment", "planned")
    assert next(e for e in run("events", "--json").json() if e["id"] == changed["id"])["ack_comment"] == "planned"
    assert run("history", MODEL, "--json").json()
    run("verify", MODEL, FP_B)
    head = run("status", "--json").json()["audit"]["head"]
    run("export", "--verify", "--head", head)
    assert len(run("export").stdout.splitlines()) == run("status", "--json").json()["audit"]["rows"] - 1  # +1 ack
    run("notify", "test")
    assert sink.to("/hook")  # the events of both checks and the test went out through the PostgreSQL outbox
    assert not any(PASSWORD in text for text in outputs)
    assert not (cli.tmp_path / "postgresql:").exists() and not list(cli.tmp_path.glob("*.db"))


def test_a_server_out_of_reach_or_a_wrong_password_is_one_line_without_the_password(
    cli: Cli, sim: Simulator, postgres_server: Any
) -> None:
    """What a person sees when the database cannot be used: one Error line that names the server and what to do,
    exit 3 for `check`, the password nowhere."""
    from conftest import free_port

    cli.write()
    base = cli.config.read_text()
    use_postgres(cli.config, f"postgresql://fpwatch@127.0.0.1:{free_port()}/fpwatch")
    down = cli("check")
    assert down.code == 3 and down.stderr.count("\n") == 1, down.stderr
    assert re.match(r"Error: cannot reach PostgreSQL at 127\.0\.0\.1:\d+ \(.*\): check \[fpwatch\] state", down.stderr)
    cli.config.write_text(base)
    use_postgres(cli.config, postgres_server.url(password=False), password="not-the-password-1234")
    wrong = cli("status")
    assert wrong.code == 1 and "refused the password" in wrong.stderr and "state_password_file" in wrong.stderr
    cli.config.write_text(base)
    inline = postgres_server.url("nosuchdb").replace(PASSWORD, PASSWORD[:-1] + "X")  # wrong, in the URL
    use_postgres(cli.config, inline, password=None)
    for result in (cli("check"), cli("events"), cli("config", "show")):
        assert PASSWORD[:-1] not in result.stdout + result.stderr
    assert "********" in cli("config", "show").stdout
    cli.config.write_text(base)
    use_postgres(cli.config, postgres_server.url(password=False) + "?connect_timout=3")  # a misspelt option
    typo = cli("check")
    assert typo.code == 3 and typo.stderr.count("\n") == 1, typo.stderr
    assert typo.stderr.startswith("Error: invalid [fpwatch] state URL postgresql://fpwatch@127.0.0.1:")
    assert '"connect_timout"' in typo.stderr and "fix the URL's options" in typo.stderr


def test_the_daemon_says_the_database_is_unreachable_and_recovers_from_a_restart(
    tmp_path: Path, keyless_sim: Simulator, database: str, postgres_server: Any
) -> None:
    """`fpwatch run` on PostgreSQL: while the server is stopped /healthz fails and says why; once it is back the
    daemon checks and records again by itself, and the chain still verifies."""
    daemon = DaemonProcess(tmp_path, keyless_sim)
    try:
        _ride_out_a_restart(daemon, database, postgres_server)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def _ride_out_a_restart(daemon: DaemonProcess, database: str, postgres_server: Any) -> None:
    daemon.write(interval="1s")
    use_postgres(daemon.config, database)
    daemon.start()
    wait_for(lambda: daemon.checks() >= 2, 30, "two checks")
    postgres_server.stop()
    try:

        def unhealthy() -> str | None:
            reply = httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5)
            return reply.text if reply.status_code != 200 else None

        reason = wait_for(unhealthy, 60, "/healthz to fail")
        assert "PostgreSQL" in reason and PASSWORD not in reason
    finally:
        postgres_server.start()
    before = daemon.checks()
    wait_for(daemon.healthy, 60, "/healthz to recover")
    wait_for(lambda: daemon.checks() > before + 1, 30, "checks recorded again")
    assert daemon.stop() == 0
    verified = daemon.command("export", "--verify")
    assert verified.returncode == 0, verified.stderr
    assert PASSWORD not in daemon.log.read_text()


def test_a_multi_host_url_reaches_the_server_that_answers(cli: Cli, sim: Simulator, database: str) -> None:
    """libpq's multi-host URL (a standby list): the first host is down, the second answers; errors name both."""
    from conftest import free_port

    cli.write()
    base = cli.config.read_text()
    dead = f"127.0.0.1:{free_port()}"
    use_postgres(cli.config, database.replace("postgresql://fpwatch@", f"postgresql://fpwatch@{dead},", 1))
    assert cli("check").code == 0
    assert cli("export", "--verify").code == 0
    cli.config.write_text(base)
    use_postgres(cli.config, f"postgresql://fpwatch@{dead},127.0.0.1:{free_port()}/fpwatch")
    down = cli("check")
    assert down.code == 3 and f"cannot reach PostgreSQL at {dead}, 127.0.0.1:" in down.stderr, down.stderr


def test_libpqs_own_passfile_keeps_the_password_out_of_the_config(
    cli: Cli, sim: Simulator, database: str, postgres_server: Any
) -> None:
    """No password in the config at all: libpq finds it in the file PGPASSFILE names (mode 0600, as it insists)."""
    cli.write()
    use_postgres(cli.config, database, password=None)
    passfile = cli.tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:*:fpwatch:{PASSWORD}\n")
    passfile.chmod(0o600)
    cli.env = {**cli.env, "PGPASSFILE": str(passfile)}
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    result = cli("check", "--json")
    assert result.code == 0, result.stderr
    assert cli("status", "--json").json()["models"][0]["checks"] == 1
    assert PASSWORD not in cli.config.read_text() and PASSWORD not in result.stdout + result.stderr
