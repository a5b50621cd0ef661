"""The state database: migrations, the hash chain, pruning, and concurrent writers in separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, BlockingStore, raw_connection

from fpwatch.config.model import PostgresState
from fpwatch.detect.conclude import conclude
from fpwatch.detect.drift import CanaryKey
from fpwatch.detect.observation import FirstToken, Observation
from fpwatch.detect.state import Policy
from fpwatch.errors import StateError
from fpwatch.store import CheckRecord
from fpwatch.store.sqlite_migrations import MIGRATIONS

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = Policy(timedelta(hours=24), 3, 3)


def observation(i: int, fingerprint: str = "fp_a000000000", output: str = "391") -> Observation:
    return Observation(
        T0 + timedelta(minutes=i),
        "m",
        "c",
        i,
        1,
        ok=True,
        system_fingerprint=fingerprint,
        fingerprint_state="present",
        response_model="gpt-4o-2024-08-06",
        output=output,
        first_token=FirstToken("391", -0.01, {"391": -0.01, "392": -4.6}),
        latency_ms=12.5,
    )


def record(store: BlockingStore, i: int, observations: list[Observation]) -> None:
    check = CheckRecord(f"check{i}", "m", T0, T0, len(observations), 0, None)
    store.record_check(check, observations, lambda s: conclude(s, observations, POLICY, T0 + timedelta(minutes=i)))


def chain_of(store: BlockingStore) -> tuple[int, str | None]:
    """What `verify_audit` says of the audit chain: (observations that hold, the first link that does not)."""
    audit = store.verify_audit()
    return audit.counts["observation"], audit.broken.name() if audit.broken is not None else None


def test_migrations_run_once_from_an_empty_database(backend: Backend) -> None:
    """A new state gets every migration of its backend recorded; reopening runs none again."""
    state = backend.state()
    with BlockingStore(state) as store:
        names = [row[0] for row in store.db.execute("SELECT name FROM migrations ORDER BY name").fetchall()]
        assert names == backend.migrations()
        if backend.name == "sqlite":
            assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with BlockingStore(state) as store:
        assert store.migrate() == []


def test_database_from_a_newer_fpwatch_is_refused(backend: Backend) -> None:
    """Unknown migrations mean a newer fpwatch wrote the state: say so instead of corrupting it, on a writable open
    and a read-only one."""
    state = backend.state()
    with BlockingStore(state) as store:
        store.db.execute("INSERT INTO migrations VALUES ('999_future', '2030-01-01T00:00:00Z')")
    with pytest.raises(StateError, match="newer fpwatch"):
        BlockingStore(state)
    with pytest.raises(StateError, match="newer fpwatch"):
        BlockingStore(state, readonly=True)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing state at some other file gives a one-line error naming it."""
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite at all " * 100)
    with pytest.raises(StateError, match=r"notes\.txt"):
        BlockingStore(path)


def test_state_round_trips_through_the_database(backend: Backend) -> None:
    """What conclude() produced is exactly what the next check loads."""
    with BlockingStore(backend.state()) as store:
        obs = [observation(0), observation(1, "fp_b000000000")]
        expected, _ = conclude(store.load_state("m"), obs, POLICY, T0)
        record(store, 0, obs)
        assert store.load_state("m") == expected


def test_hash_chain_verifies_and_detects_tampering(backend: Backend) -> None:
    """The chain recomputes; editing any recorded field breaks it at that row."""
    with BlockingStore(backend.state()) as store:
        for i in range(5):
            record(store, i, [observation(i * 2), observation(i * 2 + 1)])
        assert chain_of(store) == (10, None)
        rows = list(store.observation_rows())
        assert rows[0]["prev_hash"] == "0" * 64 and rows[1]["prev_hash"] == rows[0]["hash"]
        store.db.execute("UPDATE observations SET system_fingerprint = 'fp_forged0000' WHERE id = 4")
        assert chain_of(store) == (3, "observation 4")


