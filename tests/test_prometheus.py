"""Prometheus as operators run it: every counter exists at 0 from the start, the shipped alerting rules pass
`promtool check rules` and their own `promtool test rules`, a real daemon's /metrics passes `promtool check
metrics`, and a real Prometheus server scraping a real daemon fires the change alert on the first change.

The promtool and Prometheus tests skip when Debian's `prometheus` package is not installed; .ci/setup installs it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from conftest import DaemonProcess, HttpSink, fpwatch_env, free_port, wait_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fpwatch.config import Config, parse_config
from fpwatch.detect.borders import Borders
from fpwatch.detect.events import EVENTS, SEVERITIES
from fpwatch.detect.verdict import STATUS_NAMES
from fpwatch.providers import TYPES
from fpwatch.service.metrics import TOKEN_KINDS, Metrics, severities
from fpwatch.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "fpwatch" / "service" / "prometheus" / "fpwatch-rules.yml"
RULES_TESTS = ROOT / "tests" / "prometheus" / "fpwatch-rules.test.yml"
MODEL = "sim/gpt-4o"
A, B = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (apt-get install prometheus); .ci/setup installs it, so CI runs these",
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus server is not installed (apt-get install prometheus); .ci/setup installs it",
)

CONFIG = """
[providers.sim]
type = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"

[[notify]]
name = "ops"
url = "json://127.0.0.1:9/ops"
"""


def config(*models: str) -> Config:
    entries = "".join(f'\n[[models]]\nprovider = "sim"\nmodel = "{m}"\n' for m in models)
    return parse_config(tomllib.loads(CONFIG + entries), TYPES, path=Path("prom.toml"), env={})


def samples(metrics: Metrics) -> dict[str, float]:
    """Every sample of the /metrics page as `name{label=value,...}` (labels sorted), without the process_* ones."""
    out = {}
    for family in text_string_to_metric_families(metrics.page().decode()):
        for s in family.samples:
            if not s.name.startswith("process_"):
                out[s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"] = s.value
    return out


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A keyless simulator, as DaemonProcess's config has no api_key."""
    with Simulator(seed=5) as simulator:
        yield simulator


# --- every counter at 0 -----------------------------------------------------------------------------------


def test_every_counter_starts_at_0_for_every_model_event_type_and_notifier() -> None:
    """Before anything happened, each model has a 0 for every check status and every event type (a drift at both
    the severities it can have), each provider and notifier a 0: increase() sees the first event."""
    metrics = Metrics()
    metrics.know(config("gpt-4o"))
    seen = samples(metrics)
    for status in STATUS_NAMES.values():
        assert seen[f"fpwatch_checks_total{{model={MODEL},status={status}}}"] == 0
    for event_type in EVENTS.values():
        for severity in severities(event_type):
            assert seen[f"fpwatch_events_total{{model={MODEL},severity={severity},type={event_type.name}}}"] == 0
    assert seen[f"fpwatch_events_total{{model={MODEL},severity=critical,type=canary.drift}}"] == 0  # silent
    for kind in TOKEN_KINDS:
        assert seen[f"fpwatch_tokens_total{{kind={kind},model={MODEL}}}"] == 0
    assert seen[f"fpwatch_drift_bursts_total{{model={MODEL}}}"] == 0
    assert seen[f"fpwatch_discovery_requests_total{{model={MODEL}}}"] == 0
    assert seen["fpwatch_notifications_failed_total{notifier=ops}"] == 0
    assert seen["fpwatch_requests_total{outcome=ok,provider=sim}"] == 0
    assert seen["fpwatch_request_retries_total{provider=sim}"] == 0
    per_model = [key for key in seen if f"model={MODEL}" in key]
    assert len(per_model) == 22  # the README's cardinality: 1,000 models give 22,000 series before any check


def test_a_reload_creates_the_new_models_series_and_forgets_the_removed_ones() -> None:
    """Counters of a kept model keep counting across a reload; a removed model leaves no series at all."""
    metrics = Metrics()
    metrics.know(config("gpt-4o", "old"))
    metrics.events.inc(MODEL, "fingerprint.changed", "warning")
    metrics.model_up.set("sim/old", value=0)
    metrics.drift_screen.set("sim/old", "value", value=3)
    metrics.know(config("gpt-4o", "new"))
    seen = samples(metrics)
    assert seen[f"fpwatch_events_total{{model={MODEL},severity=warning,type=fingerprint.changed}}"] == 1
    assert seen["fpwatch_checks_total{model=sim/new,status=OK}"] == 0
    assert not [key for key in seen if "model=sim/old" in key]
    metrics.discovered("sim/old", Borders("found", requests=5, tokens=5))  # a discovery that outlived its model
    assert not [key for key in samples(metrics) if "model=sim/old" in key]


