"""The HTML report at the issue's scale: 90 days of 20 models checked every 15 minutes (172,800 checks), its size and
how fast it opens in a real browser.

A synthetic history is recorded through the real store API (`record_check` with observations, the real `conclude`
deciding the fingerprints' and resolved models' events, so the valid sets, retirements and outages are fpwatch's
own): each model rotates among replicas, has a rollout with overlap, a resolved-model change, a three-hour outage
and a confirmed drift (its event made here, with its behaviour fingerprint; the drift screens are synthetic noise
around a threshold, spiking at the drift); a few models carry no fingerprint (as Anthropic's), some events are
acked. Then `fpwatch report` runs as a real subprocess, and headless Chromium (tests/browser.py, over the DevTools
protocol) opens the file several times in a 1400x1000 window, reading the page's own marks (report/page.py): from
navigation to the first screen drawn (the overview, and the charts in view), to the first chart drawn, and to every
chart drawn after `fpwatchReport.drawAll()`; medians, and the first (cold) load apart.

`--demo PNG` instead runs `fpwatch demo`, and writes the screenshot of its story's report (the whole page, every
chart drawn) as an 8-bit PNG: the README's picture, bench/report-demo.png.

Usage: python bench/report.py [--days 90] [--models 20] [--interval 15m] [--samples 4] [--runs 7] [--state DIR]
       [--screenshot PNG] [--json FILE]
       python bench/report.py --demo bench/report-demo.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the browser driver

from _common import child_env
from browser import chromium

from fpwatch.clock import iso
from fpwatch.detect.conclude import behaviour_fingerprint, conclude
from fpwatch.detect.drift import CanaryShift
from fpwatch.detect.events import BehaviourChange, DriftDetails, Event, ScreenFigures
from fpwatch.detect.observation import FirstToken, Observation
from fpwatch.detect.state import ModelState, Policy
from fpwatch.durations import parse_duration
from fpwatch.store import CheckRecord, open_store

ROOT = Path(__file__).resolve().parent.parent
GRACE = timedelta(hours=24)
POLICY = Policy(GRACE, 3, 3)  # no canary keys: the drift screens here are synthetic (CheckRecord.screen)
IN_FLIGHT = 400  # checks recorded concurrently: the SQLite store writes them in group commits


class Plan:
    """What one model does over the window: replicas, a rollout, a resolved-model change, an outage, a drift."""

    def __init__(self, index: int, start: datetime, days: int) -> None:
        rng = random.Random(index)
        self.name = f"bench/m{index:02d}"
        self.fingerprints = index % 5 != 4  # every fifth model carries none (as Anthropic's)
        day = timedelta(days=1)
        self.replicas = [f"fp_{index:02d}{rng.getrandbits(32):08x}" for _ in range(rng.choice((2, 3)))]
        self.new = f"fp_{index:02d}{rng.getrandbits(32):08x}"
        self.rollout = start + day * rng.uniform(0.25, 0.45) * days  # one replica moves to `new` over a day
        self.resolved = (f"gpt-4o-2024-08-{index % 28 + 1:02d}", f"gpt-4o-2024-11-{index % 28 + 1:02d}")
        self.moved = start + day * rng.uniform(0.5, 0.7) * days
        self.outage = (start + day * rng.uniform(0.1, 0.2) * days, timedelta(hours=3))
        self.drift = start + day * rng.uniform(0.75, 0.95) * days
        self.threshold = rng.uniform(8, 16)
        self.rng = rng

    def observations(self, t: datetime, samples: int) -> list[Observation]:
        down_from, down_for = self.outage
        if down_from <= t < down_from + down_for:
            return [
                Observation(t, self.name, "one", i, 1, ok=False, http_status=500, error_kind="server", error="HTTP 500")
                for i in range(samples)
            ]
        pool = list(self.replicas)
        if t >= self.rollout:
            pool = [*pool[:-1], self.new] if t >= self.rollout + timedelta(days=1) else [*pool, self.new]
        out = []
        for i in range(samples):
            fingerprint = self.rng.choice(pool) if self.fingerprints else None
            resolved = self.resolved[1] if t >= self.moved else self.resolved[0]
            answer = self.rng.choice(("2", "2", "2", "Two"))
            out.append(
                Observation(
                    t,
                    self.name,
                    "one",
                    i,
                    1,
                    ok=True,
                    system_fingerprint=fingerprint,
                    fingerprint_state="present" if fingerprint else "absent",
                    response_model=resolved,
                    output=answer,
                    first_token=FirstToken(answer, -0.1, {answer: -0.1}),
                    output_tokens=1,
                    latency_ms=self.rng.uniform(150, 400),
                )
            )
        return out

    def screen(self, t: datetime, drifting: bool) -> ScreenFigures:
        surprise = self.threshold * (8.0 if drifting else self.rng.lognormvariate(-1.3, 0.6))
        logprob = 1e-4 * self.rng.lognormvariate(0, 0.5) * (50 if drifting else 1)
        return ScreenFigures(surprise, self.threshold * self.rng.uniform(0.97, 1.03), logprob, 2e-3, 40)

    def conclude(self, t: datetime, observations: list[Observation], drifting: bool) -> Any:
        def apply(state: ModelState) -> tuple[ModelState, list[Event]]:
            new, events = conclude(state, observations, POLICY, t)
            if drifting and new.behaviour_fingerprint is not None:
                bfp = behaviour_fingerprint(self.name, t)
                events.append(_drift(self.name, t, new.behaviour_fingerprint, bfp))
                new = replace(new, behaviour_fingerprint=bfp, drift=replace(new.drift, open_since=t))
            return new, events

        return apply


def _drift(model: str, t: datetime, old: str, new: str) -> Event:
    shift = CanaryShift(0.62, 240, 60, {"2": 0.75, "Two": 0.25}, {"Two": 0.8, "2": 0.2}, ("2",), ("Two",))
    details = DriftDetails(
        "pooled_g", 81.2, 24.1, 0.0003, ScreenFigures(90.1, 12.2, None, 0.002, 40), 0.62, True, 204, (t,), (),
        {"one": shift}, BehaviourChange(old, new), effect="answers moved: 62% of one's answers ('2' 75% -> 'Two' 80%)",
    )  # fmt: skip
    summary = f"{model}: canary behaviour changed silently (no fingerprint or resolved-model change): about 62% moved"
    return Event(t, model, "canary.drift", summary, details)


async def build(folder: Path, days: int, models: int, interval: timedelta, samples: int) -> tuple[Path, datetime]:
    """The state and a config naming its models; returns the config and when the history starts."""
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    plans = [Plan(i, start, days) for i in range(models)]
    lines = ["[fpwatch]", 'state = "state.db"', "", "[discovery]", "budget = 0", ""]
    lines += ["[providers.sim]", 'type = "openai-compatible"', 'base_url = "http://127.0.0.1:9/v1"', ""]
    for plan in plans:
        lines += ["[[models]]", 'provider = "sim"', f'model = "{plan.name.split("/")[1]}"', f'name = "{plan.name}"']
        lines += ['canaries = ["one"]', f'interval = "{int(interval.total_seconds())}s"', ""]
    lines += ["[canaries.one]", 'prompt = "Reply in one token. 1+1="', "max_tokens = 1", f"samples = {samples}", ""]
    config = folder / "fpwatch.toml"
    config.write_text("\n".join(lines))
    store = await open_store(folder / "state.db")
    steps = int(timedelta(days=days) / interval)
    pending: set[asyncio.Task[Any]] = set()
    began = time.monotonic()
    drifted: set[str] = set()
    for n in range(steps):
        t = start + n * interval
        for plan in plans:
            observations = plan.observations(t, samples)
            drifting = plan.name not in drifted and t >= plan.drift and all(o.ok for o in observations)
            if drifting:
                drifted.add(plan.name)
            failures = sum(not o.ok for o in observations)
            error = "every request failed: HTTP 500" if failures == len(observations) else None
            screen = plan.screen(t, drifting) if not failures else None
            record = CheckRecord(f"c{n:06d}{plan.name[-2:]}", plan.name, t, t, samples, failures, error, screen)
            job = store.record_check(record, observations, plan.conclude(t, observations, drifting))
            pending.add(asyncio.ensure_future(job))
        if len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        if n and n % 960 == 0:
            print(f"  day {n * interval / timedelta(days=1):.0f} of {days} ({time.monotonic() - began:.0f} s)")
    for task in await asyncio.gather(*pending):
        del task
    # A person acked about half of the warnings.
    for stored in await store.events(severities=["warning"]):
        if stored.id is not None and stored.id % 2:
            await store.ack(stored.id, "seen", stored.event.time + timedelta(hours=2))
    await store.close()
    return config, start


def measure(page: Path, runs: int, screenshot: Path | None) -> dict[str, Any]:
    """Open the page `runs` times in one browser: the page's own marks of the first screen and of every chart drawn."""
    url = page.resolve().as_uri()
    first: list[float] = []
    chart: list[float] = []
    everything: list[float] = []
    errors: list[str] = []
    with chromium(1400, 1000) as browser:
        for run in range(runs):
            tab = browser.open(url, timeout=120)
            first.append(float(tab.wait_for("document.documentElement.dataset.firstScreen", timeout=120)))
            chart.append(float(tab.wait_for("document.documentElement.dataset.firstChart", timeout=120)))
            tab.evaluate("window.fpwatchReport.drawAll()", timeout=120)
            everything.append(float(tab.wait_for("document.documentElement.dataset.allDrawn", timeout=120)))
            errors += [str(m) for m in tab.errors()]
            if run == 0 and screenshot is not None:
                tab.evaluate("window.scrollTo(0, 0)")
                tab.screenshot(screenshot)
            tab.close()
    return {
        "cold_first_screen_ms": first[0],
        "first_screen_ms": statistics.median(first[1:] or first),
        "first_chart_ms": statistics.median(chart[1:] or chart),
        "cold_first_chart_ms": chart[0],
        "all_drawn_ms": statistics.median(everything[1:] or everything),
        "cold_all_drawn_ms": everything[0],
        "runs": runs,
        "console_errors": errors,
    }