def test_tampered_output_is_detected_and_pruned_output_is_not(backend: Backend) -> None:
    """Outputs are covered through their digest: pruning keeps the chain valid, editing does not."""
    with BlockingStore(backend.state()) as store:
        record(store, 0, [observation(0), observation(1)])
        assert store.prune_outputs(T0 + timedelta(seconds=30)) == 1
        assert chain_of(store) == (2, None)
        store.db.execute("UPDATE observations SET output = '392' WHERE id = 2")
        assert chain_of(store) == (1, "observation 2")


WRITER = textwrap.dedent(
    """
    import asyncio
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from fpwatch.config.model import PostgresState
    from fpwatch.detect.conclude import conclude
    from fpwatch.detect.observation import Observation
    from fpwatch.detect.state import Policy
    from fpwatch.store import CheckRecord, open_store

    async def main(path, who):
        policy = Policy(timedelta(hours=24), 3, 3)
        # A PostgreSQL state comes as its URL, its password in PGPASSWORD (which libpq reads itself).
        store = await open_store(PostgresState(path) if path.startswith("postgresql:") else Path(path))
        for i in range(40):
            now = datetime.now(UTC)
            obs = [Observation(now, "m", "c", k, 1, ok=True, system_fingerprint="fp_" + who * 10,
                               fingerprint_state="present", output="x") for k in range(3)]
            check = CheckRecord(f"{who}{i}", "m", now, now, 3, 0, None)
            await store.record_check(check, obs, lambda s: conclude(s, obs, policy, now))
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    print("done")
    """
)


