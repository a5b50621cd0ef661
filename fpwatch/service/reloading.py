"""Reloading the config: the daemon's side of SIGHUP, and `fpwatch reload PID`, which systemd's ExecReload= runs.

Why not `ExecReload=fpwatch config check` and then `kill -HUP`: on systemd 252 (Debian 12) a process started
by ExecReload= of a DynamicUser= unit with LoadCredential= cannot open the credentials directory
(`/run/credentials/UNIT`: Permission denied; systemd issues #24291 and #35227), so validating there fails every
time, while the daemon itself reads the credentials. The daemon already validates the new config on SIGHUP and
keeps the old one when it is invalid; what was missing is a way to tell whoever asked for the reload. So:

- after it starts, and after every reload attempt, the daemon writes the outcome to
  `$RUNTIME_DIRECTORY/reload.json` (`RuntimeDirectory=fpwatch`, mode 0700; written to a temporary file and
  renamed, so a reader never sees half of one): its pid, a generation counter, when the attempt began
  (CLOCK_MONOTONIC, the same in every process of the host), whether it succeeded and the problems;
- `fpwatch reload PID` notes the generation, sends SIGHUP and waits for an outcome of that pid with a newer
  generation that began after the signal, then prints the problems and exits 0 (applied) or 3 (rejected:
  the exit code of an invalid config everywhere in fpwatch). Nothing there reads the config or a credential.

Without $RUNTIME_DIRECTORY (not under systemd) the daemon writes no file and `fpwatch reload` only sends the
signal and says so: the daemon's log tells the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpwatch.config import Config, load_config, require_notifier_urls
from fpwatch.errors import ConfigError, FpwatchError
from fpwatch.logs import get_logger
from fpwatch.providers import TYPES

OUTCOME_FILE = "reload.json"
RELOADED = 0
REJECTED = 3  # the exit code of an invalid config, as for `fpwatch config check` and `fpwatch run`

log = get_logger("fpwatch.daemon")


def outcome_path(env: dict[str, str] | None = None) -> Path | None:
    """Where the daemon reports its reload outcome: $RUNTIME_DIRECTORY/reload.json, or None outside systemd."""
    directory = (os.environ if env is None else env).get("RUNTIME_DIRECTORY", "")
    first = directory.split(":")[0]  # systemd joins several RuntimeDirectory= entries with ":"
    return Path(first, OUTCOME_FILE) if first else None


@dataclass(frozen=True)
class Outcome:
    """One start or reload attempt, as the daemon wrote it."""

    pid: int
    generation: int
    began: float  # CLOCK_MONOTONIC seconds when the attempt began to read the config
    ok: bool
    problems: tuple[str, ...] = ()
    models: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "generation": self.generation,
            "began_monotonic": self.began,
            "ok": self.ok,
            "problems": list(self.problems),
            "models": self.models,
        }

    @classmethod
    def read(cls, path: Path) -> Outcome | None:
        """The outcome in `path`, or None when there is none (yet) or it is not one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                pid=int(data["pid"]),
                generation=int(data["generation"]),
                began=float(data["began_monotonic"]),
                ok=bool(data["ok"]),
                problems=tuple(str(p) for p in data.get("problems", ())),
                models=int(data.get("models", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass
class OutcomeWriter:
    """The daemon's side: one atomic write per attempt. A failed write is logged, never fatal."""

    path: Path | None = field(default_factory=outcome_path)
    generation: int = 0

    def write(self, began: float, ok: bool, problems: list[str], models: int) -> None:
        if self.path is None:
            return
        outcome = Outcome(os.getpid(), self.generation, began, ok, tuple(problems), models)
        self.generation += 1
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(outcome.to_json()) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write the reload outcome", path=str(self.path), reason=exc.strerror or str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()


def read_new_config(path: Path, redact: Callable[[str], str]) -> tuple[Config | None, list[str]]:
    """The config in `path` validated as `fpwatch config check` does, or None and every problem (each logged)."""
    try:
        return require_notifier_urls(load_config(path, TYPES)), []
    except ConfigError as exc:
        problems = [str(problem) for problem in exc.problems]
    except Exception as exc:  # an unreadable file, an apprise surprise: never die on a reload
        problems = [redact(f"{type(exc).__name__}: {exc}")]
    for problem in problems:
        log.error("config reload rejected", problem=problem, path=str(path))
    return None, problems


# --- `fpwatch reload PID` ----------------------------------------------------------------------------------


class ReloadError(FpwatchError):
    """The reload could not be asked for or answered: no such process, no permission, no answer in time."""


@dataclass(frozen=True)
class Answer:
    """What `fpwatch reload` learnt: the outcome (None when there is no file to wait on) and its exit code."""

    outcome: Outcome | None
    exit_code: int


def request_reload(pid: int, timeout: float, path: Path | None, *, poll: float = 0.05) -> Answer:
    """Send SIGHUP to `pid` and wait up to `timeout` seconds for the outcome of the reload it started."""
    if pid <= 1:
        raise ReloadError(f"{pid} is not a daemon's process id; pass the PID of `fpwatch run` ($MAINPID)")
    before = Outcome.read(path) if path is not None else None
    baseline = before.generation if before is not None and before.pid == pid else -1
    sent = time.monotonic()  # CLOCK_MONOTONIC, as the daemon's `began`
    _send(pid)
    if path is None:
        return Answer(None, RELOADED)
    deadline = sent + timeout
    while True:
        outcome = Outcome.read(path)
        if outcome is not None and outcome.pid == pid and outcome.generation > baseline and outcome.began >= sent:
            return Answer(outcome, RELOADED if outcome.ok else REJECTED)
        if not _alive(pid):
            raise ReloadError(f"process {pid} exited before it answered the reload; see its log")
        if time.monotonic() >= deadline:
            raise ReloadError(
                f"process {pid} did not report a reload within {timeout:g} s in {path}; "
                "is it `fpwatch run` (with this RUNTIME_DIRECTORY)? See its log"
            )
        time.sleep(poll)


def _send(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"no process {pid}: is the daemon running? (systemctl status fpwatch)") from None
    except PermissionError:
        raise ReloadError(f"not allowed to signal process {pid}; run as its user or root") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
