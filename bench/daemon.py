"""Benchmark: the `fpwatch run` daemon watching many models for minutes - its CPU, memory and schedule lag.

Run from the repository root (fpwatch installed, e.g. `pip install -e '.[test]'`); the default run takes
about 3 minutes:

    python bench/daemon.py                          # 1,000 models every 1m, 200 ms latency, 3 minutes
    python bench/daemon.py --json                   # the same figures as one JSON object
    python bench/daemon.py --minutes 6 --warmup 120 --models 2000
    python bench/daemon.py --state postgresql       # the same on a throwaway PostgreSQL server (tests/postgres.py)
    python bench/daemon.py --both                   # SQLite, then PostgreSQL, and the figures side by side
    python bench/daemon.py --state postgresql://user:pw@host/db   # that database, as it is
    python bench/daemon.py --state postgresql --instances 3   # three daemons sharing the models on one database
    python bench/daemon.py --models 10000 --jitter 60s --concurrency 100 --aim-cpu 60 --aim-rss 300

What it does: starts the simulator (`fpwatch.sim.Simulator`) in this process, every model answering
after `--latency` seconds; writes a config in a temporary folder with `[defaults] interval = --interval`,
`jitter = --jitter`, `timeout = "30s"`, one `openai-compatible` provider pointing at the simulator
(`max_concurrency = 32`), `--models` models (`m0000`, `m0001`, ...) each with one canary of `--samples`
one-token requests, and `listen` on a free loopback port; then runs `python -m fpwatch --config CFG run` as
a subprocess (log to `daemon.log` next to the config) for `--minutes` in all. The first `--warmup` seconds
(default 75: the daemon's start-up, its first round of checks, spread over 10 s, and the first minute) are
left out of the steady-state figures; the window is from the warm-up mark to the end.

The state: `--state sqlite` (the default) is `state.db` next to the config. `--state postgresql` starts a
throwaway PostgreSQL server with the tests' harness (tests/postgres.py: loopback, scram password auth, `fsync`
and `synchronous_commit` off, so commits cost the server no disk sync; pg_stat_statements preloaded) and a fresh
database for the run; `--state postgresql://...` uses that database as it is. `--state` may be given more than
once, `--both` is `--state sqlite --state postgresql`: the runs go one after the other (never side by side on 2
cores), each with its own simulator and daemon, and a table of the main figures side by side ends the output.
The PostgreSQL server runs on the same machine and its CPU is not in the daemon's figures.

`--instances N` (PostgreSQL only: a SQLite state takes one daemon) starts N daemons at once on the same database,
each with the same config in a folder of its own (`d0`, `d1`, ...) but for its `listen` port, so each is its own
instance (named host:pid, as `fpwatch status` lists it). Every daemon schedules every model and checks it only when
it claims the model's slot for the interval (fpwatch/service/sharing.py): a run that another daemon claimed first
costs the claim and a read of the model's state, but no request. Each daemon is measured on its own, as below, over
its own window; the figures of the run are their totals (CPU seconds and shares, checks, RSS summed; CPU per check
= all their CPU / all their checks; lag over all their runs; the busiest 5 s of all of them together), and the aims
hold for each daemon. A line per daemon and the totals line follow the table; `--json` has them under `daemons`.

How it measures, all from outside the daemon:

- CPU: user + system time of the daemon process (all its threads) from /proc/PID/stat, read at the start
  of the window and at the end, and every 5 s in between (for the busiest 5 s).
- memory: VmHWM (peak resident set over the process's life) and VmRSS (resident now) from /proc/PID/status.
- checks, lag, durations: /metrics scraped at the warm-up mark and at the end; the window's figures are the
  differences of the two scrapes.

The figures (single run on a noisy 2-core machine: repeat it before trusting a difference of a few percent):

- checks in window: the increase of `fpwatch_checks_total` summed over models and statuses, and per minute.
  Each model runs exactly every interval at a fixed random phase within its jitter, so the long-run rate is
  models / interval; the rounds come in waves as wide as the jitter, so a window's rate depends on how many
  waves it cuts.
- CPU time per check: daemon CPU seconds in the window / checks in the window.
- CPU share: daemon CPU seconds in the window / wall seconds of the window, in % of one core. Aim < 10 %.
- busiest 5 s: the highest CPU share over one 5 s sampling interval inside the window (bursts).
- peak RSS: VmHWM at the end of the run (the whole run, start-up included). Aim < 150 MB (MiB, kB / 1024).
- schedule lag p50 / p99: quantiles of `fpwatch_schedule_lag_seconds` (how late each check was submitted
  after its scheduled, jittered time) over the window's observations. Only bucket counts exist, so they are
  bucket-interpolated: linear inside the bucket the quantile falls in, as Prometheus' histogram_quantile
  does; the bucket bounds are printed with them. "within 2 s" is exact, 2 s being a bucket bound. Aim: p99
  < 2 s.
- check duration mean: from `fpwatch_check_duration_seconds` sum / count in the window (ideal: one
  latency per sample, the samples of a check being sent together).
- simulator requests: requests the simulator logged between the two scrape requests (by its monotonic
  clock, the same as this process's) - a cross-check against checks x samples (checks in flight at either
  scrape make them differ slightly; with several daemons, between the first daemon's scrapes, the others' coming
  one after the other: a few seconds apart at 5,000 models).
- one check per model per interval, PostgreSQL only (bench/_claims.py): the simulator's log grouped by each model's
  slots (the intervals the daemons claim): requests / expected over the intervals wholly inside the window, where
  expected is one check (`--samples` requests) per model per interval - 1.00 with any number of daemons, N times
  as much if every daemon checked every model; the intervals of the whole run checked more than once; and those
  inside the window not checked at all.
- one /metrics scrape: the slower of the two scrapes - wall time, and daemon CPU (from /proc reads just
  before and after it). It is left out of the CPU window; a Prometheus scraping every 15 s would add
  scrape CPU / 15 s to the CPU share.
- bench process CPU: this process (the simulator and the sampling) in the window, in % of one core - it
  competes with the daemon for the same 2 cores.
- whole run: the same figures from the daemon's start to the end (CPU from /proc covers start-up: imports,
  config, the state database, and the first burst of checks).
- database, PostgreSQL only, per check in the window (bench/_postgres.py says how each is counted): transactions
  (pg_stat_database xact_commit + xact_rollback), statements (pg_stat_statements calls, BEGIN and COMMIT included;
  the busiest are listed) and round trips (the replies the daemon's connections read from the server, from `ss -ti`;
  a pipelined batch of statements is one). Everything the daemon sent counts, its other work (the outbox, leases)
  included. SQLite is a library inside the daemon: no round trips, shown as n/a.

It fails (exit 1, with the daemon logs' tails) if a daemon exits early, does not answer /healthz, a /metrics
scrape fails, any check ends with a status other than OK, the simulator answers anything but 200, a
daemon logs an error, or SIGTERM does not make it exit 0 within 40 s; and on PostgreSQL if any model was checked
more than once in one of its intervals, or the simulator saw more than 1.1 x the expected requests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from _claims import ClaimFigures, claims
from _common import API_KEY, child_env, free_port, model_ids, write_config  # bench/ is on sys.path: its own folder
from _postgres import DbFigures, Postgres, delta, open_state
from prometheus_client.parser import text_string_to_metric_families

from fpwatch.durations import parse_duration
from fpwatch.sim import Simulator

CONCURRENCY = 32  # the provider's max_concurrency, unless --concurrency
SAMPLE_EVERY = 5.0  # seconds between /proc samples
STARTUP_TIMEOUT = 90.0  # seconds for /healthz to answer
STOP_TIMEOUT = 40.0  # seconds from SIGTERM to exit
AIM_CPU_SHARE = 10.0  # % of one core, unless --aim-cpu
AIM_RSS_MB = 150.0  # unless --aim-rss
AIM_LAG_P99 = 2.0  # seconds
MAX_REQUEST_RATIO = 1.1  # the simulator's requests against one check per model per interval, on a shared state
SIM_LOG_LIMIT = 100_000  # the simulator keeps this many requests in its log (fpwatch/sim/server.py)
LAG = "fpwatch_schedule_lag_seconds"
DURATION = "fpwatch_check_duration_seconds"


class BenchError(Exception):
    """The daemon did not do what the benchmark needs: the figures would mean nothing."""


# --------------------------------------------------------------------------- measuring the process


@dataclass
class ProcSample:
    at: float  # time.monotonic()
    cpu: float  # user + system seconds of the process (and of children it waited for)
    rss_kb: int  # VmRSS
    hwm_kb: int  # VmHWM, the peak resident set so far


_TICKS = os.sysconf("SC_CLK_TCK")


def read_proc(pid: int) -> ProcSample:
    """CPU and memory of a live process from /proc (Linux only)."""
    at = time.monotonic()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read /proc/{pid}: {exc}") from exc
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ")".
    # Then field 3 (state) is fields[0], so utime (14), stime (15), cutime (16), cstime (17) follow.
    fields = stat.rsplit(")", 1)[1].split()
    cpu = sum(int(value) for value in fields[11:15]) / _TICKS
    memory: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0])  # "  123456 kB"
    return ProcSample(at, cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mb(kb: int) -> float:
    return kb / 1024


# --------------------------------------------------------------------------- /metrics


@dataclass
class Scrape:
    sent: float  # time.monotonic() when the request was sent
    at: float  # time.monotonic() when the answer arrived
    checks: dict[str, float] = field(default_factory=dict)  # status -> checks, summed over models
    lag_buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count), ascending
    lag_count: float = 0.0
    lag_sum: float = 0.0
    duration_count: float = 0.0
    duration_sum: float = 0.0

    @property
    def total_checks(self) -> float:
        return sum(self.checks.values())


def fetch(port: int) -> tuple[str, float, float]:
    """The /metrics page, with time.monotonic() when it was asked for and when it had arrived."""
    sent = time.monotonic()
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    except httpx.HTTPError as exc:
        raise BenchError(f"/metrics scrape failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise BenchError(f"/metrics answered {response.status_code}: {response.text[:300]}")
    return response.text, sent, time.monotonic()


def parse(page: str, sent: float, at: float) -> Scrape:
    result = Scrape(sent=sent, at=at)
    buckets: dict[float, float] = {}
    try:
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, float(sample.value)
                if name == "fpwatch_checks_total":
                    status = labels.get("status", "?")
                    result.checks[status] = result.checks.get(status, 0.0) + value
                elif name == f"{LAG}_bucket":
                    buckets[float(labels["le"])] = value
                elif name == f"{LAG}_count":
                    result.lag_count = value
                elif name == f"{LAG}_sum":
                    result.lag_sum = value
                elif name == f"{DURATION}_count":
                    result.duration_count = value
                elif name == f"{DURATION}_sum":
                    result.duration_sum = value
    except (ValueError, KeyError) as exc:
        raise BenchError(f"/metrics is not valid Prometheus text: {exc}") from exc
    if not buckets or not math.isinf(max(buckets)):
        raise BenchError(f"/metrics has no {LAG} histogram with a +Inf bucket")
    result.lag_buckets = sorted(buckets.items())
    return result


def bucket_delta(before: Scrape | None, after: Scrape) -> list[tuple[float, float]]:
    """The histogram of the observations made between two scrapes (all of them without `before`)."""
    if before is None:
        return after.lag_buckets
    earlier = dict(before.lag_buckets)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after.lag_buckets]


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram, linear inside its bucket (like histogram_quantile).

    A quantile in the +Inf bucket is reported as the highest finite bound (it is at least that).
    None when the histogram is empty.
    """
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            if cumulative == below:
                return le
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


