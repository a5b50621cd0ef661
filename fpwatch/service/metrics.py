"""Prometheus metrics of the daemon (DESIGN section 10): the per-model families as `ModelSeries` (exposition.py
writes them: 22 to 28 series a model), the daemon's few others in a prometheus-client registry of their own.

Labels stay low-cardinality: model names, event types and severities, providers and outcome kinds; never request
ids, error messages or URLs.

Every counter exists at 0 for each label value the config makes known (`know`: every model with every check
status and event type, every provider, every notifier), as the Prometheus client guidelines ask: a series born at
1 has no earlier sample, so `increase(fpwatch_events_total{type="fingerprint.changed"}[10m]) > 0` would miss the
first change after a start. The recommended alerting rules over these metrics are shipped beside this module, in
prometheus/fpwatch-rules.yml.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from fpwatch import __version__
from fpwatch.check import CheckResult
from fpwatch.config import Config
from fpwatch.detect import drift
from fpwatch.detect.borders import Borders
from fpwatch.detect.events import EVENTS, SEVERITIES, Details, EventType
from fpwatch.detect.state import ModelState
from fpwatch.detect.verdict import STATUS_NAMES
from fpwatch.service import exposition
from fpwatch.service.exposition import ModelSeries

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TOKEN_KINDS = ("input", "output")


def severities(event_type: EventType) -> tuple[str, ...]:
    """The severities an event of this type can carry: its declared one, and every one above it when its details
    may raise it (a silent canary.drift is critical)."""
    if event_type.details.severity is Details.severity:
        return (event_type.severity,)
    return SEVERITIES[SEVERITIES.index(event_type.severity) :]


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and nobody graphs them
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Gauge("fpwatch_build_info", "fpwatch version", ["version"], registry=r).labels(__version__).set(1)
        self.checks = ModelSeries("fpwatch_checks", "Checks run, by model and result", ["status"])
        self.check_duration = Histogram(
            "fpwatch_check_duration_seconds", "Duration of one check", buckets=_DURATION_BUCKETS, registry=r
        )
        self.requests = Counter(
            "fpwatch_requests", "Canary requests, by provider and outcome", ["provider", "outcome"], registry=r
        )
        self.retries = Counter("fpwatch_request_retries", "Retried attempts, by provider", ["provider"], registry=r)
        self.events = ModelSeries("fpwatch_events", "Events raised, by model, type and severity", ["type", "severity"])
        self.notifications_failed = Counter(
            "fpwatch_notifications_failed", "Failed notification deliveries, by notifier", ["notifier"], registry=r
        )
        self.tokens = ModelSeries("fpwatch_tokens", "Tokens spent, by model and kind", ["kind"])
        self.fingerprints_valid = ModelSeries(
            "fpwatch_fingerprints_valid", "Fingerprints in the valid set", [], "gauge"
        )
        self.model_up = ModelSeries("fpwatch_model_up", "1 unless the model is down", [], "gauge")
        self.last_check = ModelSeries(
            "fpwatch_last_check_timestamp_seconds", "When the model was last checked", [], "gauge"
        )
        self.in_flight = Gauge("fpwatch_checks_in_flight", "Checks running now", registry=r)
        self.drift_screen = ModelSeries(
            "fpwatch_drift_screen_surprise",
            "The last drift screen's surprise (-log10 p; kind=value) and the model's threshold (kind=threshold)",
            ["kind"],
            "gauge",
        )
        self.drift_bursts = ModelSeries("fpwatch_drift_bursts", "Drift confirmation bursts sent after a screen hit", [])
        self.discovery_requests = ModelSeries(
            "fpwatch_discovery_requests", "One-token requests spent discovering border inputs", []
        )
        self.drift_open = ModelSeries(
            "fpwatch_drift_open", "1 while a confirmed canary drift awaits its ack", [], "gauge"
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
        self.models: set[str] = set()  # the models `know` created series for
        # Per model, written by fpwatch (exposition.py); the daemon's other series by prometheus-client.
        self.counters = (self.checks, self.events, self.tokens, self.drift_bursts, self.discovery_requests)
        self.gauges = (self.fingerprints_valid, self.model_up, self.last_check, self.drift_screen, self.drift_open)

    def page(self) -> bytes:
        """The /metrics page, every series in the Prometheus text format."""
        return exposition.page(self.registry, (*self.counters, *self.gauges))

    def know(self, config: Config) -> None:
        """Create every counter at 0 for the label values `config` makes known; forget the models it no longer has.

        Called at start and after every reload. Providers and notifiers removed by a reload keep their few series
        (a message left for a removed notifier still counts as failed when it expires)."""
        names = {m.name for m in config.models}
        for gone in self.models - names:
            self.forget(gone)
        statuses = [(status,) for status in STATUS_NAMES.values()]
        events = [(t.name, severity) for t in EVENTS.values() for severity in severities(t)]
        tokens = [(kind,) for kind in TOKEN_KINDS]
        for name in names - self.models:
            self.checks.zero_each(name, statuses)
            self.events.zero_each(name, events)
            self.tokens.zero_each(name, tokens)
            self.drift_bursts.zero(name)
            self.discovery_requests.zero(name)
        self.models = names
        for provider in config.providers.values():
            self.requests.labels(provider.name, "ok")  # error outcomes are an open set (HTTP statuses): born at 1
            self.retries.labels(provider.name)
        for notifier in config.notifiers:
            self.notifications_failed.labels(notifier.name)

    def observe(self, result: CheckResult) -> None:
        """Account for one finished check."""
        name = result.model.name
        self.checks.inc(name, result.status_name)
        self.check_duration.observe((result.finished - result.started).total_seconds())
        provider = result.model.provider.name
        for obs in result.observations:
            self.requests.labels(provider, "ok" if obs.ok else (obs.error_kind or "error")).inc()
            if obs.attempts > 1:
                self.retries.labels(provider).inc(obs.attempts - 1)
            if obs.input_tokens:
                self.tokens.inc(name, "input", amount=obs.input_tokens)
            if obs.output_tokens:
                self.tokens.inc(name, "output", amount=obs.output_tokens)
        for stored in result.events:
            self.events.inc(name, stored.event.type, stored.event.severity)
        if result.burst:
            self.drift_bursts.inc(name)
        self.model_state(name, result.state)
        self.last_check.set(name, value=result.finished.timestamp())

    def model_state(self, name: str, state: ModelState) -> None:
        """The gauges of what is known of a model: after this daemon's check, or another's on a shared state."""
        self.fingerprints_valid.set(name, value=len(state.fingerprints.valid()))
        if state.drift.screens:
            self.drift_screen.set(name, "value", value=state.drift.screens[-1])
            self.drift_screen.set(name, "threshold", value=drift.screen_threshold(state.drift))
        self.drift_open.set(name, value=1 if state.drift_open else 0)
        self.model_up.set(name, value=0 if state.down else 1)
        if state.last_check is not None:
            self.last_check.set(name, value=state.last_check.timestamp())

    def discovered(self, model: str, borders: Borders) -> None:
        if model not in self.models:
            return  # removed by a reload while its discovery ran: do not resurrect its series
        self.discovery_requests.inc(model, amount=borders.requests)
        if borders.tokens:
            self.tokens.inc(model, "output", amount=borders.tokens)

    def forget(self, model: str) -> None:
        """Drop the per-model series of a model removed from the config, counters and gauges."""
        self.models.discard(model)
        for counter in self.counters:
            counter.forget(model)
        self.let_go(model)

    def let_go(self, model: str) -> None:
        """Drop a model's gauges (what is known of it), keeping its counters: on a shared state, another daemon
        checks it now and its gauges are that one's (two daemons' copies would disagree, one of them stale)."""
        for gauge in self.gauges:
            gauge.forget(model)
