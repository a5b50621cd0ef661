"""`fpwatch state copy --to postgresql://...`: a SQLite history built by real checks, copied into PostgreSQL through
the real CLI, shows, exports and verifies there exactly as it did, and fpwatch writes on; a second copy is refused;
a keyed chain copies with its key; the source is read in one snapshot while another fpwatch writes to it; a
history from before the chain took in events, and one of many batches, copy too; the password is never printed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import BlockingStore, Cli, HttpSink, RawPostgres, Result
from postgres import PASSWORD
from test_audit import FIXTURE, KEY, recompute
from test_store import observation, record

from fpwatch.config.model import PostgresState, Secret
from fpwatch.errors import StateError
from fpwatch.sim import Simulator
from fpwatch.store.copy import BATCH_ROWS, CHECKING, TABLES, VERIFYING, copy_state

FP_A, FP_B, FP_C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
MODEL = "sim/gpt-4o"


@pytest.fixture
def database(postgres_server: Any) -> PostgresState:
    """A fresh, empty database (as `createdb` leaves it), with the test server's password."""
    from conftest import _DATABASES

    name = f"copy{next(_DATABASES)}"
    postgres_server.createdb(name)
    return PostgresState(postgres_server.url(name, password=False), Secret(PASSWORD))


class Session:
    """The CLI on one config (SQLite first, then pointed at the copy), every output kept to look for the password."""

    def __init__(self, cli: Cli, extra: str = "") -> None:
        self.cli, self.extra = cli, extra
        self.outputs: list[str] = []
        self.configure(keyed=False)
        (cli.tmp_path / "pg.pw").write_text(PASSWORD + "\n")
        (cli.tmp_path / "audit.key").write_text(KEY + "\n")

    def configure(self, *, keyed: bool) -> None:
        """The config on `cli.state`, its chain keyed by audit.key or not."""
        self.keyed = keyed
        self.cli.write(extra=self.extra)
        if keyed:
            text = self.cli.config.read_text()
            self.cli.config.write_text(text.replace("[fpwatch]\n", '[fpwatch]\naudit_key_file = "audit.key"\n', 1))

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = self.cli(*args)
        self.outputs.append(result.stdout + result.stderr)
        assert code is None or result.code == code, (args, result.code, result.stdout, result.stderr)
        return result

    def copy(self, database: PostgresState, *args: str, code: int | None = 0) -> Result:
        return self("state", "copy", "--to", database.url, "--password-file", "pg.pw", *args, code=code)

    def shown(self) -> dict[str, Any]:
        return {
            "status": self("status", "--json").json(),
            "events": self("events", "--json").json(),
            "history": self("history", MODEL, "--json").json(),
            "export": [json.loads(line) for line in self("export").stdout.splitlines()],
        }

    def switch_to(self, database: PostgresState) -> None:
        """What the summary tells the user to do: [fpwatch] state names the database (its password in a file)."""
        self.cli.state = database
        self.configure(keyed=self.keyed)

    def leaked(self) -> list[str]:
        return [text for text in self.outputs if PASSWORD in text]


def build_history(run: Session, sim: Simulator) -> None:
    """Three checks (a first fingerprint, a change, the change again), an acknowledgement, and the alerts the
    notifier got through the outbox."""
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    run("check")
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    run("check", code=1)
    changed = next(e for e in run("events", "--json").json() if e["type"] == "fingerprint.changed")
    run("ack", str(changed["id"]), "--comment", "planned rollout, ümlaut and all")
    run("check")


