"""The real daemon (`fpwatch run` in a subprocess) against the simulator: schedule, signals, sd_notify, restarts."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BlockingStore, DaemonProcess, HttpSink, wait_for

from fpwatch.clock import parse_iso
from fpwatch.config import load_config
from fpwatch.providers import TYPES
from fpwatch.service.daemon import Daemon
from fpwatch.sim import Simulator

MODEL = "sim/gpt-4o"
A, B, C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=5) as simulator:
        yield simulator


def test_rotation_is_quiet_and_a_rollout_gives_exactly_its_events(daemon: DaemonProcess, sim: Simulator) -> None:
    """Two replicas alternating raise only the baseline; A,B -> A,B,C -> A,C gives one change, one retirement."""
    sim.update_model("gpt-4o", {"fingerprints": {A: 1, B: 1}})
    daemon.write()
    daemon.start()
    wait_for(lambda: daemon.checks() >= 5, what="five checks")
    assert sorted(daemon.events()) == [
        ("fingerprint.first_seen", A),
        ("fingerprint.first_seen", B),
        ("model.first_seen", "gpt-4o"),
    ]
    sim.update_model("gpt-4o", {"fingerprints": {A: 1, B: 1, C: 1}})
    wait_for(lambda: ("fingerprint.changed", C) in daemon.events(), what="the change")
    sim.update_model("gpt-4o", {"fingerprints": {A: 1, C: 1}})
    wait_for(lambda: ("fingerprint.retired", B) in daemon.events(), timeout=30, what="the retirement")
    time.sleep(2)  # a few more checks: nothing else may happen
    assert daemon.stop() == 0
    assert sorted(daemon.events()) == sorted(
        [
            ("fingerprint.first_seen", A),
            ("fingerprint.first_seen", B),
            ("model.first_seen", "gpt-4o"),
            ("fingerprint.changed", C),
            ("fingerprint.retired", B),
        ]
    )


def test_sighup_with_a_broken_config_keeps_running_and_logs_every_error(daemon: DaemonProcess) -> None:
    """A reload with three mistakes is refused, each mistake logged; the old config keeps checking."""
    daemon.write()
    daemon.start()
    good = daemon.config.read_text()
    daemon.config.write_text(
        good.replace('interval = "1s"', 'interval = "soon"\ncolour = "red"').replace("samples = 4", "samples = 0")
    )
    before = daemon.checks()
    daemon.signal(signal.SIGHUP)
    wait_for(
        lambda: any(line.get("event") == "keeping the previous config" for line in daemon.log_lines()),
        what="the refusal",
    )
    problems = [line["problem"] for line in daemon.log_lines() if line.get("event") == "config reload rejected"]
    assert len(problems) == 3
    assert any(p.startswith("defaults.colour: unknown key") for p in problems)
    assert any(p.startswith('defaults.interval: "soon" is not a duration') for p in problems)
    assert any(p.startswith("canaries.probe.samples: must be at least 1") for p in problems)
    wait_for(lambda: daemon.checks() >= before + 2, what="checks under the old config")
    assert daemon.metrics()["fpwatch_config_last_reload_successful{}"] == 0
    assert daemon.stop() == 0


def test_sighup_with_a_new_interval_takes_effect(daemon: DaemonProcess) -> None:
    """From one check an hour to one a second, by SIGHUP, without a restart."""
    daemon.write(interval="1h")
    daemon.start()
    wait_for(lambda: daemon.checks() == 1, what="the first check")
    time.sleep(2)
    assert daemon.checks() == 1
    daemon.config.write_text(daemon.config.read_text().replace('interval = "1h"', 'interval = "1s"'))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.checks() >= 4, what="checks at the new interval")
    assert daemon.metrics()["fpwatch_config_last_reload_successful{}"] == 1
    assert daemon.stop() == 0


def test_sigterm_drains_the_check_in_flight_and_exits_0(daemon: DaemonProcess, sim: Simulator) -> None:
    """SIGTERM during a slow check: the check finishes and is recorded, then the process exits 0."""
    daemon.write(interval="1h")
    daemon.start()
    wait_for(lambda: daemon.checks() == 1, what="the first check")
    sim.update_model("gpt-4o", {"latency": 3.0})  # the next check will be slow: bring it forward
    daemon.config.write_text(daemon.config.read_text().replace('interval = "1h"', 'interval = "1s"'))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.metrics().get("fpwatch_checks_in_flight{}") == 1, what="a slow check in flight")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 25
    assert daemon.checks() >= 2  # the drained check was recorded


def test_sd_notify_ready_status_watchdog_reloading_stopping(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A real unix datagram socket receives READY, STATUS, WATCHDOG, RELOADING with MONOTONIC_USEC, STOPPING."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.2)
        daemon.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        daemon.write()
        daemon.start()
        messages: list[str] = []

        def receive_until(text: str) -> bool:
            try:
                while True:
                    messages.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
            return any(text in m for m in messages)

        wait_for(lambda: receive_until("WATCHDOG=1"), what="a watchdog ping")
        wait_for(lambda: receive_until("\n") and any(m.startswith("STATUS=") for m in messages), what="STATUS")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: receive_until("RELOADING=1"), what="RELOADING")
        assert daemon.stop() == 0
        wait_for(lambda: receive_until("STOPPING=1"), what="STOPPING")
    assert messages[0].startswith("READY=1\nSTATUS=watching 1 models")
    assert any(m.startswith("STATUS=watching 1 models: 1 ") for m in messages), messages  # after a check
    reloading = next(m for m in messages if m.startswith("RELOADING=1"))
    assert reloading.split("\n")[1].startswith("MONOTONIC_USEC=") and int(reloading.split("=")[-1]) > 0
    after = messages[messages.index(reloading) + 1 :]
    assert any(m.startswith("READY=1") for m in after)


def test_kill_9_and_restart_keep_state_and_raise_nothing_twice(daemon: DaemonProcess, sim: Simulator) -> None:
    """kill -9 in the middle of a check, after a change: the restart continues from the database, and neither the
    baseline nor the change is raised again; the hash chain holds."""
    sim.update_model("gpt-4o", {"fingerprints": {A: 1}})
    daemon.write(grace="1h")
    daemon.start()
    wait_for(lambda: daemon.checks() >= 3, what="three checks")
    sim.update_model("gpt-4o", {"fingerprints": {B: 1}})
    wait_for(lambda: ("fingerprint.changed", B) in daemon.events(), what="the change")
    sim.update_model("gpt-4o", {"latency": 3.0})
    wait_for(lambda: daemon.metrics().get("fpwatch_checks_in_flight{}") == 1, what="a slow check in flight")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    sim.update_model("gpt-4o", {"latency": 0.0})
    checks_before = daemon.checks()
    daemon.start()
    wait_for(lambda: daemon.checks() >= checks_before + 3, what="checks after the restart")
    assert daemon.stop() == 0
    assert sorted(daemon.events()) == [
        ("fingerprint.changed", B),
        ("fingerprint.first_seen", A),
        ("model.first_seen", "gpt-4o"),
    ]
    verify = subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(daemon.config), "export", "--verify"],
        cwd=daemon.tmp_path,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and verify.stdout.startswith("chain OK")


def test_metrics_parse_and_move_and_status_endpoint_answers(daemon: DaemonProcess, sim: Simulator) -> None:
    """/metrics is valid Prometheus text whose counters grow as checks run; /api/v1/status is status --json."""
    daemon.write()
    daemon.start()
    wait_for(lambda: daemon.checks() >= 1, what="a check")
    first = daemon.metrics()
    wait_for(lambda: daemon.metrics().get(f"fpwatch_checks_total{{model={MODEL},status=OK}}", 0) >= 3, what="growth")
    second = daemon.metrics()
    key = f"fpwatch_checks_total{{model={MODEL},status=OK}}"
    assert second[key] > first.get(key, 0)
    assert second["fpwatch_requests_total{outcome=ok,provider=sim}"] >= 12
    assert second[f"fpwatch_fingerprints_valid{{model={MODEL}}}"] == 1
    assert second["fpwatch_check_duration_seconds_count{}"] >= 3
    assert second["fpwatch_schedule_lag_seconds_count{}"] >= 3
    assert second[f"fpwatch_tokens_total{{kind=output,model={MODEL}}}"] > 0
    text = httpx.get(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5).text
    assert "# TYPE fpwatch_notifications_failed_total counter" in text  # declared, though nothing failed
    status = httpx.get(f"http://127.0.0.1:{daemon.port}/api/v1/status", timeout=5).json()
    summary = status["models"][0]
    # past the fingerprint baseline; the drift reference may still be learning (16 samples per canary)
    assert summary["name"] == MODEL and summary["state"] in ("ok", "learning")
    assert summary["drift"]["state"] in ("ok", "learning") and summary["drift"]["reference_samples"] > 0
    assert httpx.get(f"http://127.0.0.1:{daemon.port}/nope", timeout=5).status_code == 404
    assert daemon.stop() == 0


def test_invalid_config_at_start_exits_3_with_every_problem(daemon: DaemonProcess) -> None:
    """The daemon refuses to start on an invalid config: exit 3, each problem on its own line."""
    daemon.write()
    daemon.config.write_text(daemon.config.read_text().replace('interval = "1s"', 'interval = "x"\nfoo = 1'))
    out = subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(daemon.config), "run"],
        cwd=daemon.tmp_path,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert out.stderr.splitlines()[0].startswith("Error: 2 problems in")


def test_heartbeat_journald_priorities_and_no_secret_in_logs(
    tmp_path: Path, daemon: DaemonProcess, sim: Simulator
) -> None:
    """The heartbeat URL is pinged after a healthy check; journald lines carry <N>; keys and tokens never appear."""
    sink = HttpSink()
    key, wrong, token = "sk-daemon-key-0123456789abcdef", "sk-wrong-key-echoed-0123456789", "hc-token-5f1c2a9e"
    try:
        daemon.write()
        text = daemon.config.read_text().replace(
            'log_format = "json"', f'log_format = "json"\nheartbeat_url = "{sink.url}/ping/${{HC_TOKEN}}"'
        )
        daemon.config.write_text(
            text.replace('type = "openai-compatible"', 'type = "openai-compatible"\napi_key = "${K}"')
        )
        daemon.env.update(K=key, HC_TOKEN=token)
        daemon.log.touch()
        info = daemon.log.stat()
        daemon.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        daemon.start()
        wait_for(lambda: sink.requests, what="a heartbeat ping")
        assert sink.requests[0] == ("GET", f"/ping/{token}")
        assert daemon.stop() == 0
        # A provider that rejects the key and echoes it back: the daemon logs the error, masked.
        restarted = DaemonProcess(tmp_path, Simulator(api_key=wrong).start())
        try:
            restarted.port = daemon.port
            restarted.env = daemon.env
            restarted.write()
            restarted.config.write_text(
                restarted.config.read_text().replace(
                    'type = "openai-compatible"', 'type = "openai-compatible"\napi_key = "${K}"'
                )
            )
            restarted.start()
            wait_for(lambda: "Incorrect API key provided" in daemon.log.read_text(), what="the auth error in the log")
            assert restarted.stop() == 0
        finally:
            restarted.sim.stop()
    finally:
        sink.close()
    lines = daemon.log.read_text().splitlines()
    assert lines and all(line.startswith(("<3>", "<4>", "<6>", "<7>")) for line in lines)
    assert any(line.startswith("<4>") and "requests failed" in line for line in lines)
    everything = daemon.log.read_text() + "".join(
        p.read_bytes().decode("utf-8", "replace") for p in tmp_path.glob("state.db*")
    )
    for secret in (key, token):
        assert secret not in everything
    assert "[REDACTED]" in everything


def test_reload_keeps_unchanged_schedules_and_moves_changed_ones(tmp_path: Path, sim: Simulator) -> None:
    """Diffing jobs on reload: an unchanged model keeps its next run time; a changed one is rescheduled."""
    import asyncio

    path = tmp_path / "fpwatch.toml"
    base = f"""
