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
    """The state database cannot be opened, is not ours, or stayed locked."""


class UnknownModelError(FpwatchError):
    """A command named a model that the config does not define."""


HINT_SEPARATOR = " — "


class ProbeError(FpwatchError):
    """A request that produced no usable answer, explained for a person: what happened and what to do.

    `provider_words` is what the provider said (with the HTTP status), `hint` what fixes it; `param` the
    request field the provider named, if any. `permanent`: trying again at the next check cannot help
    until a person acts (a wrong key, an unknown model, no quota left), as opposed to a timeout or a 503.
    `canary_setting`: the canary setting the hint asks to change (temperature, logprobs, seed), if any.
    """

    def __init__(
        self,
        kind: str,
        provider_words: str,
        hint: str = "",
        *,
        param: str | None = None,
        permanent: bool = False,
        status: int | None = None,
        canary_setting: str | None = None,
    ) -> None:
        super().__init__(f"{provider_words}{HINT_SEPARATOR}{hint}" if hint else provider_words)
        self.kind = kind
        self.provider_words = provider_words
        self.hint = hint
        self.param = param
        self.permanent = permanent
        self.status = status
        self.canary_setting = canary_setting
