"""A throwaway PostgreSQL server on loopback for the tests: Debian's `postgresql` package, run as `postgres`.

PostgreSQL refuses to run as root, so when the tests run as root (CI) initdb and the server run as the
`postgres` user the package creates, in a data directory that user owns; otherwise as the current user.
Password authentication (scram-sha-256) on 127.0.0.1, so the tests exercise fpwatch's password handling.
`restart()` and `stop()`/`start()` let a test take the database away under a running daemon.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PASSWORD = "pg-test-password-6b1f0e2d"  # only ever on loopback, in a throwaway cluster


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """`settings`: more lines for postgresql.conf (e.g. shared_preload_libraries)."""

    def __init__(self, settings: Sequence[str] = ()) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (.ci/setup does)")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="fpwatch-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        os.chmod(self.root, 0o755)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(
            "initdb", "-D", str(self.data), "-U", "fpwatch", "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                + "".join(f"{line}\n" for line in settings)
            )
        self.start()
        self.createdb("fpwatch")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120, cwd=self.root)

    def url(self, database: str = "fpwatch", *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://fpwatch{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def createdb(self, name: str) -> str:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "fpwatch", name],
            check=True, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
