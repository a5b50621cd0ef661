"""The daemon under hostile conditions, as real processes: a second daemon on the same state, the database
deleted or replaced under it, a full disk, and the wall clock set back and forward (through libfaketime)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import DaemonProcess, fpwatch_env, free_port, wait_for

from fpwatch.clock import Clock, SteadyTime
from fpwatch.config import load_config
from fpwatch.providers import TYPES
from fpwatch.service.daemon import Daemon
from fpwatch.sim import Simulator

# The MT build: the daemon has several threads, and the plain build's clock calls, which reread the offset file
# under FAKETIME_NO_CACHE into unguarded static state, then now and again return the real time to a thread that
# read while another one parsed (3 threads calling time.time() saw the real time on ~0.1% of reads; the MT
# build, which serialises its clock calls, on none).
LIBFAKETIME = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/faketime/libfaketimeMT.so.1")
     if Path(p).exists()),
    None,
)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=5) as simulator:  # no key: DaemonProcess's config sends none
        yield simulator


def health(daemon: DaemonProcess) -> tuple[int, dict[str, object]]:
    response = httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=2)
    return response.status_code, response.json()


def run_second(daemon: DaemonProcess, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`fpwatch run` on the same state from a config of its own (another port, so the port is not what stops it)."""
    other = tmp_path / "second.toml"
    other.write_text(daemon.config.read_text().replace(f":{daemon.port}", f":{free_port()}"))
    return subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(other), "run"],
        cwd=tmp_path, env=fpwatch_env(), capture_output=True, text=True, timeout=30,
    )


def test_a_second_daemon_on_the_same_state_refuses_and_names_the_first(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.write()
    daemon.start()
    assert daemon.proc is not None
    second = run_second(daemon, tmp_path)
    assert second.returncode == 1
    message = second.stderr.strip().splitlines()[-1]
    assert "another fpwatch daemon is running on the state" in message
    assert f"pid {daemon.proc.pid} on host {socket.gethostname()}" in message
    assert "state.db" in message
    # fpwatch check beside the daemon stays allowed
    check = subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(daemon.config), "check", "--json"],
        cwd=tmp_path, env=fpwatch_env(), capture_output=True, text=True, timeout=60,
    )
    assert check.returncode in (0, 1), check.stderr
    # the lock dies with its holder, even by kill -9: the next start is not blocked by a stale file
    daemon.proc.kill()
    daemon.proc.wait()
    daemon.start()
    assert daemon.healthy()
    assert daemon.stop() == 0


def test_a_database_deleted_under_the_daemon_stops_it_with_an_error(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.write()
    daemon.start()
    wait_for(lambda: daemon.checks() >= 2, what="two checks")
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            (tmp_path / name).unlink()
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=20) == 1  # systemd's Restart=on-failure restarts it onto a fresh file
    errors = [line for line in daemon.log_lines() if line.get("level") == "error"]
    assert any("state.db was deleted while the daemon had it open" in str(line.get("event")) for line in errors)
    daemon.start()  # a fresh file at the configured path
    wait_for(lambda: daemon.checks() >= 1, what="a check on the fresh database")
    assert (tmp_path / "state.db").exists()
    assert daemon.stop() == 0


def test_a_database_replaced_under_the_daemon_is_noticed_in_process(tmp_path: Path, sim: Simulator) -> None:
    """The same watch seen from inside: /healthz names the database, and the daemon asks to stop with exit 1."""
    daemon_files = DaemonProcess(tmp_path, sim)
    daemon_files.write()
    config = load_config(daemon_files.config, TYPES, env={})

    async def scenario() -> tuple[list[str], list[str], int, bool]:
        daemon = Daemon(daemon_files.config, config)
        await daemon.open()
        daemon.scheduler.start(paused=True)
        before = daemon.health()
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, tmp_path / "state.db")
        daemon._watch_state_file()
        after = daemon.health()
        daemon.scheduler.shutdown(wait=False)
        await daemon.close()
        return before, after, daemon.exit_code, daemon.stop_requested.is_set()

    before, after, code, stopping = asyncio.run(scenario())
    assert before == []
    replaced = f"the state database {tmp_path / 'state.db'} was replaced by another file while the daemon had it open"
    assert after == [replaced]
    assert (code, stopping) == (1, True)


@contextlib.contextmanager
def small_filesystem(folder: Path, size_kb: int) -> Iterator[bool]:
    """A tmpfs of `size_kb` at `folder` (True), or nothing when this machine does not allow mounting (False)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0 if shutil.which("mount") and os.geteuid() == 0 else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full (unbuffered: every byte that fits is written)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * block):
                    pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_a_health_reason_from_the_first_failed_write(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The state on a small tmpfs (or, where mounting is not allowed, under a file-size limit): filling it turns
    /healthz to 503 at the first failed write with a reason of its own, and freeing it heals the daemon."""
    disk = tmp_path / "disk"
    with small_filesystem(disk, 2048) as mounted:
        daemon.write(extra="")
        daemon.config.write_text(daemon.config.read_text().replace('state = "state.db"', 'state = "disk/state.db"'))
        daemon.start()
        wait_for(lambda: daemon.checks() >= 3, what="three checks")
        assert daemon.proc is not None
        if mounted:
            filler = fill(disk)
        else:  # RLIMIT_FSIZE: writes past the database's current size fail with EFBIG (CPython ignores SIGXFSZ)
            size = sum(p.stat().st_size for p in disk.iterdir())
            _soft, hard = resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (size, hard))
        failing = wait_for(lambda: (r := health(daemon))[0] == 503 and r, timeout=15, what="/healthz 503")
        reasons = failing[1]["reasons"]
        assert isinstance(reasons, list)
        assert reasons[0].startswith("the state database could not be written since ")
        assert "savepoint" not in reasons[0]  # the disk's own words, not those of a rollback after SQLite's own
        assert "not checked on schedule" not in " ".join(reasons)
        metrics = daemon.metrics()
        assert metrics["fpwatch_state_write_failures_total{}"] >= 1
        if mounted:
            filler.unlink()
        else:
            resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        wait_for(lambda: health(daemon)[0] == 200, timeout=15, what="/healthz 200 after the disk was freed")
        assert daemon.stop() == 0


