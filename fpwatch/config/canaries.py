"""The built-in `default` canary set.

The built-in set follows DESIGN section 6: short prompts answered in one to a few tokens, at
temperature 0 with a fixed seed and logprobs where the provider gives them, so that a check of the
whole set costs well under 100 output tokens while its first-token distribution is sensitive to a
change of the model behind the API.
"""

from __future__ import annotations

from fpwatch.config.model import Canary, Message


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
