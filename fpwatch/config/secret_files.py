"""Reading a secret from a file (`api_key_file`, `url_file`, `audit_key_file`,
`state_password_file`) without trusting the file.

A secret file is a small regular file (systemd's `LoadCredential=` makes one). Anything else is refused
before it can do harm: a FIFO would block the read forever (so `config check` hangs), `/dev/zero` or a
huge file would fill memory. The file is checked with stat before it is opened, opened with O_NONBLOCK
(a FIFO swapped in between the two cannot block the open), checked again on the open descriptor, and
read only up to the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRET_FILE_LIMIT = 64 * 1024  # bytes: a key, a token or a URL, with room to spare

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_secret_file(path: Path, limit: int = SECRET_FILE_LIMIT) -> str:
    """The file's text, stripped; ValueError says why the file is not one fpwatch reads a secret from."""
    try:
        _refuse_unless_small_regular(os.stat(path), path, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        _refuse_unless_small_regular(os.fstat(fd), path, limit)  # what was opened, not what was looked at
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(_too_big(path, limit))
    try:
        return b"".join(chunks).decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start + 1}); save the secret as plain text") from None


def _refuse_unless_small_regular(info: os.stat_result, path: Path, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise ValueError(f"{path} is {kind}, not a regular file; point this at a file that holds only the secret")
    if info.st_size > limit:
        raise ValueError(_too_big(path, limit))


def _too_big(path: Path, limit: int) -> str:
    return f"{path} is larger than {limit // 1024} KiB, too big for a secret; point this at a file that holds only it"
