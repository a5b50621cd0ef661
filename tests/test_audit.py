"""The audit trail as a tamperer meets it: real `fpwatch check` runs, then the database edited with sqlite3 directly,
then `fpwatch export --verify [--head HASH]`. One chain through observations, events and acks; heads published in
notifications and `status --json`; a keyed (HMAC) mode; databases from before the chain covered events."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, BlockingStore, Cli, HttpSink, raw_connection
from test_store import T0, observation, record

from fpwatch.config.model import Secret
from fpwatch.errors import StateError
from fpwatch.sim import Simulator
from fpwatch.store import chain

FP_A, FP_B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"
KEY = "audit-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FIXTURE = Path(__file__).parent / "fixtures/state/audit_v6.sql"
TAGS = {"observation": "fpwatch-obs-v1", "event": "fpwatch-event-v1", "ack": "fpwatch-ack-v1"}
TAGS["mode"] = "fpwatch-mode-v1"  # the switch to keyed mode
UPGRADED = "fpwatch was upgraded (audit chain v2): restart every fpwatch process that uses this database"


# --- the contract, written again from the README (not imported from fpwatch)


def contract_hash(kind: str, prev: str, fields: dict[str, Any], key: bytes | None = None) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = f"{TAGS[kind]}\n{prev}\n{canonical}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest() if key else hashlib.sha256(message).hexdigest()


def observation_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("kind", "id", "seq", "output", "prev_hash", "hash")}


Contract = tuple[int, str, dict[str, Any], str, str, int]


def contract_links(records: list[dict[str, Any]]) -> list[Contract]:
    """(seq, kind, covered fields, prev_hash, hash, row id) of every link in an export, in chain order."""
    links = []
    for r in records:
        if r["kind"] == "observation":
            links.append((r["seq"], "observation", observation_fields(r), r["prev_hash"], r["hash"], r["id"]))
        elif r["kind"] == "mode":
            fields = {"from_row": r["from_row"], "key_id": r["key_id"], "set_at": r["set_at"]}
            links.append((r["seq"], "mode", fields, r["prev_hash"], r["hash"], r["from_row"]))
        else:
            covered = ("id", "time", "model", "type", "severity", "summary", "details", "check_id")
            links.append((r["seq"], "event", {k: r[k] for k in covered}, r["prev_hash"], r["hash"], r["id"]))
            for a in r["acks"]:
                fields = {"event_id": r["id"], "time": a["time"], "comment": a["comment"]}
                links.append((a["seq"], "ack", fields, a["prev_hash"], a["hash"], a["id"]))
    return sorted(links, key=lambda link: link[0])


def recompute(records: list[dict[str, Any]], key: bytes | None = None) -> int:
    """Walk an export by the documented contract, HMACs from its switch to keyed mode on; return how many links it
    has (all must hold)."""
    prev, keyed = "0" * 64, False
    links = contract_links(records)
    for position, (seq, kind, fields, prev_hash, digest, _) in enumerate(links, 1):
        keyed = keyed or kind == "mode"
        assert seq == position and prev_hash == prev
        assert kind != "mode" or fields["from_row"] == seq
        assert digest == contract_hash(kind, prev, fields, key if keyed else None), (seq, kind)
        prev = digest
    return len(links)


# --- helpers


def state_db(cli: Cli) -> Any:
    """The tamperer's own connection to the state (SQLite's `?` placeholders on either backend)."""
    return raw_connection(cli.state)


def published(cli: Cli) -> dict[str, Any]:
    result = cli("status", "--json")
    assert result.code == 0, result.stderr
    audit: dict[str, Any] = result.json()["audit"]
    return audit


def exported(cli: Cli) -> list[dict[str, Any]]:
    result = cli("export")
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def use_key(cli: Cli, key: str | None = KEY) -> None:
    """Set (or, with None, drop) `[fpwatch] audit_key_file` in the config the Cli wrote."""
    text = re.sub(r'audit_key_file = ".*"\n', "", cli.config.read_text())
    if key is not None:
        (cli.tmp_path / "audit.key").write_text(key + "\n")
        text = text.replace('log_format = "json"\n', 'log_format = "json"\naudit_key_file = "audit.key"\n', 1)
    cli.config.write_text(text)


def two_checks(cli: Cli, sim: Simulator) -> None:
    """The baseline (fp A: two info events), then fp B (fingerprint.changed)."""
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 1


def rewrite_as_plain(cli: Cli) -> int:
    """What a tamperer without the key can do: re-link every observation, event and ack as plain sha256, in chain
    order and numbered from 1, leaving the switch to keyed mode out; returns how many rows that makes."""
    links = [link for link in contract_links(exported(cli)) if link[1] != "mode"]
    tables = {"observation": "observations", "event": "events", "ack": "acks"}
    db, prev = state_db(cli), "0" * 64
    for seq, (_, kind, fields, _, _, row_id) in enumerate(links, 1):
        digest = contract_hash(kind, prev, fields)
        relink = f"UPDATE {tables[kind]} SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?"
        db.execute(relink, (seq, prev, digest, row_id))
        prev = digest
    db.close()
    return len(links)


def broken(cli: Cli) -> str:
    """`export --verify` on a tampered database: exit 1, one Error line on stderr, which is returned."""
    result = cli("export", "--verify")
    assert result.code == 1 and result.stdout == "", result.stdout
    (line,) = result.stderr.splitlines()
    return line


# --- a cut tail, and the head that shows it


def test_rows_cut_from_the_end_fail_against_the_head_published_before(cli: Cli, sim: Simulator) -> None:
    """Deleting the newest check leaves a chain that verifies on its own; `export --verify --head` with the head
    `status --json` published before the cut fails and says so, and still does after fpwatch writes on."""
    cli.write()
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    for _ in range(3):
        assert cli("check").code == 0
    before = published(cli)
    db = state_db(cli)
    (last,) = db.execute("SELECT check_id FROM observations ORDER BY id DESC LIMIT 1").fetchone()
    cut = db.execute("SELECT COUNT(*) FROM observations WHERE check_id = ?", (last,)).fetchone()[0]
    cut += db.execute("SELECT COUNT(*) FROM events WHERE check_id = ?", (last,)).fetchone()[0]
    for sql in ("DELETE FROM observations WHERE check_id = ?", "DELETE FROM events WHERE check_id = ?"):
        db.execute(sql, (last,))
    db.execute("DELETE FROM checks WHERE id = ?", (last,))
    db.close()
    assert cli("export", "--verify").code == 0  # a clean cut: nothing in the database itself shows it
    result = cli("export", "--verify", "--head", before["head"])
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.startswith(
        f"Error: the chain does not contain head {before['head']}: rows after it were removed or rewritten "
        f"(the chain now ends at row {before['rows'] - cut}, head "
    )
    assert cli("check").code == 0  # fpwatch writes on from the cut...
    again = cli("export", "--verify", "--head", before["head"][:16])
    assert again.code == 1 and "does not contain head" in again.stderr  # ...which does not hide it


def test_a_published_head_is_found_and_the_rows_after_it_counted(cli: Cli, sim: Simulator) -> None:
    """`status --json` publishes the head (hash, rows, mode); `--head` takes it whole or as the 16 hex digits
    notifications publish and says how many rows follow it; a head shorter than 16 digits (a 48-bit prefix a forged
    tail could be ground to), or --head without --verify, is a usage error."""
    cli.write()
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1}})
    assert cli("check").code == 0
    first = published(cli)
    assert re.fullmatch(r"[0-9a-f]{64}", first["head"]) and first["mode"] == "plain" and first["keyed_from"] is None
    assert first["rows"] == 3 + 2  # three observations, fingerprint.first_seen, model.first_seen
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 1
    now = published(cli)
    assert now["rows"] == first["rows"] + 3 + 1  # three more observations, fingerprint.changed
    for head in (first["head"], first["head"][:16].upper()):
        found = cli("export", "--verify", "--head", head)
        assert found.code == 0, found.stderr
        assert found.stdout.strip() == (
            f"chain OK: 6 observations; head {head.lower()[:16]} is row {first['rows']} of {now['rows']}: "
            "4 rows follow it"
        )
    newest = cli("export", "--verify", "--head", now["head"])
    assert newest.code == 0 and newest.stdout.strip().endswith(
        f"is row {now['rows']} of {now['rows']}: 0 rows follow it"
    )
    assert f"audit head: {now['head'][:16]} (row {now['rows']})" in cli("status").stdout
    for short in (first["head"][:12], first["head"][:15]):
        refused = cli("export", "--verify", "--head", short)
        assert refused.code == 1 and "at least 16 hex digits" in refused.stderr, refused.stderr
    alone = cli("export", "--head", first["head"])
    assert alone.code == 1 and "--head goes with --verify" in alone.stderr
    unknown = cli("export", "--verify", "--head", "f" * 16)
    assert unknown.code == 1 and unknown.stderr.startswith(f"Error: the chain does not contain head {'f' * 16}")


# --- events and acks are in the chain


def test_an_edited_or_smuggled_event_breaks_the_chain(backend_cli: Cli, sim: Simulator) -> None:
    """Editing an event's summary or details, or inserting an event by hand, fails `export --verify` at that
    event; putting the original back makes the chain whole again. (On both backends.)"""
    cli = backend_cli
    cli.write()
    two_checks(cli, sim)
    db = state_db(cli)
    event_id, summary, details = db.execute(
        "SELECT id, summary, details FROM events WHERE type = 'fingerprint.changed'"
    ).fetchone()
    db.execute("UPDATE events SET summary = 'sim/gpt-4o: nothing to see' WHERE id = ?", (event_id,))
    assert broken(cli) == (  # before it: 3 observations, 2 first_seen events, 3 observations
        f"Error: hash chain broken at event {event_id} (after 8 good rows): its content does not match its hash"
    )
    db.execute("UPDATE events SET summary = ? WHERE id = ?", (summary, event_id))
    assert cli("export", "--verify").code == 0
    forged = json.loads(details) | {"new": FP_A}
    db.execute("UPDATE events SET details = ? WHERE id = ?", (json.dumps(forged, sort_keys=True), event_id))
    assert broken(cli).startswith(f"Error: hash chain broken at event {event_id} (after 8 good rows)")
    db.execute("UPDATE events SET details = ? WHERE id = ?", (details, event_id))
    assert cli("export", "--verify").code == 0
    db.execute(
        "INSERT INTO events (id, time, model, type, severity, summary, details) VALUES (100, "
        "'2026-01-01T00:00:00Z', 'sim/gpt-4o', 'model.recovered', 'info', 'sim/gpt-4o: recovered', '{}')"
    )
    smuggled = db.execute("SELECT MAX(id) FROM events").fetchone()[0]
    db.close()
    assert broken(cli) == (
        f"Error: hash chain broken at event {smuggled} (after 0 good rows): "
        "it is not in the chain (no position or hash)"
    )


def test_an_edited_or_removed_acknowledgement_breaks_the_chain(backend_cli: Cli, sim: Simulator) -> None:
    """An ack is a link of its own: editing its comment (in the acks table, or the copy on the event that
    `events` shows) or erasing it from the event fails `export --verify`; the export recomputes by the contract.
    (On both backends.)"""
    cli = backend_cli
    cli.write()
    two_checks(cli, sim)
    (changed,) = cli("events", "--severity", "warning", "--json").json()
    assert cli("ack", str(changed["id"]), "--comment", "planned rollout").code == 0
    db = state_db(cli)
    (acked_at,) = db.execute("SELECT acked_at FROM events WHERE id = ?", (changed["id"],)).fetchone()
    db.execute("UPDATE events SET ack_comment = 'nobody saw this' WHERE id = ?", (changed["id"],))
    assert broken(cli) == (  # the links all hold; the event (row 9) shows another comment than its ack (row 10)
        f"Error: hash chain broken at event {changed['id']} (after 8 good rows): "
        "its acknowledgement is not the one the chain records"
    )
    db.execute("UPDATE events SET acked_at = NULL, ack_comment = NULL WHERE id = ?", (changed["id"],))
    assert "its acknowledgement is not the one the chain records" in broken(cli)
    restore = "UPDATE events SET acked_at = ?, ack_comment = 'planned rollout' WHERE id = ?"
    db.execute(restore, (acked_at, changed["id"]))
    assert cli("export", "--verify").code == 0
    records = exported(cli)
    assert recompute(records) == published(cli)["rows"] == 6 + 3 + 1
    offline = chain.verify(chain.links_of(records), chain.Mode(), None)  # an export checks without the database
    assert offline.ok and offline.rows == 10
    assert offline.counts == {"observation": 6, "event": 3, "ack": 1, "mode": 0}
    (event,) = [r for r in records if r["kind"] == "event" and r["id"] == changed["id"]]
    (ack,) = event["acks"]
    assert ack["comment"] == "planned rollout" and ack["time"] == acked_at == event["acked_at"]
    db.execute("UPDATE acks SET comment = 'nobody saw this'")
    db.execute("UPDATE events SET ack_comment = 'nobody saw this'")
    assert broken(cli) == (
        f"Error: hash chain broken at ack {ack['id']} (after {ack['seq'] - 1} good rows): "
        "its content does not match its hash"
    )
    db.close()


# --- keyed mode


def test_a_forged_observation_with_a_recomputed_hash_fails_in_keyed_mode(backend_cli: Cli, sim: Simulator) -> None:
    """With `audit_key_file`, every row is an HMAC: an observation appended with a correctly recomputed plain
    hash fails `export --verify`; without the key fpwatch neither verifies nor writes the chain, and says why.
    (On both backends.)"""
    cli = backend_cli
    cli.write()
    use_key(cli)
    two_checks(cli, sim)
    head = published(cli)
    assert head["mode"] == "keyed" and head["keyed_from"] == 1  # row 1: the switch to keyed mode itself
    records = exported(cli)
    (switch,) = [r for r in records if r["kind"] == "mode"]
    assert recompute(records, KEY.encode()) == head["rows"] == 1 + 6 + 3
    links = chain.links_of(records)
    assert chain.verify(links, chain.mode_of(links), KEY.encode()).ok  # the export verifies offline
    assert cli("export", "--verify").stdout.strip() == (
        f"chain OK: 6 observations, keyed from row 1 (since {switch['set_at']})"
    )
    db = state_db(cli)
    cursor = db.execute("SELECT * FROM observations ORDER BY id DESC LIMIT 1")
    row = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    forged = row | {"id": row["id"] + 1, "seq": head["rows"] + 1, "system_fingerprint": FP_A, "prev_hash": head["head"]}
    fields = observation_fields(forged | {"ok": bool(forged["ok"]), "first_token": json.loads(forged["first_token"])})
    forged["hash"] = contract_hash("observation", head["head"], fields)  # what plain mode would accept
    db.execute(
        f"INSERT INTO observations ({', '.join(forged)}) VALUES ({', '.join('?' * len(forged))})", list(forged.values())
    )
    db.close()
    assert broken(cli) == (
        f"Error: hash chain broken at observation {forged['id']} (after {head['rows']} good rows): "
        "its content does not match its HMAC (keyed row)"
    )
    use_key(cli, None)
    unkeyed = cli("export", "--verify")
    assert unkeyed.code == 1 and unkeyed.stderr.strip() == (
        f"Error: the audit chain of {cli.state} is keyed (an HMAC from row 1 on): "
        "set [fpwatch] audit_key_file to its key"
    )
    refused = cli("check")
    assert refused.code == 3 and "is keyed (an HMAC from row 1 on)" in refused.stdout + refused.stderr
    use_key(cli, "another-key-of-enough-characters-1234")
    wrong = cli("export", "--verify")
    assert wrong.code == 1 and "is not the one the chain of" in wrong.stderr


def test_a_chain_switched_from_plain_to_keyed_verifies_as_such(backend: Backend) -> None:
    """A plain chain given a key turns keyed from its next row: the rows before stay plain and verify so, the
    rows after are HMACs; a keyed chain with its keyed rows and its mode record removed is refused with the key.
    (On both backends.)"""
    path = backend.state()
    with BlockingStore(path) as store:
        record(store, 0, [observation(0), observation(1)])
        plain = store.chain_head()
    assert plain.mode == "plain" and plain.rows == 4  # two observations, two first_seen events
    key = Secret(KEY)
    with BlockingStore(path, audit_key=key) as store:
        assert store.chain_head().keyed_from == plain.rows + 1
        record(store, 1, [observation(2, "fp_b000000000"), observation(3)])
        store.ack(store.events()[-1].id, "seen", T0)
        keyed = store.chain_head()
        audit = store.verify_audit(keyed.hash)
        assert audit.ok and audit.found == (keyed.rows,) and keyed.mode == "keyed"
    with BlockingStore(path, readonly=True, audit_key=key) as store:
        assert store.verify_audit().rows == keyed.rows
    with pytest.raises(StateError, match=r"is keyed \(an HMAC from row 5 on\)"):
        BlockingStore(path)  # a writer without the key would break the chain: refused at open
    with (
        BlockingStore(path, readonly=True) as store,
        pytest.raises(StateError, match="set \\[fpwatch\\] audit_key_file"),
    ):
        store.verify_audit()
    db = raw_connection(path)
    for table in ("observations", "events", "acks"):
        db.execute(f"DELETE FROM {table} WHERE seq > ?", (plain.rows,))
    db.execute("DELETE FROM audit_mode")
    db.close()
    with BlockingStore(path, readonly=True, audit_key=key) as store, pytest.raises(StateError, match="no keyed part"):
        store.verify_audit()


def test_a_chain_rewritten_as_plain_with_its_switch_moved_past_it_fails_with_the_key(cli: Cli, sim: Simulator) -> None:
    """A tamperer without the key edits an event, re-links every row as plain sha256 and moves the record of the
    switch to keyed mode past them (`from_row` = last + 1): `export --verify` with the key fails at the switch,
    which is a keyed link of the chain, and still does after fpwatch writes on with the key."""
    cli.write()
    use_key(cli)
    two_checks(cli, sim)
    db = state_db(cli)
    db.execute("UPDATE events SET summary = 'sim/gpt-4o: nothing to see' WHERE type = 'fingerprint.changed'")
    rows = rewrite_as_plain(cli)
    db.execute("UPDATE audit_mode SET from_row = ?", (rows + 1,))
    assert broken(cli) == (
        f"Error: hash chain broken at the switch to keyed mode (after {rows} good rows): it does not follow row {rows}"
    )
    (head,) = db.execute("SELECT hash FROM events WHERE seq = ?", (rows,)).fetchone()
    db.execute("UPDATE audit_mode SET prev_hash = ?", (head,))  # made to follow: its HMAC covers what it follows
    assert broken(cli) == (
        f"Error: hash chain broken at the switch to keyed mode (after {rows} good rows): "
        "its content does not match its HMAC (keyed row)"
    )
    db.close()
    assert cli("check").code == 0  # a writer with the key appends after it...
    assert "hash chain broken at the switch to keyed mode" in broken(cli)  # ...which does not bless it


def test_a_mode_record_pointing_past_the_chain_fails_an_offline_verify_with_the_key(cli: Cli, sim: Simulator) -> None:
    """Verifying an export with the key against a mode record whose keyed part begins after the chain's last row
    fails: a keyed part can never begin past the end (rows were removed or the record was edited)."""
    cli.write()
    two_checks(cli, sim)
    links = chain.links_of(exported(cli))
    past = chain.Mode(len(links) + 1, chain.key_id(KEY.encode()))
    audit = chain.verify(links, past, KEY.encode())
    assert not audit.ok and audit.problem == (
        f"the chain ends at row {len(links)} without its switch to keyed mode, recorded at row {len(links) + 1}: "
        "rows were removed or the mode record was edited"
    )


def test_a_keyed_chain_whose_switch_was_removed_is_refused_and_a_rekeying_is_said(cli: Cli, sim: Simulator) -> None:
    """The switch to keyed mode deleted and every row re-linked as plain: `export --verify` with the key refuses,
    without suggesting a write that would key it again; the next writer with the key does switch it (that is also
    how a key is added to an install), but warns, and verify then names the new, later switch point."""
    cli.write()
    use_key(cli)
    two_checks(cli, sim)
    rows = rewrite_as_plain(cli)
    db = state_db(cli)
    db.execute("DELETE FROM audit_mode")
    db.close()
    path = cli.tmp_path / "state.db"
    refused = cli("export", "--verify")
    assert refused.code == 1 and refused.stderr.strip() == (
        f"Error: the audit chain of {path} has no keyed part although an audit key is set: if it was keyed before, "
        "rows were rewritten; compare it with a head published before (`fpwatch export --verify --head HASH`)"
    )
    assert "fpwatch check" not in refused.stderr
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    checked = cli("--debug", "check")
    assert checked.code == 0, checked.stderr
    warnings = [json.loads(line) for line in checked.stderr.splitlines() if "becomes keyed" in line]
    assert [(w["level"], w["event"]) for w in warnings] == [
        (
            "warning",
            f"the audit chain of {path} becomes keyed from row {rows + 1} on; if it was keyed before, its plain "
            "part was rewritten",
        )
    ]
    (set_at,) = state_db(cli).execute("SELECT set_at FROM audit_mode").fetchone()
    ok = cli("export", "--verify")
    assert ok.code == 0 and ok.stdout.strip() == f"chain OK: 9 observations, keyed from row {rows + 1} (since {set_at})"


# --- publishing the head


def test_every_notification_carries_the_head(cli: Cli, sim: Simulator, sink: HttpSink) -> None:
    """The message a notifier receives ends with "audit head: <16 hex> (row N)", the head after its events;
    `export --verify --head` with those 16 digits holds."""
    cli.write(extra=f'\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n')
    two_checks(cli, sim)
    (hook,) = sink.to("/hook")
    head = published(cli)
    assert hook["message"].splitlines()[-1] == f"audit head: {head['head'][:16]} (row {head['rows']})"
    result = cli("export", "--verify", "--head", head["head"][:16])
    assert result.code == 0 and result.stdout.strip().endswith("0 rows follow it")


# --- databases from before


def test_a_database_written_before_events_were_chained_upgrades_and_verifies(cli: Cli, sim: Simulator) -> None:
    """A state written by the previous fpwatch (fixtures/state/audit_v6.sql: observation-only chain, an ack kept
    on its event) migrates: its observation hashes stay, its events and the ack are chained after them, it
    verifies, fpwatch writes on, and an edit to an upgraded event is caught. The upgrade rewrites no observation
    (their seq stays empty in the database: their id is their position, and the export shows it as their seq)."""
    cli.write()
    path = cli.tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(FIXTURE.read_text())
    hashes = [h for (h,) in old.execute("SELECT hash FROM observations ORDER BY id")]
    old.close()
    BlockingStore(path).close()  # a writable open migrates
    migrated = sqlite3.connect(path)
    assert migrated.execute("SELECT COUNT(*) FROM observations WHERE seq IS NOT NULL").fetchone() == (0,)
    migrated.close()  # no observation was rewritten: one written before has its id as its position
    assert cli("export", "--verify").stdout.strip() == "chain OK: 6 observations"
    records = exported(cli)
    assert [r["hash"] for r in records if r["kind"] == "observation"] == hashes
    assert [(r["seq"], r["type"]) for r in records if r["kind"] == "event"] == [
        (7, "fingerprint.first_seen"),
        (8, "model.first_seen"),
        (9, "fingerprint.changed"),
    ]
    (acked,) = [r for r in records if r["kind"] == "event" and r["acks"]]
    assert [(a["seq"], a["comment"]) for a in acked["acks"]] == [(10, "rollout, confirmed")]
    assert recompute(records) == published(cli)["rows"] == 10
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 0
    assert (
        cli("export", "--verify", "--head", records[0]["hash"])
        .stdout.strip()
        .endswith(f"is row 1 of {published(cli)['rows']}: {published(cli)['rows'] - 1} rows follow it")
    )
    db = state_db(cli)
    db.execute("UPDATE events SET severity = 'info' WHERE id = ?", (acked["id"],))
    db.close()
    assert broken(cli).startswith(f"Error: hash chain broken at event {acked['id']} (after 8 good rows)")


def test_an_fpwatch_of_before_still_running_cannot_write_into_the_upgraded_chain(cli: Cli, sim: Simulator) -> None:
    """After the upgrade, the statements the previous fpwatch used (an observation without a position, an ack set
    on its event with no ack row) are refused by the database with a message that says what to do, so a daemon not
    restarted yet cannot break the chain; fpwatch itself writes on and the chain verifies."""
    cli.write()
    path = cli.tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(FIXTURE.read_text())
    old.close()
    BlockingStore(path).close()
    db = state_db(cli)
    # The INSERT of the previous fpwatch (`git show 99b9408:fpwatch/store/sqlite.py`), with a row of its own.
    values = db.execute(
        "SELECT check_id, time, model, canary, sample, seed, ok, system_fingerprint, fingerprint_state, "
        "response_model, output, output_sha256, finish_reason, first_token, input_tokens, output_tokens, "
        "reasoning_tokens, latency_ms, request_id, response_id, http_status, attempts, error_kind, error, hash "
        "FROM observations ORDER BY id DESC LIMIT 1"
    ).fetchone()
    with pytest.raises(sqlite3.IntegrityError, match=re.escape(UPGRADED)):
        db.execute(
            """INSERT INTO observations (check_id, time, model, canary, sample, seed, ok, system_fingerprint,
               fingerprint_state, response_model, output, output_sha256, finish_reason, first_token,
               input_tokens, output_tokens, reasoning_tokens, latency_ms, request_id, response_id,
               http_status, attempts, error_kind, error, prev_hash, hash)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (*values[:-1], values[-1], "0" * 64),
        )
    with pytest.raises(sqlite3.IntegrityError, match=re.escape(UPGRADED)):  # the previous `fpwatch ack`
        db.execute("UPDATE events SET acked_at = ?, ack_comment = ? WHERE id = ?", ("2026-12-03T00:00:00Z", "seen", 1))
    db.close()
    assert cli("export", "--verify").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {FP_B: 1}})
    assert cli("check").code == 0
    (changed,) = [e for e in cli("events", "--json").json() if e["type"] == "fingerprint.changed"]
    assert cli("ack", str(changed["id"]), "--comment", "again").code == 0
    assert cli("export", "--verify").stdout.strip() == "chain OK: 9 observations"
