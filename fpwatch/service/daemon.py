"""`fpwatch run`: every model checked on its own schedule, forever, as a well-behaved systemd service.

One APScheduler 3 job per model calls the same `run_check` as `fpwatch check`. The lifecycle follows
research/library-practice.md sections 1 and 5:

- misfire grace, coalescing and one instance per model are set on purpose (the 1 s default grace
  would silently drop runs after any stall);
- SIGHUP re-reads the config and applies it by diffing jobs (unchanged schedules are kept); an
  invalid config is logged with all its problems and the old one keeps running; each outcome is also
  written for `fpwatch reload PID`, what systemd's ExecReload= runs (reloading.py);
- SIGTERM/SIGINT pause the scheduler, drain in-flight checks within a deadline, then shut down
  (APScheduler's own shutdown would cancel them);
- sd_notify: READY, RELOADING with MONOTONIC_USEC, STOPPING, STATUS, and WATCHDOG only while the
  scheduler and the checks are healthy.

The store is awaited (its work runs on its own threads), so a database locked by another process
delays recording, never signals, `/healthz` or the other models' probes. One daemon per SQLite state
(service/instance.py), several on a PostgreSQL one (service/sharing.py); a failed write is a health reason
from the first failure; a SQLite file deleted or replaced under the daemon stops it (exit 1).

The daemon reads the time from its `clock`, so tests control it. It records and decides on
`SteadyTime`, which does not jump with the wall clock: a clock set back or forward is logged and
counted, the planned runs are moved with it, and no grace period, schedule or health test sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fpwatch.check import CheckContext, CheckResult, policy_for, run_check
from fpwatch.clock import Clock, SteadyTime, steady_clock
from fpwatch.config import Config, ModelConfig, load_config, require_notifier_urls
from fpwatch.detect.state import ModelState
from fpwatch.detect.verdict import state_label
from fpwatch.discovery import run_discovery
from fpwatch.errors import FpwatchError, StateError
from fpwatch.logs import get_logger
from fpwatch.notify import Notifier, routes
from fpwatch.providers import TYPES, Providers
from fpwatch.redact import Redactor
from fpwatch.report.summary import model_summary
from fpwatch.service import health, systemd
from fpwatch.service.deadman import ping
from fpwatch.service.instance import FileIdentity, InstanceLock
from fpwatch.service.metrics import Metrics
from fpwatch.service.reloading import OutcomeWriter, read_new_config
from fpwatch.service.schedule import JOB_PREFIX, schedule_key, trigger
from fpwatch.service.sharing import Sharing, clear_of_edges
from fpwatch.service.timekeeping import ClockFollower
from fpwatch.store import Shared, Store, open_store
from fpwatch.store.chain import ChainHead

DISCOVERIES = 2  # border-input discoveries running at once (each holds its provider's concurrency for a while)
DRAIN_SECONDS = 20.0  # + a 5 s notification flush + the store's 3 s close grace: below the unit's TimeoutStopSec=30s
HEARTBEAT_EVERY = 60.0
STATUS_EVERY = 1.0  # 1,000 models must not mean 1,000 datagrams a minute
STATE_WATCH_EVERY = 2.0  # seconds between looks at the state file under the configured path
HEAD_EVERY = 60.0  # the audit chain's head goes to the log after a check at most this often, and after any event

log = get_logger("fpwatch.daemon")


@dataclass
class Daemon:
    """The long-running service around run_check. `run()` returns the process exit code."""

    config_path: Path
    config: Config
    on_result: Callable[[CheckResult], None] | None = None  # the demo shows results as they happen
    first_run_spread: float = 60.0  # at most this long before a model's first check
    drain_seconds: float = DRAIN_SECONDS
    metrics: Metrics = field(default_factory=Metrics)
    states: dict[str, ModelState] = field(default_factory=dict)
    redact: Redactor = field(default_factory=Redactor)  # shared with the log pipeline: reloads add secrets
    clock: Clock = field(default_factory=steady_clock)
    last_reload_ok: bool = True
    outcomes: OutcomeWriter = field(default_factory=OutcomeWriter)  # what `fpwatch reload PID` waits for

    def __post_init__(self) -> None:
        self.redact.add(self.config.secrets)
        self.started = self.clock.now()
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.in_flight: dict[asyncio.Task[Any], float] = {}
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": health.MISFIRE_GRACE_SECONDS},
        )
        self._last_heartbeat = -HEARTBEAT_EVERY
        self._loop_tick = self.clock.monotonic()  # the loop's own heartbeat, read by /healthz on another thread
        self._last_status = -STATUS_EVERY
        self.discovering: dict[str, asyncio.Task[None]] = {}  # model -> its border-input discovery, running
        self.discovery_slots = asyncio.Semaphore(DISCOVERIES)
        self._schedule_keys: dict[str, str] = {}
        self._still_running: dict[str, float] = {}  # model -> when a skipped run was last said
        self._scheduled_since: dict[str, datetime] = {}  # when each model's current schedule began
        self.exit_code = 0
        self._state_problems: dict[str, str] = {}  # "write" / "lost" / "database" -> the health reason
        self._state_file: FileIdentity | None = None
        self._lock: InstanceLock | None = None
        self.sharing: Sharing | None = None  # a state shared with other daemons (PostgreSQL)
        steady = self.clock.now
        self._clock_follower = (
            ClockFollower(self.scheduler, steady, self.metrics) if isinstance(steady, SteadyTime) else None
        )
        self._last_head = -HEAD_EVERY
        self.head: ChainHead | None = None

    # -- lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        if signal.SIGTERM in _EARLY_SIGNALS:
            self.stop_requested.set()
        _EARLY_SIGNALS.clear()  # a SIGHUP during start-up: the config was just read anyway
        # First the one-daemon lock (a second daemon is named, not mistaken for a taken port), then the port,
        # which should stop us before anything is opened.
        state = self.config.settings.state
        if isinstance(state, Path):  # one lock whatever path leads to the file
            self._lock = InstanceLock(state.resolve())
            self._lock.acquire(self.clock.now())
        # A PostgreSQL state takes no instance lock: daemons share it, each model's check taken by one (sharing.py).
        server = None
        try:
            server = self._start_endpoint()
            await self.open()
        except BaseException:
            if server is not None:
                server.shutdown()
                server.server_close()
            if self._lock is not None:
                self._lock.release()
            raise
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        await self.sync_jobs(first=True)
        self.scheduler.start()
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(time.time())
        background = [asyncio.create_task(self._watchdog()), asyncio.create_task(self._deliver_forever())]
        if self.sharing is not None:  # its heartbeat, which says whether the database is there
            beats = self.sharing.forever(lambda: len(self.config.models), self._state_problems, self.clock.now)
            background.append(asyncio.create_task(beats))
        log.info("daemon started", models=len(self.config.models), state=str(self.config.settings.state))
        if self.head is not None:
            log.info(self.head.line(), **self.head.to_json())
        self.outcomes.write(systemd.monotonic_usec() / 1e6, True, [], len(self.config.models))  # before READY=1
        systemd.notify("READY=1", f"STATUS={self.status_line()}")
        try:
            while not self.stop_requested.is_set():
                stop = asyncio.ensure_future(self.stop_requested.wait())
                reload = asyncio.ensure_future(self.reload_requested.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                reload.cancel()
                if self.reload_requested.is_set() and not self.stop_requested.is_set():
                    self.reload_requested.clear()
                    await self.reload()
        finally:
            await self._shutdown(background, server)
        return self.exit_code

    async def open(self) -> None:
        """The state database, the providers' clients, the notifier: what checks need."""
        state = self.config.settings.state
        self.store: Store = await open_store(state, audit_key=self.config.settings.audit_key)
        self._state_file = FileIdentity.of(state) if isinstance(state, Path) else None  # a server has no file to watch
        self.head = await self.store.chain_head()
        self.states = {m.name: await self.store.load_state(m.name) for m in self.config.models}
        if isinstance(self.store, Shared):
            self.sharing = Sharing(self.store, self.started)
            await self.sharing.beat(len(self.config.models))
        self.providers = Providers(self.config.settings.max_concurrency)
        self.notifier = Notifier(self.config, self.store, on_failure=self._delivery_failed, clock=self.clock.now)
        self.ctx = CheckContext(
            store=self.store,
            providers=self.providers,
            redact=self.redact,
            clock=self.clock.now,
            route=routes(self.config),
        )

    async def close(self) -> None:
        if self.sharing is not None:
            with contextlib.suppress(FpwatchError):  # else the others see its heartbeat stop
                await self.sharing.leave()
        await self.providers.aclose()
        await self.store.close()
        if self._lock is not None:
            self._lock.release()

    async def _deliver_forever(self) -> None:
        """Group and send notifications every second; a failure here never stops the daemon."""
        while True:
            try:
                await self.notifier.deliver()
                await self.providers.prune(keep=set(self.config.providers))
            except StateError:
                pass  # the database is out of reach: /healthz says so; the messages wait in the outbox
            except Exception:
                log.exception("notification delivery failed unexpectedly; retrying")
            await asyncio.sleep(1.0)

    def _delivery_failed(self, notifier: str) -> None:
        self.metrics.notifications_failed.labels(notifier).inc()

    async def _shutdown(self, background: list[asyncio.Task[None]], server: Any) -> None:
        systemd.notify("STOPPING=1", "STATUS=draining in-flight checks")
        log.info("stopping", in_flight=len(self.in_flight))
        self.scheduler.pause()
        if self.in_flight:
            _done, pending = await asyncio.wait(set(self.in_flight), timeout=self.drain_seconds)
            if pending:
                log.warning("drain deadline passed; cancelling checks", cancelled=len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        for task in list(self.discovering.values()):  # its result is written at its end: nothing half-done
            task.cancel()
        await asyncio.gather(*self.discovering.values(), return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # let the deferred shutdown run
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:  # what the last checks concluded goes out now; anything undelivered waits in the outbox
            await asyncio.wait_for(self.notifier.deliver(flush=True), timeout=5)
        except Exception as exc:
            log.warning("notifications left in the outbox for the next start", reason=type(exc).__name__)
        if server is not None:
            server.shutdown()
            server.server_close()
        with contextlib.suppress(FpwatchError):  # the last rows this run wrote, published on the way out
            head = await self.store.chain_head()
            log.info(head.line(), **head.to_json())
        await self.close()
        log.info("stopped")

    async def reload(self) -> None:
        """Re-read the config; apply it if valid, else keep running the old one and say why (also to
        `fpwatch reload`, in the outcome file: service/reloading.py)."""
        began = systemd.monotonic_usec()
        systemd.notify("RELOADING=1", f"MONOTONIC_USEC={began}")
        config, problems = read_new_config(self.config_path, self.redact)
        if config is None:
            self._reload_failed(problems, began / 1e6)
            return
        old, new = self.config.settings, config.settings
        restart = ("state", "listen", "max_concurrency", "log_format", "audit_key")  # the store is opened once
        later = [k for k in restart if getattr(old, k) != getattr(new, k)]
        if later:
            log.warning("these settings take effect at the next restart", settings=later)
        self.config = config
        self.redact.add(config.secrets)
        self.notifier.configure(config)
        self.ctx.route = routes(config)
        await self.sync_jobs()
        self.last_reload_ok = True
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(time.time())
        log.info("config reloaded", models=len(config.models))
        self.outcomes.write(began / 1e6, True, [], len(config.models))
        systemd.notify("READY=1", f"STATUS={self.status_line()}")

    def _reload_failed(self, problems: list[str], began: float) -> None:
        self.last_reload_ok = False
        self.metrics.reload_ok.set(0)
        log.error("keeping the previous config", problems=len(problems))
        self.outcomes.write(began, False, problems, len(self.config.models))
        systemd.notify("READY=1", f"STATUS={self.status_line()}")

    async def sync_jobs(self, first: bool = False) -> None:
        wanted = {JOB_PREFIX + m.name: m for m in self.config.models}
        for job in self.scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
                self.scheduler.remove_job(job.id)  # a run already in flight finishes
                name = job.id.removeprefix(JOB_PREFIX)
                self._schedule_keys.pop(name, None)
                self._scheduled_since.pop(name, None)
                self.states.pop(name, None)
                log.info("model removed", model=name)
        now, wall = self.clock.now(), self.clock.wall()  # APScheduler plans on the wall clock
        for job_id, model in wanted.items():
            key = schedule_key(model)
            existing = self.scheduler.get_job(job_id) if not first else None
            if existing is None:
                start = self._first_run(model, wall)
                self.scheduler.add_job(
                    self._check_job, trigger(model, start), id=job_id, args=[model.name], next_run_time=start
                )
                self._scheduled_since[model.name] = now
                if not first:
                    self.states.setdefault(model.name, await self.store.load_state(model.name))
                    log.info("model added", model=model.name)
            elif self._schedule_keys.get(model.name) != key:
                start = self._first_run(model, wall)
                self.scheduler.reschedule_job(job_id, trigger=trigger(model, start))
                self._scheduled_since[model.name] = now
                log.info("schedule changed", model=model.name, interval=str(model.interval), cron=model.cron)
            self._schedule_keys[model.name] = key
        self.metrics.know(self.config)  # every counter at 0 for what the config names; removed models forgotten

    def _first_run(self, model: ModelConfig, wall: datetime) -> datetime:
        """A random phase within the model's spread; on a shared state, clear of the edges of the model's slots."""
        start = wall + timedelta(seconds=random.uniform(0, self._spread(model)))
        return clear_of_edges(model, start) if self.sharing is not None else start

    def _spread(self, model: ModelConfig) -> float:
        """Seconds over which a model's first check, and so its phase, is drawn: its jitter, within bounds.

        1,000 models must not all start in the same second, and nobody should wait long for a first check.
        """
        spread = max(model.jitter.total_seconds(), 1.0)
        if model.interval is not None:
            spread = min(spread, model.interval.total_seconds())
        return min(spread, self.first_run_spread)

    # -- one check

    async def _check_job(self, name: str) -> None:
        model = self.config.model(name)
        if model is None:
            return
        if self.sharing is not None and not await self.sharing.take(model, self.clock.wall(), self.states):
            self.metrics.let_go(name)  # another daemon checks it: a model's gauges are the checking daemon's
            return
        task = asyncio.current_task()
        assert task is not None
        self.in_flight[task] = self.clock.monotonic()
        self.metrics.in_flight.set(len(self.in_flight))
        try:
            result = await run_check(model, self.ctx)
        except asyncio.CancelledError:
            # Nothing half-written: a write it had asked for completes (the check is recorded) before the store closes.
            log.warning("check cancelled at the drain deadline", model=name)
            return
        except StateError as exc:  # locked, full, unwritable: a reason for /healthz from the first failure
            self._write_failed(exc)
            log.error("check not recorded", model=name, error=str(exc))
            return
        except FpwatchError as exc:
            log.warning("check not recorded", model=name, error=str(exc))
            return
        except Exception:
            log.exception("check crashed", model=name)  # a bug: keep the daemon alive, say so
            return
        finally:
            self.in_flight.pop(task, None)
            self.metrics.in_flight.set(len(self.in_flight))
        if self.config.model(name) is None:
            return  # removed by a reload while it ran: forget it, do not resurrect its metrics
        self._state_problems.pop("write", None)
        self.states[name] = result.state
        self.metrics.observe(result)
        if self.on_result is not None:
            self.on_result(result)
        self._announce()
        await self._publish_head(news=bool(result.events))
        if result.error is None:
            await self._heartbeat()
            self._maybe_discover(model, result.state)

    def _maybe_discover(self, model: ModelConfig, state: ModelState) -> None:
        """Border-input discovery in the background, while the model learns (after its first good check) and after
        a confirmed drift; its canaries join the checks after it."""
        if model.discovery_budget <= 0 or model.name in self.discovering:
            return
        if not state.discovery_due(model.model, self.clock.now()):
            return
        self.discovering[model.name] = asyncio.create_task(self._discover(model), name=f"discover {model.name}")

    async def _discover(self, model: ModelConfig) -> None:
        try:
            async with self.discovery_slots:
                borders = await run_discovery(
                    model,
                    store=self.store,
                    providers=self.providers,
                    redact=self.redact,
                    clock=self.clock.now,
                    budget=model.discovery_budget,
                )
            self.metrics.discovered(model.name, borders)
            self.states[model.name] = await self.store.load_state(model.name)
        except asyncio.CancelledError:
            log.info("border-input discovery stopped; it runs again at the next start", model=model.name)
        except FpwatchError as exc:
            if isinstance(exc, StateError):
                self._write_failed(exc)
            log.warning("border-input discovery not recorded", model=model.name, error=str(exc))
        except Exception:
            log.exception("border-input discovery crashed", model=model.name)
        finally:
            self.discovering.pop(model.name, None)

    async def _publish_head(self, news: bool) -> None:
        """The audit chain's head in the log, out of a later edit's reach: after a check that raised an event, else at
        most once a minute (1,000 models: not 1,000 lines, nor 1,000 reads). /api/v1/status serves the last read."""
        now = self.clock.monotonic()
        if not news and now - self._last_head < HEAD_EVERY:
            return
        try:
            self.head = await self.store.chain_head()
        except FpwatchError as exc:
            log.warning("audit head not read", error=str(exc))
            return
        self._last_head = now
        log.info(self.head.line(), **self.head.to_json())

    def _write_failed(self, exc: StateError) -> None:
        self.metrics.state_write_failures.inc()
        if "write" not in self._state_problems:
            at = self.clock.now().strftime("%H:%M:%S UTC")
            self._state_problems["write"] = f"the state database could not be written since {at}: {exc}"

    def _watch_state_file(self) -> None:
        """Stop, loudly, when the database at the configured path is no longer the file we have open."""
        lost = self._state_file.lost() if self._state_file is not None else None
        if lost is None or "lost" in self._state_problems:
            return
        self._state_problems["lost"] = lost
        log.error(lost + "; stopping (exit 1) so that a restart opens the file at that path")
        systemd.notify(f"STATUS={lost}")
        self.exit_code = 1
        self.stop_requested.set()

    def _announce(self) -> None:
        if not systemd.notify_socket():
            return
        now = self.clock.monotonic()
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            systemd.notify(f"STATUS={self.status_line()}")

    async def _heartbeat(self) -> None:
        url, now = self.config.settings.heartbeat_url, self.clock.monotonic()
        if url is not None and now - self._last_heartbeat >= HEARTBEAT_EVERY and not self.health():
            self._last_heartbeat = now
            await ping(url)

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        now = self.clock.wall()  # APScheduler's run times are wall-clock
        for scheduled in event.scheduled_run_times:
            self.metrics.schedule_lag.observe(max(0.0, (now - scheduled).total_seconds()))

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        exception = getattr(event, "exception", None)
        if isinstance(exception, asyncio.CancelledError):
            return  # shutdown noise
        model = event.job_id.removeprefix(JOB_PREFIX)
        if event.code == EVENT_JOB_MISSED:
            log.warning("check skipped: the scheduler was late beyond the misfire grace", model=model)
        elif event.code == EVENT_JOB_MAX_INSTANCES:  # said once a minute per model: a check stuck runs on and on
            if self.clock.monotonic() - self._still_running.get(model, -60.0) >= 60:
                self._still_running[model] = self.clock.monotonic()
                log.warning("check skipped: the previous check of this model is still running", model=model)
        else:
            log.error("check job failed", model=model, error=repr(exception))

    # -- health

    def snapshot(self) -> health.Snapshot:
        """What health needs, copied (/healthz reads it on the endpoint's thread while checks come and go)."""
        return health.Snapshot(
            now=self.clock.now(),
            wall=self.clock.wall(),
            monotonic=self.clock.monotonic(),
            started=self.started,
            scheduler_running=self.scheduler.running,
            loop_tick=self._loop_tick,
            next_runs=[(job.id.removeprefix(JOB_PREFIX), job.next_run_time) for job in self.scheduler.get_jobs()],
            in_flight=list(self.in_flight.values()),
            models=[m for m in self.config.models if self.sharing is None or self.sharing.mine(m.name)],
            last_checks={name: state.last_check for name, state in list(self.states.items())},
            scheduled_since=dict(self._scheduled_since),
            state_problems=list(self._state_problems.values()),
        )

    def health(self) -> list[str]:
        """Reasons the daemon is unhealthy; empty when all is well."""
        return [r.text for r in health.reasons(self.snapshot())]

    def stuck(self) -> list[str]:
        """What a restart would fix: the scheduler not running or not firing (the watchdog's test)."""
        return [r.text for r in health.reasons(self.snapshot()) if r.restart_helps]

    async def _watchdog(self) -> None:
        """Tick for /healthz's blocked-loop test; ping systemd's watchdog while the scheduler is live."""
        interval = systemd.watchdog_interval()
        last_ping = last_watch = 0.0
        while True:
            self._loop_tick = self.clock.monotonic()
            if self._clock_follower is not None:
                self._clock_follower.tick(self.clock.wall())
            if self._loop_tick - last_watch >= STATE_WATCH_EVERY:
                last_watch = self._loop_tick
                self._watch_state_file()
            if interval is not None and self._loop_tick - last_ping >= interval and not self.stuck():
                systemd.notify("WATCHDOG=1")
                last_ping = self._loop_tick
            await asyncio.sleep(min(0.5, interval or 0.5))

    def status_line(self) -> str:
        now = self.clock.now()
        labels = [
            state_label(state, policy_for(m, state), now)
            for m in self.config.models
            for state in [self.states.get(m.name) or ModelState(m.name)]
        ]
        counts = {label: labels.count(label) for label in dict.fromkeys(labels)}
        parts = ", ".join(f"{n} {label}" for label, n in counts.items())
        line = f"watching {len(labels)} models: {parts}" if labels else "watching no models"
        return line if self.last_reload_ok else line + "; the last reload failed (see the log)"

    def status(self) -> dict[str, Any]:
        """What /api/v1/status serves: the JSON of `fpwatch status` (from the daemon's own memory)."""
        now = self.clock.now()
        status: dict[str, Any] = {
            "models": [model_summary(m, self.states.get(m.name) or ModelState(m.name), now) for m in self.config.models]
        }
        if self.head is not None:
            status["audit"] = self.head.to_json()
        if isinstance(self.clock.now, SteadyTime) and self.clock.now.skew:
            status["clock_skew_seconds"] = round(self.clock.now.skew, 3)  # the wall clock minus the daemon's time
        return status

    # -- HTTP endpoint

    def _start_endpoint(self) -> Any:
        listen = self.config.settings.listen
        if not listen:
            return None
        from fpwatch.service.endpoint import app, serve

        host, _, port = listen.rpartition(":")
        try:
            server = serve(host.strip("[]"), int(port), app(self.metrics.page, self.health, self.status, self))
        except OSError as exc:
            raise FpwatchError(
                f"cannot listen on {listen}: {exc.strerror or exc}; change [fpwatch] listen or stop what uses it"
            ) from None
        log.info("HTTP endpoint listening", listen=listen)
        return server


_EARLY_SIGNALS: set[int] = set()


def _remember(signum: int, frame: object) -> None:
    _EARLY_SIGNALS.add(signum)


def run_daemon(config_path: Path, *, debug: bool = False) -> int:
    """Load the config, set up logging and run until stopped; return the exit code."""
    # Until the event loop takes over, a SIGHUP or SIGTERM must not kill us with its default action.
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _remember)
    from fpwatch.logs import configure_logging

    config = require_notifier_urls(load_config(config_path, TYPES))
    redact = Redactor(config.secrets)
    configure_logging(
        "debug" if debug else config.settings.log_level,
        config.settings.log_format,
        redact,
        stream=sys.stdout,
        journal=systemd.stdout_is_journal(),
    )
    structlog.contextvars.bind_contextvars(component="daemon")

    async def main() -> int:
        return await Daemon(config_path, config, redact=redact).run()

    return asyncio.run(main())
