"""fpwatch under a real systemd: Debian 12 (systemd 252 as PID 1) booted in systemd-nspawn, with the project's
units installed unchanged, the README's credential setup and a config pointing at the simulator on loopback.

The host side (this file) builds or reuses a minimal Debian 12 root (debootstrap, cached under
/var/cache/fpwatch-nspawn keyed by the package list), builds the wheel from this checkout and its dependencies'
wheels, installs them offline into a venv inside a copy of that root, starts the simulator, and boots the
container. nspawn without --private-network shares the host's network namespace, so the daemon inside reaches
the simulator on 127.0.0.1. A oneshot probe unit inside the booted system (tests/nspawn_probe.py) drives
`systemctl`, writes /results/report.json and powers off; this test then asserts each finding.

Needs root, `debootstrap` and `systemd-nspawn` (Debian: debootstrap, systemd-container; .ci/setup installs them);
it skips, saying why, without them. It stops by itself: the container is killed at TEST_DEADLINE (290 s) at the
latest. About 85 s cold (debootstrap about 45 s), about 40 s with the cached root.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fpwatch.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/var/cache/fpwatch-nspawn")
SUITE = "bookworm"  # Debian 12: systemd 252, Python 3.11 (the wheels are built by this 3.11 for it)
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TEST_DEADLINE = 290.0  # seconds for the whole test, cold: debootstrap ~45 s, wheels ~15 s, the boot ~25 s
BOOT_TIMEOUT = 200.0  # at most, from boot to power-off (the probe needs about 25 s); then the container is killed
MODEL = "gpt-4o"
FINGERPRINT, NEW_FINGERPRINT = "fp_nspawn0001", "fp_nspawn0002"
PROBE_UNIT = """\
[Unit]
Description=fpwatch nspawn probe: drive systemctl, write /results/report.json, power off
After=fpwatch.service

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/lib/fpwatch-probe/nspawn_probe.py
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=220s
ExecStopPost=-/usr/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
"""
# A oneshot that ended successfully is unloaded at once (garbage-collected), and `systemctl show` then reports
# ExecMainStatus=0 whatever it exited with; so a drop-in (the unit file itself stays unchanged) records systemd's
# own verdict, $SERVICE_RESULT and $EXIT_STATUS, from an unsandboxed ("+") ExecStopPost=.
CHECK_DROP_IN = """\
[Service]
ExecStopPost=+/bin/sh -c 'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" > /run/fpwatch-check.result'
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap and systemd-nspawn); CI runs as root"
    for tool, package in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; .ci/setup installs it)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def mirror() -> str:
    """The Debian mirror apt already uses (deb822 .sources or sources.list), else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return fields["URIs"].split()[0]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


def base_root() -> tuple[Path, bool]:
    """The cached minimal root (built once per package list), and whether it was built now."""
    key = hashlib.sha256(" ".join((SUITE, "minbase", *PACKAGES)).encode()).hexdigest()[:12]
    root = CACHE / f"{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if (root / ".complete").exists():
            return root, False
        building = CACHE / f".{root.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        include = ",".join(PACKAGES)
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(building), mirror()],
            capture_output=True,
            text=True,
            timeout=200,
        )
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.fail(f"debootstrap failed (rc {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        (building / ".complete").touch()
        shutil.rmtree(root, ignore_errors=True)
        building.rename(root)
        return root, True


def wheels(into: Path) -> Path:
    """This checkout's wheel (built from a copy: no build/ or egg-info in the tree) and its dependencies' wheels,
    the latter cached by the dependency list."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    key = hashlib.sha256("\n".join(sorted(project["dependencies"])).encode()).hexdigest()[:12]
    deps = CACHE / f"wheels-py{sys.version_info.major}{sys.version_info.minor}-{key}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        subprocess.run([*pip, "wheel", "-w", str(deps), *project["dependencies"]], check=True, timeout=120)
        (deps / ".complete").touch()
    source = into / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source)
    shutil.copy2(ROOT / "README.md", source)
    shutil.copytree(ROOT / "fpwatch", source / "fpwatch", ignore=shutil.ignore_patterns("__pycache__"))
    built = into / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(built), str(source)], check=True, timeout=120)
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, built)
    return built


