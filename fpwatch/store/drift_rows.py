"""A store's drift check rows, kept parsed between loads (SQLite's `load`; PostgreSQL's store asks `kept` and
`merge` itself). A row is written once and never changed (a
changed one gets a new seq), so a load parses only the rows another write added; a row is recognised by its seq
and its stored length (a seq reused with another body is read again)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping

from fpwatch.detect.drift import CheckTally
from fpwatch.store import codec

MODELS = 64  # models whose rows are kept (about 300 KB each with the built-in set and six discovered canaries)


class RowCache:
    """{model: {seq: (length, row)}} for the models loaded last; safe to share between the store's threads."""

    def __init__(self, models: int = MODELS) -> None:
        self.models = models
        self._rows: dict[str, dict[int, tuple[int, CheckTally]]] = {}
        self._lock = threading.Lock()

    def load(self, db: sqlite3.Connection, model: str) -> dict[int, CheckTally]:
        """The model's rows, parsing only those not kept yet."""
        stored = dict(db.execute("SELECT seq, length(body) FROM drift_checks WHERE model = ?", (model,)).fetchall())
        kept = self.kept(model)
        missing = [seq for seq, size in stored.items() if kept.get(seq, (None,))[0] != size]
        fresh = {}
        for first in range(0, len(missing), 500):
            chunk = missing[first : first + 500]
            sql = f"SELECT seq, body FROM drift_checks WHERE model = ? AND seq IN ({','.join('?' * len(chunk))})"
            for seq, body in db.execute(sql, (model, *chunk)):
                fresh[seq] = body
        return self.merge(model, stored, fresh, kept)

    def kept(self, model: str) -> dict[int, tuple[int, CheckTally]]:
        """{seq: (length of its body, row)} of the model's rows kept now. A backend reads the stored rows' seqs and
        lengths ({seq: length}) and the bodies of those not kept or kept with another length, then calls `merge`
        with what this gave (another load may drop the model from the cache meanwhile)."""
        with self._lock:
            known = self._rows.pop(model, {})
            self._rows[model] = known  # most recently used last
            while len(self._rows) > self.models:
                self._rows.pop(next(iter(self._rows)))
            return dict(known)

    def merge(
        self,
        model: str,
        stored: Mapping[int, int],
        bodies: Mapping[int, str],
        kept: Mapping[int, tuple[int, CheckTally]],
    ) -> dict[int, CheckTally]:
        """The model's rows: those `kept` (as `kept` gave them), and these `bodies` (the others, read) parsed; all
        kept for the next load."""
        fresh = {seq: (len(body), codec.drift_row(seq, body)) for seq, body in bodies.items()}
        with self._lock:
            known = self._rows.setdefault(model, {})
            for seq, row in kept.items():
                known.setdefault(seq, row)
            known.update(fresh)
            for gone in set(known) - set(stored):
                del known[gone]
            return {seq: known[seq][1] for seq in stored if seq in known}

    def forget(self, models: Iterable[str]) -> None:
        """Drop what is kept of these models: a write transaction that read rows it then failed to commit."""
        with self._lock:
            for model in models:
                self._rows.pop(model, None)
