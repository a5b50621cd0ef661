"""`fpwatch reload PID` (what the unit's ExecReload= runs) against the real daemon: it waits for the daemon's own
verdict on the new config, in $RUNTIME_DIRECTORY/reload.json, and says it; a dead or silent PID is a clear error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonProcess, fpwatch_env, wait_for

from fpwatch.service.reloading import Outcome
from fpwatch.sim import Simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=5) as simulator:
        yield simulator


@pytest.fixture
def runtime(tmp_path: Path, daemon: DaemonProcess) -> Path:
    """The daemon runs as under systemd's RuntimeDirectory=: $RUNTIME_DIRECTORY is a private folder."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    daemon.env["RUNTIME_DIRECTORY"] = str(directory)
    return directory


def reload(pid: int, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpwatch", "reload", str(pid), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_valid_reload_exits_0_once_the_new_interval_is_in_force(daemon: DaemonProcess, runtime: Path) -> None:
    """The start writes generation 0; `fpwatch reload` exits 0 after the daemon applied the new config."""
    daemon.write(interval="1h")
    daemon.start()
    assert daemon.proc is not None
    start = wait_for(lambda: Outcome.read(runtime / "reload.json"), what="the start's outcome")  # before READY=1
    assert (start.pid, start.generation, start.ok) == (daemon.proc.pid, 0, True)
    wait_for(lambda: daemon.checks() == 1, what="the first check")
    daemon.config.write_text(daemon.config.read_text().replace('interval = "1h"', 'interval = "1s"'))
    result = reload(daemon.proc.pid, env=daemon.env)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"config reloaded by {daemon.proc.pid}: 1 model(s)\n",
        "",
    )
    wait_for(lambda: daemon.checks() >= 3, what="checks at the new interval")
    outcome = json.loads((runtime / "reload.json").read_text())
    assert outcome["generation"] == 1 and outcome["ok"] is True and outcome["problems"] == []
    assert daemon.stop() == 0


def test_a_rejected_reload_exits_3_with_each_problem_and_the_old_config_runs_on(
    daemon: DaemonProcess, runtime: Path
) -> None:
    """Two mistakes: exit 3, one line each on stderr; the daemon keeps checking and says 0 on /metrics."""
    daemon.write()
    daemon.start()
    assert daemon.proc is not None
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace('interval = "1s"', 'interval = "soon"\ncolour = "red"'))
    result = reload(daemon.proc.pid, env=daemon.env)
    assert result.returncode == 3, result
    lines = result.stderr.splitlines()
    assert lines[0] == f"config rejected by {daemon.proc.pid}, which keeps running the previous one:"
    assert len(lines) == 3 and {line.split(":")[0] for line in lines[1:]} == {
        "  defaults.colour",
        "  defaults.interval",
    }
    before = daemon.checks()
    wait_for(lambda: daemon.checks() >= before + 2, what="checks under the old config")
    assert daemon.metrics()["fpwatch_config_last_reload_successful{}"] == 0
    journal = runtime / "journal"  # as under systemd: stderr is the journal's stream, errors say their priority
    with journal.open("w") as stream:
        info = Path(journal).stat()
        env = {**daemon.env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        command = [sys.executable, "-m", "fpwatch", "reload", str(daemon.proc.pid)]
        assert subprocess.run(command, env=env, stderr=stream, timeout=60).returncode == 3
    assert [line[:3] for line in journal.read_text().splitlines()] == ["<3>"] * 3
    daemon.config.write_text(good)  # and a good one again: the next reload answers 0
    assert reload(daemon.proc.pid, env=daemon.env).returncode == 0
    assert daemon.metrics()["fpwatch_config_last_reload_successful{}"] == 1
    assert daemon.stop() == 0


def test_no_runtime_directory_means_only_the_signal(daemon: DaemonProcess) -> None:
    """Outside systemd there is no outcome file: the signal is sent, and the command says so."""
    daemon.write(interval="1h")
    daemon.start()
    assert daemon.proc is not None
    result = reload(daemon.proc.pid, env=daemon.env)
    assert result.returncode == 0 and "RUNTIME_DIRECTORY is not set" in result.stdout, result
    wait_for(lambda: any(line.get("event") == "config reloaded" for line in daemon.log_lines()), what="the reload")
    assert daemon.stop() == 0


def test_a_dead_pid_or_a_silent_process_is_a_clear_error(tmp_path: Path) -> None:
    """No such process: exit 1 at once. A process that ignores SIGHUP and never answers: exit 1 after --timeout."""
    env = fpwatch_env(RUNTIME_DIRECTORY=str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    result = reload(gone.pid, env=env)
    assert result.returncode == 1 and result.stderr == (
        f"Error: no process {gone.pid}: is the daemon running? (systemctl status fpwatch)\n"
    )
    deaf = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert deaf.stdout is not None and deaf.stdout.readline() == "1\n"
        result = reload(deaf.pid, "--timeout", "0.5", env=env)
        assert result.returncode == 1, result
        assert result.stderr.startswith(f"Error: process {deaf.pid} did not report a reload within 0.5 s in {tmp_path}")
        assert reload(1, env=env).returncode == 1  # init is never the daemon
    finally:
        deaf.send_signal(signal.SIGKILL)
        deaf.wait()