[fpwatch]
state = "state.db"
[providers.sim]
type = "openai-compatible"
base_url = "{sim.base_url}"
[[models]]
provider = "sim"
model = "steady"
interval = "1h"
[[models]]
provider = "sim"
model = "changing"
interval = "1h"
"""
    path.write_text(base)

    async def scenario() -> tuple[Any, Any, Any, Any, list[str]]:
        daemon = Daemon(path, load_config(path, TYPES, env={}), first_run_spread=3600)
        await daemon.open()
        await daemon.sync_jobs(first=True)
        daemon.scheduler.start(paused=True)
        before = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
        path.write_text(
            base.replace('model = "changing"\ninterval = "1h"', 'model = "changing"\ninterval = "2h"')
            + '\n[[models]]\nprovider = "sim"\nmodel = "new"\n'
        )
        await daemon.reload()
        after = {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}
        daemon.scheduler.shutdown(wait=False)
        await daemon.close()
        return before["check:sim/steady"], after["check:sim/steady"], before, after, sorted(after)

    steady_before, steady_after, before, after, jobs = asyncio.run(scenario())
    assert steady_after == steady_before
    assert after["check:sim/changing"] != before["check:sim/changing"]
    assert jobs == ["check:sim/changing", "check:sim/new", "check:sim/steady"]


def test_a_check_past_the_drain_deadline_is_cancelled_cleanly(tmp_path: Path, sim: Simulator) -> None:
    """Stopping with a check slower than the drain deadline: the check is cancelled, nothing half-written, exit 0."""
    import asyncio

    process = DaemonProcess(tmp_path, sim)
    process.write(interval="1h")
    config = load_config(process.config, TYPES, env={})
    sim.update_model("gpt-4o", {"latency": 30})

    async def scenario() -> tuple[int, float]:
        daemon = Daemon(process.config, config, first_run_spread=0, drain_seconds=0.5)
        running = asyncio.create_task(daemon.run())
        while not daemon.in_flight:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        daemon.stop_requested.set()
        code = await running
        return code, time.monotonic() - started

    code, seconds = asyncio.run(scenario())
    assert code == 0 and seconds < 10
    with BlockingStore(tmp_path / "state.db") as store:
        assert store.load_state("sim/gpt-4o").checks == 0  # the cancelled check left no partial record
        assert (audit := store.verify_audit()).ok and audit.rows == 0


HOLD = 6.0


def test_a_lock_held_by_another_process_delays_recording_not_the_daemon(daemon: DaemonProcess, sim: Simulator) -> None:
    """Another process holds BEGIN EXCLUSIVE for 6 s: SIGHUP is handled within a second, /healthz answers at once,
    a model added by that reload is probed meanwhile, and every check made is recorded once the lock is released."""
    daemon.write(interval="1s")
    daemon.start()
    wait_for(lambda: daemon.checks() >= 2, what="two checks")
    # This test process is the other process: it takes the write lock, and holds it for HOLD seconds.
    locker = sqlite3.connect(daemon.tmp_path / "state.db", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    held = time.monotonic()
    # The reload adds a model: its state is read, and it is probed, while the lock is held.
    added = '\n[[models]]\nprovider = "sim"\nmodel = "gpt-4o-mini"\ncanaries = ["probe"]\n'
    daemon.config.write_text(daemon.config.read_text() + added)
    sent = datetime.now(UTC)
    daemon.signal(signal.SIGHUP)
    reloaded = wait_for(
        lambda: next((line for line in daemon.log_lines() if line.get("event") == "config reloaded"), None),
        timeout=5,
        what="the reload",
    )
    assert (parse_iso(reloaded["timestamp"]) - sent).total_seconds() < 1.0
    started = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0
    wait_for(lambda: any(r["model"] == "gpt-4o-mini" for r in sim.requests()), timeout=4, what="the new model probed")
    assert time.monotonic() - held < HOLD, "the daemon was too slow to be seen working under the lock"
    time.sleep(HOLD - (time.monotonic() - held))
    locker.execute("COMMIT")
    locker.close()
    wait_for(lambda: daemon.checks() >= 4, what="checks recorded after the release")
    assert daemon.stop() == 0
    with BlockingStore(daemon.tmp_path / "state.db") as store:
        rows = store.observation_rows()
        assert len(rows) == len(sim.requests())  # every answer the simulator gave is recorded
        assert {r["model"] for r in rows} == {"sim/gpt-4o", "sim/gpt-4o-mini"}
        assert (audit := store.verify_audit()).ok and audit.counts["observation"] == len(rows)
        assert "locked" not in daemon.log.read_text()  # no check gave up on the lock


def test_the_endpoint_starts_without_the_report_extra() -> None:
    """`pip install fpwatch` (no [report]) with `listen` set: the daemon's endpoint imports without Bokeh, and only
    the page would say what to install (found by booting the README's install under systemd, test_nspawn.py)."""
    code = (
        "import sys; sys.modules.update(bokeh=None, numpy=None)\n"
        "import fpwatch.service.daemon, fpwatch.service.endpoint\n"
        "from fpwatch.report.html import available\n"
        "available()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ReportUnavailable" in result.stderr and "pip install 'fpwatch[report]'" in result.stderr, result.stderr
