"""Shared test helpers: real servers on loopback (the simulator, HTTP and SMTP sinks), config files that point at
them, the real CLI and daemon as subprocesses, a clean environment, and a blocking view of the async store."""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import inspect
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from fpwatch.config.model import PostgresState, Secret
from fpwatch.sim import Simulator
from fpwatch.store import open_store

API_KEY = "sk-fpwatch-test-8d7c6b5a4f3e2d1c0b9a"
# What the environment may hold that would point fpwatch elsewhere than the test's own config and state.
_REDIRECTING = ("FPWATCH_CONFIG", "STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")


def fpwatch_env(**extra: str) -> dict[str, str]:
    """The environment for fpwatch subprocesses: this one without what would redirect them, plus `extra`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    for name in _REDIRECTING:
        if name not in extra:
            env.pop(name, None)
    return env


# The head of a one-provider config for end-to-end `check` runs of one provider type (tests/test_anthropic.py,
# tests/test_responses.py): one check learns, no discovery spends requests; the provider table and model follow.
ONE_PROVIDER_HEAD = """
[fpwatch]
state = "state.db"
log_format = "json"

[defaults]
grace_period = "1h"
timeout = "10s"
learning_period = 1

[discovery]
budget = 0
"""


def run_in(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m fpwatch --config tmp_path/fpwatch.toml ARGS` in tmp_path, with fpwatch_env(**env)."""
    return subprocess.run(
        [sys.executable, "-m", "fpwatch", "--config", str(tmp_path / "fpwatch.toml"), *args],
        capture_output=True,
        text=True,
        env=fpwatch_env(**env),
        cwd=tmp_path,
        timeout=120,
    )


def only_model(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one model of a `check --json` run's output."""
    assert result.stdout, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    return dict(model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll until `predicate` is truthy (returning its value), or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator that requires API_KEY and answers instantly."""
    with Simulator(api_key=API_KEY, seed=1) as simulator:
        yield simulator


# --- the CLI ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs `python -m fpwatch` in a subprocess with a config file in a temp folder."""

    def __init__(self, tmp_path: Path, sim: Simulator) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.config = tmp_path / "fpwatch.toml"
        self.env = fpwatch_env(SIM_KEY=API_KEY)
        self.state: Path | PostgresState = tmp_path / "state.db"  # what `write` points the config at

    def write(
        self,
        *,
        models: str = 'model = "gpt-4o"',
        extra: str = "",
        learning_period: int = 1,
        grace_period: str = "24h",
        timeout: str = "10s",
        provider_extra: str = "",
        samples: int = 3,
    ) -> Path:
        self.config.write_text(
            f"""
[fpwatch]
{self.state_lines()}
log_format = "json"

[defaults]
learning_period = {learning_period}
grace_period = "{grace_period}"
timeout = "{timeout}"
failure_threshold = 2

[providers.sim]
type = "openai-compatible"
base_url = "{self.sim.base_url}"
api_key = "${{SIM_KEY}}"
{provider_extra}

[[models]]
provider = "sim"
{models}
canaries = ["probe"]

[canaries.probe]
prompt = "Reply in one token. 1+1="
max_tokens = 2
samples = {samples}
logprobs = true
top_logprobs = 3
{extra}
"""
        )
        return self.config

    def state_lines(self) -> str:
        if not isinstance(self.state, PostgresState):
            return f'state = "{self.state.name}"'
        assert self.state.password is not None
        (self.tmp_path / "pg.pw").write_text(self.state.password.reveal() + "\n")
        return f'state = "{self.state.url}"\nstate_password_file = "pg.pw"'

    def __call__(self, *args: str, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "fpwatch", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.tmp_path,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path: Path, sim: Simulator) -> Cli:
    return Cli(tmp_path, sim)


@pytest.fixture
def backend_cli(cli: Cli, backend: Backend) -> Cli:
    """The CLI on a state of each backend (`cli.state`)."""
    cli.state = backend.state()
    return cli


# --- the daemon -------------------------------------------------------------------------------------------


class DaemonProcess:
    """A config in a temp folder, and `fpwatch run` on it as a real subprocess."""

    def __init__(self, tmp_path: Path, sim: Simulator) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.config = tmp_path / "fpwatch.toml"
        self.port = free_port()
        self.env = fpwatch_env()
        self.proc: subprocess.Popen[str] | None = None
        self.log = tmp_path / "daemon.log"

    def write(self, interval: str = "1s", grace: str = "2s", extra_model: str = "", extra: str = "") -> None:
        """Checks every `interval`; a learning period of 3 checks sees every replica of a 2-replica pool."""
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
grace_period = "{grace}"
timeout = "10s"

[discovery]
budget = 0  # border-input discovery has its own tests (test_discovery.py); here every request is a check's

[providers.sim]
type = "openai-compatible"
base_url = "{self.sim.base_url}"

[[models]]
provider = "sim"
model = "gpt-4o"
canaries = ["probe"]
{extra_model}

[canaries.probe]
prompt = "Reply in one token. 1+1="
max_tokens = 2
samples = 4
{extra}
"""
        )

    def start(self) -> None:
        handle = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fpwatch", "--config", str(self.config), "run"],
            cwd=self.tmp_path,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(self.healthy, what="the daemon's /healthz")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 40) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`fpwatch ARGS` on the daemon's config, in its folder, as another process."""
        return subprocess.run(
            [sys.executable, "-m", "fpwatch", "--config", str(self.config), *args],
            cwd=self.tmp_path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cli(self, *args: str) -> Any:
        return json.loads(self.command(*args, "--json").stdout)

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["details"].get("new") or e["details"].get("value") or "") for e in self.cli("events")]

    def checks(self) -> int:
        """Successful checks so far: from the running daemon when it answers, else from the database."""
        if self.proc is not None and self.proc.poll() is None:
            status = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/status", timeout=5).json()
        else:
            status = self.cli("status")
        return int(status["models"][0]["checks"])

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"raw": line})
        return lines

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = sample.value
        return values


