"""What drift detection costs per check: the screen, the whole conclude() call and the drift state's size.

A model with the built-in canaries is watched for 60 checks through the same pipeline as
bench/detection.py (simulator noise model, fpwatch's parser and run_check's decision steps), so its
reference is full and its window complete; then one more check is timed 30 times (medians) the way
run_check does it: the screen before the transaction (detect.conclude.prejudge), then conclude() inside
it, which reuses that screen when the state is unchanged. The drift state's JSON is measured and
round-tripped as the store does on every check.

Usage: python bench/drift_cost.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from detection import Monitor, Tally

from fpwatch.detect import drift
from fpwatch.detect.conclude import conclude, prejudge
from fpwatch.sim import realistic


def main() -> int:
    monitor = Monitor(3, realistic("a"))
    tally = Tally([], [], [], [])
    for number in range(60):
        monitor.check(tally, number)
    observations = monitor._ask(False, tally)  # one more check's answers, not applied
    screens, concludes, trips = [], [], []
    for _ in range(30):
        started = time.perf_counter()
        prejudged = prejudge(monitor.state, observations, monitor.policy)
        screens.append(time.perf_counter() - started)
        started = time.perf_counter()
        conclude(monitor.state, observations, monitor.policy, monitor.now, (), prejudged)
        concludes.append(time.perf_counter() - started)
        started = time.perf_counter()
        drift.DriftState.from_json(json.loads(json.dumps(monitor.state.drift.to_json(), separators=(",", ":"))))
        trips.append(time.perf_counter() - started)
    size = len(json.dumps(monitor.state.drift.to_json(), separators=(",", ":")))
    print(f"built-in set, {len(observations)} answers per check, reference and window full (medians of 30):")
    print(f"prejudge (the screen)       {statistics.median(screens) * 1000:.2f} ms (before the transaction)")
    print(f"conclude() reusing it       {statistics.median(concludes) * 1000:.2f} ms (inside the transaction)")
    print(f"drift state                 {size / 1024:.1f} KB of JSON")
    print(f"state JSON round trip       {statistics.median(trips) * 1000:.2f} ms (saved and loaded every check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