def test_a_history_copied_to_postgresql_reads_verifies_and_grows_there_as_it_did(
    cli: Cli, sim: Simulator, sink: HttpSink, database: PostgresState
) -> None:
    """The copy through the real CLI: status, events, history and the export (every row, id and hash) are the
    same on PostgreSQL, `export --verify --head` finds the source's head, a new check there appends and verifies,
    its alert goes out through the copied outbox (the ids go on past the copied ones); the summary names the state
    line to set, and nothing prints the password."""
    run = Session(cli, extra=f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n')
    build_history(run, sim)
    with sqlite3.connect(cli.tmp_path / "state.db") as source:  # a screen as a check past learning records it
        check = source.execute("SELECT id, model, finished FROM checks ORDER BY finished DESC").fetchone()
        source.execute("INSERT INTO drift_screens VALUES (?, ?, ?, 0.25, 1.5, NULL, 0.4, 3)", check)
    before = run.shown()
    assert len(sink.to("/hook")) == 1 and any(e["acks"] for e in before["export"] if e["kind"] == "event")
    copied = run.copy(database)
    assert copied.stderr == ""  # no TTY: no progress line, and nothing else to say
    lines = copied.stdout.splitlines()
    assert lines[0].startswith(f"copied {cli.tmp_path / 'state.db'} into {database.url} in ")
    assert f'next: set [fpwatch] state = "{database.url}" in {cli.config}' in copied.stdout
    assert f"its head is the source's: {before['status']['audit']['head'][:16]}" in copied.stdout
    assert any(line.split() == ["outbox", str(len(sink.to("/hook")))] for line in lines)

    with sqlite3.connect(cli.tmp_path / "state.db") as source:
        screens = source.execute("SELECT * FROM drift_screens ORDER BY check_id").fetchall()
    assert any(line.split() == ["drift_screens", str(len(screens))] for line in lines)
    run.switch_to(database)
    assert run.shown() == before
    head = before["status"]["audit"]["head"]
    assert run("export", "--verify", "--head", head).stdout.strip().endswith("0 rows follow it")

    delivered = len(sink.to("/hook"))
    sim.update_model("gpt-4o", {"fingerprints": {FP_C: 1}})
    run("check", code=1)
    after = [json.loads(line) for line in run("export").stdout.splitlines()]
    observations = [r["id"] for r in after if r["kind"] == "observation"]
    assert observations == list(range(1, len(observations) + 1)) and len(observations) == 12
    assert run("export", "--verify", "--head", head).stdout.strip().endswith("rows follow it")
    assert recompute(after) == run("status", "--json").json()["audit"]["rows"] > before["status"]["audit"]["rows"]
    assert len(sink.to("/hook")) == delivered + 1  # composed into the copied outbox, under an id of its own
    db = RawPostgres(database)
    try:
        ids = [row[0] for row in db.execute("SELECT id FROM outbox ORDER BY id").fetchall()]
        assert ids == list(range(1, delivered + 2))
        copied_screens = db.execute("SELECT * FROM drift_screens ORDER BY check_id").fetchall()
        assert screens and [tuple(r) for r in copied_screens[: len(screens)]] == screens  # the report's, copied
    finally:
        db.close()
    assert run.leaked() == []


def test_a_database_that_holds_history_is_refused_in_one_line(
    cli: Cli, sim: Simulator, database: PostgresState
) -> None:
    """A second copy into the same database (or one fpwatch wrote to) is refused before anything is written: one
    line that says what is there and what to do; exit 1, the copy already there untouched."""
    run = Session(cli)
    build_history(run, sim)
    run.copy(database)
    again = run.copy(database, code=1)
    assert again.stdout == "" and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(f"Error: the PostgreSQL database {database.url} holds fpwatch history already")
    assert "copy into a new, empty database" in again.stderr
    run.switch_to(database)
    assert run("export", "--verify").stdout.startswith("chain OK: 9 observations")
    on_postgres = run("state", "copy", "--to", database.url, code=1)  # the config's state is the copy now
    assert "is a PostgreSQL database already" in on_postgres.stderr and "--from PATH" in on_postgres.stderr
    assert run.leaked() == []


def test_a_keyed_chain_is_copied_and_verified_with_the_configs_key(
    cli: Cli, sim: Simulator, database: PostgresState
) -> None:
    """A chain keyed by [fpwatch] audit_key_file copies, and is verified there with that key (its switch to keyed
    mode copied too). Refused before anything is written: a plain chain while a key is set (with what to do) and a
    keyed one without its key; the database stays empty for the copy that can verify."""
    run = Session(cli)
    build_history(run, sim)
    run.configure(keyed=True)  # a key added to an install whose chain is plain so far
    plain = run.copy(database, code=1)
    assert plain.stderr.count("\n") == 1 and "run `fpwatch check` once (it keys the chain" in plain.stderr
    run("check")  # the first writer with the key switches the chain to keyed from its next row
    source = run("status", "--json").json()["audit"]
    assert source["mode"] == "keyed" and source["keyed_from"] == 14

    run.configure(keyed=False)
    refused = run.copy(database, code=1)
    assert refused.stderr.count("\n") == 1 and "is keyed (an HMAC from row 14 on)" in refused.stderr
    run.configure(keyed=True)
    summary = run.copy(database, "--json").json()
    assert summary["audit"] == source
    assert summary["rows"]["audit_mode"] == 1 and set(summary["rows"]) == set(TABLES)

    run.switch_to(database)
    verified = run("export", "--verify").stdout.strip()
    assert verified.startswith("chain OK: 12 observations, keyed from row 14 (since ")
    assert run("status", "--json").json()["audit"] == source
    run("check")  # fpwatch writes on in keyed mode there
    assert run("export", "--verify").stdout.startswith("chain OK: 15 observations, keyed from row 14 (since ")
    assert run.leaked() == []


def test_the_destination_url_is_read_as_the_config_reads_state_and_never_printed_with_its_password(
    cli: Cli, sim: Simulator, database: PostgresState
) -> None:
    """`--to` takes ${VAR} and a password in the URL like [fpwatch] state; the summary, --json and every error print
    the URL without it; a wrong password, a URL that is not PostgreSQL and a missing source are one line each."""
    run = Session(cli)
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    run("check")
    with_password = database.url.replace("fpwatch@", f"fpwatch:{PASSWORD}@")
    wrong = run("state", "copy", "--to", with_password.replace(PASSWORD, "not-the-password-1234"), code=1)
    assert "refused the password" in wrong.stderr and wrong.stderr.count("\n") == 1
    assert "set --password-file (or PGPASSFILE)" in wrong.stderr  # the store's advice, in this command's words
    assert "not-the-password-1234" not in wrong.stderr
    not_pg = run("state", "copy", "--to", "other.db", code=1)
    assert "--to: " in not_pg.stderr and "is not a postgresql:// URL" in not_pg.stderr
    missing = run("state", "copy", "--from", "nothing.db", "--to", database.url, code=1)
    assert missing.stderr.startswith("Error: there is no SQLite state at nothing.db")
    twice = run("state", "copy", "--to", with_password, "--password-file", "pg.pw", code=1)
    assert "--password-file: the state URL has a password already" in twice.stderr

    cli.env = {**cli.env, "FPWATCH_PG_PASSWORD": PASSWORD}
    by_variable = database.url.replace("fpwatch@", "fpwatch:${FPWATCH_PG_PASSWORD}@")
    summary = run("state", "copy", "--to", by_variable, "--json").json()
    assert summary["destination"] == database.url and summary["config"] == f'[fpwatch] state = "{database.url}"'
    assert summary["rows"]["observations"] == 3 and summary["audit"]["rows"] == 5
    assert isinstance(summary["seconds"], float) and summary["source"] == str(cli.tmp_path / "state.db")
    again = run("state", "copy", "--to", with_password, code=1)
    assert "holds fpwatch history already" in again.stderr
    assert run.leaked() == []


def test_the_source_is_read_in_one_snapshot_while_another_fpwatch_writes_to_it(
    cli: Cli, sim: Simulator, database: PostgresState
) -> None:
    """A `fpwatch check` that records into the SQLite state while the copy is reading it does not reach the copy:
    the copy is the history as it stood when the copy began, whole and verified, and the source goes on."""
    run = Session(cli)
    build_history(run, sim)
    source = cli.tmp_path / "state.db"
    head = run("status", "--json").json()["audit"]
    sim.update_model("gpt-4o", {"fingerprints": {FP_C: 1}})
    late: list[Result] = []

    def progress(step: str, done: int, total: int) -> None:
        if step == "observations" and not late:  # mid-copy: the snapshot is taken, observations not read yet
            late.append(cli("check"))

    copied = asyncio.run(copy_state(source, database, progress=progress))
    assert late[0].code == 1, late[0].stderr  # it recorded the change, beside the copy
    assert copied.head.to_json() == head and copied.rows["checks"] == 3
    assert run("status", "--json").json()["audit"]["rows"] > head["rows"]
    run.switch_to(database)
    copy = run("status", "--json").json()
    assert copy["audit"] == head and copy["models"][0]["checks"] == 3  # the model's state as of the snapshot too
    assert run("export", "--verify").code == 0


def test_a_history_from_before_events_were_chained_copies_with_its_positions(
    tmp_path: Path, database: PostgresState
) -> None:
    """A state written by the fpwatch before migration 007 (its observations have no seq: their id is their
    position) and upgraded: the copy gives them their id as their seq, verifies, and exports as the source does."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(FIXTURE.read_text())
    old.close()
    with BlockingStore(path) as store:  # migrates
        record(store, 9, [observation(100, "fp_bbbbbbbbbb")])
        source = (store.chain_head(), store.observation_rows(), store.event_rows(), store.mode_rows())
        assert store.db.execute("SELECT COUNT(*) FROM observations WHERE seq IS NULL").fetchone() == (6,)
    copied = asyncio.run(copy_state(path, database))
    assert copied.head == source[0] and copied.rows["observations"] == 7
    with BlockingStore(database) as store:
        assert (store.chain_head(), store.observation_rows(), store.event_rows(), store.mode_rows()) == source
        assert store.db.execute("SELECT COUNT(*) FROM observations WHERE seq = id").fetchone() == (6,)


def test_a_long_history_streams_in_batches_and_an_unverifiable_one_is_rolled_back_whole(
    tmp_path: Path, database: PostgresState
) -> None:
    """Observations are copied batch by batch (progress after each), then walked; a source whose chain is broken
    is refused after the walk with the reason, and leaves the destination empty for a copy that can verify."""
    path = tmp_path / "state.db"
    rows = 2 * BATCH_ROWS + 17
    with BlockingStore(path) as store:
        for i in range(0, rows, 1000):
            record(store, i, [observation(j) for j in range(i, min(i + 1000, rows))])
    steps: list[tuple[str, int, int]] = []
    broken = sqlite3.connect(path)
    broken.execute("UPDATE observations SET output = 'tampered' WHERE id = 7")
    broken.commit()
    broken.close()
    with pytest.raises(StateError, match=r"the audit chain of .* is broken at observation 7 \(its output does not"):
        asyncio.run(copy_state(path, database, progress=lambda *step: steps.append(step)))
    db = RawPostgres(database)
    try:
        assert db.execute("SELECT COUNT(*) FROM observations").fetchone() == (0,)
    finally:
        db.close()
    fixed = sqlite3.connect(path)
    fixed.execute("UPDATE observations SET output = '391' WHERE id = 7")
    fixed.commit()
    fixed.close()
    steps.clear()
    copied = asyncio.run(copy_state(path, database, progress=lambda *step: steps.append(step)))
    assert copied.rows["observations"] == rows and copied.head.rows == rows + 2  # + fingerprint/model first_seen
    assert [s for s in steps if s[0] == "observations"] == [
        ("observations", done, rows) for done in (0, BATCH_ROWS, 2 * BATCH_ROWS, rows)
    ]
    walked = [done for step, done, _ in steps if step == VERIFYING]
    assert walked[0] == 0 and walked[-1] == rows + 2 and len(walked) >= 3
    assert steps[-1] == (CHECKING, 0, rows + 2)


def test_every_table_of_the_sqlite_schema_is_copied(tmp_path: Path) -> None:
    """The copy's table list is the SQLite schema's, the migrations' own bookkeeping aside: a migration that adds a
    table must add it to the copy."""
    with BlockingStore(tmp_path / "fresh.db") as store:
        tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {*TABLES, "migrations"}


def test_a_copy_given_up_midway_is_rolled_back_whole(tmp_path: Path, database: PostgresState) -> None:
    """Ctrl-C while observations stream (the copy's task cancelled): its transaction is rolled back, every table
    of the database stays empty, and the next copy fills it."""
    path = tmp_path / "state.db"
    rows = 3 * BATCH_ROWS
    with BlockingStore(path) as store:
        for i in range(0, rows, 1000):
            record(store, i, [observation(j) for j in range(i, i + 1000)])

    async def give_up() -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Future[Any]] = []

        async def interrupt() -> None:  # as Ctrl-C does: cancel the command's task, and let it react
            tasks[0].cancel()
            for _ in range(3):
                await asyncio.sleep(0)

        def progress(step: str, done: int, total: int) -> None:
            if (step, done) == ("observations", BATCH_ROWS):
                asyncio.run_coroutine_threadsafe(interrupt(), loop).result(timeout=10)

        tasks.append(asyncio.ensure_future(copy_state(path, database, progress=progress)))
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]

    asyncio.run(give_up())
    db = RawPostgres(database)
    try:
        assert [db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES] == [0] * len(TABLES)
    finally:
        db.close()
    assert asyncio.run(copy_state(path, database)).rows["observations"] == rows
