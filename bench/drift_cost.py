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

from detection import Monitor, Tally

from fpwatch.detect import drift
from fpwatch.detect.conclude import conclude, prejudge
from fpwatch.sim import realistic

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
    monitor, tally = Monitor(3, realistic("a")), Tally([], [], [], [])
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--baseline", default="f2d208f", help="the tree to compare with (default f2d208f)")
    parser.add_argument("--checks", type=int, default=20, help="checks counted (default 20)")
    args = parser.parse_args()
    if args.instructions:
        return compare(args.baseline, args.checks)
    monitor = Monitor(3, realistic("a"))
    tally = Tally([], [], [], [])
    for number in range(60):
        monitor.check(tally, number)
    observations = monitor._ask(False, tally)  # one more check's answers, not applied
    screens, concludes, trips = [], [], []
    for _ in range(30):
        started = time.perf_counter()
        prejudged = prejudge(monitor.state, observations, monitor.policy, monitor.now)
        screens.append(time.perf_counter() - started)
        started = time.perf_counter()
        conclude(monitor.state, observations, monitor.policy, monitor.now, (), prejudged)
        concludes.append(time.perf_counter() - started)
        started = time.perf_counter()
        state = monitor.state.drift
        rows = {c.seq: json.loads(json.dumps(c.to_json(), separators=(",", ":"))) for c in state.checks()}
        drift.DriftState.from_json(json.loads(json.dumps(state.to_json(), separators=(",", ":"))), rows)
        trips.append(time.perf_counter() - started)
    size = len(json.dumps(monitor.state.drift.to_json(), separators=(",", ":")))
    row = len(json.dumps(monitor.state.drift.window[-1].to_json(), separators=(",", ":")))
    held = sum(len(json.dumps(c.to_json(), separators=(",", ":"))) for c in monitor.state.drift.checks())
    print(f"built-in set, {len(observations)} answers per check, reference and window full (medians of 30):")
    print(f"prejudge (the screen)       {statistics.median(screens) * 1000:.2f} ms (before the transaction)")
    print(f"conclude() reusing it       {statistics.median(concludes) * 1000:.2f} ms (inside the transaction)")
    parts = f"the state {size / 1024:.1f} KB + the check's row {row / 1024:.1f} KB"
    print(f"written per check           {(size + row) / 1024:.1f} KB ({parts})")
    count = len(monitor.state.drift.checks())
    print(f"held per model              {held / 1024:.1f} KB in {count} check rows")
    print(f"state round trip            {statistics.median(trips) * 1000:.2f} ms (every row loaded, the state saved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
