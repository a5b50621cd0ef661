"""One daemon per SQLite state, and the state file it opened still being the one at the configured path.

`InstanceLock`: `fpwatch run` holds an exclusive `flock` on `STATE.lock` (beside the database) for its whole
life, with its pid, host and start time written inside, so a second `fpwatch run` on the same state refuses
to start and names the first. The kernel drops the lock when the holder dies, even by `kill -9`: a stale
file never blocks a start. `fpwatch check` and the read-only commands take no lock (one-shot runs beside the
daemon stay allowed; the store serialises their writes).

`FileIdentity`: a database deleted or replaced under a running process is still open and keeps accepting
writes, which vanish when the process exits. The daemon compares, every few seconds, the file at the
configured path with the one it opened (device and inode) and stops rather than write into a lost file.

Both are SQLite's: a PostgreSQL state has no file beside which to lock or whose identity to watch, and the daemon
skips them for it (service/daemon.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fpwatch.clock import iso
from fpwatch.errors import StateError

LOCK_SUFFIX = ".lock"


def lock_path(state: Path) -> Path:
    return state.with_name(state.name + LOCK_SUFFIX)


class InstanceLock:
    """An exclusive, advisory lock naming its holder; `acquire` raises a StateError naming the running one."""

    def __init__(self, state: Path) -> None:
        self.state, self.path = state, lock_path(state)
        self._fd: int | None = None

    def acquire(self, now: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot create {self.path}: {exc.strerror}; check [fpwatch] state and the folder's permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateError(
                f"another fpwatch daemon is running on the state {self.state}: {holder}; "
                "stop it first (one daemon per SQLite state), or give this one its own [fpwatch] state"
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": iso(now)}
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # the lock file stays (removing it would race a starting daemon)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        record: Any = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, host, started = record.get("pid"), record.get("host"), record.get("started")
    except (OSError, ValueError, AttributeError):
        pid = host = started = None
    if pid is None:
        return "a process holds its lock (no details recorded)"
    return f"pid {pid} on host {host}" + (f", running since {started}" if started else "")


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when it was opened: device and inode."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return cls(path, info.st_dev, info.st_ino)

    def lost(self) -> str | None:
        """Why the file at the path is no longer the one opened, or None while it is."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return f"the state database {self.path} was deleted while the daemon had it open"
        except OSError:
            return None  # EIO, ESTALE on a network filesystem: maybe passing; a failed write says it if not
        if (info.st_dev, info.st_ino) != (self.device, self.inode):
            return f"the state database {self.path} was replaced by another file while the daemon had it open"
        return None
