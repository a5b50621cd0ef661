"""The audit chain: one hash chain through observations, events and acknowledgements. A documented contract
(README "The audit trail"): pure functions over plain values, so every backend computes it identically.

Every row that enters the audit trail is a *link*. It takes the next position `seq` (1, 2, 3, ... through all
three kinds together, in the order they were written) and

    hash = H(tag + "\\n" + prev_hash + "\\n" + canonical)

- `prev_hash`: the hash of the link at seq - 1; for seq 1, 64 zeros (GENESIS).
- `canonical`: the covered fields (below) as JSON with sorted keys and no spaces, non-ASCII kept as is,
  `json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`; the message is UTF-8.
- `H`: plain mode, `sha256(message)`; keyed mode, `HMAC-SHA256(key, message)`, the key being the UTF-8 bytes of
  the `[fpwatch] audit_key_file` secret. Lowercase hex either way.

| kind        | tag                | covered fields (their export names)                                  |
|-------------|--------------------|----------------------------------------------------------------------|
| observation | `fpwatch-obs-v1`   | every exported field but `id`, `seq`, `output`, `prev_hash`, `hash`; |
|             |                    | the output is covered by its digest, `output_sha256`                 |
| event       | `fpwatch-event-v1` | `id`, `time`, `model`, `type`, `severity`, `summary`, `check_id` and |
|             |                    | `details` (the JSON object, not its text)                            |
| ack         | `fpwatch-ack-v1`   | `event_id`, `time`, `comment`                                        |
| mode        | `fpwatch-mode-v1`  | `from_row` (its own seq), `key_id`, `set_at`                         |

One chain, not one per table: one head to publish covers the whole trail (a tail cut from any table shows
against it), and an event keeps its place after the observations that led to it.

Times are the strings as stored ("2026-11-22T20:42:48.092829Z"). The observation formula is the one fpwatch
always used (only its `prev_hash` may now be an event's or an ack's hash), so chains written before keep verifying.

Not covered, and why that is safe: `seq` (the links fix the order: a row names its predecessor; verify checks
that seq counts 1, 2, 3, ...); an event's `acked_at` / `ack_comment` (a copy of its newest ack, which verify
compares with that ack); a raw output (pruned after the retention period: its digest is covered, and an output
still kept must match it). Every ack is a row of its own, so acknowledging appends and never rewrites a link.

Modes: the chain is plain until a store with an audit key writes to it. That store first appends the *mode
link*: the switch to keyed mode, itself the first keyed link (an HMAC under the key over its position
`from_row`, `key_id(key)` and `set_at`); every link after it is keyed, those before stay plain. The database's
record of the mode is that link (SQLite: the row of `audit_mode`), so the switch point cannot be moved, nor the
record edited, without the key: the walk finds where HMACs begin in the chain itself and checks the record
against it. A chain switches once, from plain to keyed, and never back.

A writer with a key that finds a plain chain with rows in it still switches it (that is how a key is added to
an existing install), but says so at warning ("the audit chain of PATH becomes keyed from row N on; if it was
keyed before, its plain part was rewritten"), and a successful verify always names the switch ("keyed from row
N (since TIME)"): a tamperer who cut the keyed part off and rewrote the rest as plain cannot make the switch
reappear where it was.

What each mode promises, against someone who can write the database file:
- plain: an edit, insertion or deletion anywhere before the newest row breaks the chain; a tail cut off (the
  newest rows deleted, then perhaps forged ones appended with recomputed hashes) shows only against a head
  published before (`export --verify --head`). Rows after the newest head you kept can be rewritten unseen.
- keyed: the same, and from the switch on no row can be appended or rewritten so that it verifies without the
  key. Cutting off the switch and every row after it, and rewriting the rows before it as plain, leaves a chain
  that a verifier with the key refuses ("no keyed part"), until the next writer with the key switches it again
  from its new end (with the warning above, and a later switch point); only a head published before shows which
  rows were cut.
- neither protects against someone who holds the key (or, plain, anyone), can rewrite the database, and can
  also replace every copy of the published heads; nor does either keep rows from being deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fpwatch.detect.observation import Observation

GENESIS = "0" * 64
TAGS = {
    "observation": "fpwatch-obs-v1",
    "event": "fpwatch-event-v1",
    "ack": "fpwatch-ack-v1",
    "mode": "fpwatch-mode-v1",  # the switch to keyed mode
}
KINDS = tuple(TAGS)
PUBLISHED_HEX = 16  # what notifications show of the head
HEAD_MIN_HEX = PUBLISHED_HEX  # the shortest prefix `--head` takes: 64 bits, too many to grind a forged tail to
_OBSERVATION = (set(Observation.__dataclass_fields__) - {"output"}) | {"output_sha256", "check_id"}
_EVENT = ("id", "time", "model", "type", "severity", "summary", "details", "check_id")
_ACK = ("event_id", "time", "comment")
_MODE = ("from_row", "key_id", "set_at")
_HEX = re.compile(r"[0-9a-f]+")


def canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(kind: str, prev: str, fields: Mapping[str, Any], key: bytes | None = None) -> str:
    """The hash of one link: sha256 in plain mode, HMAC-SHA256 under `key` in keyed mode."""
    message = f"{TAGS[kind]}\n{prev}\n{canonical(fields)}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """What a database records of its key: names it without revealing it (16 hex of an HMAC under it)."""
    return hmac.new(key, b"fpwatch-audit-key-id-v1", hashlib.sha256).hexdigest()[:16]


def output_digest(output: str | None) -> str | None:
    return hashlib.sha256(output.encode()).hexdigest() if output is not None else None


def observation_fields(obs: Observation, check_id: str) -> dict[str, Any]:
    """The fields of a new observation the chain covers (the output by its digest)."""
    row = obs.to_dict()
    row["output_sha256"] = output_digest(row.pop("output"))
    row["check_id"] = check_id
    return row


def event_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The covered fields of an event in export form (`details` the parsed JSON object)."""
    return {k: row.get(k) for k in _EVENT}


