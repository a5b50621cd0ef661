"""What every backend asks of a schema it opens read-only: the migrations it ran are those this fpwatch knows."""

from __future__ import annotations

from collections.abc import Iterable

from fpwatch.errors import StateError

UPGRADE = "run `fpwatch check` once without --dry-run"  # a write migrates


def require_known_migrations(done: Iterable[str], known: Iterable[str], where: str, upgrade: str) -> None:
    """A StateError unless `done` (the database's migrations) is `known` (this fpwatch's): a newer fpwatch wrote it,
    or it needs an upgrade, which `upgrade` says how to make."""
    done, known = set(done), set(known)
    if done - known:
        raise StateError(f"the state database {where} was written by a newer fpwatch; upgrade fpwatch")
    if known - done:
        raise StateError(f"the state database {where} needs an upgrade; {upgrade}")
