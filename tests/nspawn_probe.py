"""The probe that tests/test_nspawn.py runs INSIDE the booted Debian 12 container, as a oneshot unit.

Run by the container's own /usr/bin/python3 (the standard library only), as root, after fpwatch.service started.
It drives `systemctl` and `journalctl` like an administrator, reads the daemon's /metrics and /api/v1/status
on loopback, changes the simulator (on the host's loopback, shared with the container) through its /_sim/
admin endpoints, writes every finding to /results/report.json and powers the container off, whatever happened.

Each step records named items `{"ok": bool, "detail": ...}`; a step that raises records its error and the next
steps still run. The host-side test asserts each item with its detail.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path("/results")
PARAMS = json.loads((RESULTS / "params.json").read_text())
CONFIG = Path("/etc/fpwatch/fpwatch.toml")
GOOD = CONFIG.read_text()
FAST = GOOD.replace('interval = "1h"', 'interval = "2s"')
INVALID = FAST.replace('interval = "2s"', 'interval = "soon"')
DROP_IN = Path("/etc/systemd/system/fpwatch.service.d/50-nspawn-probe.conf")
UNIT = "fpwatch.service"
CHECK_UNIT = "fpwatch-check.service"

report: dict[str, Any] = {"items": {}, "steps": {}, "params": {k: v for k, v in PARAMS.items() if k != "key"}}


def record(name: str, ok: bool, detail: Any) -> None:
    report["items"][name] = {"ok": bool(ok), "detail": detail}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def show(unit: str, *props: str) -> dict[str, str]:
    out = run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def active(unit: str = UNIT) -> str:
    return run("systemctl", "is-active", unit).stdout.strip()


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def http(path: str, base: str | None = None, method: str = "GET", body: Any = None) -> bytes:
    url = (base or f"http://127.0.0.1:{PARAMS['listen_port']}") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        result: bytes = answer.read()
        return result


def metric(name: str) -> float | None:
    for line in http("/metrics").decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def model_status() -> dict[str, Any]:
    status: dict[str, Any] = json.loads(http("/api/v1/status"))["models"][0]
    return status


def checks() -> int:
    return int(model_status()["checks"])


def sim(settings: dict[str, Any]) -> None:
    """Change the simulated model's behaviour (PATCH /_sim/models/NAME)."""
    http(f"/_sim/models/{PARAMS['model']}", base=PARAMS["sim_url"], method="PATCH", body=settings)