def ack_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in _ACK}


def mode_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The covered fields of the switch to keyed mode: its own position, the key's id, when."""
    return {k: row.get(k) for k in _MODE}


# -- links: rows in export form, as the walk sees them


@dataclass(frozen=True)
class Link:
    kind: str  # observation | event | ack | mode
    id: int  # the row's id among its kind
    seq: int | None  # None: a row that is not in the chain at all
    fields: Mapping[str, Any]  # exactly what its hash covers
    prev_hash: str | None
    hash: str | None
    problem: str | None = None  # something wrong that the hash cannot see (an output that is not its digest)
    shown_ack: tuple[str | None, str | None] | None = None  # an event's (acked_at, ack_comment) as shown

    def name(self) -> str:
        return "the switch to keyed mode" if self.kind == "mode" else f"{self.kind} {self.id}"


def observation_link(row: Mapping[str, Any]) -> Link:
    """An observation in export form."""
    problem = None
    if row.get("output") is not None and output_digest(row["output"]) != row.get("output_sha256"):
        problem = "its output does not match its output_sha256"
    fields = {k: row.get(k) for k in _OBSERVATION}
    return Link("observation", row["id"], row.get("seq"), fields, row.get("prev_hash"), row.get("hash"), problem)


def event_link(row: Mapping[str, Any]) -> Link:
    """An event in export form (its `acks`, if nested, are links of their own: `links_of`)."""
    shown = (row.get("acked_at"), row.get("ack_comment"))
    fields = event_fields(row)
    return Link("event", row["id"], row.get("seq"), fields, row.get("prev_hash"), row.get("hash"), None, shown)


def ack_link(row: Mapping[str, Any]) -> Link:
    return Link("ack", row.get("id") or 0, row.get("seq"), ack_fields(row), row.get("prev_hash"), row.get("hash"))