def share_within(bound: float, buckets: list[tuple[float, float]]) -> float | None:
    """Exact share (0..1) of observations <= bound, when bound is a bucket bound."""
    total = buckets[-1][1]
    counts = dict(buckets)
    if total <= 0 or bound not in counts:
        return None
    return counts[bound] / total


def bucket_of(value: float | None, buckets: list[tuple[float, float]]) -> str:
    """The bucket a (quantile) value lies in, as "lower-upper s"."""
    if value is None:
        return "n/a"
    lower = 0.0
    for le, _ in buckets:
        if value <= le:
            return f"{lower:g}-{le:g} s" if not math.isinf(le) else f">{lower:g} s"
        lower = le
    return f">{lower:g} s"


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """`fpwatch run` as a subprocess, its log in a file."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.terminated = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def name(self) -> str:
        """Its instance name on a shared state, as `fpwatch status` lists it (its outbox lease owner's)."""
        return f"{socket.gethostname()}:{self.pid}"

    def start(self) -> None:
        with self.log.open("ab") as handle:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fpwatch", "--config", str(self.config), "run"],
                cwd=self.config.parent,
                env=child_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def ensure_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"the daemon {self.name} exited early with code {code}")

    def wait_healthy(self, timeout: float) -> float:
        """Seconds from the start until /healthz answers 200."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            self.ensure_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BenchError(f"the daemon's /healthz did not answer 200 within {timeout:g} s")

    def terminate(self) -> None:
        """SIGTERM (`stopped` then waits for the exit)."""
        assert self.proc is not None
        self.terminated = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stopped(self, timeout: float) -> tuple[int, float]:
        """The exit code after `terminate`, and the seconds from SIGTERM to the exit."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=max(0.0, self.terminated + timeout - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"the daemon {self.name} did not exit within {timeout:g} s of SIGTERM") from exc
        return code, time.monotonic() - self.terminated

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        if not self.log.exists():
            return lines
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                parsed = None
            lines.append(parsed if isinstance(parsed, dict) else {"level": "raw", "event": line})
        return lines

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        tail = [
            line[:300] + ("..." if len(line) > 300 else "")
            for line in self.log.read_text(errors="replace").splitlines()
        ]
        return "\n".join(tail[-lines:]) or "(empty log)"


