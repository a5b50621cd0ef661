"""The real daemon (`fpwatch run` in a subprocess) against the simulator, once per provider type that is not
OpenAI's: a quiet baseline, a silent swap, a new resolved model that reaches a webhook once, the server's own
rate-limit wait, and the key nowhere it should not be.

Each type is one `Dialect` entry: its `[providers]` table, a model id, the route its requests take and the
faults its server sends with a wait. The simulator's `resolved` setting is what each wire format reports as
its version signal (Anthropic's `model`, Gemini's `modelVersion`, the Responses API's `model`), so one knob
moves them all; its `echoes` move what Anthropic and the Responses API echo of how they served a request,
which fpwatch keeps as a derived fingerprint.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import API_KEY, DaemonProcess, HttpSink, wait_for

from fpwatch.sim import BUILTIN_PROMPTS, Simulator, realistic

COIN, COLOR = BUILTIN_PROMPTS[2], BUILTIN_PROMPTS[3]  # answered by `realistic()` with nearly tied first tokens


@dataclass(frozen=True)
class Dialect:
    """One provider type as the daemon meets it on the simulator."""

    type: str
    model: str  # the API model id
    provider: str  # the [providers.api] lines after `type` and `base_url`: the key, and the type's own keys
    key_variable: str
    route: str  # what every request's path must end with
    snapshots: tuple[str, str]  # the resolved model before and after the provider re-points the name
    waits: tuple[str, ...]  # fault kinds the server sends with its own wait (`retry_after`)
    signal: str  # the wire field the simulator's `resolved` setting becomes (for the reader)
    knob: str = "resolved"  # the simulator setting that moves it
    base_url: str = "{url}"  # formatted with the simulator's url (no /v1) and base_url (with /v1)
    fingerprint: str | None = None  # the derived fingerprint the echoed settings give at the start, if any
    echoes: tuple[dict[str, Any], str] | None = None  # echoed settings that move the backend, and its new fingerprint

    def __str__(self) -> str:
        return self.type


DIALECTS = (
    Dialect(
        "anthropic",
        "claude-sonnet-4-5",
        'api_key = "${ANTHROPIC_API_KEY}"',
        "ANTHROPIC_API_KEY",
        "/v1/messages",
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20260115"),
        ("429", "529"),
        signal="model",
        fingerprint="service_tier=standard",
        echoes=({"service_tier": "priority"}, "service_tier=priority"),
    ),
    Dialect(
        "gemini",
        "gemini-2.5-flash",
        'api_key = "${GEMINI_API_KEY}"',
        "GEMINI_API_KEY",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        ("gemini-2.5-flash-001", "gemini-2.5-flash-002"),
        ("429",),  # Google's wait is RetryInfo.retryDelay in the body, never a header
        signal="modelVersion",
    ),
    Dialect(
        "openai-responses",
        "gpt-5.5",
        'api_key = "${OPENAI_API_KEY}"',
        "OPENAI_API_KEY",
        "/v1/responses",
        ("gpt-5.5-2026-04-23", "gpt-5.5-2026-09-02"),
        ("429", "529"),
        signal="model",
        base_url="{base_url}",
        fingerprint="temperature=0;top_p=1;service_tier=default",
        echoes=({"top_p": 0.98}, "temperature=0;top_p=0.98;service_tier=default"),
    ),
)
RATE_LIMITS = [pytest.param(d, kind, id=f"{d}-{kind}") for d in DIALECTS for kind in d.waits]
ECHOING = [pytest.param(d, id=str(d)) for d in DIALECTS if d.echoes]


class DialectDaemon(DaemonProcess):
    """`fpwatch run` on one provider of the dialect's type, with the key in its environment variable."""

    def __init__(self, tmp_path: Path, sim: Simulator, dialect: Dialect) -> None:
        super().__init__(tmp_path, sim)
        self.dialect = dialect
        self.env[dialect.key_variable] = API_KEY
        self.name = f"api/{dialect.model}"

    def write_for(
        self, *, interval: str = "1s", samples: int = 6, canaries: tuple[str, ...] = (COIN, COLOR), extra: str = ""
    ) -> None:
        """Checks every `interval`, a baseline of 3 checks, one canary of `samples` per prompt, `extra` appended."""
        d = self.dialect
        tables = "\n".join(
            f'[canaries.c{i}]\nprompt = "{prompt}"\nmax_tokens = 2\nsamples = {samples}\n'
            for i, prompt in enumerate(canaries)
        )
        self.config.write_text(
            f"""
[fpwatch]
state = "state.db"
log_format = "json"
listen = "127.0.0.1:{self.port}"

[defaults]
interval = "{interval}"
jitter = "0"
learning_period = 3
grace_period = "1h"
timeout = "10s"

[discovery]
budget = 0  # every request is a check's

[providers.api]
type = "{d.type}"
base_url = "{d.base_url.format(url=self.sim.url, base_url=self.sim.base_url)}"
{d.provider}

[[models]]
provider = "api"
model = "{d.model}"

{tables}
{extra}
"""
        )

    def status(self) -> dict[str, Any]:
        body = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/status", timeout=5).json()
        return dict(body["models"][0])

    def typed(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.cli("events") if e["type"] == kind]


