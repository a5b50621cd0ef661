"""Logging: structlog over one stdlib pipeline, so httpx, apscheduler and apprise lines look like ours.

Console rendering on a TTY, JSON lines otherwise; tracebacks without frame locals (they would dump
keys); every line passes the redactor before it is rendered (research/library-practice.md section 3).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, ClassVar, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, WrappedLogger

from fpwatch.redact import Redactor

# Log fields that hold a secret by their very name (not "output_tokens", which merely contains "token").
_SECRET_KEYS = re.compile(r"^(api[_-]?key|authorization|password|passwd|secret|token|access_token|.*_secret)$", re.I)


class _Redact:
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key.startswith("_"):
                continue
            if _SECRET_KEYS.match(key):
                event_dict[key] = "[REDACTED]"
            else:
                event_dict[key] = self.redactor.scrub(event_dict[key])
        return event_dict


class _JournalPrefixed:
    """Prefix each line with its syslog priority (<3> error, <4> warning, <6> info) for journald."""

    _PRIORITY: ClassVar[dict[str, int]] = {
        "critical": 2,
        "error": 3,
        "exception": 3,
        "warning": 4,
        "info": 6,
        "debug": 7,
    }

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        priority = self._PRIORITY.get(str(event_dict.get("level", "info")), 6)
        return f"<{priority}>" + str(self.inner(logger, name, event_dict))


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
    journal: bool = False,
) -> None:
    """Set up structlog and the root logger once; later calls replace the handler.

    `journal`: stdout is the journal, so JSON lines carry syslog priority prefixes.
    """
    stream = stream or sys.stderr
    redact = _Redact(redactor or Redactor())
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    final: list[Any] = (
        # plain_traceback: the default would be rich's, which prints every frame's locals (keys included).
        [
            structlog.processors.format_exc_info,  # render the traceback to text first, so redaction sees it
            redact,
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ]
        if console
        else [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact,
            _JournalPrefixed(structlog.processors.JSONRenderer()) if journal else structlog.processors.JSONRenderer(),
        ]
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs full URLs at INFO. APScheduler logs every job added and run at INFO, and its warnings
    # (missed runs, a run skipped while the previous one runs) are logged by fpwatch's own listener.
    floor = logging.getLevelName(level.upper())
    for noisy, at_least in (("httpx", logging.WARNING), ("httpcore", logging.WARNING), ("apscheduler", logging.ERROR)):
        logging.getLogger(noisy).setLevel(max(at_least, floor))
    # apprise collects each delivery attempt's reasons from its own warning records: they must be
    # emitted whatever we print, so the handler, not the logger, applies our level to them.
    handler.setLevel(floor)
    logging.getLogger("apprise").setLevel(min(logging.WARNING, floor))


def get_logger(name: str = "fpwatch") -> Any:
    return structlog.get_logger(name)
