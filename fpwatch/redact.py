"""Keep secrets out of everything fpwatch writes: logs, events, the database, errors, `config show`.

Two nets: every secret the config loaded is scrubbed verbatim (pattern matching alone misses key
formats it was not written for), and common key shapes are scrubbed by pattern (a provider may echo
a key we never loaded, e.g. from a header the user set through the environment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
# Config keys, header names and query parameters whose values are secrets by their very name.
SECRET_NAME = re.compile(r"(key|token|secret|passw(or)?d|auth|credential|cookie)", re.I)
_PATTERNS = re.compile(
    r"(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}|xox[abpr]-[A-Za-z0-9\-]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?<=Bearer )[A-Za-z0-9._\-~+/=]{8,})"
)
# Each pattern needs one of these: a text without any (nearly every answer) skips the regex, which costs
# microseconds per hundred characters, and every string of every answer is redacted.
_PATTERN_MARKS = ("sk-", "xox", "AIza", "Bearer ")


class Redactor:
    """Callable that replaces known secrets and key-shaped strings with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({*self._secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if not any(mark in text for mark in _PATTERN_MARKS):
            return text
        return _PATTERNS.sub(MASK, text)

    def scrub(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value
