"""The PostgreSQL side of bench/daemon.py: the server a run writes to, and what that server says it was asked.

A state of `postgresql` starts a throwaway server with the tests' harness (tests/postgres.py: initdb in a temporary
folder, loopback only, scram password auth, run as `postgres` when the bench runs as root) with pg_stat_statements
preloaded, and creates a fresh database for each run; a postgresql:// URL uses that server and database as they are
(pg_stat_statements counted only if the database has the extension).

The counts, over a window, from a connection of the bench's own:
- transactions: xact_commit + xact_rollback of the database in pg_stat_database (a statement outside a transaction
  block counts as one). The server publishes a backend's counts when its transaction ends, at most once a second, and
  those of a backend gone idle within 10 s: either edge of a window may miss a second of a connection's work.
- statements: the calls of every statement pg_stat_statements tracked in the database (BEGIN and COMMIT included),
  less the bench's own; and the busiest statements.
- round trips: the replies the daemons read from the server, as the data segments their TCP connections to the server
  received (`ss -ti`, data_segs_in). The server sends a reply when it has executed what it was sent up to a sync, so
  a pipelined batch is one round trip and a lone statement one too; a reply of more than a segment (64 KB on
  loopback) counts as several. Connections made during the window count from their start, those closed during it
  are lost (they are counted in `closed`). TCP only: a state on a Unix socket has no round-trip figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' throwaway server
from postgres import PostgresServer

OWN_QUERIES = "%pg_stat%"  # the bench's own sampling statements, left out of the counts


@dataclass
class DbSample:
    transactions: int
    statements: int | None  # None: no pg_stat_statements in this database
    by_statement: dict[str, int]  # query text -> calls
    segments: dict[int, int] | None  # the daemons' local ports -> data segments received; None: not over TCP


@dataclass
class DbFigures:
    transactions: int
    statements: int | None
    round_trips: int | None
    connections: int | None  # the daemons' connections to the server at the end of the window
    closed: int | None  # their connections that closed during the window (their round trips are lost)
    top: list[tuple[str, int]] = field(default_factory=list)  # (statement, calls), the busiest first


class Postgres:
    """A PostgreSQL state for one run: its URL for the config, and the counts of a window."""

    def __init__(self, url: str, server: PostgresServer | None) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.url = url
        self.server = server
        self._db = psycopg.connect(url, autocommit=True)
        self._statements = (
            self._db.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone() is not None
        )
        params = conninfo_to_dict(url)
        host = str(params.get("host") or "")
        self.port = int(params.get("port") or 5432) if host and not host.startswith("/") else None

    def close(self) -> None:
        self._db.close()

    def sample(self, pids: Collection[int]) -> DbSample:
        """The database's counts now, and the round trips of the daemons `pids` (all their connections)."""
        row = self._db.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        by_statement: dict[str, int] = {}
        if self._statements:
            sql = (
                "SELECT query, sum(calls)::bigint FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) AND query NOT LIKE %s GROUP BY query"
            )
            by_statement = {str(q): int(n) for q, n in self._db.execute(sql, (OWN_QUERIES,)).fetchall()}
        return DbSample(
            transactions=int(row[0]) if row else 0,
            statements=sum(by_statement.values()) if self._statements else None,
            by_statement=by_statement,
            segments=self._segments(pids) if self.port is not None else None,
        )

    def _segments(self, pids: Collection[int]) -> dict[int, int]:
        """Data segments received by each TCP connection of the processes `pids` to the server's port."""
        out = subprocess.run(
            ["ss", "-tinpH", "state", "established", f"( dport = :{self.port} )"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        found: dict[int, int] = {}
        # Each socket is a line "local peer users:((...pid=N...))" followed by an indented line of its counters.
        for head, info in re.findall(r"^(\S.*)\n\s+(.*)$", out, flags=re.MULTILINE):
            if not any(f"pid={pid}," in head for pid in pids):
                continue
            local = head.split()[-3] if "users:" in head else head.split()[-2]
            segments = re.search(r"\bdata_segs_in:(\d+)", info)
            found[int(local.rsplit(":", 1)[1])] = int(segments.group(1)) if segments else 0
        return found


def delta(before: DbSample, after: DbSample, top: int = 12) -> DbFigures:
    calls = {q: n - before.by_statement.get(q, 0) for q, n in after.by_statement.items()}
    busiest = sorted(((q, n) for q, n in calls.items() if n > 0), key=lambda item: -item[1])[:top]
    round_trips = connections = closed = None
    if before.segments is not None and after.segments is not None:
        round_trips = sum(n - before.segments.get(port, 0) for port, n in after.segments.items())
        connections = len(after.segments)
        closed = len(set(before.segments) - set(after.segments))
    statements = None
    if before.statements is not None and after.statements is not None:
        statements = sum(calls.values())
    return DbFigures(after.transactions - before.transactions, statements, round_trips, connections, closed, busiest)


@contextmanager
def open_state(spec: str) -> Iterator[Postgres]:
    """`postgresql`: a throwaway server (pg_stat_statements preloaded) and a fresh database; a postgresql:// URL:
    that database."""
    import psycopg

    if spec != "postgresql":
        state = Postgres(spec, None)
        try:
            yield state
        finally:
            state.close()
        return
    server = PostgresServer(settings=["shared_preload_libraries = 'pg_stat_statements'"])
    try:
        url = server.createdb("bench")
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_stat_statements")
        state = Postgres(url, server)
        try:
            yield state
        finally:
            state.close()
    finally:
        server.close()