def nspawn(root: Path, *args: str, binds: tuple[str, ...] = (), timeout: float = 300) -> None:
    """One command in the root, not booted (systemd-nspawn --pipe)."""
    command = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--pipe", "-D", str(root)]
    result = subprocess.run(
        [*command, *(f"--bind-ro={b}" for b in binds), *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)} in the container: rc {result.returncode}\n{result.stderr}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(listen_port: int, sim_url: str) -> str:
    return textwrap.dedent(
        f"""\
        # The README's systemd setup: the key from LoadCredential=, the state in $STATE_DIRECTORY.
        [fpwatch]
        state = "fpwatch.db"
        listen = "127.0.0.1:{listen_port}"

        [defaults]
        interval = "1h"
        jitter = "0"
        learning_period = 2
        grace_period = "1h"
        timeout = "10s"

        [discovery]
        budget = 0

        [providers.sim]
        type = "openai-compatible"
        base_url = "{sim_url}/v1"
        api_key_file = "${{CREDENTIALS_DIRECTORY}}/openai"

        [[models]]
        provider = "sim"
        model = "{MODEL}"
        canaries = ["probe"]

        [canaries.probe]
        prompt = "Reply in one token. 1+1="
        max_tokens = 2
        samples = 2
        expect = "^2$"
        """
    )