@pytest.fixture
def daemon(tmp_path: Path, sim: Simulator) -> Iterator[DaemonProcess]:
    """A DaemonProcess on the module's `sim` (the daemon tests override it with a keyless one), killed if left."""
    process = DaemonProcess(tmp_path, sim)
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


# --- notification sinks -----------------------------------------------------------------------------------


class HttpSink:
    """A loopback HTTP server that records every request: GETs (heartbeat pings) answer "OK"; POSTs (apprise
    json:// and form://) are decoded, and answer 500 where the path contains "fail"."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.posts: list[tuple[str, dict[str, Any]]] = []  # (path, decoded body)
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sink.requests.append(("GET", self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                if "json" in self.headers.get("content-type", ""):
                    payload = json.loads(raw)
                else:
                    payload = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                sink.requests.append(("POST", self.path))
                sink.posts.append((self.path, payload))
                self.send_response(500 if "fail" in self.path else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.base}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict[str, Any]]:
        return [payload for p, payload in self.posts if p.startswith(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A real SMTP server on loopback that keeps every message it accepts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def start(self) -> Mailbox:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=fpwatch@example.org&to=oncall@example.org"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    server = HttpSink()
    yield server
    server.close()


# --- the store, from synchronous tests --------------------------------------------------------------------


class BlockingStore:
    """The store (SQLite or PostgreSQL: `state` is a path or a PostgresState), called from synchronous test code:
    each coroutine method runs to completion on a private event loop, an async iterator comes back as a list. `db`
    is a connection of the test's own to the same state (for tampering and looking at the schema), as another
    process would have; its `execute` takes SQLite's `?` placeholders on both backends."""

    def __init__(self, state: Path | PostgresState, **options: Any) -> None:
        self.path = state
        self._loop = asyncio.new_event_loop()
        try:
            self._store = self._loop.run_until_complete(open_store(state, **options))
        except BaseException:
            self._loop.close()
            raise
        self.db: Any = raw_connection(state)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if inspect.isasyncgenfunction(method):
            return lambda *args, **kw: self._loop.run_until_complete(_collect(method(*args, **kw)))
        if inspect.iscoroutinefunction(method):
            return lambda *args, **kw: self._loop.run_until_complete(method(*args, **kw))
        return method

    def close(self) -> None:
        self.db.close()
        self._loop.run_until_complete(self._store.close())
        self._loop.close()

    def __enter__(self) -> BlockingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawPostgres:
    """A plain autocommit connection to a PostgreSQL state that takes SQLite's `?` placeholders, so that a test
    tampers with either backend in the same words."""

    def __init__(self, state: PostgresState) -> None:
        import psycopg

        password = state.password.reveal() if state.password else None
        self._db = psycopg.connect(state.url, password=password, autocommit=True)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql.replace("?", "%s"), tuple(args))

    def close(self) -> None:
        self._db.close()


def raw_connection(state: Path | PostgresState) -> Any:
    if isinstance(state, PostgresState):
        return RawPostgres(state)
    return sqlite3.connect(state, isolation_level=None)


# --- PostgreSQL: one throwaway server per test session, a fresh database per test ------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    from postgres import PostgresServer, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (.ci/setup installs it)")
    server = PostgresServer()
    yield server
    server.close()


