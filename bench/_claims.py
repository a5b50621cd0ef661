"""The sharing side of bench/daemon.py: did the daemons on one PostgreSQL state check each model once per interval?

On a PostgreSQL state every daemon schedules every model, and a run checks the model only if it claims the model's
current slot (fpwatch/service/sharing.py): an interval model's slots are `anchor(model) + k * interval` on the wall
clock, the same for every daemon. So the simulator's request log says how the claiming went, with no help from the
daemons: a model's requests are grouped by the slot their wall time falls in (a daemon's runs are kept at least an
eighth of the interval inside a slot, so a request sent a moment after its claim is in the claim's slot).

- doubled: slots, over the whole run, with more requests than one check sends (`samples`): a model checked twice in
  one interval. It must be 0.
- requests / expected: over the slots lying wholly inside the window (from the warm-up mark to the end, a complete
  interval of every model), the requests the simulator saw against one check per model per slot. 1.00 when every
  model was checked exactly once in each; one daemon's worth of requests whatever the number of daemons, not N times.
- missed: slots inside the window in which the model was not checked at all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fpwatch.config.model import ModelConfig, ProviderConfig
from fpwatch.service.sharing import anchor

PROVIDER = "sim"  # the provider's name in the bench's config: a model's name is "sim/<model>"
CHAT = "/chat/completions"


@dataclass
class ClaimFigures:
    slots: int  # (model, slot) pairs wholly inside the window: one check expected in each
    requests: int  # the simulator's requests in those slots
    expected_requests: int  # slots x samples
    ratio: float | None  # requests / expected_requests
    missed_slots: int  # of those slots, the ones with no request
    doubled_slots: int  # slots of the whole run with more than one check's requests
    worst: list[tuple[str, int]] = field(default_factory=list)  # ("model at slot start", requests), the most first


def slot_starts(models: list[str], interval: float) -> dict[str, float]:
    """Each model's anchor: where its slots start within the interval (the daemons' own function)."""
    provider = ProviderConfig(PROVIDER, "openai-compatible", "http://127.0.0.1:1/v1")
    every = timedelta(seconds=interval)
    return {m: anchor(ModelConfig(f"{PROVIDER}/{m}", provider, m, (), interval=every)) for m in models}


def claims(
    requests: list[dict[str, Any]], models: list[str], interval: float, samples: int, window: tuple[float, float]
) -> ClaimFigures:
    """`requests`: the simulator's log of the whole run; `window`: its steady state, as time.time() values."""
    anchors = slot_starts(models, interval)
    counts: Counter[tuple[str, int]] = Counter()
    for request in requests:
        model = request.get("model")
        if model in anchors and str(request.get("path", "")).endswith(CHAT):
            counts[(model, math.floor((request["time"] - anchors[model]) / interval))] += 1
    start, end = window
    slots = requests_in = missed = 0
    for model, offset in anchors.items():
        first, last = math.ceil((start - offset) / interval), math.floor((end - offset) / interval) - 1
        for k in range(first, last + 1):
            slots += 1
            requests_in += counts[(model, k)]
            missed += counts[(model, k)] == 0
    doubled = sorted(((key, n) for key, n in counts.items() if n > samples), key=lambda item: -item[1])
    worst = [(f"{m} at {_iso(anchors[m] + k * interval)}", n) for (m, k), n in doubled[:5]]
    expected = slots * samples
    return ClaimFigures(
        slots=slots,
        requests=requests_in,
        expected_requests=expected,
        ratio=round(requests_in / expected, 3) if expected else None,
        missed_slots=missed,
        doubled_slots=len(doubled),
        worst=worst,
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S.%f")[:-3]
