"""The config file (DESIGN section 3): TOML in, frozen dataclasses out, every mistake reported at once.

Reading is one pass that collects `ConfigProblem`s instead of stopping at the first: a person who
runs `fpwatch config check` sees everything to fix. Secrets (`api_key`, notifier URLs, secret
headers, `${VAR}` values of secret-looking variables) are wrapped in `Secret` and listed in
`Config.secrets`, the set the log and output redaction scrub verbatim.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpwatch.canaries import BUILTIN_SET, BUILTIN_SET_NAME, Canary, Logprobs, Message
from fpwatch.durations import parse_duration
from fpwatch.errors import ConfigError, ConfigProblem
from fpwatch.tracking import SEVERITIES, SEVERITY

PROVIDER_TYPES = ("openai", "azure", "openai-compatible", "anthropic", "gemini")
EVENT_TYPES = tuple(SEVERITY)
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}
SECRET_NAME = re.compile(r"(key|token|secret|passw(or)?d|auth|credential|cookie)", re.I)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
class Settings:
    state: Path
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    listen: str | None = None
    heartbeat_url: Secret | None = None
    retention: timedelta = timedelta(days=90)
    max_concurrency: int = 64  # requests in flight across all providers


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    api_key: Secret | None = None
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    api_version: str | None = None
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


def find_config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """--config, else $FPWATCH_CONFIG, else ./fpwatch.toml, else /etc/fpwatch/fpwatch.toml."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("FPWATCH_CONFIG"):
        return Path(env["FPWATCH_CONFIG"])
    for candidate in (Path("fpwatch.toml"), Path("/etc/fpwatch/fpwatch.toml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        [
            ConfigProblem(
                "",
                "no config file found: pass --config PATH, set FPWATCH_CONFIG, or create ./fpwatch.toml "
                "(config.example.toml is a starting point)",
            )
        ]
    )


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", f"config file {path} does not exist")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path} is not valid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem("", f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8")]
        ) from None
    return parse_config(raw, path=path, env=env)


def parse_config(raw: Mapping[str, Any], *, path: Path, env: Mapping[str, str]) -> Config:
    reader = _Reader(env=env, base_dir=path.resolve().parent)
    config = reader.config(raw, path)
    if reader.problems:
        from fpwatch.redact import Redactor

        redact = Redactor(reader.secrets)  # a secret put in the wrong key must not be printed back
        problems = [ConfigProblem(p.location, redact(p.message)) for p in dict.fromkeys(reader.problems)]
        raise ConfigError(problems, str(path))
    assert config is not None
    return config


# --- reading ------------------------------------------------------------------------------------------