def sample_until(deadline: float, daemons: list[Daemon], samples: list[list[ProcSample]]) -> None:
    """Sample every daemon's /proc every SAMPLE_EVERY seconds (together) until the deadline, watching for an early
    exit. `samples[i]` are daemon i's."""
    next_sample = (samples[0][-1].at if samples[0] else time.monotonic()) + SAMPLE_EVERY
    while (now := time.monotonic()) < deadline:
        for daemon in daemons:
            daemon.ensure_alive()
        if now >= next_sample:
            for daemon, own in zip(daemons, samples, strict=True):
                own.append(read_proc(daemon.pid))
            next_sample += SAMPLE_EVERY
        time.sleep(max(0.01, min(0.5, deadline - now, next_sample - now)))
    for daemon in daemons:
        daemon.ensure_alive()


@dataclass
class Mark:
    """A daemon at the warm-up mark or at the end: /proc just before its /metrics scrape, the scrape, /proc after."""

    before: ProcSample
    scrape: Scrape
    after: ProcSample

    @classmethod
    def take(cls, daemon: Daemon) -> Mark:
        before = read_proc(daemon.pid)
        page = fetch(daemon.port)
        after = read_proc(daemon.pid)  # before parsing the page: 10,000 models' take this process seconds
        return cls(before, parse(*page), after)

    @property
    def scrape_cpu(self) -> float:
        return self.after.cpu - self.before.cpu


# --------------------------------------------------------------------------- the figures


@dataclass
class Figures:
    state: str  # sqlite, postgresql (a throwaway server) or the URL given (without its password)
    models: int
    interval: str
    jitter: str
    samples: int
    latency: float
    concurrency: int
    minutes: float
    warmup: float
    instances: int  # daemons sharing the state; with several, the figures below are their totals (see DaemonFigures)
    # steady state: the window from the warm-up mark to the end
    window_seconds: float
    window_cpu_seconds: float
    window_checks: int
    window_checks_per_minute: float
    checks_per_second: float
    expected_checks_per_minute: float
    cpu_per_check_ms: float | None
    cpu_share_percent: float
    busiest_5s_cpu_percent: float | None
    lag_p50: float | None
    lag_p99: float | None
    lag_p50_bucket: str
    lag_p99_bucket: str
    lag_within_2s_percent: float | None
    lag_mean: float | None
    check_duration_mean: float | None
    sim_requests: int
    expected_requests: int
    bench_cpu_share_percent: float
    # the whole run, from the daemon's start
    run_seconds: float
    run_cpu_seconds: float
    run_checks: int
    run_cpu_per_check_ms: float | None
    run_cpu_share_percent: float
    run_lag_p50: float | None
    run_lag_p99: float | None
    run_sim_requests: int
    scrape_seconds: float
    scrape_cpu_seconds: float
    startup_seconds: float
    shutdown_seconds: float
    # memory
    peak_rss_mb: float
    rss_at_warmup_mb: float
    rss_at_end_mb: float
    max_sampled_rss_in_window_mb: float
    # context
    lag_bucket_bounds: list[float]
    log_warnings: dict[str, int]
    load_average: list[float]
    aim_cpu_share_percent: float
    aim_peak_rss_mb: float
    aim_lag_p99: float
    cpu_met: bool
    rss_met: bool
    lag_met: bool
    # the state database (PostgreSQL only; None for SQLite), per check in the window
    db_transactions_per_check: float | None = None
    db_statements_per_check: float | None = None
    db_round_trips_per_check: float | None = None
    db_connections: int | None = None  # the daemons' connections to the server at the end
    db_connections_closed: int | None = None  # closed during the window: their round trips are not counted
    db_busiest_statements: list[tuple[str, float]] = field(default_factory=list)  # (statement, calls per check)
    daemons: list[DaemonFigures] = field(default_factory=list)  # each daemon's own figures
    claims: ClaimFigures | None = None  # PostgreSQL: each model checked once per interval? (bench/_claims.py)


