"""Reading the `[canaries.NAME]` section and each model's `canaries = [...]` list (the requests a check sends).

Part of the reader (config/reader.py): the same one pass that collects every problem instead of stopping
at the first, so a canary with three mistakes reports three.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fpwatch.config.canaries import BUILTIN_SET, BUILTIN_SET_NAME
from fpwatch.config.fields import MISSING, Fields, join, type_name
from fpwatch.config.model import Canary, Logprobs, Message, default
from fpwatch.hints import did_you_mean

CANARY_KEYS = (
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
ROLES = ("system", "developer", "user", "assistant")


class CanaryReader(Fields):
    """The canary part of the reader; `broken_canaries` are defined but invalid: already reported, not "missing"."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        super().__init__(env, base_dir)
        self.broken_canaries: set[str] = set()

    def canaries(self, value: Any) -> dict[str, Canary]:
        if value is MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem("canaries", f"expected a table of canaries, got {type_name(value)}")
            return {}
        out: dict[str, Canary] = {}
        for name, body in value.items():
            loc = f"canaries.{name}"
            named = self.check_printable(name, loc)
            if name == BUILTIN_SET_NAME:
                self.problem(loc, f'"{BUILTIN_SET_NAME}" is the built-in canary set; pick another name')
                continue
            canary = self.canary(name, body, loc)
            if canary is not None and named:
                out[name] = canary
            else:
                self.broken_canaries.add(name)
        return out

    def canary(self, name: str, body: Any, loc: str) -> Canary | None:
        tbl = self.table(body, loc, CANARY_KEYS)
        before = len(self.problems)
        messages = self._messages(tbl, loc)
        seed: int | None = (
            None if tbl.get("seed") == "none" else self.integer(tbl, "seed", loc, default(Canary, "seed"))
        )
        temperature: float | None = default(Canary, "temperature")
        raw_t = tbl.get("temperature", temperature)
        if raw_t == "default":
            temperature = None
        elif isinstance(raw_t, int | float) and not isinstance(raw_t, bool) and 0 <= raw_t <= 2:
            temperature = float(raw_t)
        else:
            self.problem(join(loc, "temperature"), 'expected a number from 0 to 2, or "default" to omit it')
        logprobs: Logprobs = default(Canary, "logprobs")
        raw_lp = tbl.get("logprobs", logprobs)
        if isinstance(raw_lp, bool) or raw_lp == "auto":
            logprobs = raw_lp
        else:
            self.problem(join(loc, "logprobs"), 'expected "auto", true or false')
        expect = self.string(tbl, "expect", loc, None, free_text=True)
        if expect is not None:
            try:
                re.compile(expect)
            except (re.error, OverflowError, RecursionError) as exc:  # "a{99999999999}", 1,000 nested groups
                self.problem(join(loc, "expect"), f"is not a valid regular expression: {exc}")
        canary = Canary(
            name=name,
            messages=messages,
            seed=seed,
            temperature=temperature,
            max_tokens=self.integer(tbl, "max_tokens", loc, default(Canary, "max_tokens"), minimum=1),
            samples=self.integer(tbl, "samples", loc, default(Canary, "samples"), minimum=1),
            logprobs=logprobs,
            top_logprobs=self.integer(tbl, "top_logprobs", loc, None, minimum=0),
            expect=expect,
        )
        return canary if len(self.problems) == before else None

    def _messages(self, tbl: Mapping[str, Any], loc: str) -> tuple[Message, ...]:
        if "prompt" not in tbl and "messages" not in tbl:
            self.problem(loc, 'needs prompt = "..." or messages = [{ role = "user", content = "..." }]')
            return ()
        prompt = self.string(tbl, "prompt", loc, None, free_text=True)
        messages = self._message_list(tbl["messages"], join(loc, "messages")) if "messages" in tbl else ()
        if "prompt" in tbl and "messages" in tbl:
            self.problem(join(loc, "prompt"), "set prompt or messages, not both")
            return ()
        return (Message("user", prompt),) if prompt else messages

    def _message_list(self, raw: Any, loc: str) -> tuple[Message, ...]:
        if not isinstance(raw, list) or not raw:
            self.problem(loc, "expected a non-empty list of { role, content } tables")
            return ()
        out = []
        for i, item in enumerate(raw):
            mloc = f"{loc}[{i}]"
            mt = self.table(item, mloc, ("role", "content"))
            role = self.string(mt, "role", mloc, choices=ROLES)
            content = self.string(mt, "content", mloc, allow_empty=True, free_text=True)
            if role and content is not None:
                out.append(Message(role, content))
        return tuple(out)

    def model_canaries(self, merged: Mapping[str, Any], loc: str, canaries: Mapping[str, Canary]) -> tuple[Canary, ...]:
        names = self.strings(merged, "canaries", loc)
        if names is None:
            return tuple(canaries.values()) if canaries else BUILTIN_SET
        if not names:
            self.problem(join(loc, "canaries"), 'is empty; list at least one canary, e.g. ["default"]')
        out: list[Canary] = []
        for name in names:
            if name == BUILTIN_SET_NAME:
                out.extend(BUILTIN_SET)
            elif name in canaries:
                out.append(canaries[name])
            elif name in self.broken_canaries:
                continue
            else:
                advice = did_you_mean(name, [BUILTIN_SET_NAME, *canaries], f"define it under [canaries.{name}]")
                self.problem(join(loc, "canaries"), f'no canary named "{name}"; {advice}')
        return tuple(dict.fromkeys(out))