_TOP = ("fpwatch", "defaults", "providers", "models", "canaries", "alerts", "notify")
_SETTINGS = ("state", "log_format", "log_level", "listen", "heartbeat_url", "retention", "max_concurrency")
_SCHEDULE = (
    "interval",
    "cron",
    "timezone",
    "jitter",
    "timeout",
    "grace_period",
    "learning_period",
    "failure_threshold",
)
_DEFAULTS = (*_SCHEDULE, "canaries", "params", "tags")
_PROVIDER = ("type", "base_url", "api_key", "api_key_file", "headers", "api_version", "max_concurrency")
_MODEL = ("provider", "model", "name", *_DEFAULTS)
_CANARY = (
    "messages",
    "prompt",
    "seed",
    "temperature",
    "max_tokens",
    "samples",
    "logprobs",
    "top_logprobs",
    "expect",
)
_ALERTS = ("group_wait", "send_resolved", "repeat_interval")
_NOTIFY = ("name", "url", "url_file", "events", "models", "min_severity")
_MISSING: Any = object()


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Reader:
    """One pass over the TOML document; problems accumulate, values come back typed."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()
        self.broken_canaries: set[str] = set()  # defined but invalid: already reported, not "missing"

    def problem(self, location: str, message: str) -> None:
        self.problems.append(ConfigProblem(location, message))

    # -- generic helpers

    def table(self, value: Any, location: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(location, f"expected a table, got {_type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                advice = f'; did you mean "{hint[0]}"?' if hint else f"; valid keys: {', '.join(allowed)}"
                self.problem(_join(location, key), f"unknown key{advice}")
        return {k: v for k, v in value.items() if k in allowed}

    def interpolate(self, text: str, location: str, secret: bool) -> str | None:
        missing: list[str] = []

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                missing.append(name)
                return ""
            value = self.env[name]
            if secret or SECRET_NAME.search(name):
                self._remember_secret(value)
            return value

        result = _VAR.sub(sub, text)
        for name in missing:
            self.problem(location, f"environment variable {name} is not set; export it before starting fpwatch")
        return None if missing else result

    def _remember_secret(self, value: str) -> None:
        if len(value) >= 4:  # shorter values would redact ordinary words
            self.secrets.add(value)

    def string(
        self,
        tbl: Mapping[str, Any],
        key: str,
        location: str,
        default: Any = _MISSING,
        *,
        choices: tuple[str, ...] | None = None,
        secret: bool = False,
        allow_empty: bool = False,
    ) -> Any:
        loc = _join(location, key)
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.problem(loc, "is required")
                return None
            return default
        if not isinstance(value, str):
            self.problem(loc, f"expected a string, got {_type_name(value)}")
            return None
        text = self.interpolate(value, loc, secret)
        if text is None:
            return None
        if not text.strip() and not allow_empty:
            # An empty ${VAR} must not quietly drop a model from monitoring.
            self.problem(loc, "is empty" + (f" (after substituting {value})" if "${" in value else ""))
            return None
        if secret:
            self._check_header_safe(text, loc)
        if choices is not None and text not in choices:
            hint = difflib.get_close_matches(text, choices, n=1)
            advice = f'did you mean "{hint[0]}"?' if hint else "use one of " + ", ".join(choices)
            self.problem(loc, f'"{text}" is not valid; {advice}')
            return None
        if secret:
            self._remember_secret(text)
        return text

    def _check_header_safe(self, text: str, loc: str) -> None:
        """Keys travel in HTTP headers: a stray non-ASCII or control character would crash every request."""
        for position, char in enumerate(text):
            if not char.isascii() or not char.isprintable():
                self.problem(
                    loc,
                    f"contains the character U+{ord(char):04X} at position {position + 1}, which cannot be "
                    "sent in an HTTP header; copy the value again without it",
                )
                return

    def duration(self, tbl: Mapping[str, Any], key: str, location: str, default: Any) -> Any:
        loc = _join(location, key)
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            return default
        if value == 0 and not isinstance(value, bool):
            return timedelta(0)
        if not isinstance(value, str):
            self.problem(loc, f'expected a duration string like "15m", got {_type_name(value)}')
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(loc, str(exc))
            return default

    def integer(self, tbl: Mapping[str, Any], key: str, location: str, default: Any, minimum: int | None = None) -> Any:
        loc = _join(location, key)
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(loc, f"expected an integer, got {_type_name(value)}")
            return default
        if minimum is not None and value < minimum:
            self.problem(loc, f"must be at least {minimum}, got {value}")
            return default
        return value

    def boolean(self, tbl: Mapping[str, Any], key: str, location: str, default: bool) -> bool:
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(_join(location, key), f"expected true or false, got {_type_name(value)}")
            return default
        return value

    def strings(self, tbl: Mapping[str, Any], key: str, location: str) -> tuple[str, ...] | None:
        loc = _join(location, key)
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(loc, "expected a list of strings")
            return None
        return tuple(value)

    def secret_file(self, tbl: Mapping[str, Any], key: str, location: str) -> str | None:
        name = self.string(tbl, key, location, None)
        if name is None:
            return None
        file = Path(name)
        if not file.is_absolute():
            file = self.base_dir / file
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(_join(location, key), f"cannot read {file}: {exc.strerror or exc}")
            return None
        if not value:
            self.problem(_join(location, key), f"{file} is empty")
            return None
        self._remember_secret(value)
        self._check_header_safe(value, _join(location, key))
        return value

    # -- sections

    def config(self, raw: Mapping[str, Any], path: Path) -> Config | None:
        top = self.table(dict(raw), "", _TOP)
        settings = self.settings(top.get("fpwatch", _MISSING))
        canaries = self.canaries(top.get("canaries", _MISSING))
        providers = self.providers(top.get("providers", _MISSING))
        defaults = self.table(top.get("defaults", _MISSING), "defaults", _DEFAULTS)
        models = self.models(top.get("models", _MISSING), defaults, providers, canaries)
        alerts = self.alerts(top.get("alerts", _MISSING))
        notifiers = self.notifiers(top.get("notify", _MISSING), models)
        if self.problems:
            return None
        return Config(
            path=path,
            settings=settings,
            providers=providers,
            models=tuple(models),
            canaries=canaries,
            alerts=alerts,
            notifiers=tuple(notifiers),
            secrets=frozenset(self.secrets),
        )

    def settings(self, value: Any) -> Settings:
        tbl = self.table(value, "fpwatch", _SETTINGS)
        state_name = self.string(tbl, "state", "fpwatch", "fpwatch.db")
        state = Path(state_name or "fpwatch.db")
        if not state.is_absolute():
            root = self.env.get("STATE_DIRECTORY")
            # systemd may pass several colon-separated directories; the first is ours.
            state = (Path(root.split(":")[0]) if root else self.base_dir) / state
        listen = self.string(tbl, "listen", "fpwatch", None)
        if listen is not None and (
            not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", listen) or int(listen.rpartition(":")[2]) > 65535
        ):
            self.problem("fpwatch.listen", f'"{listen}" is not HOST:PORT (for example "127.0.0.1:9464")')
        heartbeat = self.string(tbl, "heartbeat_url", "fpwatch", None, secret=True)
        return Settings(
            state=state,
            log_format=self.string(tbl, "log_format", "fpwatch", "auto", choices=("auto", "json", "console")) or "auto",
            log_level=self.string(tbl, "log_level", "fpwatch", "info", choices=("debug", "info", "warning", "error"))
            or "info",
            listen=listen,
            heartbeat_url=Secret(heartbeat) if heartbeat else None,
            retention=self.duration(tbl, "retention", "fpwatch", timedelta(days=90)),
            max_concurrency=self.integer(tbl, "max_concurrency", "fpwatch", 64, minimum=1),
        )

    def providers(self, value: Any) -> dict[str, ProviderConfig]:
        if value is _MISSING:
            self.problem("providers", 'define at least one provider, e.g. [providers.openai] with type = "openai"')
            return {}
        if not isinstance(value, dict):
            self.problem("providers", f"expected a table of providers, got {_type_name(value)}")
            return {}
        out: dict[str, ProviderConfig] = {}
        for name, body in value.items():
            loc = f"providers.{name}"
            tbl = self.table(body, loc, _PROVIDER)
            kind = self.string(tbl, "type", loc, choices=PROVIDER_TYPES)
            implemented = _implemented_provider_types()
            if kind is not None and kind not in implemented:
                self.problem(_join(loc, "type"), f'"{kind}" is not supported yet; use one of {", ".join(implemented)}')
                kind = None
            base_url = self.string(tbl, "base_url", loc, DEFAULT_BASE_URLS.get(kind or ""))
            if base_url is None and kind in ("azure", "openai-compatible"):
                example = "https://myres.openai.azure.com" if kind == "azure" else "http://127.0.0.1:8000/v1"
                self.problem(_join(loc, "base_url"), f'is required for type "{kind}", e.g. "{example}"')
            elif base_url is not None and not re.match(r"https?://[^/\s]+", base_url):
                self.problem(_join(loc, "base_url"), f'"{base_url}" is not an http(s) URL')
            api_key = self._api_key(tbl, loc, kind)
            headers = self._headers(tbl.get("headers", _MISSING), _join(loc, "headers"))
            api_version = self.string(tbl, "api_version", loc, None)
            if api_version is not None and kind not in ("azure", None):
                self.problem(_join(loc, "api_version"), 'only applies to type = "azure"; remove it')
            concurrency = self.integer(tbl, "max_concurrency", loc, 4, minimum=1)
            if kind is None or (base_url is None and kind != "openai"):
                continue
            out[name] = ProviderConfig(
                name=name,
                type=kind,
                base_url=(base_url or DEFAULT_BASE_URLS["openai"]).rstrip("/"),
                api_key=Secret(api_key) if api_key else None,
                headers=headers,
                api_version=api_version,
                max_concurrency=concurrency,
            )
        return out

    def _api_key(self, tbl: Mapping[str, Any], loc: str, kind: str | None) -> str | None:
        if "api_key" in tbl and "api_key_file" in tbl:
            self.problem(_join(loc, "api_key"), "set api_key or api_key_file, not both")
            return None
        if "api_key_file" in tbl:
            return self.secret_file(tbl, "api_key_file", loc)
        if "api_key" in tbl:
            key: str | None = self.string(tbl, "api_key", loc, None, secret=True)
            return key
        if kind in ("openai", "azure"):
            env_name = "OPENAI_API_KEY" if kind == "openai" else "AZURE_OPENAI_API_KEY"
            self.problem(
                _join(loc, "api_key"),
                f'is required for type "{kind}": api_key = "${{{env_name}}}" or api_key_file = "..."',
            )
        return None

    def _headers(self, value: Any, loc: str) -> dict[str, str | Secret]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(loc, f"expected a table of header names to values, got {_type_name(value)}")
            return {}
        out: dict[str, str | Secret] = {}
        for name in value:
            secret = bool(SECRET_NAME.search(name))
            text = self.string(value, name, loc, secret=secret)
            if text is not None and not secret:
                self._check_header_safe(text, _join(loc, name))
            if text is not None:
                out[name] = Secret(text) if secret else text
        return out

    def canaries(self, value: Any) -> dict[str, Canary]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem("canaries", f"expected a table of canaries, got {_type_name(value)}")
            return {}
        out: dict[str, Canary] = {}
        for name, body in value.items():
            loc = f"canaries.{name}"
            if name == BUILTIN_SET_NAME:
                self.problem(loc, f'"{BUILTIN_SET_NAME}" is the built-in canary set; pick another name')
                continue
            canary = self.canary(name, body, loc)
            if canary is not None:
                out[name] = canary
            else:
                self.broken_canaries.add(name)
        return out

    def canary(self, name: str, body: Any, loc: str) -> Canary | None:
        tbl = self.table(body, loc, _CANARY)
        before = len(self.problems)
        messages = self._messages(tbl, loc)
        seed: int | None = None if tbl.get("seed") == "none" else self.integer(tbl, "seed", loc, 1)
        temperature: float | None = 0.0
        raw_t = tbl.get("temperature", 0.0)
        if raw_t == "default":
            temperature = None
        elif isinstance(raw_t, int | float) and not isinstance(raw_t, bool) and 0 <= raw_t <= 2:
            temperature = float(raw_t)
        else:
            self.problem(_join(loc, "temperature"), 'expected a number from 0 to 2, or "default" to omit it')
        logprobs: Logprobs = "auto"
        raw_lp = tbl.get("logprobs", "auto")
        if isinstance(raw_lp, bool) or raw_lp == "auto":
            logprobs = raw_lp
        else:
            self.problem(_join(loc, "logprobs"), 'expected "auto", true or false')
        expect = self.string(tbl, "expect", loc, None)
        if expect is not None:
            try:
                re.compile(expect)
            except re.error as exc:
                self.problem(_join(loc, "expect"), f"is not a valid regular expression: {exc}")
        canary = Canary(
            name=name,
            messages=messages,
            seed=seed,
            temperature=temperature,
            max_tokens=self.integer(tbl, "max_tokens", loc, 16, minimum=1),
            samples=self.integer(tbl, "samples", loc, 3, minimum=1),
            logprobs=logprobs,
            top_logprobs=self.integer(tbl, "top_logprobs", loc, None, minimum=0),
            expect=expect,
        )
        return canary if len(self.problems) == before else None

    def _messages(self, tbl: Mapping[str, Any], loc: str) -> tuple[Message, ...]:
        if "prompt" in tbl and "messages" in tbl:
            self.problem(_join(loc, "prompt"), "set prompt or messages, not both")
            return ()
        if "prompt" in tbl:
            prompt = self.string(tbl, "prompt", loc)
            return (Message("user", prompt),) if prompt else ()
        raw = tbl.get("messages", _MISSING)
        if raw is _MISSING:
            self.problem(loc, 'needs prompt = "..." or messages = [{ role = "user", content = "..." }]')
            return ()
        if not isinstance(raw, list) or not raw:
            self.problem(_join(loc, "messages"), "expected a non-empty list of { role, content } tables")
            return ()
        out = []
        for i, item in enumerate(raw):
            mloc = f"{loc}.messages[{i}]"
            mt = self.table(item, mloc, ("role", "content"))
            role = self.string(mt, "role", mloc, choices=("system", "developer", "user", "assistant"))
            content = self.string(mt, "content", mloc, allow_empty=True)
            if role and content is not None:
                out.append(Message(role, content))
        return tuple(out)

    def models(
        self,
        value: Any,
        defaults: Mapping[str, Any],
        providers: Mapping[str, ProviderConfig],
        canaries: Mapping[str, Canary],
    ) -> list[ModelConfig]:
        if value is _MISSING or value == []:
            self.problem("models", 'add at least one [[models]] entry with provider = "..." and model = "..."')
            return []
        if not isinstance(value, list):
            self.problem("models", "expected [[models]] entries (an array of tables)")
            return []
        out: list[ModelConfig] = []
        seen: dict[str, str] = {}
        for i, body in enumerate(value):
            loc = f"models[{i}]"
            first_problem = len(self.problems)
            tbl = self.table(body, loc, _MODEL)
            merged = {**defaults, **tbl}
            provider_name = self.string(tbl, "provider", loc)
            model_id = self.string(tbl, "model", loc)
            provider = providers.get(provider_name) if provider_name else None
            if (
                provider_name
                and provider is None
                and not any(p.location.startswith(f"providers.{provider_name}") for p in self.problems)
            ):
                hint = difflib.get_close_matches(provider_name, list(providers), n=1)
                advice = f'did you mean "{hint[0]}"?' if hint else "define it under [providers." + provider_name + "]"
                self.problem(_join(loc, "provider"), f'no provider named "{provider_name}"; {advice}')
            name = self.string(tbl, "name", loc, f"{provider_name}/{model_id}")
            if name in seen:
                self.problem(_join(loc, "name"), f'"{name}" is already used by {seen[name]}; names must be unique')
            elif name:
                seen[name] = loc
            schedule = self.schedule(merged, loc, tbl)
            model_canaries = self.model_canaries(merged, loc, canaries)
            params = merged.get("params", {})
            if not isinstance(params, dict):
                self.problem(_join(loc, "params"), f"expected a table of request fields, got {_type_name(params)}")
                params = {}
            tags = self.strings(merged, "tags", loc) or ()
            self._blame_defaults(first_problem, loc, tbl, defaults)
            if provider is None or not model_id or not name or schedule is None:
                continue
            out.append(
                ModelConfig(
                    name=name,
                    provider=provider,
                    model=model_id,
                    canaries=model_canaries,
                    tags=tags,
                    params=self._interpolate_params(params, _join(loc, "params")),
                    **schedule,
                )
            )
        return out

    def _blame_defaults(self, first: int, loc: str, own: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        """A bad value a model inherited is the [defaults] entry's fault: report it there (once)."""
        for j in range(first, len(self.problems)):
            problem = self.problems[j]
            rest = problem.location.removeprefix(loc + ".")
            key = re.split(r"[.\[]", rest)[0]
            if rest != problem.location and key not in own and key in defaults:
                self.problems[j] = ConfigProblem(f"defaults.{rest}", problem.message)

    def _interpolate_params(self, value: Any, loc: str) -> Any:
        if isinstance(value, str):
            return self.interpolate(value, loc, secret=False)
        if isinstance(value, dict):
            return {k: self._interpolate_params(v, _join(loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate_params(v, f"{loc}[{i}]") for i, v in enumerate(value)]
        return value

    def schedule(self, merged: Mapping[str, Any], loc: str, own: Mapping[str, Any]) -> dict[str, Any] | None:
        before = len(self.problems)
        cron = self.string(merged, "cron", loc, None)
        interval = self.duration(merged, "interval", loc, timedelta(minutes=15))
        if "cron" in own and "interval" in own:
            self.problem(_join(loc, "cron"), "set interval or cron, not both")
        if cron is not None and "interval" not in own:
            interval = None
            self._check_cron(cron, _join(loc, "cron"))
        elif cron is not None and "cron" not in own:
            cron = None  # the model's own interval overrides a default cron
        if interval is not None and interval < timedelta(seconds=1):
            self.problem(_join(loc, "interval"), "must be at least 1s")
        timezone = self.string(merged, "timezone", loc, "UTC")
        if timezone:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                self.problem(_join(loc, "timezone"), f'"{timezone}" is not an IANA time zone like "Europe/Paris"')
        learning: Any = merged.get("learning_period", 3)
        if isinstance(learning, str):
            learning = self.duration(merged, "learning_period", loc, 3)
        else:
            learning = self.integer(merged, "learning_period", loc, 3, minimum=1)
        timeout = self.duration(merged, "timeout", loc, timedelta(seconds=60))
        if timeout <= timedelta(0):
            self.problem(_join(loc, "timeout"), "must be longer than 0")
        result = {
            "interval": interval,
            "cron": cron,
            "timezone": timezone or "UTC",
            "jitter": self.duration(merged, "jitter", loc, timedelta(seconds=30)),
            "timeout": timeout,
            "grace_period": self.duration(merged, "grace_period", loc, timedelta(hours=24)),
            "learning_period": learning,
            "failure_threshold": self.integer(merged, "failure_threshold", loc, 3, minimum=1),
        }
        return result if len(self.problems) == before else None

    def _check_cron(self, expr: str, loc: str) -> None:
        fields = expr.split()
        if len(fields) != 5:
            self.problem(loc, f'"{expr}" is not a 5-field crontab expression like "*/15 * * * *"')
            return
        if re.search(r"\d", fields[4]):
            # APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0: refuse the ambiguity.
            self.problem(loc, 'write the day-of-week field with names ("mon-fri"), not numbers')
            return
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(expr, timezone="UTC")
        except ValueError as exc:
            self.problem(loc, f'"{expr}" is not a valid crontab expression: {exc}')

    def model_canaries(self, merged: Mapping[str, Any], loc: str, canaries: Mapping[str, Canary]) -> tuple[Canary, ...]:
        names = self.strings(merged, "canaries", loc)
        if names is None:
            return tuple(canaries.values()) if canaries else BUILTIN_SET
        if not names:
            self.problem(_join(loc, "canaries"), 'is empty; list at least one canary, e.g. ["default"]')
        out: list[Canary] = []
        for name in names:
            if name == BUILTIN_SET_NAME:
                out.extend(BUILTIN_SET)
            elif name in canaries:
                out.append(canaries[name])
            elif name in self.broken_canaries:
                continue
            else:
                choices = [BUILTIN_SET_NAME, *canaries]
                hint = difflib.get_close_matches(name, choices, n=1)
                advice = f'did you mean "{hint[0]}"?' if hint else "define it under [canaries." + name + "]"
                self.problem(_join(loc, "canaries"), f'no canary named "{name}"; {advice}')
        return tuple(dict.fromkeys(out))

    def alerts(self, value: Any) -> AlertsConfig:
        tbl = self.table(value, "alerts", _ALERTS)
        return AlertsConfig(
            group_wait=self.duration(tbl, "group_wait", "alerts", timedelta(seconds=30)),
            send_resolved=self.boolean(tbl, "send_resolved", "alerts", True),
            repeat_interval=self.duration(tbl, "repeat_interval", "alerts", timedelta(0)),
        )

    def notifiers(self, value: Any, models: list[ModelConfig]) -> list[NotifierConfig]:
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.problem("notify", "expected [[notify]] entries (an array of tables)")
            return []
        known = {m.name for m in models} | {t for m in models for t in m.tags}
        out: list[NotifierConfig] = []
        for i, body in enumerate(value):
            loc = f"notify[{i}]"
            tbl = self.table(body, loc, _NOTIFY)
            name = self.string(tbl, "name", loc, f"notify[{i}]")
            if "url" in tbl and "url_file" in tbl:
                self.problem(_join(loc, "url"), "set url or url_file, not both")
                continue
            url = (
                self.secret_file(tbl, "url_file", loc)
                if "url_file" in tbl
                else self.string(tbl, "url", loc, secret=True)
            )
            if url is not None and "://" not in url:
                self.problem(_join(loc, "url"), "is not an apprise URL like slack://... or mailtos://...")
            events = self.strings(tbl, "events", loc)
            for event in events or ():
                if event not in EVENT_TYPES:
                    hint = difflib.get_close_matches(event, EVENT_TYPES, n=1)
                    advice = f'did you mean "{hint[0]}"?' if hint else "see the event list in the README"
                    self.problem(_join(loc, "events"), f'unknown event type "{event}"; {advice}')
            selectors = self.strings(tbl, "models", loc)
            for selector in selectors or ():
                if models and selector not in known:
                    self.problem(_join(loc, "models"), f'"{selector}" matches no model name or tag')
            severity = self.string(tbl, "min_severity", loc, "warning", choices=SEVERITIES)
            if name and url:
                out.append(NotifierConfig(name, Secret(url), events, selectors, severity or "warning"))
        return out


def _implemented_provider_types() -> tuple[str, ...]:
    """The adapter registry decides (imported here: providers import this module)."""
    from fpwatch.providers import ADAPTERS

    return tuple(ADAPTERS)


def _join(location: str, key: str) -> str:
    return f"{location}.{key}" if location else key


# --- showing --------------------------------------------------------------------------------------------

REDACTED = "********"


def display_url(url: str) -> str:
    """A base_url fit to print: user:password@ and the query string (which may hold keys) masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"{REDACTED}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, REDACTED if parts.query else "", ""))


def mask_url(url: str) -> str:
    """A notifier URL with its secrets masked, for `config show`, `notify test` and delivery logs.

    Apprise's own privacy form knows which path parts of each service are tokens, but it keeps query
    values, and `json://...?+X-Token=...` puts a header there: those values are masked too.
    """
    shown = None
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin:
            shown = str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
    except Exception:  # apprise raises assorted errors for odd URLs; masking must never fail
        pass
    if shown is None:
        match = re.match(r"([a-zA-Z0-9+.-]+)://(?:[^@/]*@)?([^/:?#]*)", url)
        return f"{match.group(1)}://{match.group(2)}/{REDACTED}" if match else REDACTED
    parts = urlsplit(shown)
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        private = unquote(key)[:1] in "+-:" or SECRET_NAME.search(key)
        query.append((key, REDACTED if private and value else value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def effective_config(config: Config) -> dict[str, Any]:
    """The config as fpwatch will use it, defaults filled in and secrets masked (for `config show`)."""
    from fpwatch.durations import format_duration

    def dur(value: timedelta | None) -> str | None:
        return None if value is None else format_duration(value)

    def canary_dict(c: Canary) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in c.messages],
            "seed": c.seed if c.seed is not None else "none",
            "temperature": c.temperature if c.temperature is not None else "default",
            "max_tokens": c.max_tokens,
            "samples": c.samples,
            "logprobs": c.logprobs,
        }
        if c.top_logprobs is not None:
            out["top_logprobs"] = c.top_logprobs
        if c.expect is not None:
            out["expect"] = c.expect
        return out

    s = config.settings
    fp: dict[str, Any] = {
        "state": str(s.state),
        "log_format": s.log_format,
        "log_level": s.log_level,
        "retention": dur(s.retention),
        "max_concurrency": s.max_concurrency,
    }
    if s.listen:
        fp["listen"] = s.listen
    if s.heartbeat_url:
        fp["heartbeat_url"] = mask_url(s.heartbeat_url.reveal())
    providers = {}
    for p in config.providers.values():
        pd: dict[str, Any] = {"type": p.type, "base_url": display_url(p.base_url), "max_concurrency": p.max_concurrency}
        if p.api_key:
            pd["api_key"] = REDACTED
        if p.api_version:
            pd["api_version"] = p.api_version
        if p.headers:
            pd["headers"] = {k: (REDACTED if isinstance(v, Secret) else v) for k, v in p.headers.items()}
        providers[p.name] = pd
    models = []
    for m in config.models:
        md: dict[str, Any] = {"name": m.name, "provider": m.provider.name, "model": m.model}
        if m.cron:
            md["cron"] = m.cron
        else:
            md["interval"] = dur(m.interval)
        md.update(
            timezone=m.timezone,
            jitter=dur(m.jitter),
            timeout=dur(m.timeout),
            grace_period=dur(m.grace_period),
            learning_period=(m.learning_period if isinstance(m.learning_period, int) else dur(m.learning_period)),
            failure_threshold=m.failure_threshold,
            canaries=[c.name for c in m.canaries],
        )
        if m.tags:
            md["tags"] = list(m.tags)
        if m.params:
            md["params"] = dict(m.params)
        models.append(md)
    canaries = {c.name: canary_dict(c) for m in config.models for c in m.canaries}
    notify = []
    for n in config.notifiers:
        nd: dict[str, Any] = {"name": n.name, "url": mask_url(n.url.reveal()), "min_severity": n.min_severity}
        if n.events is not None:
            nd["events"] = list(n.events)
        if n.models is not None:
            nd["models"] = list(n.models)
        notify.append(nd)
    out: dict[str, Any] = {
        "fpwatch": fp,
        "providers": providers,
        "models": models,
        "canaries": canaries,
        "alerts": {
            "group_wait": dur(config.alerts.group_wait),
            "send_resolved": config.alerts.send_resolved,
            "repeat_interval": dur(config.alerts.repeat_interval),
        },
    }
    if notify:
        out["notify"] = notify
    return out


def validate_notifier_urls(config: Config) -> list[ConfigProblem]:
    """Ask apprise whether it understands each notifier URL (slower: loads apprise's plugins)."""
    import apprise

    problems = []
    for i, n in enumerate(config.notifiers):
        if apprise.Apprise.instantiate(n.url.reveal()) is None:
            problems.append(
                ConfigProblem(
                    f"notify[{i}].url",
                    f"apprise does not understand this URL ({mask_url(n.url.reveal())}); "
                    "see https://github.com/caronc/apprise/wiki for the URL forms",
                )
            )
    return problems