def mode_link(row: Mapping[str, Any]) -> Link:
    """The switch to keyed mode in export form (`seq` and `from_row` both its position)."""
    seq = row.get("seq", row.get("from_row"))
    return Link("mode", row.get("from_row") or 0, seq, mode_fields(row), row.get("prev_hash"), row.get("hash"))


def links_of(records: Iterable[Mapping[str, Any]]) -> list[Link]:
    """The links of an `fpwatch export` (JSON lines, parsed), in chain order: verify an export without fpwatch's
    database (a full export: one with `--since` starts in the middle of the chain)."""
    links = []
    for record in records:
        if record.get("kind") == "observation":
            links.append(observation_link(record))
        elif record.get("kind") == "event":
            links.append(event_link(record))
            links += [ack_link({**ack, "event_id": record["id"]}) for ack in record.get("acks") or ()]
        elif record.get("kind") == "mode":
            links.append(mode_link(record))
    return sorted(links, key=lambda link: (link.seq is not None, link.seq or 0))


# -- modes, heads and the walk


@dataclass(frozen=True)
class Mode:
    """What the database records of the switch to keyed mode: the row keyed links begin at (None: plain
    throughout), the id of their key, and when."""

    keyed_from: int | None = None
    key_id: str | None = None
    set_at: str | None = None

    @property
    def name(self) -> str:
        return "plain" if self.keyed_from is None else "keyed"


def mode_of(links: Iterable[Link]) -> Mode:
    """The mode an export records: its switch to keyed mode, if it has one (to verify it offline)."""
    switch = next((link for link in links if link.kind == "mode"), None)
    if switch is None:
        return Mode()
    return Mode(switch.fields["from_row"], switch.fields["key_id"], switch.fields["set_at"])


def key_problem(mode: Mode, key: bytes | None, path: object) -> str | None:
    """Why this key cannot verify (or extend) this chain, in words; None when it can. A key given for a plain
    chain is refused too: a verifier that holds the key expects a keyed part, and its absence is what cutting the
    keyed rows off (and rewriting the rest as plain) would look like. (A writer with a key turns a plain chain
    keyed before it asks.)"""
    if mode.keyed_from is None:
        if key is not None:
            return (
                f"the audit chain of {path} has no keyed part although an audit key is set: if it was keyed "
                "before, rows were rewritten; compare it with a head published before "
                "(`fpwatch export --verify --head HASH`)"
            )
        return None
    if key is None:
        return (
            f"the audit chain of {path} is keyed (an HMAC from row {mode.keyed_from} on): set [fpwatch] "
            "audit_key_file to its key"
        )
    if key_id(key) != mode.key_id:
        return (
            f"the audit key (id {key_id(key)}) is not the one the chain of {path} was written with "
            f"(id {mode.key_id}); set [fpwatch] audit_key_file to that key"
        )
    return None


@dataclass(frozen=True)
class ChainHead:
    """The newest link: what fpwatch publishes (notifications, `status --json`, the daemon's log)."""

    hash: str | None  # None: an empty chain
    rows: int
    mode: str = "plain"
    keyed_from: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"head": self.hash, "rows": self.rows, "mode": self.mode, "keyed_from": self.keyed_from}

    def line(self) -> str:
        """ "audit head: 1a2b3c4d5e6f7a8b (row 42)": the line every notification ends with."""
        if self.hash is None:
            return "audit head: none yet (row 0)"
        keyed = ", keyed" if self.mode == "keyed" else ""
        return f"audit head: {self.hash[:PUBLISHED_HEX]} (row {self.rows}{keyed})"


def parse_head(text: str) -> str:
    """A published head as `--head` takes it: the full hash or a prefix of at least HEAD_MIN_HEX hex digits."""
    head = text.strip().lower()
    if not _HEX.fullmatch(head) or not HEAD_MIN_HEX <= len(head) <= 64:
        raise ValueError(
            f'"{text}" is not a head: give the published hash, at least {HEAD_MIN_HEX} hex digits '
            "(a notification's audit head)"
        )
    return head