@dataclass
class DaemonFigures:
    """One daemon's figures, over its own window (from just after its warm-up scrape to just before its last)."""

    name: str  # its instance name, host:pid
    port: int
    window_seconds: float
    window_cpu_seconds: float
    window_checks: int  # the checks it made (the runs another daemon had claimed are not checks)
    checks_per_second: float
    cpu_per_check_ms: float | None
    cpu_share_percent: float
    busiest_5s_cpu_percent: float | None
    lag_p50: float | None  # over all its runs, the claimed and the skipped
    lag_p99: float | None
    peak_rss_mb: float
    rss_at_end_mb: float
    startup_seconds: float
    shutdown_seconds: float


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def shown(spec: str) -> str:
    """A state as the figures name it: a URL without its password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", spec)


def bench(args: argparse.Namespace, spec: str) -> Figures:
    interval = parse_duration(args.interval).total_seconds()
    total = args.minutes * 60
    scenario: dict[str, Any] = {"models": {"*": {"latency": args.latency}}}
    database: AbstractContextManager[Postgres | None] = nullcontext() if spec == "sqlite" else open_state(spec)
    with (
        database as pg,
        Simulator(scenario, api_key=API_KEY, seed=1) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        daemons: list[Daemon] = []
        for i in range(args.instances):  # the same config but for the listen port, each in its own folder
            folder = Path(tmp) / f"d{i}" if args.instances > 1 else Path(tmp)
            folder.mkdir(exist_ok=True)
            port = free_port()
            config = write_config(
                folder,
                sim.base_url,
                models=args.models,
                samples=args.samples,
                concurrency=args.concurrency,
                settings=['log_level = "warning"', f'listen = "127.0.0.1:{port}"'],
                defaults=[f'interval = "{args.interval}"', f'jitter = "{args.jitter}"', 'timeout = "30s"'],
                state=pg.url if pg is not None else "state.db",
            )
            daemons.append(Daemon(config, port))
        try:
            sim.clear_requests()
            for daemon in daemons:
                daemon.start()
            startups = [daemon.wait_healthy(STARTUP_TIMEOUT) for daemon in daemons]
            samples = [[read_proc(daemon.pid)] for daemon in daemons]
            first = daemons[0].started
            sample_until(first + args.warmup, daemons, samples)

            # Each daemon's CPU window runs from just after its first scrape to just before its second: neither
            # scrape's cost is in it. The /proc reads around each scrape measure what a scrape costs.
            pids = [daemon.pid for daemon in daemons]
            db_warm = pg.sample(pids) if pg is not None else None
            warm_wall = time.time()
            warms = [Mark.take(daemon) for daemon in daemons]
            warm_self = self_cpu()
            for own, mark in zip(samples, warms, strict=True):
                own.append(mark.after)
            sample_until(first + total, daemons, samples)
            end_self = self_cpu()
            end_wall = time.time()
            ends = [Mark.take(daemon) for daemon in daemons]
            for own, mark in zip(samples, ends, strict=True):
                own.append(mark.before)
            db: DbFigures | None = delta(db_warm, pg.sample(pids)) if pg is not None and db_warm else None
            load = list(os.getloadavg())

            for daemon in daemons:
                daemon.terminate()
            shutdowns: list[float] = []
            for daemon in daemons:
                code, shutdown = daemon.stopped(STOP_TIMEOUT)
                if code != 0:
                    raise BenchError(f"the daemon {daemon.name} exited {code} after SIGTERM, not 0")
                shutdowns.append(shutdown)
        except BaseException as exc:
            for daemon in daemons:
                daemon.kill()
            if isinstance(exc, BenchError):
                raise BenchError(f"{exc}\n{log_tails(daemons)}") from exc
            raise
        requests = sim.requests()
        log_lines = [line for daemon in daemons for line in daemon.log_lines()]
        tails = log_tails(daemons)

    def fail(message: str) -> BenchError:
        return BenchError(f"{message}\n{tails}")

    end_checks: Counter[str] = Counter()
    for mark in ends:
        end_checks.update(mark.scrape.checks)
    bad_checks = {status: n for status, n in end_checks.items() if status != "OK" and n > 0}
    if bad_checks:
        raise fail(f"checks ended with a status other than OK: {bad_checks}")
    refused = [r for r in requests if r.get("status") != 200]
    if refused:
        first_refused = {k: refused[0].get(k) for k in ("method", "path", "model", "status", "fault", "body_keys")}
        when = refused[0]["monotonic"] - ends[0].scrape.sent
        raise fail(
            f"the simulator answered requests with other statuses than 200: "
            f"{dict(Counter(r.get('status') for r in refused))}; the first {when:+.1f} s after the end: {first_refused}"
        )
    errors = [line for line in log_lines if line.get("level") in ("error", "critical", "exception", "raw")]
    if errors:
        raise fail(f"a daemon logged {len(errors)} errors (or non-JSON lines), first: {errors[0]}")
    if sum(end_checks.values()) <= 0:
        raise fail("the daemons finished no check")
    if len(requests) >= SIM_LOG_LIMIT:
        raise fail(f"the simulator's request log is full ({SIM_LOG_LIMIT:,} entries): shorten the run")
    shared = None
    if pg is not None:  # a PostgreSQL state is shared: every daemon claims each model's slot before checking it
        shared = claims(requests, model_ids(args.models), interval, args.samples, (warm_wall, end_wall))
        if shared.doubled_slots:
            raise fail(
                f"{shared.doubled_slots} model-intervals were checked more than once (requests in one interval, "
                f"{args.samples} a check): {shared.worst}"
            )
        if shared.ratio is not None and shared.ratio > MAX_REQUEST_RATIO:
            raise fail(
                f"the simulator saw {shared.ratio:.2f} x the expected requests in the window "
                f"({shared.requests} against one check per model per interval, {shared.expected_requests})"
            )
    warnings = Counter(str(line.get("event")) for line in log_lines if line.get("level") == "warning")

    each = [
        daemon_figures(daemon, own, warm, end, startup, shutdown)
        for daemon, own, warm, end, startup, shutdown in zip(
            daemons, samples, warms, ends, startups, shutdowns, strict=True
        )
    ]
    window = sum(d.window_seconds for d in each) / len(each)
    window_cpu = sum(d.window_cpu_seconds for d in each)
    window_checks = sum(d.window_checks for d in each)
    buckets = merged([bucket_delta(warm.scrape, end.scrape) for warm, end in zip(warms, ends, strict=True)])
    run_buckets = merged([bucket_delta(None, end.scrape) for end in ends])
    lag_count = sum(end.scrape.lag_count - warm.scrape.lag_count for warm, end in zip(warms, ends, strict=True))
    lag_sum = sum(end.scrape.lag_sum - warm.scrape.lag_sum for warm, end in zip(warms, ends, strict=True))
    duration_count = sum(e.scrape.duration_count - w.scrape.duration_count for w, e in zip(warms, ends, strict=True))
    duration_sum = sum(e.scrape.duration_sum - w.scrape.duration_sum for w, e in zip(warms, ends, strict=True))
    in_window = [
        [s for s in own if warm.after.at <= s.at <= end.before.at]
        for own, warm, end in zip(samples, warms, ends, strict=True)
    ]
    intervals = zip(*(pairwise(own) for own in in_window), strict=False)  # the daemons are sampled together
    busiest = max((sum(cpu_percent(a, b) for a, b in together) for together in intervals), default=None)
    run_seconds = ends[0].before.at - first
    run_cpu = sum(end.before.cpu for end in ends)
    run_checks = round(sum(end_checks.values()))
    p50, p99 = bucket_quantile(0.5, buckets), bucket_quantile(0.99, buckets)
    within = share_within(AIM_LAG_P99, buckets)
    marks = [*warms, *ends]

    def per_check(count: int | None) -> float | None:
        return round(count / window_checks, 2) if count is not None and window_checks else None

    return Figures(
        state=shown(spec),
        models=args.models,
        interval=args.interval,
        jitter=args.jitter,
        samples=args.samples,
        latency=args.latency,
        concurrency=args.concurrency,
        minutes=args.minutes,
        warmup=args.warmup,
        instances=args.instances,
        window_seconds=round(window, 3),
        window_cpu_seconds=round(window_cpu, 3),
        window_checks=window_checks,
        window_checks_per_minute=round(60 * window_checks / window, 1),
        checks_per_second=round(sum(d.checks_per_second for d in each), 2),
        expected_checks_per_minute=round(60 * args.models / interval, 1),
        cpu_per_check_ms=rounded(1000 * window_cpu / window_checks if window_checks else None, 3),
        cpu_share_percent=round(sum(d.cpu_share_percent for d in each), 2),
        busiest_5s_cpu_percent=rounded(busiest, 1),
        lag_p50=rounded(p50),
        lag_p99=rounded(p99),
        lag_p50_bucket=bucket_of(p50, buckets),
        lag_p99_bucket=bucket_of(p99, buckets),
        lag_within_2s_percent=rounded(None if within is None else 100 * within, 2),
        lag_mean=rounded(lag_sum / lag_count if lag_count else None),
        check_duration_mean=rounded(duration_sum / duration_count if duration_count else None),
        sim_requests=sum(1 for r in requests if warms[0].scrape.sent <= r["monotonic"] < ends[0].scrape.sent),
        expected_requests=window_checks * args.samples,
        bench_cpu_share_percent=round(100 * (end_self - warm_self) / window, 2),
        run_seconds=round(run_seconds, 3),
        run_cpu_seconds=round(run_cpu, 3),
        run_checks=run_checks,
        run_cpu_per_check_ms=rounded(1000 * run_cpu / run_checks if run_checks else None, 3),
        run_cpu_share_percent=round(
            sum(100 * end.before.cpu / (end.before.at - d.started) for d, end in zip(daemons, ends, strict=True)), 2
        ),
        run_lag_p50=rounded(bucket_quantile(0.5, run_buckets)),
        run_lag_p99=rounded(bucket_quantile(0.99, run_buckets)),
        run_sim_requests=sum(1 for r in requests if r["monotonic"] < ends[0].scrape.sent),
        scrape_seconds=round(max(m.scrape.at - m.scrape.sent for m in marks), 3),
        scrape_cpu_seconds=round(max(m.scrape_cpu for m in marks), 3),
        startup_seconds=round(max(startups), 3),
        shutdown_seconds=round(max(shutdowns), 3),
        peak_rss_mb=round(sum(d.peak_rss_mb for d in each), 1),
        rss_at_warmup_mb=round(sum(mb(warm.after.rss_kb) for warm in warms), 1),
        rss_at_end_mb=round(sum(d.rss_at_end_mb for d in each), 1),
        max_sampled_rss_in_window_mb=round(sum(mb(max(s.rss_kb for s in own)) for own in in_window), 1),
        lag_bucket_bounds=[le for le, _ in buckets if not math.isinf(le)],
        log_warnings=dict(warnings.most_common()),
        load_average=[round(x, 2) for x in load],
        aim_cpu_share_percent=args.aim_cpu,
        aim_peak_rss_mb=args.aim_rss,
        aim_lag_p99=AIM_LAG_P99,
        cpu_met=all(d.cpu_share_percent < args.aim_cpu for d in each),
        rss_met=all(d.peak_rss_mb < args.aim_rss for d in each),
        lag_met=p99 is not None and p99 < AIM_LAG_P99,
        db_transactions_per_check=per_check(db.transactions) if db else None,
        db_statements_per_check=per_check(db.statements) if db else None,
        db_round_trips_per_check=per_check(db.round_trips) if db else None,
        db_connections=db.connections if db else None,
        db_connections_closed=db.closed if db else None,
        db_busiest_statements=[(q, per_check(n) or 0.0) for q, n in db.top] if db else [],
        daemons=each,
        claims=shared,
    )


def daemon_figures(
    daemon: Daemon, samples: list[ProcSample], warm: Mark, end: Mark, startup: float, shutdown: float
) -> DaemonFigures:
    window = end.before.at - warm.after.at
    cpu = end.before.cpu - warm.after.cpu
    checks = round(end.scrape.total_checks - warm.scrape.total_checks)
    buckets = bucket_delta(warm.scrape, end.scrape)
    in_window = [s for s in samples if warm.after.at <= s.at <= end.before.at]
    busiest = max((cpu_percent(a, b) for a, b in pairwise(in_window)), default=None)
    return DaemonFigures(
        name=daemon.name,
        port=daemon.port,
        window_seconds=round(window, 3),
        window_cpu_seconds=round(cpu, 3),
        window_checks=checks,
        checks_per_second=round(checks / window, 2),
        cpu_per_check_ms=rounded(1000 * cpu / checks if checks else None, 3),
        cpu_share_percent=round(100 * cpu / window, 2),
        busiest_5s_cpu_percent=rounded(busiest, 1),
        lag_p50=rounded(bucket_quantile(0.5, buckets)),
        lag_p99=rounded(bucket_quantile(0.99, buckets)),
        peak_rss_mb=round(mb(end.before.hwm_kb), 1),
        rss_at_end_mb=round(mb(end.before.rss_kb), 1),
        startup_seconds=round(startup, 3),
        shutdown_seconds=round(shutdown, 3),
    )


def cpu_percent(a: ProcSample, b: ProcSample) -> float:
    return 100 * (b.cpu - a.cpu) / (b.at - a.at) if b.at > a.at else 0.0


def merged(histograms: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The sum of cumulative histograms with the same bounds (the daemons' own, for quantiles over all of them)."""
    return [(bounds[0][0], sum(count for _, count in bounds)) for bounds in zip(*histograms, strict=True)]