@pytest.fixture(params=DIALECTS, ids=str)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def watcher(tmp_path: Path, sim: Simulator, dialect: Dialect) -> Iterator[DialectDaemon]:
    """A DialectDaemon on conftest's keyed `sim`, the dialect's model answering as a real one, killed if left."""
    sim.update_model(dialect.model, {**realistic("a"), dialect.knob: dialect.snapshots[0]})
    process = DialectDaemon(tmp_path, sim, dialect)
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def sent(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if not r["path"].startswith("/_sim/")]


def test_baseline_silent_swap_and_new_snapshot_are_each_raised_once(
    watcher: DialectDaemon, sim: Simulator, sink: HttpSink, dialect: Dialect
) -> None:
    """The baseline alerts nobody; other answers behind the same snapshot are a critical silent drift; a new
    snapshot is one model.changed, delivered to the webhook once; the key is in no log, stored byte or URL."""
    old, new = dialect.snapshots
    hook = f'[alerts]\ngroup_wait = "0s"\n\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n'
    watcher.write_for(extra=hook)
    watcher.start()
    # Fingerprint-free baseline: 3 checks learn the snapshot, 4 checks of 12 samples give the drift reference.
    wait_for(lambda: watcher.status()["state"] == "ok", timeout=40, what="the baseline")
    baseline = [("fingerprint.first_seen", dialect.fingerprint)] if dialect.fingerprint else []
    assert watcher.events() == [*baseline, ("model.first_seen", old)]
    status = watcher.status()
    assert status["fingerprints"] == baseline_fingerprints(dialect) and status["resolved_models"] == [old]
    assert sink.posts == []

    # The silent swap (as tests/test_drift_e2e.py does it): the same snapshot name answers as another model.
    sim.update_model(dialect.model, {"outputs": realistic("b")["outputs"]})
    (drift,) = wait_for(lambda: watcher.typed("canary.drift"), timeout=30, what="canary.drift")
    assert drift["severity"] == "critical" and drift["details"]["silent"] is True, drift
    wait_for(lambda: [p for p in sink.to("/hook") if "`canary.drift`" in p["message"]], what="the drift alert")

    # The provider re-points the name: the signal this wire format carries (Anthropic `model`, Gemini
    # `modelVersion`) names another snapshot.
    sim.update_model(dialect.model, {dialect.knob: new})
    (changed,) = wait_for(
        lambda: watcher.typed("model.changed"), timeout=30, what=f"model.changed from `{dialect.signal}`"
    )
    assert changed["severity"] == "warning" and changed["details"]["new"] == new, changed
    assert changed["details"]["old"] == [old]
    posted = wait_for(lambda: [p for p in sink.to("/hook") if "`model.changed`" in p["message"]], what="its alert")
    assert new in posted[0]["title"] and watcher.name in posted[0]["title"]
    checks = watcher.checks()
    wait_for(lambda: watcher.checks() >= checks + 2, what="two more checks")
    assert watcher.stop() == 0

    # Once each: no second event and no second delivery, for the change or the drift.
    events = watcher.cli("events")
    assert sorted(e["type"] for e in events if e["type"] != "fingerprint.first_seen") == [
        "canary.drift",
        "model.changed",
        "model.first_seen",
    ], events
    alerts = [p["message"] for p in sink.to("/hook")]
    assert sum("`model.changed`" in m for m in alerts) == 1 and sum("`canary.drift`" in m for m in alerts) == 1
    assert len(alerts) == 2, alerts

    # The key: sent and accepted on every request, in a header (never the URL), and written nowhere.
    requests = sent(sim)
    assert requests and {r["auth"] for r in requests} == {"ok"}
    assert {r["path"] for r in requests} == {dialect.route}
    assert not any(API_KEY in r["path"] or API_KEY in json.dumps(r.get("query")) for r in requests)
    log = watcher.log.read_text()
    assert log and watcher.log_lines() and API_KEY not in log
    stored = b"".join(p.read_bytes() for p in watcher.tmp_path.glob("state.db*"))
    assert old.encode() in stored and API_KEY.encode() not in stored  # the database was written, without it
    assert not any(API_KEY in json.dumps(p) for p in sink.posts)


