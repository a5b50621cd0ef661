"""The hash chain over observations: a documented contract (README "The hash chain"), the same on every backend.

Observations are append-only; each row's
    hash = sha256("fpwatch-obs-v1\\n" + previous hash + "\\n" + canonical JSON of the row)
where the canonical JSON has sorted keys, no spaces, and the output replaced by its sha256
(`output_sha256`), so raw outputs can be pruned after the retention period without breaking the
chain. The first row's previous hash is 64 zeros. `fpwatch export` carries `prev_hash` and `hash`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from fpwatch.detect.observation import Observation

GENESIS = "0" * 64
HASH_TAG = "fpwatch-obs-v1"
_COVERED = (set(Observation.__dataclass_fields__) - {"output"}) | {"output_sha256", "check_id"}


def canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{HASH_TAG}\n{prev}\n{canonical(row)}".encode()).hexdigest()


def output_digest(output: str | None) -> str | None:
    return hashlib.sha256(output.encode()).hexdigest() if output is not None else None


def hashed_fields(obs: Observation, check_id: str) -> dict[str, Any]:
    """The fields of an observation the chain covers (the output by its digest)."""
    row = obs.to_dict()
    row["output_sha256"] = output_digest(row.pop("output"))
    row["check_id"] = check_id
    return row


def row_fields(item: dict[str, Any]) -> dict[str, Any]:
    """Rebuild, from an exported or stored row, the exact fields its hash covers."""
    return {k: item.get(k) for k in _COVERED}


def verify(rows: Iterable[dict[str, Any]]) -> tuple[int, int | None]:
    """Walk rows in export form, oldest first: (rows that hold, id of the first broken row or None)."""
    prev, count = GENESIS, 0
    for item in rows:
        if item["prev_hash"] != prev or chain_hash(prev, row_fields(item)) != item["hash"]:
            return count, item["id"]
        if item["output"] is not None and output_digest(item["output"]) != item["output_sha256"]:
            return count, item["id"]
        prev = item["hash"]
        count += 1
    return count, None