def test_two_processes_writing_the_same_model_neither_fail_nor_double_count(backend: Backend) -> None:
    """Concurrent checks from two processes serialise: every sample counted once, the chain intact."""
    path = backend.state()
    BlockingStore(path).close()
    env = {**os.environ, "PGPASSWORD": path.password.reveal()} if isinstance(path, PostgresState) else None
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), who], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for who in ("a", "b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "done"
    with BlockingStore(path) as store:
        state = store.load_state("m")
        assert state.checks == 80
        assert state.fingerprints.samples == 240
        assert {s.value: s.count for s in state.fingerprints.signals.values()} == {
            "fp_aaaaaaaaaa": 120,
            "fp_bbbbbbbbbb": 120,
        }
        assert chain_of(store) == (240, None)
        first_seen = store.events(types=["fingerprint.first_seen", "fingerprint.changed"])
        assert len(first_seen) == 2  # one per value, never twice


def test_events_filter_and_ack(backend: Backend) -> None:
    """Events are filtered by time, model and severity; an ack is recorded with its comment."""
    with BlockingStore(backend.state()) as store:
        for i in range(4):
            record(store, i, [observation(i, f"fp_{i}000000000")])
        all_events = store.events()
        assert [e.event.type for e in all_events] == [
            "fingerprint.first_seen",
            "model.first_seen",
            "fingerprint.first_seen",
            "fingerprint.first_seen",
            "fingerprint.changed",
        ]
        assert [e.event.type for e in store.events(severities=["warning", "critical"])] == ["fingerprint.changed"]
        assert store.events(model="other") == []
        assert len(store.events(limit=2)) == 2
        changed = all_events[-1]
        acked = store.ack(changed.id or 0, "planned", T0)
        assert acked is not None and acked.ack_comment == "planned" and acked.acked_at == T0
        assert json.loads(json.dumps(acked.to_dict()))["details"]["new"] == "fp_3000000000"


def test_a_database_from_every_earlier_schema_migrates_forward(tmp_path: Path) -> None:
    """A file created by each earlier fpwatch (each prefix of the migrations) opens, migrates and keeps its data."""
    for upto in range(1, len(MIGRATIONS)):
        path = tmp_path / f"v{upto}.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, step in MIGRATIONS[:upto]:
            step(db)
            db.execute("INSERT INTO migrations VALUES (?, '2026-01-01T00:00:00Z')", (name,))
        db.execute(
            "INSERT INTO model_state (model, checks, consecutive_failures, down, fingerprint_missing, expect_failing,"
            " fingerprint_samples, response_model_samples) VALUES ('m', 7, 0, 0, 0, '[]', 0, 0)"
        )
        db.close()
        with BlockingStore(path) as store:
            assert [row[0] for row in store.db.execute("SELECT name FROM migrations")] == [n for n, _ in MIGRATIONS]
            assert store.load_state("m").checks == 7


def test_rejected_options_are_kept_per_model_id_in_their_stored_form(backend: Backend) -> None:
    """A state written by an earlier fpwatch ("option@model-id", ids with "@" included) loads as (option, id)
    pairs, and is written back in the same form, so either fpwatch reads the other's file."""
    path = backend.state()
    with BlockingStore(path) as store:
        store.db.execute(
            "INSERT INTO model_state (model, checks, consecutive_failures, down, fingerprint_missing, expect_failing,"
            " fingerprint_samples, response_model_samples, unsupported) VALUES ('m', 1, 0, 0, 0, '[]', 0, 0, ?)",
            (json.dumps(["temperature@o3-mini", "seed@claude-3-5-sonnet@20240620"]),),
        )
    with BlockingStore(path) as store:
        state = store.load_state("m")
        assert state.unsupported == {("temperature", "o3-mini"), ("seed", "claude-3-5-sonnet@20240620")}
        assert state.rejected_by("o3-mini") == {"temperature"} and state.rejected_by("gpt-4o") == frozenset()
        check = CheckRecord("c1", "m", T0, T0, 0, 0, None)
        store.record_check(check, [], lambda s: (s, []))
        stored = store.db.execute("SELECT unsupported FROM model_state").fetchone()[0]
        assert json.loads(stored) == ["seed@claude-3-5-sonnet@20240620", "temperature@o3-mini"]


def test_a_stored_events_details_are_shown_exactly_as_stored(backend: Backend) -> None:
    """A row from an earlier fpwatch (fewer keys, one it no longer writes) reads back with its details as they
    are, keys sorted as stored: the audit trail is not rewritten; the typed details fill in what they lack."""
    with BlockingStore(backend.state()) as store:
        old = {"failed_checks": 3, "last_error": "boom", "last_ok": None, "retired_key": "kept"}
        store.db.execute(
            "INSERT INTO events (id, time, model, type, severity, summary, details) VALUES (1, ?, 'm', 'model.down', "
            "'warning', 'm: down', ?)",
            ("2026-03-01T00:00:00Z", json.dumps(old, sort_keys=True)),
        )
        (event,) = store.events()
        assert list(event.to_dict()["details"].items()) == sorted(old.items())
        assert event.event.details.flapping is False and event.event.details.downs_last_hour == 1


def test_queued_writes_wait_for_a_lock_from_when_they_were_asked_not_one_after_another(backend: Backend) -> None:
    """Three writes queued behind another process's lock each give up at the busy timeout from when they were
    asked for (about 1 s for all three), not 1 s, 2 s and 3 s; the store works again once the lock is gone."""
    import asyncio
    import time

    from fpwatch.store import open_store

    path = backend.state()
    BlockingStore(path).close()
    locker = raw_connection(path)

    async def scenario() -> tuple[list[BaseException | None], float, int]:
        store = await open_store(path, busy_timeout_ms=1000)
        backend.lock_out(locker)
        started = time.monotonic()
        outcomes = await asyncio.gather(*(store.prune_outputs(T0) for _ in range(3)), return_exceptions=True)
        elapsed = time.monotonic() - started
        locker.execute("COMMIT")
        pruned = await store.prune_outputs(T0)
        await store.close()
        return [o if isinstance(o, BaseException) else None for o in outcomes], elapsed, pruned

    errors, elapsed, pruned = asyncio.run(scenario())
    locker.close()
    assert all(isinstance(e, StateError) and "stayed locked" in str(e) for e in errors), errors
    assert elapsed < 1.8 and pruned == 0


def test_a_write_whose_caller_is_cancelled_still_completes(backend: Backend) -> None:
    """Asked for, a write runs to its end even if its caller is cancelled (a delivery already sent must be marked
    delivered): the event lands, and the store closes only after it."""
    import asyncio

    from fpwatch.store import open_store

    path = backend.state()
    BlockingStore(path).close()
    locker = raw_connection(path)
    obs = [observation(0)]

    async def scenario() -> None:
        store = await open_store(path)
        backend.lock_out(locker)
        check = CheckRecord("c1", "m", T0, T0, 1, 0, None)
        task = asyncio.create_task(store.record_check(check, obs, lambda s: conclude(s, obs, POLICY, T0)))
        await asyncio.sleep(0.3)  # queued and waiting on the lock
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        locker.execute("COMMIT")
        await store.close()

    asyncio.run(scenario())
    locker.close()
    with BlockingStore(path) as store:
        assert store.load_state("m").checks == 1 and chain_of(store) == (1, None)


def test_drift_rows_parsed_once_still_follow_what_another_process_wrote(backend: Backend) -> None:
    """The store keeps parsed drift rows (written once, never changed): another writer's new rows are read, its
    deleted ones forgotten, and a row whose stored body differs from the cached one is read again."""
    policy = Policy(timedelta(hours=24), 1, 3, canary_keys={"c": CanaryKey("c", "d1g35t")})

    rng = random.Random(4)

    def checks(store: BlockingStore, first: int, n: int) -> None:
        for i in range(first, first + n):
            obs = [observation(i, output=rng.choice(("391", "392"))) for _ in range(8)]
            check = CheckRecord(f"check{i}", "m", T0, T0, len(obs), 0, None)
            store.record_check(check, obs, lambda s, obs=obs, i=i: conclude(s, obs, policy, T0 + timedelta(minutes=i)))

    path = backend.state()
    with BlockingStore(path) as reader, BlockingStore(path) as writer:
        checks(writer, 0, 10)
        first = reader.load_state("m").drift
        assert len(first.checks()) == 10 and first.confirmed == 0
        checks(writer, 10, 30)  # the window fills and the oldest reference checks leave: rows added and deleted
        seen, truth = reader.load_state("m").drift, writer.load_state("m").drift
        assert seen == truth and [c.seq for c in seen.checks()] == [c.seq for c in truth.checks()]
        assert len(seen.checks()) == 32 and min(c.seq for c in seen.checks()) > 1  # the oldest rows are gone
        # Rewritten under the same seq by hand (fpwatch never does): recognised by its length and read again.
        seq = seen.window[-1].seq
        reader.db.execute(
            "UPDATE drift_checks SET body = ? WHERE seq = ?", ('{"time":"2026-03-01T00:00:00Z","tallies":{}}', seq)
        )
        assert reader.load_state("m").drift.window[-1].tallies == {}


def test_a_check_whose_conclude_fails_leaves_nothing_and_holds_no_lock(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A record_check whose conclude raises (after its transaction took the model's lock and read the state) gets
    the error and writes nothing; the transaction is rolled back before its connection goes back to the pool (no
    warning from the pool), so another process records the same model at once, and the chain runs on."""

    def failing(state: Any) -> Any:
        raise RuntimeError("conclude failed")

    path = backend.state()
    with BlockingStore(path) as store, BlockingStore(path, busy_timeout_ms=2000) as other:
        record(store, 0, [observation(0)])
        with pytest.raises(RuntimeError, match="conclude failed"):
            store.record_check(CheckRecord("failed", "m", T0, T0, 1, 0, None), [observation(1)], failing)
        record(other, 2, [observation(2)])
        record(store, 3, [observation(3)])
        recorded = [row[0] for row in store.db.execute("SELECT id FROM checks ORDER BY id")]
        assert recorded == ["check0", "check2", "check3"]
        assert store.load_state("m").checks == 3
        assert chain_of(store) == (3, None)
    assert not [r for r in caplog.records if r.name.startswith("psycopg") and r.levelno >= 30], caplog.records


def test_drift_rows_kept_are_not_lost_when_the_cache_drops_the_model_during_a_load() -> None:
    """A load reads which rows are kept, asks the database for the others, and merges: if other loads push the model
    out of the cache meanwhile, the rows it had kept are still in the state it returns (and kept again)."""
    from fpwatch.store import codec
    from fpwatch.store.drift_rows import RowCache

    body = '{"time":"2026-03-01T00:00:00Z","tallies":{}}'
    cache = RowCache(models=2)
    cache.merge("m", {1: len(body), 2: len(body)}, {1: body, 2: body}, {})
    kept = cache.kept("m")
    assert set(kept) == {1, 2}
    for other in ("a", "b", "c"):  # the model leaves the cache while its load waits for the database
        cache.merge(other, {}, {}, cache.kept(other))
    rows = cache.merge("m", {1: len(body), 2: len(body), 3: len(body)}, {3: body}, kept)
    assert sorted(rows) == [1, 2, 3] and rows[1] == codec.drift_row(1, body)
    assert sorted(cache.kept("m")) == [1, 2, 3]


def test_the_same_history_has_the_same_chain_and_export_on_both_backends(tmp_path: Path, postgres_server: Any) -> None:
    """The chain is a contract, not a backend's: the same checks, events, acks and pruning recorded into SQLite and
    into PostgreSQL give the same head, hash for hash, and exports equal row for row (ids, key order and all)."""
    sqlite_state = Backend("sqlite", tmp_path).state()
    pg_state = Backend("postgresql", tmp_path, postgres_server).state()
    exports = []
    for state in (sqlite_state, pg_state):
        with BlockingStore(state) as store:
            for i in range(6):
                fingerprint = "fp_a000000000" if i < 3 else "fp_b000000000"
                record(store, i, [observation(i * 2, fingerprint, output="39ü"), observation(i * 2 + 1, fingerprint)])
            changed = store.events(types=["fingerprint.changed"])[-1]
            store.ack(changed.id or 0, "planned, ümlaut and all", T0 + timedelta(hours=1))
            store.ack(changed.id or 0, None, T0 + timedelta(hours=2))
            assert store.prune_outputs(T0 + timedelta(minutes=3)) == 3
            record(store, 6, [observation(12, "fp_b000000000")])
            assert store.verify_audit().ok
            rows = (store.observation_rows(), store.event_rows(), store.mode_rows())
            exports.append((store.chain_head(), *[[json.dumps(r, ensure_ascii=False) for r in part] for part in rows]))
    assert exports[0] == exports[1]
    head, observations, events, _ = exports[0]
    assert head.rows == len(observations) + len(events) + 2 and len(events) >= 3  # two acks, one link each


def test_a_check_whose_connection_drops_mid_transaction_is_retried_once_else_nothing_is_kept(
    tmp_path: Path, postgres_server: Any
) -> None:
    """PostgreSQL: a record_check whose connection is killed in the middle of its transaction (here while it waits
    for the chain's lock) leaves nothing half-written; it runs again on a fresh connection and is recorded once. Killed
    twice, it is a StateError, and the state, the checks and the chain are as before."""
    import asyncio
    import time

    from fpwatch.store import open_store
    from fpwatch.store.postgres_audit import CHAIN_LOCK

    state = Backend("postgresql", tmp_path, postgres_server).state()
    assert isinstance(state, PostgresState)
    BlockingStore(state).close()
    other = raw_connection(state)  # another process, holding the chain's end
    obs = [observation(0), observation(1)]

    killed: set[int] = set()  # a backend told to end may still be listed, waiting, for a moment: not it again

    def kill_the_waiting_check() -> None:
        # A backend just terminated may still be listed as waiting for a moment: wait for the retry's own.
        sql = "SELECT pid FROM pg_stat_activity WHERE application_name = 'fpwatch' AND wait_event_type = 'Lock'"
        deadline = time.monotonic() + 10
        while not (waiting := [r[0] for r in other.execute(sql).fetchall() if r[0] not in killed]):
            assert time.monotonic() < deadline, "no check waiting for the chain's lock"
            time.sleep(0.05)
        assert len(waiting) == 1
        killed.add(waiting[0])
        other.execute("SELECT pg_terminate_backend(?)", (waiting[0],))

    async def attempt(kills: int, check_id: str) -> BaseException | None:
        store = await open_store(state)
        other.execute("SELECT pg_advisory_lock(?)", (CHAIN_LOCK,))
        check = CheckRecord(check_id, "m", T0, T0, len(obs), 0, None)
        task = asyncio.create_task(store.record_check(check, obs, lambda s: conclude(s, obs, POLICY, T0)))
        for _ in range(kills):
            await asyncio.to_thread(kill_the_waiting_check)
        other.execute("SELECT pg_advisory_unlock(?)", (CHAIN_LOCK,))
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        await store.close()
        return outcome if isinstance(outcome, BaseException) else None

    assert asyncio.run(attempt(1, "retried")) is None
    failed = asyncio.run(attempt(2, "lost"))
    assert isinstance(failed, StateError) and "lost the connection to PostgreSQL" in str(failed), repr(failed)
    assert postgres_server_password() not in str(failed)
    with BlockingStore(state) as store:
        assert store.load_state("m").checks == 1
        assert [row[0] for row in store.db.execute("SELECT id FROM checks").fetchall()] == ["retried"]
        assert chain_of(store) == (2, None)
    other.close()


def test_after_a_server_restart_the_next_checks_are_recorded_on_fresh_connections(
    tmp_path: Path, postgres_server: Any
) -> None:
    """PostgreSQL: connections are not checked at every checkout, so a restart leaves the pool's idle ones dead; the
    first check to meet one retries after the pool replaced them all (not on the next dead one), and every check after
    the restart is recorded."""
    import asyncio

    from fpwatch.store import open_store

    state = Backend("postgresql", tmp_path, postgres_server).state()
    models = [f"m{i}" for i in range(8)]

    def check(store: Any, model: str, i: int) -> Any:
        obs = [replace(observation(i), model=model)]
        record = CheckRecord(f"{model}-{i}", model, T0, T0, 1, 0, None)
        return store.record_check(record, obs, lambda s: conclude(s, obs, POLICY, T0 + timedelta(minutes=i)))

    async def scenario() -> None:
        store = await open_store(state)
        await asyncio.gather(*(check(store, m, 0) for m in models))  # the pool holds several connections now
        await asyncio.to_thread(postgres_server.restart)
        for model in models:
            await check(store, model, 1)
        await store.close()

    asyncio.run(scenario())
    with BlockingStore(state) as blocking:
        assert [blocking.load_state(m).checks for m in models] == [2] * 8
        assert chain_of(blocking) == (16, None)


def test_an_exhausted_pool_says_so_without_opening_a_connection_per_waiter(
    tmp_path: Path, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: when every connection of the pool is busy, each waiter that times out gets the pool's reason in one
    line, but the connection that finds the reason is made once for all of them: one per waiter would exhaust the
    server's own limit ("sorry, too many clients already") under the overload it is diagnosing."""
    import asyncio
    import threading
    import time

    import fpwatch.store.postgres as postgres_store
    from fpwatch.store.postgres import open_postgres
    from fpwatch.store.postgres_audit import CHAIN_LOCK

    monkeypatch.setattr(postgres_store, "POOL_SIZE", 1)
    state = Backend("postgresql", tmp_path, postgres_server).state()
    assert isinstance(state, PostgresState)
    BlockingStore(state).close()
    other = raw_connection(state)
    watcher = raw_connection(state)
    peak = [0]
    done = threading.Event()

    def watch() -> None:  # the most connections fpwatch held at once
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fpwatch'"
        while not done.is_set():
            peak[0] = max(peak[0], watcher.execute(sql).fetchone()[0])
            time.sleep(0.01)

    async def scenario() -> list[BaseException | Any]:
        store = await open_postgres(state, connect_timeout=1)
        assert store is not None
        other.execute("SELECT pg_advisory_lock(?)", (CHAIN_LOCK,))  # the one connection waits on the chain's end
        obs = [observation(0)]
        holder = asyncio.create_task(
            store.record_check(
                CheckRecord("held", "m", T0, T0, 1, 0, None), obs, lambda s: conclude(s, obs, POLICY, T0)
            )
        )
        await asyncio.sleep(0.3)
        waiters = await asyncio.gather(*(store.load_state(f"m{i}") for i in range(40)), return_exceptions=True)
        other.execute("SELECT pg_advisory_unlock(?)", (CHAIN_LOCK,))
        await holder
        await store.close()
        return waiters

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        waiters = asyncio.run(scenario())
    finally:
        done.set()
        thread.join()
    assert all(isinstance(w, StateError) for w in waiters), waiters
    assert {str(w) for w in waiters} == {
        f"no free connection to PostgreSQL at {state.address} within 1s; is the server overloaded?"
    }
    assert peak[0] <= 2, f"{peak[0]} connections at once: the pool's one and one diagnosis"
    other.close()
    watcher.close()


def postgres_server_password() -> str:
    from postgres import PASSWORD

    return PASSWORD


def test_openers_of_a_new_state_at_once_do_not_race_its_migrations(backend: Backend) -> None:
    """Six processes' worth of openers (threads, each with its own loop and connections) on an empty state at the
    same moment: every one opens, and each migration runs and is recorded once."""
    import asyncio
    import threading

    from fpwatch.store import open_store

    state = backend.state()
    start = threading.Barrier(6)
    failures: list[BaseException] = []

    async def open_once() -> None:
        await (await open_store(state)).close()

    def opener() -> None:
        start.wait()
        try:
            asyncio.run(open_once())
        except BaseException as exc:  # collected: a thread's exception would not fail the test
            failures.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    db = raw_connection(state)
    recorded = db.execute("SELECT name FROM migrations ORDER BY name").fetchall()
    db.close()
    assert [row[0] for row in recorded] == backend.migrations()


def test_a_read_only_open_writes_nothing_and_finds_no_state_in_an_empty_one(backend: Backend) -> None:
    """A read-only store refuses writes (StateError, nothing changed); with no state yet, the reading commands'
    open says there is none (None) and a read-only open is an error, and neither creates anything."""
    import asyncio

    from fpwatch.store import open_existing

    empty = backend.state()
    assert asyncio.run(open_existing(empty)) is None
    with pytest.raises(StateError):
        BlockingStore(empty, readonly=True)
    assert asyncio.run(open_existing(empty)) is None  # still nothing there
    state = backend.state()
    with BlockingStore(state) as store:
        record(store, 0, [observation(0)])
    with BlockingStore(state, readonly=True) as store:
        with pytest.raises(StateError):
            store.prune_outputs(T0 + timedelta(days=1))
        with pytest.raises(StateError):
            record(store, 1, [observation(1)])
        assert store.load_state("m").checks == 1 and chain_of(store) == (1, None)
        assert store.observation_rows()[0]["output"] == "391"


def test_checks_that_finish_while_the_writer_is_busy_are_recorded_in_one_transaction(tmp_path: Path) -> None:
    """Checks queued behind another write go in one transaction (a group commit): while its last check is
    recorded, another connection sees none of them; then all of them, each with its own state, the chain whole."""
    import asyncio
    import threading

    from fpwatch.detect.state import ModelState
    from fpwatch.store import open_sqlite

    path = tmp_path / "s.db"
    release = threading.Event()
    seen: list[int] = []

    def blocking(state: ModelState) -> ModelState:  # on the writer thread: what is asked for meanwhile queues
        release.wait(30)
        return state

    def peeking(i: int, obs: list[Observation]) -> Any:
        def apply(state: ModelState) -> Any:
            if i == 2:  # inside the batch, after the first two checks: does anyone else see them yet?
                with contextlib.closing(sqlite3.connect(path)) as other:
                    seen.append(other.execute("SELECT COUNT(*) FROM checks").fetchone()[0])
            return conclude(state, obs, POLICY, T0)

        return apply

    async def scenario() -> None:
        store = await open_sqlite(path)
        blocker = asyncio.create_task(store.update_state("other", blocking))
        records = []
        for i in range(3):
            obs = [replace(observation(i), model=f"m{i}")]
            check = CheckRecord(f"c{i}", f"m{i}", T0, T0, 1, 0, None)
            records.append(asyncio.create_task(store.record_check(check, obs, peeking(i, obs))))
        await asyncio.sleep(0)  # every check has asked for its write
        release.set()
        await blocker
        await asyncio.gather(*records)
        await store.close()

    asyncio.run(scenario())
    assert seen == [0]
    with BlockingStore(path) as store:
        assert [row[0] for row in store.db.execute("SELECT id FROM checks ORDER BY id")] == ["c0", "c1", "c2"]
        assert [store.load_state(f"m{i}").checks for i in range(3)] == [1, 1, 1]
        assert chain_of(store) == (3, None)


@pytest.mark.parametrize("where", ["conclude", "after its links"])
def test_a_check_that_fails_to_record_leaves_the_others_of_its_batch_standing(tmp_path: Path, where: str) -> None:
    """One check of a batch that fails (its conclude raises; or its row is refused after its observations were
    linked into the chain: a check id used twice) gets the error and is rolled back alone (its savepoint): the
    others are recorded, and the chain runs on from the last link that was kept, without a gap, and verifies."""
    import asyncio

    from fpwatch.detect.state import ModelState
    from fpwatch.store import open_sqlite

    path = tmp_path / "s.db"

    def failing(state: ModelState) -> Any:
        raise RuntimeError("conclude failed")

    async def scenario() -> list[Any]:
        store = await open_sqlite(path)
        calls = []
        for i in range(3):
            obs = [observation(i)]
            check = CheckRecord("c0" if i == 1 and where != "conclude" else f"c{i}", "m", T0, T0, 1, 0, None)
            fails = i == 1 and where == "conclude"
            apply = failing if fails else (lambda s, obs=obs, i=i: conclude(s, obs, POLICY, T0 + timedelta(minutes=i)))
            calls.append(store.record_check(check, obs, apply))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await store.close()
        return outcomes

    first, failed, third = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError if where == "conclude" else StateError), repr(failed)
    assert not isinstance(first, BaseException) and not isinstance(third, BaseException)
    with BlockingStore(path) as store:
        assert [row[0] for row in store.db.execute("SELECT id FROM checks ORDER BY id")] == ["c0", "c2"]
        assert store.load_state("m").checks == 2
        assert chain_of(store) == (2, None)
        audit = store.verify_audit()
        positions = "SELECT seq FROM observations UNION ALL SELECT seq FROM events ORDER BY seq"
        assert audit.ok and [row[0] for row in store.db.execute(positions)] == list(range(1, audit.rows + 1))


KILLED = textwrap.dedent(
    """
    import asyncio
    import os
    import signal
    import sys
    from datetime import UTC, datetime, timedelta
    from fpwatch.detect.conclude import conclude
    from fpwatch.detect.observation import Observation
    from fpwatch.detect.state import Policy
    from fpwatch.store import CheckRecord, open_store

    async def main(path):
        policy = Policy(timedelta(hours=24), 3, 3)
        now = datetime.now(UTC)
        obs = [Observation(now, "m", "c", k, 1, ok=True, system_fingerprint="fp_a", output="x") for k in range(2)]

        def record(name, apply=lambda s: conclude(s, obs, policy, now)):
            return store.record_check(CheckRecord(name, "m", now, now, 2, 0, None), obs, apply)

        def dying(state):  # the process is killed in the middle of the batch's transaction
            os.kill(os.getpid(), signal.SIGKILL)

        store = await open_store(path)
        await record("finished")  # its caller heard back: it is committed
        print("finished", flush=True)
        await asyncio.gather(record("a"), record("b"), record("c", dying))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_process_killed_while_recording_a_batch_leaves_none_of_it_and_keeps_what_finished(tmp_path: Path) -> None:
    """SIGKILL while a batch of checks is being written: the check recorded before is all there, the batch's
    checks (two of them written, not committed) are not, nor any of their observations; the chain holds."""
    path = tmp_path / "s.db"
    BlockingStore(path).close()
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.split() == ["finished"]
    with BlockingStore(path) as store:
        assert [row[0] for row in store.db.execute("SELECT id FROM checks")] == ["finished"]
        assert store.db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 2
        assert store.load_state("m").checks == 1
        assert chain_of(store) == (2, None)


def test_a_check_asked_for_as_the_store_closes_is_recorded_before_it_closes(tmp_path: Path) -> None:
    """A check asked for in the same turn of the event loop as close() is written first, on the store's own
    connection: it is there afterwards, and the closed store leaves no write-ahead log behind."""
    import asyncio

    from fpwatch.store import open_sqlite

    path = tmp_path / "s.db"
    obs = [observation(0)]

    async def scenario() -> None:
        store = await open_sqlite(path)
        check = CheckRecord("c1", "m", T0, T0, 1, 0, None)
        task = asyncio.create_task(store.record_check(check, obs, lambda s: conclude(s, obs, POLICY, T0)))
        await asyncio.sleep(0)  # the check has asked for its write
        await store.close()
        await task

    asyncio.run(scenario())
    assert not path.with_name("s.db-wal").exists()
    with BlockingStore(path) as store:
        assert store.load_state("m").checks == 1 and chain_of(store) == (1, None)
