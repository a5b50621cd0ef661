"""`fpwatch export`: the audit trail as JSON lines (the verifiable form) or CSV (which flattens nulls and types).

Every record has a "kind": "observation", "event" or "mode" (the switch to keyed mode, if the chain has one).
Each carries its link of the audit chain (`seq`, `prev_hash`, `hash`: store/chain.py); an event carries its
acknowledgements, each a link of its own, in `acks`. `store.chain.links_of` (and `mode_of`) turn a full export
back into the chain, to verify it without fpwatch's database.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

from fpwatch.store import Audit, Store
from fpwatch.store.chain import PUBLISHED_HEX


async def records(store: Store | None, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    """Observations oldest first, then events oldest first (each with its acks), then the switch to keyed mode."""
    if store is None:
        return
    async for row in store.observation_rows(since):
        yield {"kind": "observation", **row}
    async for row in store.event_rows(since):
        yield {"kind": "event", **row}
    async for row in store.mode_rows(since):
        yield {"kind": "mode", **row}


async def write(store: Store | None, since: datetime | None, out: TextIO, fmt: str) -> int:
    """Write the records in `fmt` ("jsonl" or "csv"); return how many."""
    count = 0
    if fmt == "jsonl":
        async for record in records(store, since):
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count
    collected = [record async for record in records(store, since)]
    columns = sorted({k for r in collected for k in r} - {"kind"})
    writer = csv.DictWriter(out, fieldnames=["kind", *columns], extrasaction="ignore")
    writer.writeheader()
    for record in collected:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in record.items()})
    return len(collected)


def verdict(audit: Audit | None, head: str | None) -> tuple[bool, str]:
    """`export --verify [--head HASH]`: (the chain holds, the line to print). `audit` None: no database yet."""
    if audit is None:
        if head is not None:
            return False, f"the chain does not contain head {head}: there is no state database (yet)"
        return True, "chain OK: 0 observations (no state database yet)"
    if not audit.ok:
        where = f" at {audit.broken.name()}" if audit.broken is not None else ""
        return False, f"hash chain broken{where} (after {audit.rows} good rows): {audit.problem}"
    line = f"chain OK: {audit.counts['observation']} observations"
    if audit.keyed_from is not None:  # always said: a switch point that moved shows here
        line += f", keyed from row {audit.keyed_from} (since {audit.keyed_since})"
    if head is None:
        return True, line
    if not audit.found:
        ends = f"row {audit.rows}, head {(audit.head or '')[:PUBLISHED_HEX]}" if audit.rows else "row 0"
        return False, (
            f"the chain does not contain head {head}: rows after it were removed or rewritten "
            f"(the chain now ends at {ends})"
        )
    if len(audit.found) > 1:
        rows = ", ".join(str(row) for row in audit.found)
        return False, f"head {head} matches rows {rows}: give more of its digits"
    row = audit.found[0]
    follow = audit.rows - row
    rows = "1 row follows it" if follow == 1 else f"{follow} rows follow it"
    return True, f"{line}; head {head[:PUBLISHED_HEX]} is row {row} of {audit.rows}: {rows}"
