"""Benchmark: how promptly the daemon answers (SIGHUP, /healthz) while another process holds the state
database's write lock; this checkout side by side with an earlier commit, in one run.

    python bench/lock.py                       # against f2d208f, the commit before the store left the event loop
    python bench/lock.py --baseline HEAD~3 --rounds 7 --hold 4

What it does, for each of the two trees (the earlier commit is exported with `git archive` into a temporary
folder; both run from source with the same launcher, which takes the editable install out of the way): starts
the simulator in this process and `fpwatch run` as a subprocess on 20 models checked every second (2
one-token samples each, `listen` on a free port). After 5 s of checks, each round starts a second process
that takes `BEGIN EXCLUSIVE` on the state file and holds it `--hold` seconds (below the earlier daemon's 5 s
busy timeout, so neither tree drops checks); one second into the hold, while checks are waiting to be
recorded, it sends SIGHUP and then asks /healthz.

Figures per tree, medians over the rounds (the machine is shared: medians, and the max):
- SIGHUP handled after: from the signal to the daemon's own "config reloaded" log line (its timestamp);
- /healthz answered after: the wall time of one GET sent right after the signal;
- checks not recorded: "check not recorded" log lines (a write that gave up on the lock).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import child_env, free_port, write_config  # bench/ is on sys.path: the script's own folder

from fpwatch.clock import parse_iso
from fpwatch.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "f2d208f"
LAUNCHER = textwrap.dedent(
    """
    import sys
    # Run the fpwatch of the tree given first, not the editable install's.
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
    sys.path.insert(0, sys.argv.pop(1))
    from fpwatch.cli import main
    main(sys.argv[1:])
    """
)
LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
    """
)


def log_events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == name:
            found.append(entry)
    return found


def measure(tree: Path, sim: Simulator, rounds: int, hold: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fpwatch-lock-") as tmp:
        folder = Path(tmp)
        port = free_port()
        config = write_config(
            folder,
            sim.base_url,
            models=20,
            samples=2,
            concurrency=16,
            settings=[f'listen = "127.0.0.1:{port}"'],
            defaults=['interval = "1s"', 'jitter = "1s"', 'timeout = "30s"'],
        )
        log = folder / "daemon.log"
        with log.open("w") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(tree), "--config", str(config), "run"],
                cwd=folder,
                env=child_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"{tree}: the daemon did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
            time.sleep(5)
            sighup, healthz = [], []
            for number in range(1, rounds + 1):
                locker = subprocess.Popen(
                    [sys.executable, "-c", LOCKER, str(folder / "state.db"), str(hold)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
                time.sleep(1.0)  # checks are now waiting to record
                sent = datetime.now(UTC)
                daemon.send_signal(1)  # SIGHUP
                started = time.monotonic()
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
                healthz.append(time.monotonic() - started)
                while len(reloads := log_events(log, "config reloaded")) < number:
                    time.sleep(0.02)
                sighup.append((parse_iso(reloads[-1]["timestamp"]) - sent).total_seconds())
                locker.wait(timeout=hold + 30)
                time.sleep(2.0)
            lost = len(log_events(log, "check not recorded"))
        finally:
            daemon.terminate()
            code = daemon.wait(timeout=40)
        return {"sighup": sighup, "healthz": healthz, "lost": lost, "exit": code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"the earlier commit (default {DEFAULT_BASELINE})")
    parser.add_argument("--rounds", type=int, default=5, help="locks per tree (default 5)")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds each lock is held (default 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fpwatch-baseline-") as baseline, Simulator(seed=3) as sim:
        archive = subprocess.run(
            ["git", "archive", args.baseline, "fpwatch"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", baseline], input=archive.stdout, check=True)
        results = {
            f"{args.baseline} (before)": measure(Path(baseline), sim, args.rounds, args.hold),
            "this checkout": measure(ROOT, sim, args.rounds, args.hold),
        }
    print(f"SIGHUP and /healthz while another process holds the write lock {args.hold:g} s ({args.rounds} rounds):\n")
    print(
        "| tree | SIGHUP handled after (median / max) | /healthz answered after (median / max) | not recorded | exit |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {statistics.median(r['sighup']):.3f} s / {max(r['sighup']):.3f} s "
            f"| {statistics.median(r['healthz']):.3f} s / {max(r['healthz']):.3f} s | {r['lost']} | {r['exit']} |"
        )
    before, after = results.values()
    ratio = statistics.median(before["sighup"]) / max(statistics.median(after["sighup"]), 1e-3)
    print(f"\nSIGHUP latency ratio, before / after (medians): {ratio:.0f}x")
    return 0 if after["exit"] == 0 and after["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
