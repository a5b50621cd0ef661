"""What psycopg's errors mean to a person: one line each, saying what to do, never holding the password."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from fpwatch.config.model import PostgresState
from fpwatch.errors import StateError

_LOST = ("08", "57P01", "57P02", "57P03")  # SQLSTATEs of a connection gone (or a server shutting down)


def lost(exc: psycopg.Error) -> bool:
    """Did the connection go away (rather than the statement fail)? Retrying such a transaction is safe if it went
    away before the COMMIT was sent (the caller knows): the server rolled it back whole."""
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return False
    if type(exc).__module__.startswith("psycopg_pool"):  # PoolClosed, PoolTimeout: the pool's state, not the server's
        return False
    return isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate.startswith(_LOST))


class Failures:
    """StateErrors for one store's server (`state`: the URL it prints, which has no password)."""

    def __init__(self, state: PostgresState, password: str | None, lock_timeout_ms: int) -> None:
        self.state = state
        self._password = password
        self.lock_timeout_ms = lock_timeout_ms

    def scrub(self, text: str) -> str:
        """The server's words, one line, without the password (libpq never puts it there; this makes sure)."""
        line = " ".join(part.strip() for part in text.splitlines() if part.strip())
        line = line.replace("FATAL:  ", "").replace("connection failed: ", "")
        return line.replace(self._password, "********") if self._password else line

    def unreachable(self, exc: Exception) -> StateError:
        """A connection that could not be made: out of reach, a refused password, no such database or user."""
        reason = self.scrub(str(exc))
        where = self.state.address
        lowered = reason.lower()
        if "password authentication failed" in lowered:
            return StateError(
                f"PostgreSQL at {where} refused the password ({reason}): set [fpwatch] state_password_file (or "
                "PGPASSFILE) to the right one"
            )
        if "no password supplied" in lowered:
            return StateError(
                f"PostgreSQL at {where} asks for a password: set [fpwatch] state_password_file, or put it in "
                "~/.pgpass (or the file PGPASSFILE names)"
            )
        if "does not exist" in lowered:  # the database, or the user
            return StateError(
                f"PostgreSQL at {where}: {reason}; create it (`createdb`, `createuser`) or fix [fpwatch] state"
            )
        return StateError(
            f"cannot reach PostgreSQL at {where} ({reason}): check [fpwatch] state and that the server is running"
        )

    def error(self, exc: psycopg.Error) -> StateError:
        """A statement or transaction that failed on a connection made."""
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StateError(
                f"the state database {self.state.url} stayed locked by another process for "
                f"{self.lock_timeout_ms / 1000:g}s; is another fpwatch stuck?"
            )
        if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedColumn):
            return StateError(
                f"{self.state.url} is not a usable fpwatch database ({self.scrub(str(exc))}); point [fpwatch] state "
                "at another database"
            )
        if lost(exc):
            return StateError(
                f"lost the connection to PostgreSQL at {self.state.address} ({self.scrub(str(exc))}): check that the "
                "server is running; its transaction was rolled back whole"
            )
        return StateError(f"state database {self.state.url}: {self.scrub(str(exc))}")
