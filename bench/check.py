"""Benchmark: `fpwatch check` over many models against the simulator, and the CLI's start-up time.

Run from the repository root (fpwatch installed, e.g. `pip install -e '.[test]'`):

    python bench/check.py                      # 200 models, 200 ms latency, concurrency 50, 5 runs
    python bench/check.py --runs 9 --json      # the same figures as one JSON object
    python bench/check.py --models 400 --concurrency 20 --samples 3

What it does: starts the simulator (`fpwatch.sim.Simulator`) in this process, every model
answering after `--latency` seconds; writes a config with one `openai-compatible` provider pointing
at it (`max_concurrency = --concurrency`) and `--models` models, each with one canary of `--samples`
one-token requests; then runs `python -m fpwatch --config CFG check --json` as a subprocess `--runs`
times, each with a fresh state database so every run does the same work. A run must exit 0, report
every model without an error, and the simulator must have seen models x samples requests;
otherwise the benchmark stops with exit code 1.

The figures (the machine is noisy: medians are what count):

- wall: the wall time of each `check` subprocess, start-up included (median, min, max).
- startup: the median wall time of `python -m fpwatch --help` (and of the `fpwatch` console script:
  this interpreter's own, else the one on PATH, which may be a slower pyenv shim) - what any
  command pays before doing work.
- ideal: latency x ceil(requests / concurrency) + startup - the time a check would take if it
  kept the provider's concurrency limit saturated and did nothing else.
- ratio: median wall / ideal; 1.0 is perfect. Aims: ratio <= 1.3 and startup <= 0.3 s.
- peak RSS: the largest resident set of any `check` subprocess (getrusage of the children).
- CPU of check: user + system seconds of one `check` subprocess (median). Close to the wall time
  means the check is CPU-bound, not waiting on the (simulated) network.
- timeline: from the simulator's request log (same clock as this process), the medians of start to
  the first request (imports, config, database; compare with --help start-up), first to last
  request (ideal: latency x (batches - 1)) and last request to exit (ideal: one latency; the rest
  is recording, output and shutdown).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import API_KEY, child_env, write_config  # bench/ is on sys.path: the script's own folder

from fpwatch.sim import Simulator

AIM_RATIO = 1.3
AIM_STARTUP = 0.3


class BenchError(Exception):
    """A check run did not do what the benchmark needs: the figures would mean nothing."""


@dataclass
class Figures:
    models: int
    samples: int
    concurrency: int
    latency: float
    runs: int
    requests_per_run: int
    walls: list[float]
    wall_median: float
    wall_min: float
    wall_max: float
    startup_module: float
    startup_script: float | None
    script_path: str | None
    ideal: float
    ratio: float
    peak_rss_mb: float | None
    cpu_median: float
    to_first_request: float
    request_span: float
    after_last_request: float
    aim_ratio: float
    aim_startup: float
    ratio_met: bool
    startup_met: bool


@dataclass
class Run:
    wall: float  # seconds, perf_counter around the subprocess
    cpu: float  # user + system seconds of the subprocess
    started: float  # time.monotonic(), the clock the simulator stamps requests with
    ended: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_check(config: Path, env: dict[str, str], *, models: int) -> Run:
    """One `fpwatch check --json` subprocess, timed. BenchError unless it checked every model."""
    cmd = [sys.executable, "-m", "fpwatch", "--config", str(config), "check", "--json"]
    cpu_before = children_cpu()
    started, mono_started = time.perf_counter(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=config.parent, timeout=600)
    wall, mono_ended = time.perf_counter() - started, time.monotonic()
    run = Run(wall, children_cpu() - cpu_before, mono_started, mono_ended)
    if proc.returncode != 0:
        raise BenchError(
            f"check exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
        )
    try:
        body = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"check --json printed no JSON ({exc}): {proc.stdout[:500]!r}") from exc
    reported = body.get("models", [])
    if len(reported) != models:
        raise BenchError(f"check reported {len(reported)} models, expected {models}")
    failed = [m for m in reported if m.get("error")]
    if failed:
        first = failed[0]
        raise BenchError(f"{len(failed)} models reported an error, e.g. {first['name']}: {first['error']}")
    return run


def startup(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    """Median wall time of a command that should exit 0 at once (after one untimed warm-up run)."""
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=60)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
        if i:  # the first run may compile bytecode or fill the page cache
            times.append(elapsed)
    return statistics.median(times)


def console_script() -> str | None:
    """The `fpwatch` script of this interpreter's environment, else the one on PATH (maybe a shim)."""
    local = Path(sysconfig.get_path("scripts")) / "fpwatch"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("fpwatch")


