"""The config as fpwatch uses it: frozen dataclasses, and every default in one place (here).

Imports nothing else of fpwatch: providers, checks and the daemon read these values; the reader
(config/reader.py) builds them and takes its defaults from these fields.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

Logprobs = Literal["auto"] | bool
LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Secret:
    """A value that must never be printed: its repr and str are masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Canary:
    """One fixed request. `temperature=None` means "send no temperature" (reasoning models)."""

    name: str
    messages: tuple[Message, ...]
    seed: int | None = 1
    temperature: float | None = 0.0
    max_tokens: int = 16
    samples: int = 3
    logprobs: Logprobs = "auto"
    top_logprobs: int | None = None
    expect: str | None = None
    builtin: bool = field(default=False, compare=False)

    @property
    def prompt(self) -> str:
        """The last user message: what a person reads as "the question"."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return self.messages[-1].content if self.messages else ""

    def digest(self, context: object = None) -> str:
        """8 hex digits naming what this canary sends (and `context`: the model id, provider type and extra
        request fields), so an edited canary, or one sent elsewhere, gets a drift reference of its own."""
        spec = repr(
            (
                [(m.role, m.content) for m in self.messages],
                self.seed,
                self.temperature,
                self.max_tokens,
                self.logprobs,
                self.top_logprobs,
                context,
            )
        )
        return hashlib.sha256(spec.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ProviderType:
    """What the config needs to know of one provider `type`; each adapter declares its own."""

    name: str
    default_base_url: str | None = None  # None: base_url is required
    base_url_example: str = "http://127.0.0.1:8000/v1"  # shown when a required base_url is missing
    key_variable: str | None = None  # the environment variable people keep this provider's key in
    key_required: bool = False
    extra_keys: tuple[str, ...] = ()  # keys of [providers.NAME] only this type takes (Azure's api_version)
    # Canary options the wire format has no field for ("seed", "logprobs"): never sent, as if every model of the
    # type rejected them; a canary that insists (logprobs = true) is a config error for its models.
    unsupported: frozenset[str] = frozenset()


def server_addresses(url: str) -> list[tuple[str, str | None]]:
    """(host, port) for each server a libpq URL names, as libpq reads it: `h1:5432,h2:5433` names two, `?host=` and
    `?port=` win over the URL's host part, a host starting with "/" (percent-encoded in the host part, %2F) is a socket
    directory, and "" is libpq's default socket. Ports are as written (the config reader checks them)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    hostpart = parts.netloc.rpartition("@")[2]
    pairs: list[tuple[str, str | None]] = []
    for item in hostpart.split(","):
        if item.startswith("["):  # [::1]:5433
            host, _, rest = item[1:].partition("]")
            pairs.append((host, rest[1:] or None))
        else:
            host, _, port = item.partition(":")
            pairs.append((unquote(host), port or None))
    if "host" in query:
        pairs = [(host, None) for host in query["host"].split(",")]
    if query.get("port"):
        ports = query["port"].split(",")
        pairs = [(host, ports[min(i, len(ports) - 1)]) for i, (host, _) in enumerate(pairs)]
    return pairs


