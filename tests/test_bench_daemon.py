"""bench/daemon.py's own promises that need no minutes of running: several daemons only on a shared state, and the
check of its results that each model was checked once per interval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # the benchmarks' own modules
from _claims import claims, slot_starts

ROOT = Path(__file__).resolve().parent.parent


def test_several_daemons_on_a_sqlite_state_are_refused_before_anything_starts() -> None:
    """`--instances 2` on SQLite (the default state, or in `--both`) is a usage error, exit 2, saying why."""
    for state in ([], ["--both"]):
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "daemon.py"), "--instances", "2", *state],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "a SQLite state takes one daemon" in result.stderr and "--state postgresql" in result.stderr


def test_the_simulators_log_tells_a_model_checked_twice_in_an_interval() -> None:
    """Requests are grouped by each model's slots: one check per model per interval inside the window gives a ratio
    of 1 and nothing doubled; a second check inside a slot is counted as doubled, a slot without one as missed."""
    models, interval = ["m000", "m001"], 60.0
    anchors = slot_starts(models, interval)
    base = 1_800_000_000 // interval * interval  # slot k of a model starts at base + anchor + k * interval

    def sent(model: str, k: int, into: float = 0.5) -> dict[str, object]:
        return {"model": model, "path": "/v1/chat/completions", "time": base + anchors[model] + (k + into) * interval}

    once = [sent(m, k) for m in models for k in range(5)]
    window = (base + interval, base + 4 * interval)  # slots 1 and 2 wholly inside (anchors < interval), maybe 0 or 3
    clean = claims(once, models, interval, 1, window)
    assert clean.ratio == 1.0 and clean.doubled_slots == 0 and clean.missed_slots == 0
    assert 2 * len(models) <= clean.slots <= 3 * len(models)

    twice = [*once, sent("m001", 2, into=0.9)]
    doubled = claims(twice, models, interval, 1, window)
    assert doubled.doubled_slots == 1 and doubled.ratio is not None and doubled.ratio > 1
    assert doubled.worst[0][0].startswith("m001 at ") and doubled.worst[0][1] == 2
    assert claims(twice, models, interval, 2, window).doubled_slots == 0  # two samples a check: one check

    gap = [r for r in once if not (r["model"] == "m000" and r["time"] == sent("m000", 2)["time"])]
    assert claims(gap, models, interval, 1, window).missed_slots == 1
