"""Did-you-mean: the one place that suggests what a person probably meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` is most likely a typo of, if one is close enough."""
    found = difflib.get_close_matches(word, list(choices), n=1)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], otherwise: str) -> str:
    """`did you mean "X"?` when a choice is close, else `otherwise` (what to do instead)."""
    match = closest(word, choices)
    return f'did you mean "{match}"?' if match else otherwise
