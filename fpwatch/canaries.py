"""Canaries: the fixed, seeded requests a check sends, and the built-in `default` set.

The built-in set follows DESIGN section 6: short prompts answered in one to a few tokens, at
temperature 0 with a fixed seed and logprobs where the provider gives them, so that a check of the
whole set costs well under 100 output tokens while its first-token distribution is sensitive to a
change of the model behind the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Logprobs = Literal["auto"] | bool


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


def _builtin(name: str, prompt: str, max_tokens: int, samples: int) -> Canary:
    return Canary(
        name=f"default/{name}",
        messages=(Message("user", prompt),),
        seed=1,
        temperature=0.0,
        max_tokens=max_tokens,
        samples=samples,
        logprobs="auto",
        builtin=True,
    )


# At most 10x4 + 4x2 + 10x2 + 10x2 = 88 output tokens per check. The prompts whose answer is a
# distribution (the near-empty prompt and the two border prompts, whose first token is nearly tied)
# get the samples; 1+1 has one right answer and needs few.
BUILTIN_SET: tuple[Canary, ...] = (
    _builtin("x", "x", 4, 10),  # a near-empty prompt: the answer is pure model prior
    _builtin("one-plus-one", "Reply in one token. 1+1=", 2, 4),  # knowledge: any sane model says 2
    _builtin("coin", "Heads or tails? Answer with one word only.", 2, 10),  # a nearly tied first token
    _builtin("color", "Name one color. Answer with one word only.", 2, 10),  # border input: many close tokens
)

BUILTIN_SET_NAME = "default"


CAPABILITIES = ("temperature", "logprobs", "seed")
REASONING_TOKENS = 512
"""Request options a model may reject (reasoning models reject all three); fpwatch then leaves them out."""


def adapt(canary: Canary, unsupported: frozenset[str]) -> Canary:
    """The canary as this model accepts it: without what it rejects.

    Without temperature 0 the answers are sampled (temperature 1 on reasoning models), so the canary
    takes twice the samples: the same tests then see the answer distribution, not one draw of it. Such
    models also spend tokens reasoning before they answer, out of the same budget: the canary allows
    REASONING_TOKENS, or the answer would come back empty.
    """
    if not unsupported:
        return canary
    changes: dict[str, object] = {}
    if "temperature" in unsupported and canary.temperature is not None:
        changes.update(
            temperature=None, samples=canary.samples * 2, max_tokens=max(canary.max_tokens, REASONING_TOKENS)
        )
    if "logprobs" in unsupported and canary.logprobs is not False:
        changes.update(logprobs=False, top_logprobs=None)
    if "seed" in unsupported and canary.seed is not None:
        changes.update(seed=None)
    return replace(canary, **changes) if changes else canary  # type: ignore[arg-type]
