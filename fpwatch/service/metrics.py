"""Prometheus metrics of the daemon (DESIGN section 10), in a registry of their own.

Labels stay low-cardinality: model names, event types, providers and outcome kinds; never request
ids, error messages or URLs.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from fpwatch import __version__
from fpwatch.check import CheckResult
from fpwatch.detect import drift
from fpwatch.detect.borders import Borders

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and nobody graphs them
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Gauge("fpwatch_build_info", "fpwatch version", ["version"], registry=r).labels(__version__).set(1)
        self.checks = Counter("fpwatch_checks", "Checks run, by model and result", ["model", "status"], registry=r)
        self.check_duration = Histogram(
            "fpwatch_check_duration_seconds", "Duration of one check", buckets=_DURATION_BUCKETS, registry=r
        )
        self.requests = Counter(
            "fpwatch_requests", "Canary requests, by provider and outcome", ["provider", "outcome"], registry=r
        )
        self.retries = Counter("fpwatch_request_retries", "Retried attempts, by provider", ["provider"], registry=r)
        self.events = Counter("fpwatch_events", "Events raised, by type", ["type"], registry=r)
        self.notifications_failed = Counter(
            "fpwatch_notifications_failed", "Failed notification deliveries, by notifier", ["notifier"], registry=r
        )
        self.tokens = Counter("fpwatch_tokens", "Tokens spent, by model and kind", ["model", "kind"], registry=r)
        self.fingerprints_valid = Gauge(
            "fpwatch_fingerprints_valid", "Fingerprints in the valid set", ["model"], registry=r
        )
        self.model_up = Gauge("fpwatch_model_up", "1 unless the model is down", ["model"], registry=r)
        self.last_check = Gauge(
            "fpwatch_last_check_timestamp_seconds", "When the model was last checked", ["model"], registry=r
        )
        self.in_flight = Gauge("fpwatch_checks_in_flight", "Checks running now", registry=r)
        self.drift_screen = Gauge(
            "fpwatch_drift_screen_surprise",
            "The last drift screen's surprise (-log10 p; kind=value) and the model's threshold (kind=threshold)",
            ["model", "kind"],
            registry=r,
        )
        self.drift_bursts = Counter(
            "fpwatch_drift_bursts", "Drift confirmation bursts sent after a screen hit", ["model"], registry=r
        )
        self.discovery_requests = Counter(
            "fpwatch_discovery_requests", "One-token requests spent discovering border inputs", ["model"], registry=r
        )
        self.drift_open = Gauge(
            "fpwatch_drift_open", "1 while a confirmed canary drift awaits its ack", ["model"], registry=r
        )
        self.schedule_lag = Histogram(
            "fpwatch_schedule_lag_seconds",
            "How late checks start after their scheduled time",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.reload_ok = Gauge(
            "fpwatch_config_last_reload_successful", "1 if the last config (re)load succeeded", registry=r
        )
        self.reload_time = Gauge(
            "fpwatch_config_last_reload_success_timestamp_seconds", "When the config last loaded", registry=r
        )
        self.clock_jumps = Counter(
            "fpwatch_clock_jumps", "Steps of the wall clock larger than a minute, seen by the daemon", registry=r
        )
        self.clock_skew = Gauge(
            "fpwatch_clock_skew_seconds",
            "The wall clock minus the time the daemon records by (nonzero after a jump, until a restart)",
            registry=r,
        )
        self.state_write_failures = Counter(
            "fpwatch_state_write_failures", "Writes to the state database that failed (a full disk, I/O)", registry=r
        )

    def observe(self, result: CheckResult) -> None:
        """Account for one finished check."""
        name = result.model.name
        self.checks.labels(name, result.status_name).inc()
        self.check_duration.observe((result.finished - result.started).total_seconds())
        provider = result.model.provider.name
        for obs in result.observations:
            self.requests.labels(provider, "ok" if obs.ok else (obs.error_kind or "error")).inc()
            if obs.attempts > 1:
                self.retries.labels(provider).inc(obs.attempts - 1)
            if obs.input_tokens:
                self.tokens.labels(name, "input").inc(obs.input_tokens)
            if obs.output_tokens:
                self.tokens.labels(name, "output").inc(obs.output_tokens)
        for stored in result.events:
            self.events.labels(stored.event.type).inc()
        self.fingerprints_valid.labels(name).set(len(result.state.fingerprints.valid()))
        drift_state = result.state.drift
        if drift_state.screens:
            self.drift_screen.labels(name, "value").set(drift_state.screens[-1])
            self.drift_screen.labels(name, "threshold").set(drift.screen_threshold(drift_state))
        if result.burst:
            self.drift_bursts.labels(name).inc()
        self.drift_open.labels(name).set(1 if result.state.drift_open else 0)
        self.model_up.labels(name).set(0 if result.state.down else 1)
        self.last_check.labels(name).set(result.finished.timestamp())

    def discovered(self, model: str, borders: Borders) -> None:
        self.discovery_requests.labels(model).inc(borders.requests)
        if borders.tokens:
            self.tokens.labels(model, "output").inc(borders.tokens)

    def forget(self, model: str) -> None:
        """Drop the per-model series of a model removed from the config."""
        for metric in (self.fingerprints_valid, self.model_up, self.last_check, self.drift_open):
            with contextlib.suppress(KeyError):
                metric.remove(model)
        for kind in ("value", "threshold"):
            with contextlib.suppress(KeyError):
                self.drift_screen.remove(model, kind)
