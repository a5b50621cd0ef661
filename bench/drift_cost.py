"""What drift detection costs per check: the screen, the whole conclude() call, and what the drift state writes.

A model with the built-in canaries is watched for 60 checks through the same pipeline as
bench/detection.py (simulator noise model, fpwatch's parser and run_check's decision steps), so its
reference is full and its window complete; then one more check is timed 30 times (medians) the way
run_check does it: the screen before the transaction (detect.conclude.prejudge), then conclude() inside
it, which reuses that screen when the state is unchanged. The drift state's JSON is measured and
round-tripped as the store does on every check.

`--instructions` counts CPU instructions instead (valgrind's callgrind: the same count whatever else the
shared machine is doing), per check of prejudge + conclude, for this checkout and side by side for
`--baseline REV` (default f2d208f, before the package was reshaped; its decision was drift.prescreen + track).

Usage: python bench/drift_cost.py [--instructions [--baseline REV] [--checks 20]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from detection import MODEL, Monitor, Tally

from fpwatch.detect.conclude import conclude, prejudge
from fpwatch.detect.drift import Prejudged
from fpwatch.detect.state import ModelState
from fpwatch.sim import realistic
from fpwatch.store import open_sqlite

ROOT = Path(__file__).resolve().parent.parent
# Run by the interpreter under callgrind: warm a model up, then decide `n` more checks on one check's answers.
CHILD = textwrap.dedent(
    """
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
    root, n = sys.argv[1], int(sys.argv[2])
    sys.path[:0] = [root, root + "/bench"]
    sys.argv = ["drift_cost"]
    from detection import Monitor, Tally
    from fpwatch.sim import realistic
    try:  # the built-in set alone, as the baseline tree has it
        monitor = Monitor(3, realistic("a"), discovery=False)
    except TypeError:
        monitor = Monitor(3, realistic("a"))
    tally = Tally([], [], [], [])
    for number in range(45):
        monitor.check(tally, number)
    observations = monitor._ask(False, tally)
    try:
        from fpwatch.detect.conclude import conclude, prejudge
    except ImportError:  # a tree from before the reshaping: the same steps, under their old names
        from fpwatch import drift
        from fpwatch.tracking import track as conclude
        keys = monitor.policy.canary_keys
        def prejudge(state, observations, policy, now):
            return drift.prescreen(state.drift, drift.samples_from(observations, keys), keys.values())
    for _ in range(n):
        prejudged = prejudge(monitor.state, observations, monitor.policy, monitor.now)
        conclude(monitor.state, observations, monitor.policy, monitor.now, (), prejudged)
    """
)


def instructions(tree: Path, checks: int) -> float:
    """Instructions per check (prejudge + conclude) of this tree: callgrind's totals with and without them."""
    python = str(Path(sys.executable).resolve())  # the interpreter itself: callgrind does not follow shims
    totals = []
    for n in (0, checks):
        with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
            run = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out.name}",
                    python,
                    "-c",
                    CHILD,
                    str(tree),
                    str(n),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        totals.append(int(re.search(r"Collected : (\d+)", run.stderr).group(1)))  # type: ignore[union-attr]
    return (totals[1] - totals[0]) / checks


