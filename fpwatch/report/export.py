"""`fpwatch export`: the audit trail as JSON lines (the verifiable form) or CSV (which flattens nulls and types).

Every record has a "kind": "observation" (with `prev_hash` and `hash`, store/chain.py) or "event".
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

from fpwatch.store import Store


async def records(store: Store | None, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    """Observations oldest first, then events oldest first."""
    if store is None:
        return
    async for row in store.observation_rows(since):
        yield {"kind": "observation", **row}
    for event in await store.events(since=since):
        yield {"kind": "event", **event.to_dict()}


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