def journal(*args: str) -> list[dict[str, Any]]:
    out = run("journalctl", "--no-pager", "-o", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def message(entry: dict[str, Any]) -> str:
    value = entry.get("MESSAGE", "")
    return bytes(value).decode(errors="replace") if isinstance(value, list) else str(value)


def wait_active(timeout: float = 60) -> str:
    wait(lambda: active() == "active", timeout, f"{UNIT} active")
    return show(UNIT, "MainPID")["MainPID"]


def write_config(text: str) -> None:
    CONFIG.write_text(text)


# --- the steps, in order --------------------------------------------------------------------------------------


def started() -> None:
    state = active()
    props = show(UNIT, "StatusText", "Type", "Result", "MainPID", "NRestarts")
    record(
        "ready_and_status",
        state == "active" and props["StatusText"].startswith("watching 1 models") and props["Type"] == "notify",
        {"is-active": state, **props},
    )
    first = wait(lambda: checks() >= 1, 30, "the first check")
    status = model_status()
    record(
        "credential_read_by_the_daemon",
        first and status["last_error"] is None and status["fingerprints"] == [PARAMS["fingerprint"]],
        {"checks": status["checks"], "last_error": status["last_error"], "fingerprints": status["fingerprints"]},
    )


def directories() -> None:
    private = Path("/var/lib/private/fpwatch")
    info = private.stat()
    link = os.readlink("/var/lib/fpwatch") if Path("/var/lib/fpwatch").is_symlink() else None
    record(
        "state_directory_private",
        (private / "fpwatch.db").is_file() and link == "private/fpwatch" and stat.S_IMODE(info.st_mode) == 0o700,
        {
            "files": sorted(p.name for p in private.iterdir()),
            "symlink": link,
            "mode": oct(stat.S_IMODE(info.st_mode)),
            "uid": info.st_uid,
        },
    )
    outcome = Path("/run/fpwatch/reload.json")
    mode = oct(stat.S_IMODE(outcome.stat().st_mode))
    body = json.loads(outcome.read_text())
    directory_mode = oct(stat.S_IMODE(Path("/run/fpwatch").stat().st_mode))
    record(
        "reload_outcome_file",
        mode == "0o600" and directory_mode == "0o700" and body["ok"] and body["generation"] == 0,
        {"mode": mode, "directory_mode": directory_mode, "content": body},
    )


def reload_valid() -> None:
    before = checks()
    time.sleep(3)
    quiet = checks() == before  # interval 1h: no second check
    write_config(FAST)
    began = time.monotonic()
    result = run("systemctl", "reload", UNIT)
    took = round(time.monotonic() - began, 2)
    after = wait(lambda: checks() >= before + 2, 20, "checks at the reloaded 2 s interval")
    record(
        "reload_valid_exits_0_and_new_interval_in_force",
        result.returncode == 0 and quiet and after,
        {
            "rc": result.returncode,
            "stderr": result.stderr,
            "seconds": took,
            "checks_before": before,
            "checks_after": checks(),
            "no_check_at_1h_interval": quiet,
            "status": show(UNIT, "StatusText")["StatusText"],
        },
    )


def reload_invalid() -> None:
    pid = show(UNIT, "MainPID")["MainPID"]
    write_config(INVALID)
    result = run("systemctl", "reload", UNIT)
    before = checks()
    wait(lambda: checks() >= before + 2, 20, "checks under the old config")
    successful = metric("fpwatch_config_last_reload_successful")
    lines = [message(e) for e in journal("-u", UNIT, "-n", "200")]
    said = [line for line in lines if "defaults.interval" in line or "config rejected by" in line]
    record(
        "reload_invalid_fails_and_old_config_runs",
        result.returncode != 0
        and active() == "active"
        and show(UNIT, "MainPID")["MainPID"] == pid
        and successful == 0
        and any("config rejected by" in line for line in said),
        {
            "rc": result.returncode,
            "stderr": result.stderr.strip(),
            "is-active": active(),
            "same_pid": show(UNIT, "MainPID")["MainPID"] == pid,
            "fpwatch_config_last_reload_successful": successful,
            "checks_meanwhile": checks() - before,
            "journal": said[-4:],
            "status": show(UNIT, "StatusText")["StatusText"],
        },
    )
    write_config(FAST)
    again = run("systemctl", "reload", UNIT)
    record(
        "reload_valid_again",
        again.returncode == 0 and metric("fpwatch_config_last_reload_successful") == 1,
        {"rc": again.returncode, "stderr": again.stderr.strip()},
    )


def former_exec_reload() -> None:
    """Not asserted, reported: the ExecReload= the unit had before (`config check` in its own process) on this
    systemd, to show why the unit now runs `fpwatch reload $MAINPID`."""
    DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    DROP_IN.write_text(
        "[Service]\nExecReload=\nExecReload=/usr/local/bin/fpwatch --config /etc/fpwatch/fpwatch.toml config check\n"
    )
    run("systemctl", "daemon-reload")
    result = run("systemctl", "reload", UNIT)
    said = [message(e) for e in journal("-u", UNIT, "-n", "20") if "cannot read" in message(e)]
    DROP_IN.unlink()
    run("systemctl", "daemon-reload")
    report["former_exec_reload"] = {"rc": result.returncode, "journal": said[-1:], "still_active": active()}


def watchdog() -> None:
    # A shorter WatchdogSec (and RestartSec) than the unit's 60 s (10 s), through a drop-in, only to keep the
    # test fast; the unit file itself is installed unchanged. The drop-in is removed afterwards.
    DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    DROP_IN.write_text("[Service]\nWatchdogSec=4s\nRestartSec=1s\n")
    run("systemctl", "daemon-reload")
    run("systemctl", "restart", UNIT)
    frozen = wait_active()
    restarts = int(show(UNIT, "NRestarts")["NRestarts"])
    time.sleep(2.5)  # at least one WATCHDOG=1 on the new WATCHDOG_USEC before the freeze
    began = time.monotonic()
    os.kill(int(frozen), signal.SIGSTOP)
    wait(
        lambda: active() == "active" and show(UNIT, "MainPID")["MainPID"] not in (frozen, "0"),
        40,
        "a new main process after the watchdog",
    )
    took = round(time.monotonic() - began, 2)
    props = show(UNIT, "NRestarts", "MainPID", "StatusText")
    said = [message(e) for e in journal("-u", UNIT, "-n", "100") if "atchdog" in message(e)]
    record(
        "watchdog_restarts_a_frozen_daemon",
        int(props["NRestarts"]) == restarts + 1 and bool(said),
        {"frozen_pid": frozen, "seconds_to_new_process": took, **props, "journal": said[-3:]},
    )
    DROP_IN.unlink()
    run("systemctl", "daemon-reload")


def restart_keeps_state() -> None:
    before = model_status()
    result = run("systemctl", "restart", UNIT)
    wait_active()
    after = wait(model_status, 10, "the restarted daemon's status")
    first_seen = [d["first_seen"] for d in before["fingerprint_details"]]
    record(
        "state_survives_restart",
        result.returncode == 0
        and after["checks"] >= before["checks"] > 0
        and [d["first_seen"] for d in after["fingerprint_details"]] == first_seen
        and after["fingerprint_details"][0]["count"] >= before["fingerprint_details"][0]["count"],
        {
            "rc": result.returncode,
            "checks_before": before["checks"],
            "checks_after": after["checks"],
            "first_seen": first_seen,
            "count_before": before["fingerprint_details"][0]["count"],
            "count_after": after["fingerprint_details"][0]["count"],
        },
    )


def stop_drains() -> None:
    sim({"latency": 3.0})
    wait(lambda: metric("fpwatch_checks_in_flight") == 1, 20, "a slow check in flight")
    invocation = show(UNIT, "InvocationID")["InvocationID"]
    timeout = show(UNIT, "TimeoutStopUSec")["TimeoutStopUSec"]
    began = time.monotonic()
    result = run("systemctl", "stop", UNIT, timeout=90)
    took = round(time.monotonic() - began, 2)
    props = show(UNIT, "Result", "ExecMainStatus", "ExecMainCode", "ActiveState")
    lines = [message(e) for e in journal(f"_SYSTEMD_INVOCATION_ID={invocation}")]
    stopping = [line for line in lines if '"stopping"' in line or '"stopped"' in line]
    sim({"latency": 0})
    record(
        "sigterm_drains_and_exits_0",
        result.returncode == 0
        and props["Result"] == "success"
        and props["ExecMainStatus"] == "0"
        and took < 30
        and any('"in_flight": 1' in line for line in stopping)
        and any('"stopped"' in line for line in stopping),
        {"rc": result.returncode, "seconds": took, "TimeoutStopUSec": timeout, **props, "journal": stopping},
    )


def check_unit() -> None:
    verdict = Path("/run/fpwatch-check.result")  # written by the test's ExecStopPost= drop-in

    def start_check() -> dict[str, Any]:
        verdict.unlink(missing_ok=True)
        result = run("systemctl", "start", CHECK_UNIT, timeout=120)
        outcome = verdict.read_text().split() if verdict.exists() else ["", "", ""]
        said = [
            message(e)
            for e in journal("-u", CHECK_UNIT, "-n", "30")
            if "FPWATCH " in message(e) or "Error:" in message(e)
        ]
        return {
            "systemctl_rc": result.returncode,
            "Result": outcome[0],
            "EXIT_CODE": outcome[1],
            "ExecMainStatus": outcome[2],
            "output": said[-1:] if said else [],
        }

    sim({"fingerprints": PARAMS["new_fingerprint"]})  # a new backend: fingerprint.changed, WARNING (1)
    warning = start_check()
    sim({"outputs": {"*": "3"}})  # the canary's expect = "^2$" fails: canary.failed, CRITICAL (2)
    critical = start_check()
    write_config(INVALID)  # an invalid config: UNKNOWN (3), the one failure
    unknown = start_check()
    write_config(FAST)
    record(
        "check_oneshot_1_and_2_succeed_3_fails",
        (warning["systemctl_rc"], warning["ExecMainStatus"], warning["Result"]) == (0, "1", "success")
        and (critical["systemctl_rc"], critical["ExecMainStatus"], critical["Result"]) == (0, "2", "success")
        and unknown["systemctl_rc"] != 0
        and (unknown["ExecMainStatus"], unknown["Result"]) == ("3", "exit-code")
        and all(each["EXIT_CODE"] == "exited" for each in (warning, critical, unknown)),
        {"exit_1": warning, "exit_2": critical, "exit_3": unknown},
    )
    timer = run("systemctl", "start", "fpwatch-check.timer")
    props = show("fpwatch-check.timer", "ActiveState", "NextElapseUSecRealtime")
    run("systemctl", "stop", "fpwatch-check.timer")
    record(
        "check_timer_loads_and_schedules",
        timer.returncode == 0 and props["ActiveState"] == "active" and bool(props["NextElapseUSecRealtime"]),
        {"rc": timer.returncode, **props},
    )


def journal_priorities() -> None:
    everything = journal("-u", UNIT)
    warnings = journal("-u", UNIT, "-p", "warning")
    daemon_info = [e for e in everything if '"level": "info"' in message(e)]
    leaked = [message(e) for e in warnings if int(e.get("PRIORITY", 6)) > 4 or '"level": "info"' in message(e)]
    errors = [message(e) for e in warnings if "config reload rejected" in message(e)]
    record(
        "journal_priority_prefixes",
        bool(daemon_info)
        and all(e.get("PRIORITY") == "6" for e in daemon_info)
        and not leaked
        and bool(errors)
        and any('"event": "daemon started"' in message(e) for e in daemon_info),
        {
            "info_lines_unfiltered": len(daemon_info),
            "warning_lines": len(warnings),
            "info_in_warning_view": leaked[:3],
            "error_example": errors[:1],
            "priorities_of_warning_view": sorted({e.get("PRIORITY") for e in warnings}),
        },
    )


def no_key_in_journal() -> None:
    key = PARAMS["key"]
    text = run("journalctl", "--no-pager", "-o", "cat").stdout
    fields = run("journalctl", "--no-pager", "-o", "json").stdout
    lines = text.count("\n")
    record(
        "key_in_no_journal_line",
        lines > 50 and key not in text and key not in fields and key[-12:] not in fields,
        {"journal_lines": lines, "key_found": key in text or key in fields},
    )


def security() -> None:
    out = run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    record(
        "security_exposure_in_booted_system",
        found is not None and float(found.group(1)) <= 1.5,
        {"exposure": found.group(1) if found else out[-500:]},
    )


STEPS = (
    started,
    directories,
    reload_valid,
    reload_invalid,
    former_exec_reload,
    watchdog,
    restart_keeps_state,
    security,
    stop_drains,
    check_unit,
    journal_priorities,
    no_key_in_journal,
)


def main() -> None:
    report["systemd"] = run("systemctl", "--version").stdout.splitlines()[0]
    report["os"] = Path("/etc/debian_version").read_text().strip()
    try:
        for step in STEPS:
            began = time.monotonic()
            try:
                step()
            except Exception:
                record(f"{step.__name__}_error", False, traceback.format_exc(limit=3))
            report["steps"][step.__name__] = round(time.monotonic() - began, 2)
    finally:
        tmp = RESULTS / "report.json.tmp"
        tmp.write_text(json.dumps(report, indent=2))
        tmp.rename(RESULTS / "report.json")
        (RESULTS / "journal.txt").write_text(run("journalctl", "-b", "--no-pager", "-o", "short-monotonic").stdout)
        run("systemctl", "poweroff", "--no-block")


if __name__ == "__main__":
    main()
