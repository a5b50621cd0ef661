"""The bits of systemd's service protocol fpwatch speaks, with no library (research: library-practice 5.1).

sd_notify is a datagram of `KEY=value` lines to the socket in $NOTIFY_SOCKET; the protocol is
stable and documented as the API. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


def notify_socket() -> str | None:
    return os.environ.get("NOTIFY_SOCKET") or None


def notify(*fields: str) -> bool:
    """Send `READY=1`, `STATUS=...` and the like to systemd; False when not running under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # abstract namespace
    elif address[0] != "/":
        return False  # vsock and the like: not for a host service
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False  # systemd went away (or a test closed its socket): never fatal
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


def stdout_is_journal(fd: int = 1) -> bool:
    """True when systemd connected stdout (or `fd`) to the journal (JOURNAL_STREAM is its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)