def set_clock(file: Path, offset: str) -> None:
    """libfaketime rereads the file on every clock call: replace it whole, never let it see half a write."""
    part = file.with_suffix(".part")
    part.write_text(offset + "\n")
    os.replace(part, file)


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs Debian's faketime package (.ci/setup installs it)")
def test_the_wall_clock_set_back_and_forward_changes_nothing_but_a_warning(
    daemon: DaemonProcess, sim: Simulator, tmp_path: Path
) -> None:
    """The daemon under libfaketime, whose wall clock the test moves while monotonic time runs on: an hour back,
    then a day forward. Checks go on at their interval, /healthz stays 200, no fingerprint is retired and no
    event is raised, and each jump is logged and counted."""
    offset = tmp_path / "faketime"
    set_clock(offset, "+0")
    daemon.env.update(
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    daemon.write(interval="2s", grace="30s")
    daemon.start()
    wait_for(lambda: daemon.checks() >= 4, timeout=30, what="four checks")
    events_before = daemon.events()
    for jump in ("-1h", "+1d"):
        set_clock(offset, jump)
        wanted = daemon.checks() + 3

        def caught_up(n: int = wanted) -> bool:
            return daemon.checks() >= n

        wait_for(caught_up, timeout=30, what=f"three checks after the clock went {jump}")
        assert health(daemon)[0] == 200
    status = httpx.get(f"http://127.0.0.1:{daemon.port}/api/v1/status", timeout=5).json()
    assert round(status["clock_skew_seconds"] / 3600) == 24  # the wall clock (faked +1d) is a day ahead of its time
    assert daemon.stop() == 0
    assert daemon.events() == events_before  # nothing retired, nothing raised
    jumps = [line for line in daemon.log_lines() if str(line.get("event", "")).startswith("the wall clock jumped")]
    assert [round(line["seconds"] / 3600) for line in jumps] == [-1, 25]  # an hour back, then a day forward from there
    assert all(line["level"] == "warning" for line in jumps)
    assert status["models"][0]["state"] in ("learning", "ok")
    missed = [line for line in daemon.log_lines() if "late beyond the misfire grace" in str(line.get("event", ""))]
    assert missed == []


def test_steady_time_follows_the_wall_clock_until_it_jumps() -> None:
    """Slow corrections are followed; a step beyond a minute against elapsed time is taken out and reported."""
    wall = [datetime(2026, 12, 1, tzinfo=UTC)]
    since_boot = [100.0]
    steady = SteadyTime(wall=lambda: wall[0], since_boot=lambda: since_boot[0])
    clock = Clock(now=steady, wall=lambda: wall[0])
    wall[0] += timedelta(seconds=10.5)  # 10 s elapsed, the wall clock slewed by half a second
    since_boot[0] += 10
    assert clock.now() == wall[0]
    wall[0] += timedelta(seconds=1) - timedelta(hours=1)  # set back an hour, 1 s elapsed
    since_boot[0] += 1
    assert clock.now() == wall[0] + timedelta(hours=1)
    assert steady.take_jumps() == [-3600.0]
    assert steady.take_jumps() == []
    wall[0] += timedelta(days=1, seconds=5)  # then a day forward, 5 s elapsed
    since_boot[0] += 5
    assert clock.now() == datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=10.5 + 1 + 5)
    assert steady.take_jumps() == [86400.0]
    assert steady.skew == 86400.0 - 3600.0


def test_runs_planned_just_before_a_jump_are_moved_with_it() -> None:
    """APScheduler may plan a run between the follower's last tick and the jump: a clock set back must move it too
    (else that model waits the hour out), a clock set forward must move a run still overdue on the old clock,
    and a run planned on the new clock stays where it is."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from fpwatch.service.metrics import Metrics
    from fpwatch.service.timekeeping import ClockFollower

    async def scenario() -> dict[str, timedelta]:
        real = datetime.now(UTC)
        wall = [real]
        since_boot = [1000.0]
        steady = SteadyTime(wall=lambda: wall[0], since_boot=lambda: since_boot[0])
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.start(paused=True)
        for name in ("quiet", "replanned"):
            first = real + timedelta(seconds=1)
            scheduler.add_job(print, "interval", seconds=2, start_date=real, id=name, next_run_time=first)
        follower = ClockFollower(scheduler, steady, Metrics())
        follower.tick(wall[0])
        scheduler.get_job("replanned").modify(next_run_time=real + timedelta(seconds=2))  # planned after the tick
        wall[0] = real - timedelta(hours=1)  # set back an hour, no time elapsed
        follower.tick(wall[0])
        back = {job.id: job.next_run_time - wall[0] for job in scheduler.get_jobs()}
        scheduler.shutdown(wait=False)
        return back

    back = asyncio.run(scenario())
    assert back == {"quiet": timedelta(seconds=1), "replanned": timedelta(seconds=2)}