def demo_picture(png: Path) -> None:
    """The story of `fpwatch demo` as its report shows it, the whole page, in at most 256 colours."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="fpwatch-report-demo-") as tmp:
        page = Path(tmp) / "demo.html"
        proc = subprocess.run(
            [sys.executable, "-m", "fpwatch", "demo", "--report", str(page)],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=tmp,
        )
        if proc.returncode != 0 or not page.exists():
            sys.exit(f"fpwatch demo failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
        with chromium(1400, 1000) as browser:
            tab = browser.open(page.as_uri(), timeout=60)
            tab.wait_for("document.documentElement.dataset.firstScreen", timeout=60)
            tab.evaluate("window.fpwatchReport.drawAll()", timeout=60)
            tab.wait_for("document.documentElement.dataset.allDrawn", timeout=60)
            if tab.errors():
                sys.exit(f"the page logged errors: {[str(m) for m in tab.errors()]}")
            raw = tab.screenshot(Path(tmp) / "raw.png", full_page=True)
        with Image.open(raw) as image:
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    print(f"{png}: {png.stat().st_size / 1e3:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--interval", default="15m")
    parser.add_argument("--samples", type=int, default=4, help="requests per check (the built-in set sends 34)")
    parser.add_argument("--runs", type=int, default=7, help="page loads (the first one is reported apart)")
    parser.add_argument("--state", type=Path, help="keep the state in this folder, and reuse it when it is there")
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--demo", type=Path, metavar="PNG", help="the screenshot of `fpwatch demo`'s report, instead")
    args = parser.parse_args()
    if args.demo:
        demo_picture(args.demo)
        return
    with tempfile.TemporaryDirectory(prefix="fpwatch-report-bench-") as tmp:
        folder = args.state or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / "built.json"
        if marker.exists():
            config, start = folder / "fpwatch.toml", datetime.fromisoformat(json.loads(marker.read_text())["start"])
            built = json.loads(marker.read_text())["seconds"]
            print(f"reusing the state in {folder} (built in {built:.0f} s)")
        else:
            interval = parse_duration(args.interval)
            checks = args.models * int(timedelta(days=args.days) / interval)
            print(f"recording {checks:,} checks ({args.days} days, {args.models} models, every {args.interval})...")
            began = time.monotonic()
            config, start = asyncio.run(build(folder, args.days, args.models, interval, args.samples))
            built = time.monotonic() - began
            marker.write_text(json.dumps({"start": iso(start), "seconds": built}))
            print(f"  recorded in {built:.0f} s; state {(folder / 'state.db').stat().st_size / 1e6:.0f} MB")
        page = folder / "report.html"
        began = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fpwatch",
                "--config",
                str(config),
                "report",
                "--since",
                iso(start),
                "-o",
                str(page),
            ],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=ROOT,
        )
        generated = time.monotonic() - began
        if proc.returncode != 0:
            sys.exit(f"fpwatch report failed ({proc.returncode}): {proc.stderr.strip()}")
        size = page.stat().st_size
        print(f"fpwatch report: {generated:.1f} s, {size / 1e6:.2f} MB ({size:,} bytes)")
        figures = {"days": args.days, "models": args.models, "interval": args.interval, "samples": args.samples}
        figures |= {"generate_seconds": round(generated, 2), "page_bytes": size, "state_build_seconds": round(built)}
        figures |= measure(page, args.runs, args.screenshot)
        print(
            f"Chromium, {args.runs} loads: first screen drawn {figures['first_screen_ms']:.0f} ms "
            f"(cold {figures['cold_first_screen_ms']:.0f} ms), first chart drawn {figures['first_chart_ms']:.0f} ms "
            f"(cold {figures['cold_first_chart_ms']:.0f} ms), every chart drawn {figures['all_drawn_ms']:.0f} ms "
            f"(cold {figures['cold_all_drawn_ms']:.0f} ms); console errors: {len(figures['console_errors'])}"
        )
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