class Backend:
    """One of the two stores: `state()` makes a fresh, empty state (a file name in tmp_path, or a new database), and
    `url(state)` is how a config file names it."""

    def __init__(self, name: str, tmp_path: Path, server: Any = None) -> None:
        self.name = name
        self.tmp_path = tmp_path
        self.server = server
        self._made = 0

    def state(self) -> Path | PostgresState:
        self._made += 1
        if self.server is None:
            return self.tmp_path / f"state{self._made}.db"
        from postgres import PASSWORD

        database = f"t{os.getpid()}_{next(_DATABASES)}"
        self.server.createdb(database)
        return PostgresState(self.server.url(database, password=False), Secret(PASSWORD))

    def lock_out(self, db: Any) -> None:
        """From the test's own connection `db`, hold what a write needs, as another process in the middle of a long
        transaction would (SQLite: the write lock; PostgreSQL: the tables a check and a pruning write)."""
        if self.server is None:
            db.execute("BEGIN EXCLUSIVE")
        else:
            db.execute("BEGIN")
            db.execute("LOCK TABLE observations, model_state IN ACCESS EXCLUSIVE MODE")

    def migrations(self) -> list[str]:
        if self.server is None:
            from fpwatch.store.sqlite_migrations import MIGRATIONS
        else:
            from fpwatch.store.postgres_migrations import MIGRATIONS  # type: ignore[assignment]
        return [name for name, _ in MIGRATIONS]


_DATABASES = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The store tests run on both backends: the same test body, a fresh state each."""
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    return Backend("postgresql", tmp_path, request.getfixturevalue("postgres_server"))


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


# --- the report: a short history on the simulator ------------------------------------------------------------

FP_A, FP_B, FP_C = "fp_aaaaaaaaaa", "fp_bbbbbbbbbb", "fp_cccccccccc"
HOSTILE_FP = 'fp_<img src=x onerror="window.pwned=1">&amp;'  # what a provider could send: shown, never obeyed
REPORT_MODELS = ("sim/gpt-4o", "sim/gpt-4o-mini")


def report_story(cli: Cli, sim: Simulator, quiet_checks: int = 5) -> list[dict[str, Any]]:
    """Two models checked by the real `fpwatch check`: gpt-4o rotates two replicas, then one moves to a new
    fingerprint (a fingerprint.changed, acked); gpt-4o-mini answers with a hostile fingerprint. Enough checks for
    the drift screens to start (they follow the learning). Returns the events (`events --json`)."""
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1, FP_B: 1}, "resolved": "gpt-4o-2024-08-06"})
    sim.update_model("gpt-4o-mini", {"fingerprints": {HOSTILE_FP: 1}, "resolved": "gpt-4o-mini-2024-07-18"})
    cli.write(
        models='model = "gpt-4o"\ntags = ["prod"]\n\n[[models]]\nprovider = "sim"\nmodel = "gpt-4o-mini"', samples=8
    )
    for _ in range(quiet_checks):
        assert cli("check").code == 0
    sim.update_model("gpt-4o", {"fingerprints": {FP_A: 1, FP_C: 1}})
    changed = cli("check")
    assert changed.code == 1, changed.stdout + changed.stderr
    assert cli("check").code in (0, 1)
    events = cli("events", "--json").json()
    change = next(e for e in events if e["type"] == "fingerprint.changed")
    assert cli("ack", str(change["id"]), "--comment", "planned rollout").code == 0
    return list(cli("events", "--json").json())


# --- an Atom feed, checked against RFC 4287 -------------------------------------------------------------------

ATOM_NS = {"a": "http://www.w3.org/2005/Atom"}
NS = ATOM_NS


def rfc3339(text: str | None) -> datetime:
    assert text is not None and text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def valid_feed(body: bytes) -> list[ET.Element]:
    """Parse a feed and check what RFC 4287 requires of it and of each entry; its entries."""
    root = ET.fromstring(body)
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    for tag in ("id", "title", "updated"):
        assert len(root.findall(f"a:{tag}", NS)) == 1, tag
    assert root.findtext("a:id", namespaces=NS, default="").startswith("urn:uuid:")
    rfc3339(root.findtext("a:updated", namespaces=NS))
    assert root.findtext("a:author/a:name", namespaces=NS) == "fpwatch"  # the feed's author covers every entry
    entries = root.findall("a:entry", NS)
    for entry in entries:
        for tag in ("id", "title", "updated", "content"):
            assert len(entry.findall(f"a:{tag}", NS)) == 1, tag
        assert entry.findtext("a:id", namespaces=NS, default="").startswith("urn:uuid:")
        assert entry.find("a:content", NS).get("type") == "text"  # type: ignore[union-attr]
        assert rfc3339(entry.findtext("a:updated", namespaces=NS)) >= rfc3339(
            entry.findtext("a:published", namespaces=NS)
        )
    ids = [e.findtext("a:id", namespaces=NS) for e in entries]
    assert len(set(ids)) == len(ids)
    published = [rfc3339(e.findtext("a:published", namespaces=NS)) for e in entries]
    assert published == sorted(published, reverse=True)  # newest first
    return entries


def categories(entry: ET.Element) -> dict[str, str]:
    """An entry's categories by scheme: type, severity, model."""
    return {
        c.get("scheme", "").removeprefix("urn:fpwatch:"): c.get("term", "") for c in entry.findall("a:category", NS)
    }
