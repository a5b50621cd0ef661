"""Several daemons on one PostgreSQL state (issue 13): each model's scheduled check taken by exactly one daemon, the
outbox's leases judged by the daemons' heartbeats, and the must-show run: three real daemons, 20 models, kills and a
server restart."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, DaemonProcess, HttpSink, RawPostgres, wait_for
from postgres import PASSWORD

from fpwatch.config.model import ModelConfig, PostgresState, ProviderConfig
from fpwatch.service.sharing import anchor, clear_of_edges, slot, turn
from fpwatch.sim import Simulator
from fpwatch.store import open_store
from fpwatch.store.leases import lease_owner

FP_A, FP_B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"
YEAR = 365 * 86400.0  # a slot so long that a test never straddles two


@pytest.fixture
def shared(postgres_server: Any, tmp_path: Path) -> PostgresState:
    state = Backend("postgresql", tmp_path, postgres_server).state()
    assert isinstance(state, PostgresState)
    return state


def test_the_slots_are_the_same_on_every_host() -> None:
    """An interval model's grid starts at an offset drawn from its name (the same on every host, spread over the
    interval across models); a cron model's slot is the cron time its run is for, even when the run is late or
    jittered, and on the cron's own time zone."""
    provider = ProviderConfig("sim", "openai-compatible", "http://127.0.0.1:1/v1")
    every = [ModelConfig(f"m{i}", provider, "x", (), interval=timedelta(minutes=1)) for i in range(200)]
    offsets = [anchor(m) for m in every]
    assert offsets == [anchor(m) for m in every] and all(0 <= o < 60 for o in offsets)
    assert min(offsets) < 10 and max(offsets) > 50  # spread, not bunched
    assert slot(every[0], datetime.now(UTC)) == (offsets[0], 60.0)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for model in every:  # a daemon's phase for the model: never within 7.5 s of the edge of its slots
        for second in range(0, 60, 3):
            phase = start + timedelta(seconds=second)
            moved = clear_of_edges(model, phase)
            assert timedelta(0) <= moved - phase <= timedelta(seconds=15)
            assert 7.5 - 1e-6 <= (moved.timestamp() - anchor(model)) % 60 <= 52.5 + 1e-6

    cron = ModelConfig("c", provider, "x", (), interval=None, cron="*/5 9-17 * * mon-fri", timezone="Europe/Berlin")
    tuesday = datetime(2026, 12, 1, 9, 7, 30, tzinfo=UTC)  # 10:07:30 in Berlin: the 10:05 run, 2.5 min late
    assert slot(cron, tuesday) == (datetime(2026, 12, 1, 9, 5, tzinfo=UTC).timestamp(), 0.0)
    assert slot(cron, tuesday.replace(minute=5, second=0)) == (tuesday.replace(minute=5, second=0).timestamp(), 0.0)


def test_each_model_is_one_live_daemons_turn_and_only_a_leavers_share_moves() -> None:
    """Rendezvous hashing: every host that sees the same daemons gives each model to the same one, the models are
    spread about evenly, and when a daemon goes only the models that were its turn move (to the others)."""
    models = [f"sim/m{i:04d}" for i in range(3000)]
    daemons = ["a:1", "b:2", "c:3"]
    before = {m: turn(m, daemons) for m in models}
    assert before == {m: turn(m, list(reversed(daemons))) for m in models}  # the order they are listed in: no matter
    shares = [list(before.values()).count(d) for d in daemons]
    assert all(900 <= share <= 1100 for share in shares), shares
    after = {m: turn(m, ["a:1", "c:3"]) for m in models}
    moved = {m for m in models if after[m] != before[m]}
    assert moved == {m for m in models if before[m] == "b:2"}


def test_another_daemons_model_is_left_alone_until_that_daemon_stops_checking_it(shared: PostgresState) -> None:
    """Two daemons alive: a model that is b's turn costs daemon a nothing in the database while b checks it (no
    claim, no read); once its last check is two intervals (plus timeout and a minute) old, as a sees when it reads
    the state again, a claims it and checks it (b beats but does not check it: stuck, or its config lacks it)."""
    from dataclasses import replace as changed

    from test_store import POLICY, observation

    from fpwatch.detect.conclude import conclude
    from fpwatch.service.sharing import REREAD_AFTER, Sharing
    from fpwatch.store import CheckRecord

    async def go() -> None:
        store = await open_store(shared)
        try:
            now = datetime.now(UTC)
            a, b = Sharing(store, now, "a:1"), Sharing(store, now, "b:2")  # type: ignore[arg-type]
            await a.beat(1)
            await b.beat(1)
            await a.beat(1)
            assert a.live == b.live == {"a:1", "b:2"}
            provider = ProviderConfig("sim", "openai-compatible", "http://127.0.0.1:1/v1")
            name = next(f"sim/m{i}" for i in range(100) if turn(f"sim/m{i}", a.live) == "b:2")
            model = ModelConfig(name, provider, "x", (), interval=timedelta(minutes=1))
            states: dict[str, Any] = {}
            assert not await a.take(model, now, states) and states == {}
            assert name not in await store.claims()  # type: ignore[attr-defined]
            obs = [changed(observation(0), model=name)]
            checked = now - timedelta(minutes=5)  # b's last check of it (the slot is the server's: left unclaimed)
            record = CheckRecord("c1", name, checked, checked, 1, 0, None)
            await store.record_check(record, obs, lambda s: conclude(s, obs, POLICY, checked))
            later = now + REREAD_AFTER + timedelta(seconds=1)  # a reads the state again, finds it overdue, claims
            assert await a.take(model, later, states)
            assert states[name].last_check == checked
            assert (await store.claims())[name].owner == "a:1"  # type: ignore[attr-defined]
        finally:
            await store.close()

    asyncio.run(go())


