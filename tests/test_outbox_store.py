"""The outbox's semantics in the store, on both backends: alerts tied to one message, reminders queued once,
messages claimed once under leases that name their owner, and a finished message never rewritten."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from datetime import UTC, datetime, timedelta

from conftest import Backend, BlockingStore

from fpwatch.clock import iso
from fpwatch.store import open_store

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=2)


def alerts(store: BlockingStore, n: int, notifier: str = "n") -> None:
    """n events (as an earlier check left them), each queued for `notifier`."""
    for i in range(1, n + 1):
        store.db.execute(
            "INSERT INTO events (id, time, model, type, severity, summary, details) "
            "VALUES (?, ?, 'm', 'model.down', 'warning', 's', '{}')",
            (i, iso(NOW)),
        )
        store.db.execute("INSERT INTO alerts (event_id, notifier, created) VALUES (?, ?, ?)", (i, notifier, iso(NOW)))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_alerts_go_into_one_message_and_a_second_composer_finds_them_taken(backend: Backend) -> None:
    """compose_message ties free alerts to a new message; asked again for any of them, it writes nothing."""
    with BlockingStore(backend.state()) as store:
        alerts(store, 3)
        assert [event_id for event_id, _ in store.pending_alerts("n")] == [1, 2, 3]
        first = store.compose_message("n", [1, 2], "t", "b", "warning", NOW)
        assert first is not None and store.compose_message("n", [2, 3], "t", "b", "warning", NOW) is None
        assert [event_id for event_id, _ in store.pending_alerts("n")] == [3]
        assert store.notifier_status("n")["pending_messages"] == 1 and store.notifier_status("n")["queued_alerts"] == 1


def test_a_lease_is_taken_over_when_its_owner_died_or_its_time_ran_out(backend: Backend) -> None:
    """A live lease is left alone (this process's too); one whose owner on this host has died is taken at once; one
    owned on another host (assumed alive) only when it runs out."""
    with BlockingStore(backend.state()) as store:
        alerts(store, 1)
        message_id = store.compose_message("n", [1], "t", "b", "warning", NOW)
        claimed = store.claim_next_message("n", NOW, LEASE)
        assert claimed is not None and claimed.id == message_id
        assert store.claim_next_message("n", NOW, LEASE) is None  # ours, and live
        owner = "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?"
        store.db.execute(owner, (f"{socket.gethostname()}:{dead_pid()}", iso(NOW + LEASE), message_id))
        assert store.claim_next_message("n", NOW, LEASE) is not None  # its owner died: taken over at once
        store.db.execute(owner, ("elsewhere.example:1", iso(NOW + LEASE), message_id))
        assert store.claim_next_message("n", NOW, LEASE) is None
        assert store.claim_next_message("n", NOW + LEASE + timedelta(seconds=1), LEASE) is not None
        store.retry_message(message_id, NOW + timedelta(minutes=10), "boom")
        assert store.claim_next_message("n", NOW + LEASE * 2, LEASE) is None  # not due yet
        store.mark_delivered(message_id, NOW)
        store.expire_message(message_id, NOW, "too late")  # a finished message is never rewritten
        status = store.notifier_status("n")
        assert status["expired_messages"] == 0 and status["last_delivered"] is not None


def test_claims_made_at_once_take_each_message_once(backend: Backend) -> None:
    """Five claims at the same moment (PostgreSQL: concurrent transactions, `SKIP LOCKED`) get five different
    messages, and a sixth none."""
    state = backend.state()
    with BlockingStore(state) as store:
        alerts(store, 5)
        for i in range(1, 6):
            assert store.compose_message("n", [i], "t", "b", "warning", NOW) is not None

    async def claims() -> list[int | None]:
        store = await open_store(state)
        try:
            got = await asyncio.gather(*(store.claim_next_message("n", NOW, LEASE) for _ in range(5)))
            last = await store.claim_next_message("n", NOW, LEASE)
            return [m.id if m else None for m in (*got, last)]
        finally:
            await store.close()

    taken = asyncio.run(claims())
    assert sorted(i for i in taken[:5] if i is not None) == [1, 2, 3, 4, 5] and taken[5] is None


def test_a_reminder_is_queued_once_per_interval(backend: Backend) -> None:
    """An unacked, delivered alert is due for a reminder after `every`; adding it twice queues one message."""
    with BlockingStore(backend.state()) as store:
        alerts(store, 1)
        message_id = store.compose_message("n", [1], "t", "b", "warning", NOW)
        assert message_id is not None
        store.mark_delivered(message_id, NOW)
        every = timedelta(hours=1)
        assert store.due_reminders(["model.down"], every, NOW + timedelta(minutes=30)) == []
        later = NOW + timedelta(hours=2)
        assert store.due_reminders(["model.down"], every, later) == [(1, "n")]
        store.add_reminder(1, "n", "again", "b", "warning", later, every)
        store.add_reminder(1, "n", "again", "b", "warning", later, every)
        assert store.notifier_status("n")["pending_messages"] == 1
        assert store.due_reminders(["model.down"], every, later) == []
