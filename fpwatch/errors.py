"""Expected failures, as values with messages a person can act on.

The CLI turns every `FpwatchError` into one `Error: ...` line and an exit code; the daemon logs
one line and carries on. Anything else is a bug and keeps its traceback (shown with --debug).
"""

from __future__ import annotations

from dataclasses import dataclass


class FpwatchError(Exception):
    """An anticipated failure with a one-line, human message."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in the config file: where it is and what to do about it."""

    location: str  # "models[2].interval", "providers.openai.api_key", "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(FpwatchError):
    """The config is invalid; carries every problem found, not just the first."""

    exit_code = 3

    def __init__(self, problems: list[ConfigProblem], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        if len(problems) == 1:
            text = f"invalid config{where}: {problems[0]}"
        else:
            text = f"{len(problems)} problems{where}: " + "; ".join(str(p) for p in problems)
        super().__init__(text)


class StateError(FpwatchError):
    """The state database cannot be opened or is not ours."""


class UnknownModelError(FpwatchError):
    """A command named a model that the config does not define."""