@pytest.mark.parametrize(("dialect", "kind"), RATE_LIMITS)
def test_a_rate_limit_is_retried_after_the_servers_own_wait(
    watcher: DialectDaemon, sim: Simulator, dialect: Dialect, kind: str
) -> None:
    """The server's 429 (or Anthropic's 529) says wait 1.5 s: the daemon retries no sooner, and the check is OK."""
    sim.push_faults(dialect.model, [{"kind": kind, "retry_after": 1.5}])
    watcher.write_for(interval="1h", samples=1, canaries=(COIN,))
    watcher.start()
    wait_for(lambda: watcher.checks() >= 1, what="the check")
    status = watcher.status()
    assert (
        status["last_error"] is None
        and status["consecutive_failures"] == 0
        and status["resolved_models"] == [dialect.snapshots[0]]
    ), status
    assert watcher.stop() == 0
    log = sent(sim)
    assert [(r["status"], r["fault"]) for r in log] == [(int(kind), kind), (200, None)]
    assert 1.5 <= log[1]["monotonic"] - log[0]["monotonic"] < 5
    with sqlite3.connect(watcher.tmp_path / "state.db") as db:
        assert db.execute("SELECT attempts, ok FROM observations").fetchall() == [(2, 1)]
    assert watcher.events()[-1] == ("model.first_seen", dialect.snapshots[0])


def baseline_fingerprints(dialect: Dialect) -> list[str]:
    return [dialect.fingerprint] if dialect.fingerprint else []


@pytest.mark.parametrize("dialect", ECHOING)
def test_a_change_of_the_echoed_settings_is_one_fingerprint_change(
    watcher: DialectDaemon, sim: Simulator, sink: HttpSink, dialect: Dialect
) -> None:
    """The server serves the model otherwise (Anthropic's priority tier, another top_p chosen by the Responses
    API): one fingerprint.changed, a warning, delivered to the webhook once, naming the new settings."""
    assert dialect.echoes is not None
    echoes, moved = dialect.echoes
    hook = f'[alerts]\ngroup_wait = "0s"\n\n[[notify]]\nname = "hook"\nurl = "json://{sink.base}/hook"\n'
    watcher.write_for(samples=2, canaries=(COIN,), extra=hook)
    watcher.start()
    wait_for(lambda: watcher.status()["state"] == "ok", timeout=40, what="the baseline")
    sim.update_model(dialect.model, {"echoes": echoes})
    (changed,) = wait_for(lambda: watcher.typed("fingerprint.changed"), timeout=30, what="fingerprint.changed")
    assert changed["severity"] == "warning" and changed["details"]["new"] == moved, changed
    posted = wait_for(lambda: [p for p in sink.to("/hook") if "`fingerprint.changed`" in p["message"]], what="alert")
    assert moved in posted[0]["title"]
    checks = watcher.checks()
    wait_for(lambda: watcher.checks() >= checks + 2, what="two more checks")
    assert watcher.stop() == 0
    assert len(watcher.typed("fingerprint.changed")) == 1 and len(sink.to("/hook")) == 1
    assert set(watcher.cli("status")["models"][0]["fingerprints"]) == {dialect.fingerprint, moved}