def bench(args: argparse.Namespace) -> Figures:
    env = child_env()
    expected = args.models * args.samples
    runs: list[Run] = []
    phases: list[tuple[float, float, float]] = []  # start -> first request, first -> last, last -> exit
    scenario: dict[str, Any] = {"models": {"*": {"latency": args.latency}}}
    with Simulator(scenario, api_key=API_KEY, seed=1) as sim, tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            folder = Path(tmp) / f"run{run}"  # a fresh state database: every run does the same work
            folder.mkdir()
            config = write_config(
                folder,
                sim.base_url,
                models=args.models,
                samples=args.samples,
                concurrency=args.concurrency,
                settings=[],
                defaults=[],
            )
            sim.clear_requests()
            result = run_check(config, env, models=args.models)
            requests = sim.requests()
            ok = sum(1 for r in requests if r.get("status") == 200)
            if len(requests) != expected or ok != expected:
                raise BenchError(
                    f"run {run}: the simulator saw {len(requests)} requests ({ok} ok), expected {expected}"
                )
            arrived = sorted(r["monotonic"] for r in requests)
            runs.append(result)
            first, last = arrived[0], arrived[-1]
            phases.append((first - result.started, last - first, result.ended - last))
    # ru_maxrss covers every child waited for so far: only the check runs at this point (kB on Linux).
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_rss_mb = maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024) if maxrss else None

    startup_module = startup([sys.executable, "-m", "fpwatch", "--help"], env, args.startup_runs)
    script = console_script()
    startup_script = startup([script, "--help"], env, args.startup_runs) if script else None

    ideal = args.latency * math.ceil(expected / args.concurrency) + startup_module
    walls = [r.wall for r in runs]
    wall_median = statistics.median(walls)
    ratio = wall_median / ideal
    return Figures(
        models=args.models,
        samples=args.samples,
        concurrency=args.concurrency,
        latency=args.latency,
        runs=args.runs,
        requests_per_run=expected,
        walls=[round(w, 4) for w in walls],
        wall_median=wall_median,
        wall_min=min(walls),
        wall_max=max(walls),
        startup_module=startup_module,
        startup_script=startup_script,
        script_path=script,
        ideal=ideal,
        ratio=ratio,
        peak_rss_mb=peak_rss_mb,
        cpu_median=statistics.median(r.cpu for r in runs),
        to_first_request=statistics.median(p[0] for p in phases),
        request_span=statistics.median(p[1] for p in phases),
        after_last_request=statistics.median(p[2] for p in phases),
        aim_ratio=AIM_RATIO,
        aim_startup=AIM_STARTUP,
        ratio_met=ratio <= AIM_RATIO,
        startup_met=startup_module <= AIM_STARTUP,
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def print_table(f: Figures) -> None:
    batches = math.ceil(f.requests_per_run / f.concurrency)
    rows: list[tuple[str, str]] = [
        (
            "setup",
            f"{f.models} models x {f.samples} samples = {f.requests_per_run} requests, "
            f"latency {f.latency * 1000:.0f} ms, max_concurrency {f.concurrency}",
        ),
        ("runs", str(f.runs)),
        ("wall median", f"{f.wall_median:.3f} s"),
        ("wall min / max", f"{f.wall_min:.3f} s / {f.wall_max:.3f} s"),
        (
            "ideal",
            f"{f.ideal:.3f} s  ({f.latency:g} s x {batches} batches + {f.startup_module:.3f} s start-up)",
        ),
        ("ratio (median)", f"{f.ratio:.2f}  (aim <= {f.aim_ratio}: {verdict(f.ratio_met)})"),
        (
            "start-up, python -m fpwatch --help",
            f"{f.startup_module:.3f} s  (aim <= {f.aim_startup} s: {verdict(f.startup_met)})",
        ),
    ]
    if f.startup_script is not None:
        rows.append(("start-up, fpwatch --help", f"{f.startup_script:.3f} s  ({f.script_path})"))
    rows.append(("peak RSS of check", f"{f.peak_rss_mb:.1f} MB" if f.peak_rss_mb is not None else "n/a"))
    rows.append(("CPU of check (median)", f"{f.cpu_median:.3f} s user+sys"))
    rows += [
        ("  start to first request", f"{f.to_first_request:.3f} s  (--help: {f.startup_module:.3f} s)"),
        ("  first to last request", f"{f.request_span:.3f} s  (ideal {f.latency * (batches - 1):.3f} s)"),
        ("  last request to exit", f"{f.after_last_request:.3f} s  (ideal {f.latency:.3f} s)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"{'walls':<{width}}  " + " ".join(f"{w:.3f}" for w in f.walls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=200, help="models in the config (default 200)")
    parser.add_argument("--samples", type=int, default=1, help="requests per model per check (default 1)")
    parser.add_argument("--concurrency", type=int, default=50, help="provider max_concurrency (default 50)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated latency, s (default 0.2)")
    parser.add_argument("--runs", type=int, default=5, help="check runs, each on a fresh state (default 5)")
    parser.add_argument("--startup-runs", type=int, default=7, help="--help runs per figure (default 7)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    for name in ("models", "samples", "concurrency", "runs", "startup_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    try:
        figures = bench(args)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"bench/check.py: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(figures), indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