@dataclass(frozen=True)
class PostgresState:
    """`[fpwatch] state = "postgresql://..."`: the state in a PostgreSQL database. `url` never holds the password
    (it is what logs, errors and `config show` print); the password, if fpwatch is given one, comes from the URL or
    `state_password_file` and is kept apart. Without one, libpq looks in its own passfile (`PGPASSFILE`,
    `~/.pgpass`, or `passfile=` in the URL's query)."""

    url: str
    password: Secret | None = None

    @property
    def address(self) -> str:
        """The server(s), as errors name them: host:port each (libpq's default port where the URL leaves it out), a
        socket's file for a socket directory, several comma-separated for a multi-host URL."""
        shown = []
        for host, port in server_addresses(self.url):
            if host.startswith("/"):
                shown.append(f"{host.rstrip('/')}/.s.PGSQL.{port or 5432}")
            elif not host:
                shown.append(f"the default socket (port {port or 5432})")
            else:
                shown.append(f"[{host}]:{port or 5432}" if ":" in host else f"{host}:{port or 5432}")
        return ", ".join(shown)

    def shown(self) -> str:
        """The URL for `config show`: a password fpwatch was given appears as ********."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user, _, host = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}:********@{host}"))

    def __str__(self) -> str:
        return self.url


State = Path | PostgresState
"""Where the state lives: a SQLite file, or a PostgreSQL database."""
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_sqlite(state: State) -> bool:
    return isinstance(state, Path)


def state_missing(state: State) -> bool:
    """A SQLite file not created yet. (A PostgreSQL database is asked when it is opened: store.open_existing.)"""
    return isinstance(state, Path) and not state.exists()


@dataclass(frozen=True)
class Settings:
    # A path relative to $STATE_DIRECTORY, else to the config file's folder; or a postgresql:// URL.
    state: State = Path("fpwatch.db")
    log_format: LogFormat = "auto"
    log_level: str = "info"
    listen: str | None = None
    heartbeat_url: Secret | None = None
    retention: timedelta = timedelta(days=90)
    max_concurrency: int = 64  # requests in flight across all providers
    audit_key: Secret | None = None  # from audit_key_file: makes the audit hash chain an HMAC


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    api_key: Secret | None = None
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)  # the type's own keys (ProviderType.extra_keys)
    max_concurrency: int = 4


@dataclass(frozen=True)
class ModelConfig:
    name: str
    provider: ProviderConfig
    model: str
    canaries: tuple[Canary, ...]
    interval: timedelta | None = timedelta(minutes=15)
    cron: str | None = None
    timezone: str = "UTC"
    jitter: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(seconds=60)
    grace_period: timedelta = timedelta(hours=24)
    learning_period: int | timedelta = 3
    failure_threshold: int = 3
    tags: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    discovery_budget: int = 2000  # one-token requests a border-input discovery may spend; 0: the daemon never runs it


@dataclass(frozen=True)
class AlertsConfig:
    group_wait: timedelta = timedelta(seconds=30)
    send_resolved: bool = True
    repeat_interval: timedelta = timedelta(0)


@dataclass(frozen=True)
class NotifierConfig:
    name: str
    url: Secret
    events: tuple[str, ...] | None = None  # None: every event of severity >= min_severity
    models: tuple[str, ...] | None = None  # None: every model; else model names or tags
    min_severity: str = "warning"


@dataclass(frozen=True)
class Config:
    path: Path
    settings: Settings
    providers: Mapping[str, ProviderConfig]
    models: tuple[ModelConfig, ...]
    canaries: Mapping[str, Canary]
    alerts: AlertsConfig
    notifiers: tuple[NotifierConfig, ...]
    secrets: frozenset[str] = field(repr=False)  # every loaded secret, for verbatim redaction

    @functools.cached_property
    def _by_name(self) -> dict[str, ModelConfig]:
        return {m.name: m for m in self.models}

    def model(self, name: str) -> ModelConfig | None:
        return self._by_name.get(name)


def default(cls: type[Any], name: str) -> Any:
    """The default of one field: the reader fills in what a file leaves out from here, never from a copy."""
    f = _fields(cls).get(name)  # type: ignore[arg-type]  # classes hash; mypy cannot tell for type[Any]
    if f is not None and f.default is not dataclasses.MISSING:
        return f.default
    if f is not None and f.default_factory is not dataclasses.MISSING:
        return f.default_factory()  # a new one each time
    raise KeyError(f"{cls.__name__}.{name} has no default")


@functools.cache
def _fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """A dataclass's fields by name, looked up once: a 200-model config asks for some 1,600 defaults."""
    return {f.name: f for f in dataclasses.fields(cls)}