def compare(baseline: str, checks: int) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 1
    with tempfile.TemporaryDirectory(prefix="fpwatch-baseline-") as folder:
        archive = subprocess.run(
            ["git", "archive", baseline, "fpwatch", "bench"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        before = instructions(Path(folder), checks)
    after = instructions(ROOT, checks)
    print(f"CPU instructions per check, prejudge + conclude, built-in set, full reference ({checks} checks):")
    print(f"{baseline + ' (before)':<28}{before / 1e6:.2f} M")
    print(f"{'this checkout':<28}{after / 1e6:.2f} M")
    print(f"{'ratio, after / before':<28}{after / before:.3f}")
    return 0


def measure(discovery: bool) -> dict[str, float]:
    """One model warmed up for 60 checks (with or without its discovered border inputs), then one more check
    decided 30 times, and recorded 30 times in a real SQLite store (medians, seconds and bytes)."""
    monitor = Monitor(3, realistic("a"), discovery=discovery)
    tally = Tally([], [], [], [])
    for number in range(60):
        monitor.check(tally, number)
    observations = monitor._ask(False, tally)  # one more check's answers
    screens, concludes, records, colds = [], [], [], []
    for _ in range(30):
        started = time.perf_counter()
        prejudged = prejudge(monitor.state, observations, monitor.policy, monitor.now)
        screens.append(time.perf_counter() - started)
        started = time.perf_counter()
        after, _ = conclude(monitor.state, observations, monitor.policy, monitor.now, (), prejudged)
        concludes.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="fpwatch-drift-cost-") as folder:
        path = Path(folder) / "state.db"

        async def stored() -> None:
            store = await open_sqlite(path)
            try:
                await store.update_state(MODEL, lambda _: monitor.state)
                for _ in range(30):
                    # A check as run_check makes it, minus the requests and the observations: load the state
                    # (rows parsed before are kept), screen, then in the transaction load again, conclude
                    # (reusing the screen) and save (the small state and one new row).
                    started = time.perf_counter()
                    before = await store.load_state(MODEL)
                    screened = prejudge(before, observations, monitor.policy, monitor.now)

                    def record(s: ModelState, screened: Prejudged = screened) -> ModelState:
                        return conclude(s, observations, monitor.policy, monitor.now, (), screened)[0]

                    await store.update_state(MODEL, record)
                    records.append(time.perf_counter() - started)
                    fresh = await open_sqlite(path, readonly=True)  # another process: every row parsed
                    started = time.perf_counter()
                    await fresh.load_state(MODEL)
                    colds.append(time.perf_counter() - started)
                    await fresh.close()
            finally:
                await store.close()

        asyncio.run(stored())
    state = after.drift
    return {
        "answers": len(observations),
        "canaries": len(monitor.policy.canary_keys),
        "screen": statistics.median(screens),
        "conclude": statistics.median(concludes),
        "record": statistics.median(records),
        "cold": statistics.median(colds),
        "state": len(json.dumps(state.to_json(), separators=(",", ":"))),
        "row": len(json.dumps(state.window[-1].to_json(), separators=(",", ":"))),
        "held": sum(len(json.dumps(c.to_json(), separators=(",", ":"))) for c in state.checks()),
        "rows": len(state.checks()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--baseline", default="f2d208f", help="the tree to compare with (default f2d208f)")
    parser.add_argument("--checks", type=int, default=20, help="checks counted (default 20)")
    args = parser.parse_args()
    if args.instructions:
        return compare(args.baseline, args.checks)
    both = [measure(False), measure(True)]
    ms, kb = 1000.0, 1 / 1024
    rows = [
        ("answers per check (canaries)", [f"{m['answers']} ({m['canaries']})" for m in both]),
        ("prejudge: the screen, before the transaction", [f"{m['screen'] * ms:.2f} ms" for m in both]),
        ("conclude() reusing it", [f"{m['conclude'] * ms:.2f} ms" for m in both]),
        ("a check's drift CPU: load, screen, load + conclude + save", [f"{m['record'] * ms:.2f} ms" for m in both]),
        ("load by another process (every row parsed)", [f"{m['cold'] * ms:.2f} ms" for m in both]),
        ("written per check: state + the check's row", [f"{(m['state'] + m['row']) * kb:.1f} KB" for m in both]),
        ("  of which the state / the row", [f"{m['state'] * kb:.1f} KB / {m['row'] * kb:.1f} KB" for m in both]),
        ("held per model", [f"{m['held'] * kb:.1f} KB in {m['rows']} rows" for m in both]),
    ]
    print("Drift detection per check, a model with a full reference and window (medians of 30):\n")
    print("| figure | built-in set | built-in set + discovered border inputs |")
    print("|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {values[0]} | {values[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