@dataclass(frozen=True)
class Audit:
    """What a walk of the chain found."""

    rows: int  # links that hold, from row 1
    counts: Mapping[str, int]  # of those, per kind
    head: str | None  # the hash of the last link that holds
    broken: Link | None = None  # the first link that does not hold
    problem: str | None = None  # why the chain does not hold, in words
    found: tuple[int, ...] = field(default=())  # rows whose hash starts with the head asked for
    keyed_from: int | None = None  # the switch the walk checked: HMACs from this row on
    keyed_since: str | None = None  # and when it was made

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(links: Iterable[Link], mode: Mode, key: bytes | None, head: str | None = None) -> Audit:
    """Walk the links in seq order from row 1 (`key_problem` first: a keyed chain needs its key). Where HMACs
    begin is the chain's own: its mode link, which must be the switch `mode` records (what the database says)."""
    prev, seq = GENESIS, 0
    counts = dict.fromkeys(KINDS, 0)
    found: list[int] = []
    acks: dict[Any, tuple[Any, Any]] = {}
    shown: dict[Any, tuple[tuple[Any, Any], Link]] = {}
    switch: Link | None = None  # the chain's switch to keyed mode, once the walk has met it

    def result(rows: int, broken: Link | None = None, problem: str | None = None) -> Audit:
        return Audit(rows, counts, prev, broken, problem, tuple(found), mode.keyed_from, mode.set_at)

    for link in links:
        seq += 1
        if link.kind == "mode" and switch is not None:
            return result(seq - 1, link, f"the chain switched to keyed mode already, at row {switch.seq}")
        switch = link if link.kind == "mode" else switch
        problem = _link_problem(link, seq, prev, key, keyed=switch is not None)
        if problem is None and link is switch:
            problem = _switch_problem(link, mode)
        if problem is not None:
            return result(seq - 1, link, problem)
        counts[link.kind] += 1
        prev = link.hash or ""
        if link.kind == "ack":
            acks[link.fields["event_id"]] = (link.fields["time"], link.fields["comment"])
        elif link.kind == "event" and link.shown_ack is not None:
            shown[link.id] = (link.shown_ack, link)
        if head is not None and prev.startswith(head):
            found.append(seq)
    for event_id, (ack, link) in shown.items():
        if ack != acks.get(event_id, (None, None)):  # the links all hold; the copy shown on the event does not
            return result((link.seq or 1) - 1, link, "its acknowledgement is not the one the chain records")
    if mode.keyed_from is not None and switch is None:  # a keyed part can never begin past the chain's end
        return result(
            seq,
            None,
            f"the chain ends at row {seq} without its switch to keyed mode, recorded at row {mode.keyed_from}: "
            "rows were removed or the mode record was edited",
        )
    return result(seq)


def _link_problem(link: Link, seq: int, prev: str, key: bytes | None, *, keyed: bool) -> str | None:
    if link.seq is None or link.hash is None:
        return "it is not in the chain (no position or hash)"
    if link.seq != seq:
        return f"it is at row {link.seq} where row {seq} should be (rows were removed or reordered)"
    if link.prev_hash != prev:
        return f"it does not follow row {seq - 1}"
    if keyed and key is None:
        return "it is keyed (an HMAC): verify it with the audit key"
    if link.hash != link_hash(link.kind, prev, link.fields, key if keyed else None):
        return "its content does not match its " + ("HMAC (keyed row)" if keyed else "hash")
    return link.problem


def _switch_problem(link: Link, mode: Mode) -> str | None:
    """The switch the chain holds against the one the database records (which the store reads from it)."""
    if mode.keyed_from is None:
        return "the database records no keyed mode, but the chain switches to it here"
    fields = link.fields
    if (link.seq, fields["from_row"], fields["key_id"], fields["set_at"]) != (
        mode.keyed_from,
        mode.keyed_from,
        mode.key_id,
        mode.set_at,
    ):
        return f"it is not the switch the database records (keyed from row {mode.keyed_from})"
    return None