def log_tails(daemons: list[Daemon]) -> str:
    return "\n".join(f"--- daemon log tail ({daemon.log}):\n{daemon.log_tail()}" for daemon in daemons)


# --------------------------------------------------------------------------- output


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def print_table(f: Figures) -> None:
    bounds = " ".join(f"{b:g}" for b in f.lag_bucket_bounds)
    rows: list[tuple[str, str]] = [
        ("state", f.state),
        (
            "setup",
            f"{f.models} models every {f.interval} (jitter {f.jitter}), {f.samples} request(s) per check, "
            f"latency {f.latency * 1000:.0f} ms, max_concurrency {f.concurrency}",
        ),
        (
            "run",
            f"{f.minutes:g} min in all; window = {f.window_seconds:.1f} s after a {f.warmup:g} s warm-up "
            "(single run, noisy 2-core machine: repeat before comparing)",
        ),
        *(
            [("daemons", f"{f.instances} sharing the state: the figures are their totals; aims per daemon")]
            if f.instances > 1
            else []
        ),
        ("-- steady state (window)", ""),
        (
            "checks",
            f"{f.window_checks} ({f.window_checks_per_minute:.0f}/min; long-run rate ~"
            f"{f.expected_checks_per_minute:.0f}/min = models / interval; checks come in waves as wide as the jitter)",
        ),
        ("daemon CPU", f"{f.window_cpu_seconds:.2f} s user+sys"),
        ("CPU time per check", f"{f.cpu_per_check_ms:.2f} ms" if f.cpu_per_check_ms is not None else "n/a"),
        (
            "CPU share of one core",
            f"{f.cpu_share_percent:.2f} %  (aim < {f.aim_cpu_share_percent:g} %{per_daemon(f)}: {verdict(f.cpu_met)})",
        ),
        (
            "busiest 5 s",
            f"{f.busiest_5s_cpu_percent:.1f} % of one core" if f.busiest_5s_cpu_percent is not None else "n/a",
        ),
        (
            "schedule lag p50",
            f"{seconds(f.lag_p50)}  (bucket {f.lag_p50_bucket}; bucket-interpolated)",
        ),
        (
            "schedule lag p99",
            f"{seconds(f.lag_p99)}  (bucket {f.lag_p99_bucket}; bucket-interpolated)  "
            f"(aim < {f.aim_lag_p99:g} s: {verdict(f.lag_met)})",
        ),
        (
            "schedule lag <= 2 s",
            f"{f.lag_within_2s_percent:.2f} % of checks (exact)" if f.lag_within_2s_percent is not None else "n/a",
        ),
        ("schedule lag mean", f"{seconds(f.lag_mean)}  (exact, from _sum / _count)"),
        ("lag bucket bounds", f"{bounds} s, +Inf"),
        (
            "check duration mean",
            f"{seconds(f.check_duration_mean)}  (latency {f.latency:.3f} s)",
        ),
        (
            "simulator requests",
            f"{f.sim_requests}  (checks x samples = {f.expected_requests}; window edges make them differ a little)",
        ),
        *claim_rows(f),
        ("bench process CPU", f"{f.bench_cpu_share_percent:.2f} % of one core (simulator + sampling, same machine)"),
        ("-- memory", ""),
        (
            "peak RSS (VmHWM)",
            f"{f.peak_rss_mb:.1f} MB  (aim < {f.aim_peak_rss_mb:g} MB{per_daemon(f)}: {verdict(f.rss_met)})",
        ),
        (
            "RSS at warm-up / end",
            f"{f.rss_at_warmup_mb:.1f} MB / {f.rss_at_end_mb:.1f} MB  "
            f"(max sampled in window {f.max_sampled_rss_in_window_mb:.1f} MB)",
        ),
        *database_rows(f),
        ("-- whole run (from the daemon's start)", ""),
        ("wall / daemon CPU", f"{f.run_seconds:.1f} s / {f.run_cpu_seconds:.2f} s user+sys"),
        ("checks", f"{f.run_checks}  (simulator requests {f.run_sim_requests})"),
        (
            "CPU time per check",
            f"{f.run_cpu_per_check_ms:.2f} ms" if f.run_cpu_per_check_ms is not None else "n/a",
        ),
        ("CPU share of one core", f"{f.run_cpu_share_percent:.2f} %"),
        (
            "schedule lag p50 / p99",
            f"{seconds(f.run_lag_p50)} / {seconds(f.run_lag_p99)}  (bucket-interpolated)",
        ),
        (
            "one /metrics scrape",
            f"{f.scrape_seconds:.3f} s wall, {f.scrape_cpu_seconds:.3f} s daemon CPU (the slower of the two)",
        ),
        ("start to /healthz", f"{f.startup_seconds:.3f} s"),
        ("SIGTERM to exit 0", f"{f.shutdown_seconds:.3f} s"),
        ("-- context", ""),
        ("load average 1/5/15", " ".join(f"{x:.2f}" for x in f.load_average)),
        (
            "daemon log warnings",
            ", ".join(f"{n} x {event!r}" for event, n in f.log_warnings.items()) or "none",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}".rstrip())


def per_daemon(f: Figures) -> str:
    return " for each daemon" if f.instances > 1 else ""


def claim_rows(f: Figures) -> list[tuple[str, str]]:
    c = f.claims
    if c is None:
        return []
    ratio = "n/a" if c.ratio is None else f"{c.ratio:.3f}"
    return [
        ("-- one check per model per interval (simulator's log)", ""),
        (
            "requests / expected",
            f"{ratio}  ({c.requests} requests in the {c.slots} model-intervals wholly inside the window; "
            f"one check each: {c.expected_requests}; fails above {MAX_REQUEST_RATIO:g})",
        ),
        ("checked twice in one interval", f"{c.doubled_slots} model-intervals (whole run; fails above 0)"),
        ("not checked in an interval", f"{c.missed_slots} of {c.slots} model-intervals in the window"),
    ]


def print_daemons(f: Figures) -> None:
    """A line per daemon (its own window) and the totals line."""

    def cell(value: float | None, unit: str = "", digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    head = ["instance", "checks", "checks/s", "CPU share", "CPU/check", "busiest 5 s", "peak RSS", "lag p50", "lag p99"]

    def figures_row(name: str, figures: DaemonFigures | Figures) -> list[str]:  # a daemon's figures or the totals
        return [
            name,
            f"{figures.window_checks}",
            cell(figures.checks_per_second),
            cell(figures.cpu_share_percent, " %"),
            cell(figures.cpu_per_check_ms, " ms"),
            cell(figures.busiest_5s_cpu_percent, " %", 1),
            cell(figures.peak_rss_mb, " MB", 1),
            cell(figures.lag_p50, " s", 3),
            cell(figures.lag_p99, " s", 3),
        ]

    rows = [figures_row(d.name, d) for d in f.daemons] + [figures_row("total", f)]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print("-- per daemon (each over its own window; total: sums, lag over all the daemons' runs)")
    for row in [head, *rows]:
        print("  ".join(value.ljust(widths[0]) if i == 0 else value.rjust(widths[i]) for i, value in enumerate(row)))


def per_check(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def database_rows(f: Figures) -> list[tuple[str, str]]:
    if f.state == "sqlite":
        return [("-- state database", ""), ("round trips per check", "n/a (SQLite runs inside the daemon)")]
    connections = "n/a" if f.db_connections is None else f"{f.db_connections}"
    if f.db_connections_closed:
        connections += f" ({f.db_connections_closed} closed in the window, their round trips not counted)"
    rows = [
        ("-- state database, per check", ""),
        ("round trips", f"{per_check(f.db_round_trips_per_check)}  (replies the daemon read, `ss -ti`)"),
        ("statements", f"{per_check(f.db_statements_per_check)}  (pg_stat_statements calls, BEGIN/COMMIT included)"),
        ("transactions", f"{per_check(f.db_transactions_per_check)}  (pg_stat_database commits + rollbacks)"),
        ("the daemons' connections", connections),
    ]
    for query, calls in f.db_busiest_statements:
        text = " ".join(query.split())
        rows.append(("", f"{calls:6.2f}  {text[:90]}{'...' if len(text) > 90 else ''}"))
    return rows


def print_side_by_side(runs: list[Figures]) -> None:
    """The main figures of runs on several states, one column each."""

    def cell(value: float | None, unit: str = "", digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    rows: list[tuple[str, list[str]]] = [
        ("state", [f.state for f in runs]),
        ("daemons", [f"{f.instances}" for f in runs]),
        ("CPU share of one core", [cell(f.cpu_share_percent, " %") for f in runs]),
        ("CPU time per check", [cell(f.cpu_per_check_ms, " ms") for f in runs]),
        ("checks per second", [cell(f.checks_per_second, "", 1) for f in runs]),
        ("checks in window", [f"{f.window_checks}" for f in runs]),
        ("peak RSS", [cell(f.peak_rss_mb, " MB", 1) for f in runs]),
        ("schedule lag p50", [cell(f.lag_p50, " s", 3) for f in runs]),
        ("schedule lag p99", [cell(f.lag_p99, " s", 3) for f in runs]),
        ("check duration mean", [cell(f.check_duration_mean, " s", 3) for f in runs]),
        ("round trips per check", [cell(f.db_round_trips_per_check) for f in runs]),
        ("statements per check", [cell(f.db_statements_per_check) for f in runs]),
        ("transactions per check", [cell(f.db_transactions_per_check) for f in runs]),
        ("requests / expected", [cell(f.claims.ratio if f.claims else None, "", 3) for f in runs]),
        ("busiest 5 s", [cell(f.busiest_5s_cpu_percent, " %", 1) for f in runs]),
        ("load average 1/5/15", [" ".join(f"{x:.2f}" for x in f.load_average) for f in runs]),
    ]
    width = max(len(name) for name, _ in rows)
    columns = [max(len(values[i]) for _, values in rows) for i in range(len(runs))]
    for name, values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{v:>{columns[i]}}" for i, v in enumerate(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=1000, help="models in the config (default 1000)")
    parser.add_argument("--interval", default="1m", help='check interval of every model (default "1m")')
    parser.add_argument("--jitter", default="15s", help='schedule jitter (default "15s")')
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the whole run, min (default 3)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated latency, s (default 0.2)")
    parser.add_argument("--samples", type=int, default=1, help="requests per check (default 1)")
    parser.add_argument(
        "--warmup", type=float, default=75.0, help="seconds left out of the steady-state figures (default 75)"
    )
    parser.add_argument(
        "--state",
        action="append",
        help="sqlite (default), postgresql (a throwaway server), or a postgresql:// URL; may be given more than once",
    )
    parser.add_argument("--both", action="store_true", help="the same as --state sqlite --state postgresql")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help=f"the provider's max_concurrency (default {CONCURRENCY})"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="daemons sharing the state (default 1; more: PostgreSQL only)"
    )
    parser.add_argument("--aim-cpu", type=float, default=AIM_CPU_SHARE, help="CPU share aim, %% of one core")
    parser.add_argument("--aim-rss", type=float, default=AIM_RSS_MB, help="peak RSS aim, MB")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (a list: several)")
    args = parser.parse_args(argv)
    states: list[str] = (["sqlite", "postgresql"] if args.both else []) + (args.state or [])
    states = states or ["sqlite"]
    for spec in states:
        if spec not in ("sqlite", "postgresql") and not spec.startswith(("postgresql://", "postgres://")):
            parser.error(f"--state {spec!r}: sqlite, postgresql, or a postgresql:// URL")
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.instances > 1 and "sqlite" in states:
        parser.error(
            f"--instances {args.instances}: a SQLite state takes one daemon (a second one refuses to start); "
            "several daemons share a PostgreSQL state: --state postgresql or a postgresql:// URL"
        )
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    for name in ("models", "samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("interval", "jitter"):
        try:
            parse_duration(getattr(args, name))
        except ValueError as exc:
            parser.error(f"--{name}: {exc}")
    if parse_duration(args.interval).total_seconds() <= 0:
        parser.error("--interval must be longer than 0")
    if args.latency < 0 or args.warmup < 0:
        parser.error("--latency and --warmup must not be negative")
    if args.minutes * 60 < args.warmup + 2 * SAMPLE_EVERY:
        parser.error(f"--minutes must leave at least {2 * SAMPLE_EVERY:g} s after the --warmup")
    if not Path("/proc/self/stat").exists():
        parser.error("this benchmark reads /proc: it runs on Linux only")
    runs: list[Figures] = []
    for spec in states:
        try:
            runs.append(bench(args, spec))
        except BenchError as exc:
            print(f"bench/daemon.py: FAILED on {shown(spec)}: {exc}", file=sys.stderr)
            return 1
        if not args.json:
            if len(runs) > 1:
                print()
            print_table(runs[-1])
            if args.instances > 1:
                print_daemons(runs[-1])
    if args.json:
        print(json.dumps(asdict(runs[0]) if len(runs) == 1 else [asdict(f) for f in runs], indent=2))
    elif len(runs) > 1:
        print("\n-- side by side")
        print_side_by_side(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