def install(root: Path, work: Path, key: str, params: dict[str, Any]) -> None:
    """The wheel into a venv, the units unchanged, the config, the credential and the probe."""
    built = wheels(work)
    nspawn(root, "/usr/bin/python3", "-m", "venv", "/opt/fpwatch")
    nspawn(
        root,
        "/opt/fpwatch/bin/pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "--no-index",
        "--find-links=/wheels",
        "fpwatch",
        binds=(f"{built}:/wheels",),
    )
    (root / "usr/local/bin/fpwatch").symlink_to("/opt/fpwatch/bin/fpwatch")
    for unit in [*(ROOT / "systemd").glob("*.service"), *(ROOT / "systemd").glob("*.timer")]:
        shutil.copy2(unit, root / "etc/systemd/system" / unit.name)
    etc = root / "etc/fpwatch"
    (etc / "credentials").mkdir(parents=True, mode=0o700)
    (etc / "fpwatch.toml").write_text(config(params["listen_port"], params["sim_url"]))
    credential = etc / "credentials/openai"
    credential.write_text(key + "\n")
    credential.chmod(0o600)
    probe = root / "usr/local/lib/fpwatch-probe"
    probe.mkdir(parents=True)
    shutil.copy2(ROOT / "tests/nspawn_probe.py", probe)
    (root / "etc/systemd/system/fpwatch-probe.service").write_text(PROBE_UNIT)
    (root / "etc/systemd/system/fpwatch-check.service.d").mkdir()
    (root / "etc/systemd/system/fpwatch-check.service.d/50-nspawn-probe.conf").write_text(CHECK_DROP_IN)
    # `systemctl enable`, offline; the timer is not enabled (it would race the probe's own check runs).
    subprocess.run(
        ["systemctl", f"--root={root}", "enable", "fpwatch.service", "fpwatch-probe.service"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (root / "etc/hostname").write_text("fpwatch-nspawn\n")


def boot(root: Path, results: Path, timeout: float) -> tuple[int | None, str, float]:
    """Boot until the probe powers off, or kill the container after `timeout` s (or on any error); rc, console,
    seconds."""
    command = [
        "systemd-nspawn", "-D", str(root), "-b", "--register=no", "--keep-unit", "--console=pipe",
        f"--bind={results}:/results", "--machine=fpwatch-nspawn",
    ]  # fmt: skip
    began = time.monotonic()
    console = results / "console.log"
    with console.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        rc: int | None = None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when pytest-timeout interrupts: never leave a container running
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # nspawn asks the container to power off ...
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()  # ... and the container dies with it
                    proc.wait()
    return rc, console.read_text(errors="replace"), time.monotonic() - began


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Build (or reuse) the root, install, boot with the probe; the probe's report, with timings."""
    timings: dict[str, float] = {}
    began = time.monotonic()
    base, cold = base_root()
    timings["root_build" if cold else "root_reuse"] = time.monotonic() - began
    root = tmp_path / "root"
    step = time.monotonic()
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True, timeout=300)
    timings["root_copy"] = time.monotonic() - step
    key = "sk-nspawn-" + secrets.token_hex(16)
    scenario = {"models": {MODEL: {"fingerprints": FINGERPRINT, "outputs": {"*": "2"}}}}
    with Simulator(scenario, api_key=key, seed=12) as sim:
        params = {
            "listen_port": free_port(),
            "sim_url": sim.url,
            "model": MODEL,
            "fingerprint": FINGERPRINT,
            "new_fingerprint": NEW_FINGERPRINT,
            "key": key,
        }
        step = time.monotonic()
        install(root, tmp_path, key, params)
        timings["install"] = time.monotonic() - step
        results = tmp_path / "results"
        results.mkdir()
        (results / "params.json").write_text(json.dumps(params))
        left = TEST_DEADLINE - (time.monotonic() - began)
        rc, console, seconds = boot(root, results, timeout=max(30.0, min(BOOT_TIMEOUT, left)))
        timings["boot_to_poweroff"] = seconds
    timings["total"] = time.monotonic() - began
    artifacts = ROOT / "tests/artifacts/nspawn"  # the report, the console and the journal, for a failure's reader
    shutil.rmtree(artifacts, ignore_errors=True)
    shutil.copytree(results, artifacts, ignore=shutil.ignore_patterns("params.json"))
    report_file = results / "report.json"
    if not report_file.exists():
        pytest.fail(
            f"the probe wrote no report (nspawn rc {rc}, {seconds:.0f} s"
            f"{', killed at the timeout' if rc is None else ''}); console:\n{console[-4000:]}"
        )
    report: dict[str, Any] = json.loads(report_file.read_text())
    report["timings"] = {k: round(v, 1) for k, v in timings.items()}
    report["cold"] = cold
    report["nspawn_rc"] = rc
    shown = ("timings", "cold", "steps", "systemd", "former_exec_reload")
    print(json.dumps({k: report.get(k) for k in shown}, indent=2))
    yield report
    shutil.rmtree(root, ignore_errors=True)


EXPECTED = {
    "ready_and_status": "started as Type=notify, active, STATUS=watching 1 models: ...",
    "credential_read_by_the_daemon": "the daemon read the LoadCredential= key and checked the model",
    "state_directory_private": "the state in /var/lib/private/fpwatch (0700), /var/lib/fpwatch a symlink to it",
    "reload_outcome_file": "the start's outcome in /run/fpwatch/reload.json (0600 in a 0700 directory)",
    "reload_valid_exits_0_and_new_interval_in_force": "`systemctl reload` exits 0 and the new 2 s interval runs",
    "reload_invalid_fails_and_old_config_runs": "an invalid config: `systemctl reload` fails, the old config runs, "
    "fpwatch_config_last_reload_successful 0",
    "reload_valid_again": "a valid config again: `systemctl reload` exits 0, the metric is back at 1",
    "watchdog_restarts_a_frozen_daemon": "a daemon frozen with SIGSTOP is killed by the watchdog and restarted",
    "state_survives_restart": "the history is still there after `systemctl restart`",
    "security_exposure_in_booted_system": "`systemd-analyze security` in the booted system rates the unit <= 1.5",
    "sigterm_drains_and_exits_0": "`systemctl stop` drains the check in flight; Result=success, status 0, < 30 s",
    "check_oneshot_1_and_2_succeed_3_fails": "fpwatch-check.service: exit 1 and 2 are success, 3 a failure",
    "check_timer_loads_and_schedules": "fpwatch-check.timer starts and schedules its next run",
    "journal_priority_prefixes": "`journalctl -p warning -u fpwatch` has no info line; info lines are priority 6",
    "key_in_no_journal_line": "the fake API key appears in no journal line or field",
}


@pytest.mark.timeout(TEST_DEADLINE + 40)  # a backstop: the steps have their own timeouts within TEST_DEADLINE
def test_the_service_under_a_real_systemd(booted: dict[str, Any]) -> None:
    """Every finding of the probe inside the booted Debian 12 holds; each failure says what and shows the detail."""
    items = booted["items"]
    errors = {name: item["detail"] for name, item in items.items() if name.endswith("_error")}
    assert not errors, "a probe step raised:\n" + "\n".join(f"{n}: {d}" for n, d in errors.items())
    assert booted["systemd"].startswith("systemd 252"), booted["systemd"]
    failed = [
        f"{name}: {what}\n    {json.dumps(items.get(name, {}).get('detail'))}"
        for name, what in EXPECTED.items()
        if not items.get(name, {}).get("ok")
    ]
    assert not failed, "under systemd, not as expected:\n" + "\n".join(failed)
    assert booted["nspawn_rc"] == 0, f"the container did not power off cleanly: rc {booted['nspawn_rc']}"
