"""Capabilities: request options a model may reject (reasoning models reject all three), recognised from the
provider's own words, and the canary as such a model accepts it."""

from __future__ import annotations

import re
from dataclasses import replace

from fpwatch.config import Canary
from fpwatch.errors import ProbeError

CAPABILITIES = ("temperature", "logprobs", "seed")
REASONING_TOKENS = 512  # reasoning tokens come out of the same budget as the answer

# "not enabled": Gemini's "Logprobs is not enabled for models/gemini-2.5-pro"; "cannot find field": Gemini's
# OpenAI-compatible endpoint, 'Unknown name "seed": Cannot find field.'; "deprecated for this model": Anthropic's
# newer models (Opus 4.7+), "`temperature` is deprecated for this model."
_UNSUPPORTED = re.compile(
    r"unsupported|not supported|does not support|only the default|not enabled|cannot find field"
    r"|deprecated for this model",
    re.IGNORECASE,
)
_OPTION = re.compile(
    r"\b(temperature|top_logprobs|toplogprobs|response_?logprobs|logprobs|seed)\b", re.IGNORECASE
)


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


def rejected_option(error: ProbeError | str, canary: Canary) -> str | None:
    """The capability a 400 says the model lacks ("temperature", "logprobs", "seed"), if the canary sends it.

    Only the provider's words count (a string is taken as them), never fpwatch's hint after them.
    """
    words = error.provider_words if isinstance(error, ProbeError) else error
    if not _UNSUPPORTED.search(words):
        return None
    sends = {
        "temperature": canary.temperature is not None,
        "logprobs": canary.logprobs is not False,
        "seed": canary.seed is not None,
    }
    for match in _OPTION.finditer(words):
        word = match.group(1).lower()
        option = "logprobs" if word.endswith("logprobs") else word
        if sends[option]:
            return option
    return None
