"""Who holds an outbox lease: every backend names the owner the same way (host:pid) and asks the same question."""

from __future__ import annotations

import os
import socket


def lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Is the process holding a lease still running? (Owners on other hosts are assumed alive: their lease
    runs out instead.)"""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it is just not ours
    return True