@pytest.mark.parametrize("kind", ["counter", "gauge"])
def test_the_per_model_families_write_the_bytes_prometheus_client_writes(kind: str) -> None:
    """exposition.ModelSeries writes its lines itself (ten times faster at 26,000 series): they are exactly what
    prometheus-client writes for the same family, awkward model names and values included."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from fpwatch.service.exposition import ModelSeries

    names = ["sim/gpt-4o", 'a "quoted"\\ name', "line\nbreak", "ünïcode/模型"]
    values = [0.0, 1.0, 1764000000.123, 0.5, 12345678.0, float("inf"), 3e-7]
    series = ModelSeries("fpwatch_x", "Help with a \\ backslash\nand a newline", ["zeta", "alpha"], kind)  # type: ignore[arg-type]
    family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    family = family_type("fpwatch_x", "Help with a \\ backslash\nand a newline", labels=["model", "zeta", "alpha"])
    for i, (name, value) in enumerate((n, v) for n in names for v in values):
        labels = (f"z{i % 3}", f"a{i}")
        if kind == "gauge":
            series.set(name, *labels, value=value)
        else:
            series.inc(name, *labels, amount=value)
        family.add_metric([name, *labels], value)

    class One:
        def collect(self) -> Iterator[Any]:
            yield family

    registry = CollectorRegistry()
    registry.register(One())  # type: ignore[arg-type]
    assert series.text() == generate_latest(registry).decode()


def test_the_metrics_endpoint_serves_text_gzipped_when_asked() -> None:
    """The page as Prometheus asks for it (Accept-Encoding: gzip) and as curl does (plain)."""
    import gzip

    from fpwatch.service.exposition import CONTENT_TYPE, response

    metrics = Metrics()
    metrics.know(config("gpt-4o"))
    page = metrics.page()
    plain, plain_headers = response(page, "")
    zipped, zipped_headers = response(page, "gzip, deflate")
    assert plain == page and ("Content-Type", CONTENT_TYPE) in plain_headers
    assert gzip.decompress(zipped) == page and ("Content-Encoding", "gzip") in zipped_headers
    assert ("Content-Length", str(len(zipped))) in zipped_headers
    assert f'fpwatch_checks_total{{model="{MODEL}",status="OK"}} 0.0' in page.decode()


def test_only_a_drift_can_carry_more_than_its_declared_severity() -> None:
    """A type whose details may raise its severity (a silent drift is critical) gets a series per severity."""
    assert severities(EVENTS["canary.drift"]) == ("warning", "critical")
    assert {name: severities(t) for name, t in EVENTS.items() if name != "canary.drift"} == {
        name: (t.severity,) for name, t in EVENTS.items() if name != "canary.drift"
    }
    assert set(SEVERITIES) >= {s for t in EVENTS.values() for s in severities(t)}


# --- the rules file ---------------------------------------------------------------------------------------


def test_every_rule_is_labelled_annotated_unit_tested_and_reads_metrics_that_exist() -> None:
    """Each alert has a severity, a summary and a description, has a case in the promtool unit tests, and
    names only metrics the daemon exports (a renamed metric cannot silently disable a rule)."""
    metrics = Metrics()
    metrics.know(config("gpt-4o"))
    exported = {key.split("{")[0] for key in samples(metrics)} | {"fpwatch_model_up"}  # set by the first check
    tested = set(re.findall(r"alertname: (\w+)", RULES_TESTS.read_text()))
    alerts = rules()
    assert {"FpwatchSilentDrift", "FpwatchVersionChanged", "FpwatchRollback", "FpwatchModelDown"} <= {
        r["alert"] for r in alerts
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no case in {RULES_TESTS.name}"
        for name in re.findall(r"\bfpwatch_\w+", rule["expr"]):
            assert name in exported, f"{rule['alert']} reads {name}, which the daemon does not export"


def test_the_rules_file_ships_in_the_wheel_and_the_cli_prints_it(tmp_path: Path) -> None:
    """pyproject's package data covers the file, and `fpwatch config rules` prints it (no config needed)."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    inside = PurePosixPath(RULES.relative_to(ROOT / "fpwatch" / "service").as_posix())
    assert any(inside.match(pattern) for pattern in package_data["fpwatch.service"])
    printed = subprocess.run(
        [sys.executable, "-m", "fpwatch", "config", "rules"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=fpwatch_env(),
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == RULES.read_text()


@needs_promtool
def test_promtool_check_rules_passes() -> None:
    """The rules parse, their templates compile, and promtool's linter finds nothing."""
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules_passes() -> None:
    """The unit tests in tests/prometheus/: each alert fires when it should, with its labels and annotations
    rendered, and stays quiet otherwise (a counter born at 1 shows why counters start at 0)."""
    result = subprocess.run([str(PROMTOOL), "test", "rules", str(RULES_TESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- a real daemon ----------------------------------------------------------------------------------------


@needs_promtool
def test_a_real_daemons_metrics_pass_promtool_check_metrics(
    daemon: DaemonProcess, sim: Simulator, sink: HttpSink
) -> None:
    """/metrics of a running daemon with a notifier, after checks and events, is clean for promtool's linter."""
    daemon.write(extra=f'\n[[notify]]\nname = "ops"\nurl = "json://{sink.base}/ops"\n')
    daemon.start()
    wait_for(lambda: daemon.checks() >= 2, what="two checks")
    text = httpx.get(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5).text
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
    values = daemon.metrics()
    assert values[f"fpwatch_events_total{{model={MODEL},severity=warning,type=fingerprint.changed}}"] == 0
    assert values[f"fpwatch_events_total{{model={MODEL},severity=info,type=fingerprint.first_seen}}"] >= 1
    assert values["fpwatch_notifications_failed_total{notifier=ops}"] == 0
    assert daemon.stop() == 0


class PrometheusServer:
    """The real `prometheus` binary on a free loopback port, scraping `targets` every second with the shipped rules
    evaluated every second, its storage in `folder`."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        folder.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "fpwatch", "static_configs": [{"targets": targets}]}],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = folder / "prometheus.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.ready, what=f"Prometheus ready ({self.log})")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()
        return [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == name]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def prometheus(tmp_path: Path, daemon: DaemonProcess) -> Iterator[PrometheusServer]:
    """Prometheus scraping the test's daemon (start the daemon before or after: it retries every second)."""
    server = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{daemon.port}"])
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@needs_prometheus
@pytest.mark.timeout(60)
def test_a_real_prometheus_fires_the_change_alert_on_the_first_change_after_a_start(
    daemon: DaemonProcess, sim: Simulator, prometheus: PrometheusServer
) -> None:
    """The issue's case: Prometheus has scraped the fresh daemon's fingerprint.changed counter at 0, the model's
    fingerprint changes once, and the shipped FpwatchVersionChanged rule fires for that very change."""
    sim.update_model("gpt-4o", {"fingerprints": {A: 1}})
    daemon.write(grace="1h")
    daemon.start()
    wait_for(lambda: daemon.checks() >= 4, what="the learning period (3 checks) over")
    changed = f'fpwatch_events_total{{job="fpwatch",model="{MODEL}",type="fingerprint.changed"}}'
    wait_for(lambda: prometheus.query(f"{changed} == 0"), what="Prometheus holding the counter at 0")
    assert prometheus.alerts("FpwatchVersionChanged") == []
    sim.update_model("gpt-4o", {"fingerprints": {B: 1}})
    wait_for(lambda: ("fingerprint.changed", B) in daemon.events(), what="the daemon seeing the change")
    firing = wait_for(
        lambda: [a for a in prometheus.alerts("FpwatchVersionChanged") if a["state"] == "firing"],
        what="FpwatchVersionChanged firing",
    )
    assert [(a["labels"]["model"], a["labels"]["type"], a["labels"]["severity"]) for a in firing] == [
        (MODEL, "fingerprint.changed", "warning")
    ]
    assert firing[0]["annotations"]["summary"].startswith(f"{MODEL}: fingerprint.changed")
    assert [e for e in daemon.events() if e[0] == "fingerprint.changed"] == [("fingerprint.changed", B)]  # the first
    assert prometheus.query(f'ALERTS{{alertname="FpwatchVersionChanged",alertstate="firing",model="{MODEL}"}}')
    assert prometheus.stop() == 0
    assert daemon.stop() == 0
