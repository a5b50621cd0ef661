"""Benchmark: `fpwatch check` over many models against the simulator, and the CLI's start-up time.

Run from the repository root (fpwatch installed, e.g. `pip install -e '.[test]'`):

    python bench/check.py                      # 200 models, 200 ms latency, concurrency 50, 5 runs
    python bench/check.py --runs 9 --json      # the same figures as JSON
    python bench/check.py --models 400 --concurrency 20 --samples 3
    python bench/check.py --mix                # the models spread over every wire format (MIX)
    python bench/check.py --tree ../base --tree .  --importtime   # two source trees side by side

What it does: starts the simulator (`fpwatch.sim.Simulator`) in this process, every model
answering after `--latency` seconds; writes a config with one `openai-compatible` provider pointing
at it (`max_concurrency = --concurrency`) and `--models` models, each with one canary of `--samples`
one-token requests; then runs `python -m fpwatch --config CFG check --json` as a subprocess `--runs`
times, each with a fresh state database so every run does the same work (`--state repeat`: each on a copy
of the state the untimed first check left, so every run is a repeat check, as cron's every few minutes are).
A run must exit 0, report every model without an error, and the simulator must have seen models x samples
requests; otherwise the benchmark stops with exit code 1.

`--mix` spreads the models over one provider of each type in MIX (the simulator serves every wire format,
checking each one's key header), each with an equal share of `--concurrency`, so the ideal is the same.

`--tree PATH` (repeatable) runs the fpwatch package in PATH (its subprocesses get PYTHONPATH=PATH), e.g. a
`git worktree` of an earlier commit; with several trees the runs take turns (run 1 of each tree, then run 2,
...), so the machine's noise falls on all of them alike, and the figures are printed side by side.

Bytecode: the subprocesses keep their compiled modules in a folder of the benchmark's own
(PYTHONPYCACHEPREFIX, whatever PYTHONDONTWRITEBYTECODE says), and one untimed check per tree fills it: an
installed fpwatch has its bytecode, and compiling some 70 modules on every run (60 ms here) is no cost of a check.

The figures (the machine is noisy: medians are what count):

- wall: the wall time of each `check` subprocess, start-up included (median, min, max).
- startup: the median wall time of `python -m fpwatch --help` (and of the `fpwatch` console script:
  this interpreter's own, else the one on PATH, which may be a slower pyenv shim; not with --tree) - what any
  command pays before doing work.
- ideal: latency x ceil(requests / concurrency) + startup - the time a check would take if it
  kept the provider's concurrency limit saturated and did nothing else.
- ratio: median wall / ideal; 1.0 is perfect. Aims: ratio <= 1.3 and startup <= 0.3 s.
- peak RSS: the largest resident set of a `check` subprocess (its own rusage).
- CPU of check: user + system seconds of one `check` subprocess (median). Close to the wall time
  means the check is CPU-bound, not waiting on the (simulated) network.
- simulator's own CPU per request: this process's CPU during a run (it only waits for the check; the rest is the
  simulator's threads, one per connection) over the run's requests. It shares the machine with the check, and at
  50 concurrent requests it spreads each batch's arrival and answer by tens of milliseconds: the test double's
  share of the timeline below, which the ratio counts against fpwatch.
- timeline: from the simulator's request log (same clock as this process), the medians of start to
  the first request (imports, config, database; compare with --help start-up), first to last
  request (ideal: latency x (batches - 1)) and last request to exit (ideal: one latency; the rest
  is recording, output and shutdown).
- with --importtime, where the start-up's imports go: three more checks per tree under `python -X importtime`,
  their modules' own (self) times summed per top-level package, the median per package, largest first. The
  measurement inflates them (about 1.5x): they are for comparing packages and trees, not for adding up to a wall.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import API_KEY, Provider, child_env, write_config  # bench/ is on sys.path: the script's own folder

from fpwatch.sim import Simulator

AIM_RATIO = 1.3
AIM_STARTUP = 0.3
# The wire formats of --mix, each served by the simulator at `path`. A new provider type is one entry here.
MIX: tuple[Provider, ...] = (
    Provider("openai-compatible"),
    Provider("openai"),
    Provider("azure", "", ('api_version = "2024-10-21"',)),
    Provider("anthropic", ""),
    Provider("gemini", ""),
    Provider("openai-responses"),
)
IMPORT_ROWS = 10  # packages shown in the --importtime breakdown
IMPORT_RUNS = 3  # -X importtime checks per tree; the breakdown is their medians
TIMEOUT = 600  # seconds a check may take


class BenchError(Exception):
    """A check run did not do what the benchmark needs: the figures would mean nothing."""


@dataclass
class Figures:
    tree: str | None  # the source tree run (--tree), None: the fpwatch this interpreter imports
    state: str  # --state: fresh (a first check on a new file) or repeat (a second check on a copy of one)
    providers: list[str]  # their types
    models: int
    samples: int
    concurrency: int
    latency: float
    runs: int
    requests_per_run: int
    batches: int  # of the busiest provider: requests / its max_concurrency, rounded up
    walls: list[float]
    wall_median: float
    wall_min: float
    wall_max: float
    startup_module: float
    startup_script: float | None
    script_path: str | None
    ideal: float
    ratio: float
    peak_rss_mb: float
    cpu_median: float
    to_first_request: float
    request_span: float
    after_last_request: float
    simulator_cpu_ms: float  # the simulator's own CPU per request (median run): the test double's, not fpwatch's
    aim_ratio: float
    aim_startup: float
    ratio_met: bool
    startup_met: bool
    imports: dict[str, float] | None  # --importtime: self seconds per top-level package, and "all"


@dataclass
class Run:
    wall: float  # seconds, perf_counter around the subprocess
    cpu: float  # user + system seconds of the subprocess
    rss_mb: float  # its peak resident set
    started: float  # time.monotonic(), the clock the simulator stamps requests with
    ended: float
    stderr: str
    simulator_cpu: float = 0.0  # seconds of the benchmark's own process meanwhile (its simulator's threads)


@dataclass
class Tree:
    """One fpwatch to run: its environment (PYTHONPATH, its own bytecode folder) and its runs so far."""

    path: str | None
    env: dict[str, str]
    runs: list[Run]
    phases: list[tuple[float, float, float]]  # start -> first request, first -> last, last -> exit
    template: Path | None = None  # --state repeat: the state its untimed first check left, copied for each run


def run_check(config: Path, env: dict[str, str], *, models: int, python: tuple[str, ...] = ()) -> Run:
    """One `fpwatch check --json` subprocess, timed. BenchError unless it checked every model."""
    cmd = [sys.executable, *python, "-m", "fpwatch", "--config", str(config), "check", "--json"]
    out, err = config.parent / "stdout", config.parent / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        started, mono_started = time.perf_counter(), time.monotonic()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=config.parent)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU and peak RSS
        wall, mono_ended = time.perf_counter() - started, time.monotonic()
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if wall >= TIMEOUT:
        raise BenchError(f"check took over {TIMEOUT} s and was killed")
    rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, kB on Linux
    run = Run(wall, usage.ru_utime + usage.ru_stime, rss_mb, mono_started, mono_ended, err.read_text())
    body_text = out.read_text()
    if proc.returncode != 0:
        raise BenchError(f"check exited {proc.returncode}\nstdout: {body_text[-2000:]}\nstderr: {run.stderr[-2000:]}")
    try:
        body = json.loads(body_text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"check --json printed no JSON ({exc}): {body_text[:500]!r}") from exc
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


def import_breakdown(stderr: str) -> dict[str, float]:
    """`-X importtime` lines -> self seconds per top-level package, largest first, and "all"."""
    per_package: Counter[str] = Counter()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        per_package[name.strip().split(".")[0]] += int(self_us) / 1e6
    return {"all": sum(per_package.values()), **dict(per_package.most_common())}


def _medians(breakdowns: list[dict[str, float]]) -> dict[str, float]:
    """Per package, the median of its self time over the runs (0 in a run that did not import it)."""
    packages = {name for found in breakdowns for name in found}
    medians = {name: statistics.median(found.get(name, 0.0) for found in breakdowns) for name in packages}
    return dict(sorted(medians.items(), key=lambda item: -item[1]))


def bench(args: argparse.Namespace, tmp: Path) -> list[Figures]:
    providers = list(MIX if args.mix else [Provider("openai-compatible")])
    shares = [math.ceil(args.concurrency / len(providers))] * len(providers) if args.mix else [args.concurrency]
    providers = [Provider(p.type, p.path, p.extra, share) for p, share in zip(providers, shares, strict=True)]
    per_provider = [len(range(i, args.models, len(providers))) * args.samples for i in range(len(providers))]
    batches = max(math.ceil(n / share) for n, share in zip(per_provider, shares, strict=True))
    expected = args.models * args.samples
    trees = []
    for i, path in enumerate(args.tree or [None]):
        env = child_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / f"bytecode{i}")
        if path is not None:
            env["PYTHONPATH"] = str(Path(path).resolve())
        trees.append(Tree(path, env, [], []))
    scenario: dict[str, Any] = {"models": {"*": {"latency": args.latency}}}
    with Simulator(scenario, api_key=API_KEY, seed=1) as sim:
        count = 0

        def one(tree: Tree, python: tuple[str, ...] = ()) -> tuple[Run, list[dict[str, Any]]]:
            nonlocal count
            count += 1
            folder = tmp / f"run{count}"  # a state of its own: every run does the same work
            folder.mkdir()
            if args.state == "repeat" and tree.template is not None:
                shutil.copyfile(tree.template, folder / "state.db")  # what the tree's first check left
            config = write_config(
                folder,
                sim.base_url,
                models=args.models,
                samples=args.samples,
                concurrency=args.concurrency,
                settings=[],
                defaults=[],
                providers=providers,
            )
            sim.clear_requests()
            cpu = time.process_time()  # this process only waits for the check meanwhile: the rest is the simulator's
            result = run_check(config, tree.env, models=args.models, python=python)
            result.simulator_cpu = time.process_time() - cpu
            requests = sim.requests()
            ok = sum(1 for r in requests if r.get("status") == 200)
            if len(requests) != expected or ok != expected:
                raise BenchError(f"the simulator saw {len(requests)} requests ({ok} ok), expected {expected}")
            return result, requests

        for tree in trees:
            one(tree)  # untimed: fills the tree's bytecode folder and the page cache, and leaves a state
            tree.template = tmp / f"run{count}" / "state.db"
        for _ in range(args.runs):
            for tree in trees:  # taking turns: noise falls on every tree alike
                result, requests = one(tree)
                arrived = sorted(r["monotonic"] for r in requests)
                first, last = arrived[0], arrived[-1]
                tree.runs.append(result)
                tree.phases.append((first - result.started, last - first, result.ended - last))
        imports: list[dict[str, float] | None] = [None] * len(trees)
        if args.importtime:
            breakdowns: list[list[dict[str, float]]] = [[] for _ in trees]
            for _ in range(IMPORT_RUNS):
                for tree, found in zip(trees, breakdowns, strict=True):
                    found.append(import_breakdown(one(tree, ("-X", "importtime"))[0].stderr))
            imports = [_medians(found) for found in breakdowns]

    script = console_script() if not args.tree else None
    figures = []
    for tree, imported in zip(trees, imports, strict=True):
        startup_module = startup([sys.executable, "-m", "fpwatch", "--help"], tree.env, args.startup_runs)
        startup_script = startup([script, "--help"], tree.env, args.startup_runs) if script else None
        ideal = args.latency * batches + startup_module
        walls = [r.wall for r in tree.runs]
        wall_median = statistics.median(walls)
        ratio = wall_median / ideal
        figures.append(
            Figures(
                tree=tree.path,
                state=args.state,
                providers=[p.type for p in providers],
                models=args.models,
                samples=args.samples,
                concurrency=args.concurrency,
                latency=args.latency,
                runs=args.runs,
                requests_per_run=expected,
                batches=batches,
                walls=[round(w, 4) for w in walls],
                wall_median=wall_median,
                wall_min=min(walls),
                wall_max=max(walls),
                startup_module=startup_module,
                startup_script=startup_script,
                script_path=script,
                ideal=ideal,
                ratio=ratio,
                peak_rss_mb=max(r.rss_mb for r in tree.runs),
                cpu_median=statistics.median(r.cpu for r in tree.runs),
                to_first_request=statistics.median(p[0] for p in tree.phases),
                request_span=statistics.median(p[1] for p in tree.phases),
                after_last_request=statistics.median(p[2] for p in tree.phases),
                simulator_cpu_ms=statistics.median(r.simulator_cpu for r in tree.runs) / expected * 1000,
                aim_ratio=AIM_RATIO,
                aim_startup=AIM_STARTUP,
                ratio_met=ratio <= AIM_RATIO,
                startup_met=startup_module <= AIM_STARTUP,
                imports=imported,
            )
        )
    return figures


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def print_table(all_figures: list[Figures]) -> None:
    """The figures of each tree side by side, one column each."""
    f = all_figures[0]
    batches = f.batches
    mix = f" over {len(f.providers)} providers ({', '.join(f.providers)})" if len(f.providers) > 1 else ""
    share = f", {math.ceil(f.concurrency / len(f.providers))} each" if mix else ""
    print(
        f"{f.models} models x {f.samples} samples = {f.requests_per_run} requests{mix}, latency "
        f"{f.latency * 1000:.0f} ms, max_concurrency {f.concurrency}{share} ({batches} batches), {f.runs} runs, "
        + ("each a first check on a new state" if f.state == "fresh" else "each a repeat check on a copy of a state")
    )
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, value: Any) -> None:
        rows.append((name, [value(g) for g in all_figures]))

    if len(all_figures) > 1:
        row("tree", lambda g: str(g.tree))
    row("wall median", lambda g: f"{g.wall_median:.3f} s")
    row("wall min / max", lambda g: f"{g.wall_min:.3f} / {g.wall_max:.3f} s")
    row("ideal (batches x latency + start-up)", lambda g: f"{g.ideal:.3f} s")
    row(f"ratio (median; aim <= {f.aim_ratio})", lambda g: f"{g.ratio:.2f} {verdict(g.ratio_met)}")
    row(
        f"start-up, python -m fpwatch --help (aim <= {f.aim_startup} s)",
        lambda g: f"{g.startup_module:.3f} s {verdict(g.startup_met)}",
    )
    if f.startup_script is not None:
        row(f"start-up, fpwatch --help ({f.script_path})", lambda g: f"{g.startup_script:.3f} s")
    row("peak RSS of check", lambda g: f"{g.peak_rss_mb:.1f} MB")
    row("CPU of check (median, user+sys)", lambda g: f"{g.cpu_median:.3f} s")
    row("  start to first request", lambda g: f"{g.to_first_request:.3f} s")
    row(f"  first to last request (ideal {f.latency * (batches - 1):.3f} s)", lambda g: f"{g.request_span:.3f} s")
    row(f"  last request to exit (ideal {f.latency:.3f} s)", lambda g: f"{g.after_last_request:.3f} s")
    row("simulator's own CPU per request (in this process)", lambda g: f"{g.simulator_cpu_ms:.2f} ms")
    if f.imports is not None:
        shown = Counter[str]()
        for g in all_figures:
            shown.update({k: v for k, v in (g.imports or {}).items() if k != "all"})
        row("imports at start-up (-X importtime, self)", lambda g: f"{(g.imports or {})['all']:.3f} s")
        for package, _ in shown.most_common(IMPORT_ROWS):
            row(f"  {package}", lambda g, p=package: f"{(g.imports or {}).get(p, 0.0) * 1000:.0f} ms")
    width = max(len(name) for name, _ in rows)
    columns = [max(len(values[i]) for _, values in rows) for i in range(len(all_figures))]
    for name, values in rows:
        cells = "  ".join(f"{v:<{w}}" for v, w in zip(values, columns, strict=True))
        print(f"{name:<{width}}  {cells}".rstrip())
    for g in all_figures:
        print(f"walls{f' of {g.tree}' if len(all_figures) > 1 else ''}: " + " ".join(f"{w:.3f}" for w in g.walls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=200, help="models in the config (default 200)")
    parser.add_argument("--samples", type=int, default=1, help="requests per model per check (default 1)")
    parser.add_argument("--concurrency", type=int, default=50, help="provider max_concurrency (default 50)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated latency, s (default 0.2)")
    parser.add_argument("--runs", type=int, default=5, help="check runs, each on a state of its own (default 5)")
    parser.add_argument(
        "--state",
        choices=("fresh", "repeat"),
        default="fresh",
        help="each run a first check on a new state file (default), or a repeat check on a copy of one (cron's case)",
    )
    parser.add_argument("--startup-runs", type=int, default=7, help="--help runs per figure (default 7)")
    parser.add_argument("--mix", action="store_true", help="spread the models over every provider type in MIX")
    parser.add_argument("--tree", action="append", metavar="PATH", help="run the fpwatch in PATH (repeatable)")
    parser.add_argument("--importtime", action="store_true", help="break the start-up's imports down by package")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (a list with several trees)")
    args = parser.parse_args(argv)
    for name in ("models", "samples", "concurrency", "runs", "startup_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.mix and args.concurrency < len(MIX):
        parser.error(f"--mix needs --concurrency of at least {len(MIX)}, one per provider")
    for path in args.tree or []:
        if not (Path(path) / "fpwatch" / "__init__.py").is_file():
            parser.error(f"--tree {path}: no fpwatch package there")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = bench(args, Path(tmp))
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"bench/check.py: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(figures[0]) if len(figures) == 1 else [asdict(f) for f in figures], indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