def test_each_slot_is_taken_by_exactly_one_claimer(shared: PostgresState) -> None:
    """Twenty claims at once from two stores (two daemons' pools): one wins the slot; the same slot is not given
    again, a later one is, and an earlier one never (a daemon whose config lags must not re-check)."""

    async def go() -> None:
        a, b = await open_store(shared), await open_store(shared)
        try:
            won = await asyncio.gather(*[(a, b)[i % 2].claim_check("m", f"d{i}", 0.0, YEAR) for i in range(20)])  # type: ignore[attr-defined]
            assert sum(won) == 1
            winner = f"d{won.index(True)}"
            assert (await a.claims())["m"].owner == winner  # type: ignore[attr-defined]
            assert not await b.claim_check("m", "late", 0.0, YEAR)  # type: ignore[attr-defined]
            this_slot = time.time() // YEAR * YEAR
            assert await a.claim_check("m", "next", this_slot + YEAR, 0.0)  # type: ignore[attr-defined]
            assert not await b.claim_check("m", "earlier", this_slot, 0.0)  # type: ignore[attr-defined]
            assert await b.claim_check("other", "first", this_slot, 0.0)  # type: ignore[attr-defined]
            claims = await b.claims()  # type: ignore[attr-defined]
            assert {m: c.owner for m, c in claims.items()} == {"m": "next", "other": "first"}
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_outbox_leases_follow_the_daemons_heartbeats(shared: PostgresState) -> None:
    """A message leased by a live daemon is left alone even where its pid means nothing here (another container with
    this hostname); one leased by a daemon whose heartbeat stopped is taken at once, not when its lease ends; a daemon
    that leaves frees its leases and is no longer listed."""
    here, elsewhere = f"{socket.gethostname()}:{2**22 + 7}", "elsewhere:7"  # a pid that runs nowhere here

    async def go() -> None:
        store = await open_store(shared)
        raw = RawPostgres(shared)
        try:
            now = datetime.now(UTC)
            for name in (here, elsewhere):
                await store.heartbeat(name, "0.1.0", now, 3)  # type: ignore[attr-defined]
            ids = [await store.compose_message("hook", [], f"t{i}", "b", "info", now) for i in (1, 2)]
            until = (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            raw.execute("UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id = ?", (until, here, ids[0]))
            raw.execute("UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id = ?", (until, elsewhere, ids[1]))
            assert await store.claim_next_message("hook", now, timedelta(minutes=2)) is None  # both alive

            raw.execute("UPDATE instances SET heartbeat = now() - interval '1 minute' WHERE name = ?", (elsewhere,))
            alive = {i.name: i.alive for i in await store.instances()}  # type: ignore[attr-defined]
            assert alive == {here: True, elsewhere: False}
            taken = await store.claim_next_message("hook", now, timedelta(minutes=2))
            assert taken is not None and taken.id == ids[1]
            owner = raw.execute("SELECT lease_owner FROM outbox WHERE id = ?", (ids[1],)).fetchone()[0]
            assert owner == lease_owner()

            await store.leave(here)  # type: ignore[attr-defined]
            assert [i.name for i in await store.instances()] == [elsewhere]  # type: ignore[attr-defined]
            freed = await store.claim_next_message("hook", now, timedelta(minutes=2))
            assert freed is not None and freed.id == ids[0]
        finally:
            raw.close()
            await store.close()

    asyncio.run(go())


# --- the must-show run --------------------------------------------------------------------------------------------

MODELS = [f"m{i:02d}" for i in range(20)]
INTERVAL = 2.0


class Member(DaemonProcess):
    """One of the daemons: its own folder, config and port; the shared database."""

    def __init__(self, tmp_path: Path, sim: Simulator, url: str, sink: HttpSink) -> None:
        tmp_path.mkdir()
        super().__init__(tmp_path, sim)
        (tmp_path / "pg.pw").write_text(PASSWORD + "\n")
        models = "".join(f'\n[[models]]\nprovider = "sim"\nmodel = "{m}"\ncanaries = ["probe"]\n' for m in MODELS)
        self.config.write_text(
            f"""
[fpwatch]
state = "{url}"
state_password_file = "pg.pw"
log_format = "json"
listen = "127.0.0.1:{self.port}"

[defaults]
interval = "{INTERVAL:g}s"
jitter = "0"
learning_period = 2
grace_period = "2s"
timeout = "10s"

[discovery]
budget = 0

[alerts]
group_wait = "0s"

[providers.sim]
type = "openai-compatible"
base_url = "{sim.base_url}"
{models}
[canaries.probe]
prompt = "Reply in one token. 1+1="
max_tokens = 2
samples = 1

[[notify]]
name = "hook"
url = "json://{sink.base}/hook"
"""
        )

    @property
    def name(self) -> str:
        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"

    def status(self) -> dict[str, Any]:
        return dict(self.cli("status"))


def test_three_daemons_share_twenty_models(tmp_path: Path, postgres_server: Any, shared: PostgresState) -> None:
    """Three daemons, 20 models every 2 s, one PostgreSQL: the provider sees one daemon's worth of requests; a
    fingerprint change on every model reaches the webhook once per model; `kill -9` of two daemons and a server
    restart leave the third checking every model; `export --verify` passes after."""
    sink = HttpSink()
    with Simulator(seed=11) as sim:
        sim.set_scenario({"models": {"*": {"fingerprints": {FP_A: 1}}}})
        members = [Member(tmp_path / f"d{i}", sim, shared.url, sink) for i in range(3)]
        try:
            _share(members, sim, sink, postgres_server)
        finally:
            sink.close()
            for member in members:
                if member.proc is not None and member.proc.poll() is None:
                    member.proc.kill()
                    member.proc.wait()
    logs = "".join(m.log.read_text() for m in members)
    assert PASSWORD not in logs


def _share(members: list[Member], sim: Simulator, sink: HttpSink, server: Any) -> None:
    for member in members:
        member.start()
    first = members[0]

    def checked(least: int) -> bool:
        return all(m["checks"] >= least for m in first.status()["models"])

    wait_for(lambda: checked(3), 60, "every model learnt")
    status = first.status()
    assert {i["name"] for i in status["instances"] if i["alive"]} == {m.name for m in members}
    owners = {m["checked_by"] for m in status["models"]}
    assert owners <= {m.name for m in members} and len(owners) >= 2  # the models are split, not all on one

    def gauges_where_checked() -> bool:  # each model's gauges on one daemon, the one that checks it
        checked_by = {m["name"]: m["checked_by"] for m in first.status()["models"]}
        shown = {member.name: member.metrics() for member in members}
        return all(
            [name for name, gauges in shown.items() if gauges.get(f"fpwatch_model_up{{model={model}}}") == 1] == [by]
            for model, by in checked_by.items()
        )

    wait_for(gauges_where_checked, 30, "each model's gauges on the daemon that checks it")

    # One daemon's worth of requests: every model once per interval (three daemons each checking would be 3x).
    sim.clear_requests()
    window = 12.0
    time.sleep(window)
    expected = len(MODELS) * window / INTERVAL
    seen = len(sim.requests())
    assert 0.6 * expected <= seen <= 1.4 * expected, (seen, expected)

    sim.update_model("*", {"fingerprints": {FP_B: 1}})

    def changed() -> list[dict[str, Any]]:
        events = first.cli("events", "--type", "fingerprint.changed")
        return list(events) if len(events) >= len(MODELS) else []

    events = wait_for(changed, 60, "a fingerprint change on every model")
    assert sorted(e["model"] for e in events) == sorted(f"sim/{m}" for m in MODELS)  # once each, not once per daemon

    def delivered() -> str | None:
        text = json.dumps(sink.to("/hook"))
        return text if all(text.count(f"sim/{m}") >= 1 for m in MODELS) else None

    wait_for(delivered, 60, "every change at the webhook")
    time.sleep(3)  # would a second daemon send them again?
    bodies = [json.dumps(payload) for payload in sink.to("/hook")]
    for model in MODELS:
        mentions = [b for b in bodies if f"sim/{model}" in b and FP_B in b]
        assert len(mentions) == 1, (model, mentions)

    # Two daemons killed, the server restarted: the third takes every model over and keeps checking.
    for member in members[:2]:
        assert member.proc is not None
        member.proc.send_signal(signal.SIGKILL)
        member.proc.wait()
    server.restart()
    third = members[2]
    wait_for(third.healthy, 60, "the third daemon healthy after the restart")
    before = {m["name"]: m["checks"] for m in third.status()["models"]}

    def taken_over() -> bool:
        models = third.status()["models"]
        return all(m["checks"] >= before[m["name"]] + 2 and m["checked_by"] == third.name for m in models)

    wait_for(taken_over, 90, "the third daemon checking every model")  # once the others' heartbeats are 30 s old

    def alone() -> bool:  # the killed daemons' heartbeats have stopped: listed as gone once their TTL passes
        return [i["name"] for i in third.status()["instances"] if i["alive"]] == [third.name]

    wait_for(alone, 60, "the killed daemons listed as gone")
    assert third.stop() == 0
    verified = third.command("export", "--verify")
    assert verified.returncode == 0, verified.stderr
