"""Showing the config: `config show` (defaults filled in, secrets masked), URLs fit to print, and asking
apprise whether it understands each notifier URL (slower: it loads apprise's plugins)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from fpwatch.config.model import Canary, Config, PostgresState, Secret
from fpwatch.durations import format_duration
from fpwatch.errors import ConfigError, ConfigProblem
from fpwatch.redact import SECRET_NAME

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
        "state": s.state.shown() if isinstance(s.state, PostgresState) else str(s.state),
        "log_format": s.log_format,
        "log_level": s.log_level,
        "retention": dur(s.retention),
        "max_concurrency": s.max_concurrency,
    }
    if s.listen:
        fp["listen"] = s.listen
    if s.heartbeat_url:
        fp["heartbeat_url"] = mask_url(s.heartbeat_url.reveal())
    if s.audit_key:
        fp["audit_key"] = REDACTED
    providers = {}
    for p in config.providers.values():
        pd: dict[str, Any] = {"type": p.type, "base_url": display_url(p.base_url), "max_concurrency": p.max_concurrency}
        if p.api_key:
            pd["api_key"] = REDACTED
        pd.update(p.extra)
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
            discovery_budget=m.discovery_budget,
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
    return check_notifier_urls((f"notify[{i}].url", n.url.reveal()) for i, n in enumerate(config.notifiers))


def require_notifier_urls(config: Config) -> Config:
    """The config, when apprise understands every notifier URL; else a ConfigError naming each one it does not."""
    problems = validate_notifier_urls(config)
    if problems:
        raise ConfigError(problems, str(config.path))
    return config


def check_notifier_urls(urls: Iterable[tuple[str, str]]) -> list[ConfigProblem]:
    """A problem for each (location, URL) apprise does not understand."""
    return [
        ConfigProblem(
            location,
            f"apprise does not understand this URL ({mask_url(url)}); "
            "see https://github.com/caronc/apprise/wiki for the URL forms",
        )
        for location, url in urls
        if not _understood(url)
    ]


def _understood(url: str) -> bool:
    import apprise

    try:
        return apprise.Apprise.instantiate(url) is not None
    except Exception:  # an odd URL must be a problem in the list, not a crash of `config check`
        return False
