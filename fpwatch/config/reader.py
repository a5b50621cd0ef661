"""The config file (DESIGN section 3): TOML in, frozen dataclasses out, every mistake reported at once.

Reading is one pass that collects `ConfigProblem`s instead of stopping at the first: a person who
runs `fpwatch config check` sees everything to fix. Secrets (`api_key`, notifier URLs, secret
headers, `${VAR}` values of secret-looking variables) are wrapped in `Secret` and listed in
`Config.secrets`, the set the log and output redaction scrub verbatim. Directory variables
(`${CREDENTIALS_DIRECTORY}`, `${STATE_DIRECTORY}`, `${HOME}`, ...: fields.is_location) are places, never secrets.

Provider types are not known here: the caller passes the adapter registry's `ProviderType`s
(`fpwatch.providers.TYPES`), each declaring its default base URL, key variable and own keys.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpwatch.config.canary_reader import CanaryReader
from fpwatch.config.fields import LONGEST_WAIT, MISSING, join, printable, type_name
from fpwatch.config.model import (
    LOG_FORMATS,
    LOG_LEVELS,
    POSTGRES_SCHEMES,
    AlertsConfig,
    Canary,
    Config,
    ModelConfig,
    NotifierConfig,
    PostgresState,
    ProviderConfig,
    ProviderType,
    Secret,
    Settings,
    State,
    default,
    server_addresses,
)
from fpwatch.config.show import check_notifier_urls
from fpwatch.detect.events import EVENTS, SEVERITIES
from fpwatch.errors import ConfigError, ConfigProblem
from fpwatch.hints import did_you_mean
from fpwatch.redact import SECRET_NAME, Redactor

_TOP = ("fpwatch", "defaults", "providers", "models", "canaries", "discovery", "alerts", "notify")
_SETTINGS = (
    "state",
    "log_format",
    "log_level",
    "listen",
    "heartbeat_url",
    "retention",
    "max_concurrency",
    "audit_key_file",
    "state_password_file",
)
CONFIG_FILE_LIMIT = 4 * 1024 * 1024  # bytes; `--config /dev/zero` must not fill memory
AUDIT_KEY_MINIMUM = 16  # characters: an HMAC key worth the name (and long enough to be redacted)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110 section 5.6.2)
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
_PROVIDER = ("type", "base_url", "api_key", "api_key_file", "headers")  # then each type's own keys, max_concurrency
_MODEL = ("provider", "model", "name", "discovery_budget", *_DEFAULTS)
_ALERTS = ("group_wait", "send_resolved", "repeat_interval")
_NOTIFY = ("name", "url", "url_file", "events", "models", "min_severity")


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


def load_config(path: Path | str, types: Mapping[str, ProviderType], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file against these provider types; raise ConfigError listing every problem."""
    path = Path(path)
    env = os.environ if env is None else env

    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigProblem("", printable(message))])

    try:
        with path.open("rb") as file:  # a pipe (`--config <(...)`) is fine: it ends
            data = file.read(CONFIG_FILE_LIMIT + 1)
        if len(data) > CONFIG_FILE_LIMIT:
            raise fail(f"{path} is larger than {CONFIG_FILE_LIMIT // 1024 // 1024} MiB; is it really the config file?")
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise fail(f"config file {path} does not exist") from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise fail(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except RecursionError:
        raise fail(f"{path} nests arrays or tables too deeply to be a config") from None
    except ValueError:  # tomllib's int() of a number over 4,300 digits
        raise fail(f"{path} holds a number too long to read; no setting takes one") from None
    return parse_config(raw, types, path=path, env=env)


def parse_config(
    raw: Mapping[str, Any], types: Mapping[str, ProviderType], *, path: Path, env: Mapping[str, str]
) -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    reader = Reader(types, env=env, base_dir=path.resolve().parent)
    config = reader.config(raw, path)
    if reader.problems:
        redact = Redactor(reader.secrets)  # a secret put in the wrong key must not be printed back
        found = [ConfigProblem(p.location, redact(p.message)) for p in reader.problems]
        # Every problem at once: also the notifier URLs apprise would refuse (which `config check` asks only
        # of a config that is otherwise valid), so one blank URL does not hide another one's mistake. Their
        # messages show the URLs masked already (show.mask_url), as `config check` does.
        found += check_notifier_urls(reader.notifier_urls)
        problems = [ConfigProblem(printable(p.location), printable(p.message)) for p in dict.fromkeys(found)]
        raise ConfigError(problems, printable(str(path)))
    assert config is not None
    return config


def parse_postgres_url(
    text: str, *, password_file: str | None = None, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> tuple[PostgresState, frozenset[str]]:
    """A postgresql:// URL given on the command line (`fpwatch state copy --to`), read exactly as `[fpwatch] state`
    is: `${VAR}` substituted, the password (in the URL, or in `password_file`, read like `state_password_file`
    relative to `base_dir`) taken out. Returns the state and the secrets met (to mask in whatever is printed);
    raises ConfigError naming each problem as the config would ("fpwatch.state", "fpwatch.state_password_file")."""
    reader = Reader({}, env=os.environ if env is None else env, base_dir=base_dir or Path.cwd())
    tbl = {"state": text} if password_file is None else {"state": text, "state_password_file": password_file}
    url = reader.string(tbl, "state", "fpwatch")
    state = None
    if url is not None and not url.lower().startswith(POSTGRES_SCHEMES):
        reader.problem("fpwatch.state", f'"{url}" is not a postgresql:// URL (postgresql://user@host:5432/db)')
    elif url is not None:
        state = reader.postgres_state(url, tbl)
    if reader.problems or state is None:
        redact = Redactor(reader.secrets)
        raise ConfigError([ConfigProblem(printable(p.location), printable(redact(p.message))) for p in reader.problems])
    return state, frozenset(reader.secrets)


class Reader(CanaryReader):
    """One pass over the TOML document, section by section; a mistake never stops the reading of the rest."""

    def __init__(self, types: Mapping[str, ProviderType], env: Mapping[str, str], base_dir: Path) -> None:
        super().__init__(env, base_dir)
        self.types = types
        self.selectors: set[str] = set()  # every model's name and tags, valid or not: what notifiers may name
        self.notifier_urls: list[tuple[str, str]] = []  # (location, URL) of every URL read, for apprise

    def config(self, raw: Mapping[str, Any], path: Path) -> Config | None:
        top = self.table(dict(raw), "", _TOP)
        settings = self.settings(top.get("fpwatch", MISSING))
        canaries = self.canaries(top.get("canaries", MISSING))
        providers = self.providers(top.get("providers", MISSING))
        defaults = self.table(top.get("defaults", MISSING), "defaults", _DEFAULTS)
        discovery = self.table(top.get("discovery", MISSING), "discovery", ("budget",))
        budget = self.integer(discovery, "budget", "discovery", default(ModelConfig, "discovery_budget"), 0)
        models = self.models(top.get("models", MISSING), defaults, providers, canaries, budget)
        alerts = self.alerts(top.get("alerts", MISSING))
        notifiers = self.notifiers(top.get("notify", MISSING))
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
        fallback = str(default(Settings, "state"))
        log_format, log_level = default(Settings, "log_format"), default(Settings, "log_level")
        text = self.string(tbl, "state", "fpwatch", fallback) or fallback
        state: State
        if text.lower().startswith(POSTGRES_SCHEMES):
            state = self.postgres_state(text, tbl)
        else:
            state = Path(text)
            if not state.is_absolute():
                root = self.env.get("STATE_DIRECTORY")
                # systemd may pass several colon-separated directories; the first is ours.
                state = (Path(root.split(":")[0]) if root else self.base_dir) / state
            if "state_password_file" in tbl:
                self.problem("fpwatch.state_password_file", "is for a postgresql:// state; remove it for a SQLite file")
        listen = self.string(tbl, "listen", "fpwatch", None)
        if listen is not None and (
            not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", listen) or int(listen.rpartition(":")[2]) > 65535
        ):
            self.problem("fpwatch.listen", f'"{listen}" is not HOST:PORT (for example "127.0.0.1:9464")')
        heartbeat = self.string(tbl, "heartbeat_url", "fpwatch", None, secret=True)
        audit_key = self.secret_file(tbl, "audit_key_file", "fpwatch", header=False, minimum=AUDIT_KEY_MINIMUM)
        return Settings(
            state=state,
            log_format=self.string(tbl, "log_format", "fpwatch", log_format, choices=LOG_FORMATS) or log_format,
            log_level=self.string(tbl, "log_level", "fpwatch", log_level, choices=LOG_LEVELS) or log_level,
            listen=listen,
            heartbeat_url=Secret(heartbeat) if heartbeat else None,
            retention=self.duration(tbl, "retention", "fpwatch", default(Settings, "retention")),
            max_concurrency=self.integer(tbl, "max_concurrency", "fpwatch", default(Settings, "max_concurrency"), 1),
            audit_key=Secret(audit_key) if audit_key else None,
        )

    def postgres_state(self, url: str, tbl: Mapping[str, Any]) -> PostgresState:
        """A postgresql:// URL: its password (in the URL, or `state_password_file`) taken out and kept as a secret,
        so that the URL itself can be printed."""
        parts = urlsplit(url)
        if "@" not in parts.netloc and "@" in parts.path + parts.query + parts.fragment:
            # e.g. postgresql://bob:12/34@db/fp: a password with / ? or # in it ends the host part early
            self.problem(
                "fpwatch.state",
                "the URL's password holds a character that ends the host part (/ ? # @): percent-encode it "
                "(/ as %2F) or put it in state_password_file",
            )
        for host, port in server_addresses(url):  # one server, or several (h1:5432,h2:5433), as libpq reads them
            if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
                self.problem("fpwatch.state", f'the port of {host or "the server"} ("{port}") is not a port number')
        password = unquote(parts.password) if parts.password is not None else None
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "password" for key, _ in query):
            if password is not None:
                self.problem("fpwatch.state", "the URL has a password twice (before the host and ?password=)")
            password = next(value for key, value in query if key == "password")
            query = [(key, value) for key, value in query if key != "password"]
        for key, value in query:
            if "password" in key and value:  # sslpassword (the client key's passphrase): masked wherever shown
                self.remember_secret(value)
        user, host = parts.username, parts.netloc.rpartition("@")[2]
        netloc = f"{user}@{host}" if user is not None else host
        bare = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
        from_file = self.secret_file(tbl, "state_password_file", "fpwatch", header=False)
        if from_file is not None and password is not None:
            self.problem("fpwatch.state_password_file", "the state URL has a password already; give it only once")
        password = from_file if from_file is not None else password
        if password:
            self.remember_secret(password)
        return PostgresState(bare, Secret(password) if password else None)

    def providers(self, value: Any) -> dict[str, ProviderConfig]:
        if value is MISSING:
            self.problem("providers", 'define at least one provider, e.g. [providers.openai] with type = "openai"')
            return {}
        if not isinstance(value, dict):
            self.problem("providers", f"expected a table of providers, got {type_name(value)}")
            return {}
        extra_keys = tuple(dict.fromkeys(k for t in self.types.values() for k in t.extra_keys))
        out: dict[str, ProviderConfig] = {}
        for name, body in value.items():
            loc = f"providers.{name}"
            named = self.check_printable(name, loc)
            tbl = self.table(body, loc, (*_PROVIDER, *extra_keys, "max_concurrency"))
            spec = self.provider_type(tbl, loc)
            base_url = self.string(tbl, "base_url", loc, spec.default_base_url if spec else None)
            if base_url is None and spec is not None and spec.default_base_url is None:
                self.problem(
                    join(loc, "base_url"), f'is required for type "{spec.name}", e.g. "{spec.base_url_example}"'
                )
            elif base_url is not None and not re.match(r"https?://[^/\s]+", base_url):
                self.problem(join(loc, "base_url"), f'"{base_url}" is not an http(s) URL')
            api_key = self._api_key(tbl, loc, spec)
            headers = self._headers(tbl.get("headers", MISSING), join(loc, "headers"))
            extra = {}
            for key in extra_keys:
                text = self.string(tbl, key, loc, None)
                if text is None:
                    continue
                if spec is not None and key not in spec.extra_keys:
                    takes = " or ".join(f'type = "{t.name}"' for t in self.types.values() if key in t.extra_keys)
                    self.problem(join(loc, key), f"only applies to {takes}; remove it")
                extra[key] = text
            concurrency = self.integer(tbl, "max_concurrency", loc, default(ProviderConfig, "max_concurrency"), 1)
            if spec is None or base_url is None or not named:
                continue
            out[name] = ProviderConfig(
                name=name,
                type=spec.name,
                base_url=base_url.rstrip("/"),
                api_key=Secret(api_key) if api_key else None,
                headers=headers,
                extra=extra,
                max_concurrency=concurrency,
            )
        return out

    def provider_type(self, tbl: Mapping[str, Any], loc: str) -> ProviderType | None:
        """The provider's `type`, known to the adapter registry; None (and a problem) if not."""
        name = self.string(tbl, "type", loc, choices=tuple(self.types))
        return self.types.get(name) if name is not None else None

    def _api_key(self, tbl: Mapping[str, Any], loc: str, spec: ProviderType | None) -> str | None:
        from_file = self.secret_file(tbl, "api_key_file", loc)
        key: str | None = self.string(tbl, "api_key", loc, None, secret=True)
        if "api_key" in tbl and "api_key_file" in tbl:
            self.problem(join(loc, "api_key"), "set api_key or api_key_file, not both")
            return None
        if "api_key" in tbl or "api_key_file" in tbl:
            return from_file or key
        if spec is not None and spec.key_required:
            self.problem(
                join(loc, "api_key"),
                f'is required for type "{spec.name}": api_key = "${{{spec.key_variable}}}" or api_key_file = "..."',
            )
        return None

    def _headers(self, value: Any, loc: str) -> dict[str, str | Secret]:
        if value is MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(loc, f"expected a table of header names to values, got {type_name(value)}")
            return {}
        out: dict[str, str | Secret] = {}
        for name in value:
            if not _HEADER_NAME.fullmatch(name):
                self.problem(join(loc, name), "is not an HTTP header name (letters, digits and -, no spaces)")
                continue
            secret = bool(SECRET_NAME.search(name))
            text = self.string(value, name, loc, secret=secret)
            if text is not None and not secret:
                self.check_header_safe(text, join(loc, name))
            if text is not None:
                out[name] = Secret(text) if secret else text
        return out

    def models(
        self,
        value: Any,
        defaults: Mapping[str, Any],
        providers: Mapping[str, ProviderConfig],
        canaries: Mapping[str, Canary],
        discovery_budget: int = default(ModelConfig, "discovery_budget"),
    ) -> list[ModelConfig]:
        if value is MISSING or value == []:
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
                and not any(_within(p.location, f"providers.{provider_name}") for p in self.problems)
            ):
                advice = did_you_mean(provider_name, providers, f"define it under [providers.{provider_name}]")
                self.problem(join(loc, "provider"), f'no provider named "{provider_name}"; {advice}')
            name = self.string(tbl, "name", loc, f"{provider_name}/{model_id}")
            if name in seen:
                self.problem(join(loc, "name"), f'"{name}" is already used by {seen[name]}; names must be unique')
            elif name:
                seen[name] = loc
            schedule = self.schedule(merged, loc, tbl)
            model_canaries = self.model_canaries(merged, loc, canaries)
            params = merged.get("params", {})
            if not isinstance(params, dict):
                self.problem(join(loc, "params"), f"expected a table of request fields, got {type_name(params)}")
                params = {}
            params = self._interpolate_params(params, join(loc, "params"))
            tags = self.strings(merged, "tags", loc) or ()
            budget = self.integer(tbl, "discovery_budget", loc, discovery_budget, 0)
            self.selectors.update([name, *tags] if name else tags)
            self._blame_defaults(first_problem, loc, tbl, defaults)
            if provider is not None:  # after the blame: the fix is this model's list, even when inherited
                self._check_unsupported(model_canaries, self.types[provider.type], join(loc, "canaries"))
            if provider is None or not model_id or not name or schedule is None:
                continue
            out.append(
                ModelConfig(
                    name=name,
                    provider=provider,
                    model=model_id,
                    canaries=model_canaries,
                    tags=tags,
                    params=params,
                    discovery_budget=budget,
                    **schedule,
                )
            )
        return out

    def _check_unsupported(self, canaries: tuple[Canary, ...], spec: ProviderType, loc: str) -> None:
        """A canary that insists on logprobs (true, not "auto") cannot be sent to a type that has none."""
        if "logprobs" not in spec.unsupported:
            return
        for canary in canaries:
            if canary.logprobs is True:
                self.problem(
                    loc,
                    f'canary "{canary.name}" sets logprobs = true, but type "{spec.name}" has no logprobs; set '
                    'logprobs = "auto" (asked where a provider has them) or false, or list other canaries here',
                )

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
            return {k: self._interpolate_params(v, join(loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate_params(v, f"{loc}[{i}]") for i, v in enumerate(value)]
        return value

    def schedule(self, merged: Mapping[str, Any], loc: str, own: Mapping[str, Any]) -> dict[str, Any] | None:
        before = len(self.problems)
        cron = self.string(merged, "cron", loc, None)
        interval = self.duration(merged, "interval", loc, default(ModelConfig, "interval"), LONGEST_WAIT)
        if "cron" in own and "interval" in own:
            self.problem(join(loc, "cron"), "set interval or cron, not both")
        if cron is not None:
            self._check_cron(cron, join(loc, "cron"))  # a [defaults] cron every model overrides is still checked
        if cron is not None and "interval" not in own:
            interval = None
        elif cron is not None and "cron" not in own:
            cron = None  # the model's own interval overrides a default cron
        if interval is not None and interval < timedelta(seconds=1):
            self.problem(join(loc, "interval"), "must be at least 1s")
        timezone = self.string(merged, "timezone", loc, default(ModelConfig, "timezone"))
        if timezone:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                self.problem(join(loc, "timezone"), f'"{timezone}" is not an IANA time zone like "Europe/Paris"')
        learning: Any = merged.get("learning_period", default(ModelConfig, "learning_period"))
        if isinstance(learning, str):
            learning = self.duration(merged, "learning_period", loc, default(ModelConfig, "learning_period"))
        else:
            learning = self.integer(merged, "learning_period", loc, default(ModelConfig, "learning_period"), 1)
        timeout = self.duration(merged, "timeout", loc, default(ModelConfig, "timeout"), LONGEST_WAIT)
        if timeout <= timedelta(0):
            self.problem(join(loc, "timeout"), "must be longer than 0")
        result = {
            "interval": interval,
            "cron": cron,
            "timezone": timezone or default(ModelConfig, "timezone"),
            "jitter": self.duration(merged, "jitter", loc, default(ModelConfig, "jitter"), LONGEST_WAIT),
            "timeout": timeout,
            "grace_period": self.duration(merged, "grace_period", loc, default(ModelConfig, "grace_period")),
            "learning_period": learning,
            "failure_threshold": self.integer(
                merged, "failure_threshold", loc, default(ModelConfig, "failure_threshold"), 1
            ),
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

    def alerts(self, value: Any) -> AlertsConfig:
        tbl = self.table(value, "alerts", _ALERTS)
        return AlertsConfig(
            group_wait=self.duration(tbl, "group_wait", "alerts", default(AlertsConfig, "group_wait"), LONGEST_WAIT),
            send_resolved=self.boolean(tbl, "send_resolved", "alerts", default(AlertsConfig, "send_resolved")),
            repeat_interval=self.duration(tbl, "repeat_interval", "alerts", default(AlertsConfig, "repeat_interval")),
        )

    def notifiers(self, value: Any) -> list[NotifierConfig]:
        if value is MISSING:
            return []
        if not isinstance(value, list):
            self.problem("notify", "expected [[notify]] entries (an array of tables)")
            return []
        out: list[NotifierConfig] = []
        for i, body in enumerate(value):
            loc = f"notify[{i}]"
            tbl = self.table(body, loc, _NOTIFY)
            name = self.string(tbl, "name", loc, f"notify[{i}]")
            from_file = self.secret_file(tbl, "url_file", loc)
            inline = self.string(tbl, "url", loc, secret=True) if "url" in tbl or "url_file" not in tbl else None
            url, where = from_file or inline, join(loc, "url_file" if from_file else "url")
            if "url" in tbl and "url_file" in tbl:
                self.problem(join(loc, "url"), "set url or url_file, not both")
                url = None
            if url is not None and "://" not in url:
                self.problem(where, "is not an apprise URL like slack://... or mailtos://...")
            elif url is not None:
                self.notifier_urls.append((where, url))
            events = self.strings(tbl, "events", loc)
            for event in events or ():
                if event not in EVENTS:
                    advice = did_you_mean(event, EVENTS, "see the event list in the README")
                    self.problem(join(loc, "events"), f'unknown event type "{event}"; {advice}')
            selectors = self.strings(tbl, "models", loc)
            for selector in selectors or ():
                if self.selectors and selector not in self.selectors:
                    self.problem(join(loc, "models"), f'"{selector}" matches no model name or tag')
            fallback = default(NotifierConfig, "min_severity")
            severity = self.string(tbl, "min_severity", loc, fallback, choices=SEVERITIES) or fallback
            if name and url:
                out.append(NotifierConfig(name, Secret(url), events, selectors, severity))
        return out


def _within(location: str, section: str) -> bool:
    """Is this problem's location the section or inside it? ("providers.x" is not inside "providers.xai")"""
    return location == section or location.startswith(section + ".")
