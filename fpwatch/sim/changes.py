"""Model settings for realistic temperature-0 noise and the changes fpwatch must detect; `BUILTIN_PROMPTS`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from fpwatch.sim.behaviour import _VOCABULARY, _digest, _first_piece, _KeyMatcher
from fpwatch.sim.scenario import (
    _ANSWER_KEYS,
    _DEFAULT_REPEAT,
    JsonDict,
    _is_number,
    _signed_number,
    _validate_settings,
    _weights,
)

# --------------------------------------------------------------------------- realistic noise and model changes

# The prompts of fpwatch's built-in canary set (fpwatch/config/canaries.py, BUILTIN_SET), repeated so that
# the simulator stays a provider's stand-in that knows nothing of fpwatch's config; a test checks they agree.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "x",
    "Reply in one token. 1+1=",
    "Heads or tails? Answer with one word only.",
    "Name one color. Answer with one word only.",
)
_X, _ONE_PLUS_ONE, _COIN, _COLOR = BUILTIN_PROMPTS
_REPLIES_TO_X = (
    "Hello! How can I",
    "It seems like your",
    "Could you clarify?",
    "Hi! What would you",
    "Sure, what do you",
    "x",
)
# Prompts that are border inputs of the realistic models: each variant answers BORDER_SHARE of them with two
# nearly tied first tokens (the rest, like every other prompt, with its long text). They are some of the prompts
# fpwatch's discovery tries first (fpwatch/config/candidates.py), repeated here; a test checks they agree.
BORDER_PROMPTS: tuple[str, ...] = (
    "them",
    "but",
    "final",
    "cry",
    "who",
    "lion",
    "red",
    "figure",
    "start",
    "care",
    "example",
    "several",
)
BORDER_SHARE = 8  # of BORDER_PROMPTS per variant
_BORDER_ANSWERS = (("Yes", "No"), ("The", "A"), ("I", "It"), ("Sure", "Okay"), ("Hello", "Hi"), ("What", "Why"))
_BORDER_ODDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
_OTHER_COLORS = ("Red", "Green", "Purple", "Teal", "Orange", "Yellow")
_FINGERPRINT_WEIGHTS = (0.6, 0.3, 0.1)  # a main pool and two smaller ones, as OpenAI's rotate
_LONG_WORDS = 60


def _settings_copy(settings: dict[str, Any], where: str) -> JsonDict:
    """Validated, normalised and deep-copied: the helpers never share state with their inputs."""
    return copy.deepcopy(_validate_settings(settings, where))


def _long_text(variant: str) -> str:
    """About 60 words, a different text for each variant, the same on every run and platform."""
    digest = _digest("realistic-text", variant, "1") + _digest("realistic-text", variant, "2")
    words = [_VOCABULARY[byte % len(_VOCABULARY)] for byte in digest[:_LONG_WORDS]]
    sentences = [" ".join(words[i : i + 10]).capitalize() + "." for i in range(0, len(words), 10)]
    return " ".join(sentences)


def _realistic_outputs(variant: str) -> dict[str, dict[str, float]]:
    if variant == "a":
        x = {"Hello! How can I": 0.5, "It seems like your": 0.3, "Could you clarify?": 0.15, "x": 0.05}
        one = {"2": 0.97, " 2": 0.03}
        coin = {"Heads": 0.6, "Tails": 0.4}
        color = {"Blue": 0.55, "Red": 0.3, "Green": 0.15}
    else:  # another model: every number below comes from the variant string
        d = _digest("realistic", variant)
        start = d[0] % len(_REPLIES_TO_X)
        x = {_REPLIES_TO_X[(start + i) % len(_REPLIES_TO_X)]: w for i, w in enumerate((0.6, 0.3, 0.1))}
        flip = round(0.005 + 0.045 * d[1] / 255, 4)
        one = {"2": round(1 - flip, 4), " 2": flip}  # a different model still knows 1+1
        tails = round(0.55 + 0.3 * d[2] / 255, 4)  # "Tails" favoured, unlike variant "a"
        heads_word, tails_word = ("heads", "tails") if d[3] % 2 else ("Heads", "Tails")
        coin = {tails_word: tails, heads_word: round(1 - tails, 4)}
        favourite = d[4] % len(_OTHER_COLORS)  # never "Blue", variant "a"'s favourite
        third = (favourite + 1 + d[5] % (len(_OTHER_COLORS) - 1)) % len(_OTHER_COLORS)
        top = round(0.4 + 0.3 * d[6] / 255, 4)
        blue = round((1 - top) * 0.7, 4)
        color = {_OTHER_COLORS[favourite]: top, "Blue": blue, _OTHER_COLORS[third]: round(1 - top - blue, 4)}
    # "=x": the prompt "x" exactly; a plain "x" key would also catch every prompt containing an x.
    return {"=" + _X: x, _ONE_PLUS_ONE: one, _COIN: coin, _COLOR: color, **_borders(variant)}


def _borders(variant: str) -> dict[str, dict[str, float]]:
    """The variant's border inputs: BORDER_SHARE of BORDER_PROMPTS (chosen by the variant string), each
    answered with two first tokens at odds from _BORDER_ODDS."""
    d = _digest("realistic-borders", variant)
    order = sorted(range(len(BORDER_PROMPTS)), key=lambda i: (d[i % len(d)], i))[:BORDER_SHARE]
    out = {}
    for rank, i in enumerate(order):
        first, second = _BORDER_ANSWERS[(d[12 + rank % 8] + i) % len(_BORDER_ANSWERS)]
        p = _BORDER_ODDS[(d[20 + rank % 8] + rank) % len(_BORDER_ODDS)]
        out["=" + BORDER_PROMPTS[i]] = {first: p, second: round(1 - p, 4)}
    return out


def realistic(variant: str = "a") -> dict[str, Any]:
    """Model settings for a model that answers `BUILTIN_PROMPTS` as a real one does at temperature 0.

    Near-deterministic answers with rare flips between nearly tied first tokens (variant "a":
    1+1 -> "2" 0.97 / " 2" 0.03; coin -> "Heads" 0.6 / "Tails" 0.4; color -> "Blue" 0.55 / "Red" 0.3
    / "Green" 0.15; "x" -> four short replies), three fingerprints rotating 0.6 / 0.3 / 0.1, logprob
    jitter 0.02, a resolved model name, and a "*" long output (60 words, exact-repeat rate 0.07) so
    that every other prompt shows long-output noise.

    Any other variant string is a different model, derived deterministically from the string: its
    own fingerprints and resolved name, "Tails" favoured (perhaps lower-case), a favourite color
    other than "Blue", other replies to "x" and another long text; it still answers 1+1 with "2".
    """
    digest = _digest("realistic", variant)
    fingerprints = {
        "fp_" + _digest("realistic-fingerprint", variant, str(i)).hex()[:10]: weight
        for i, weight in enumerate(_FINGERPRINT_WEIGHTS)
    }
    settings = {
        "resolved": f"simulated-{variant}-2024-{1 + digest[7] % 12:02d}-{1 + digest[8] % 28:02d}",
        "fingerprints": fingerprints,
        "outputs": _realistic_outputs(variant),
        "long_outputs": {"*": {"text": _long_text(variant), "repeat": _DEFAULT_REPEAT, "diverge_after": 0.5}},
        "logprob_jitter": 0.02,
    }
    return _settings_copy(settings, f"realistic({variant!r})")


def _nearby_answer(answer: str, taken: Iterable[str]) -> str:
    """A new answer that differs from `answer` in its first token only: "Blue" -> "blue", "2" -> "2."."""
    taken = set(taken)
    first = _first_piece(answer)
    word = first.lstrip()
    lead, rest = first[: len(first) - len(word)], answer[len(first) :]
    candidates = [word.lower(), word.capitalize(), word + "."]
    i = 2
    while True:
        for candidate in (lead + variant + rest for variant in candidates):
            if candidate != answer and candidate not in taken:
                return candidate
        candidates, i = [f"{word}({i})"], i + 1


def _shift_distribution(weights: Mapping[str, float], tv: float) -> dict[str, float]:
    """Move exactly `tv` of probability mass, as `shifted` documents; returns probabilities."""
    total = sum(weight for weight in weights.values() if weight > 0)
    probs = {answer: weight / total for answer, weight in weights.items() if weight > 0}
    order = sorted(probs, key=lambda answer: -probs[answer])  # stable: ties keep their order
    if len(order) >= 2 and tv <= 1 - probs[order[1]]:
        receiver = order[1]
    else:
        receiver = _nearby_answer(order[0], probs)
        probs[receiver] = 0.0
    remaining = tv
    for donor in order:
        if donor == receiver or remaining <= 0:
            continue
        take = min(probs[donor], remaining)
        probs[donor] -= take
        remaining -= take
    probs[receiver] += tv
    return {answer: prob for answer, prob in probs.items() if prob > 0}


def shifted(settings: dict[str, Any], tv: float = 0.3, prompts: Iterable[str] | None = None) -> dict[str, Any]:
    """A copy of `settings` whose answer distribution for each prompt has moved by total variation `tv`.

    `prompts` are prompts as a request sends them, matched to `outputs` keys the way requests are
    (so "x" finds a "=x" key); default: every key of `outputs`. For each of those distributions p
    (weights normalised to probabilities), with its answers ordered by decreasing probability (ties
    in their order) and a1, a2 the first two:

    - the receiver is a2 if there is one and tv <= 1 - p(a2); otherwise a new answer next to a1
      (its first word lower-cased, capitalised or followed by ".", whichever is new);
    - the donors are all other answers in that order; tv is taken from them greedily (from a1 first,
      as much as it has, then from the next) and added to the receiver.

    Only donors lose and only the receiver gains, so the total variation distance between the old
    and the new distribution is exactly tv (on whole answers). The usual case, tv <= p(a1), moves tv
    from a1 to a2: coin 0.6/0.4 with tv 0.3 becomes 0.3/0.7. Nothing else changes (fingerprints,
    long_outputs, by_fingerprint, route). ValueError: tv outside [0, 1], a prompt that no `outputs`
    key answers (or that `long_outputs` answers), or invalid settings.
    """
    result = _settings_copy(settings, "settings")
    if not _is_number(tv) or not 0 <= tv <= 1:
        raise ValueError(f"tv: must be a number between 0 and 1, got {tv!r}")
    outputs: dict[str, dict[str, float]] = result.get("outputs", {})
    long_outputs: dict[str, JsonDict] = result.get("long_outputs", {})
    if prompts is None:
        keys = list(outputs)
    else:
        matcher = _KeyMatcher.of([*outputs, *long_outputs])
        keys = []
        for prompt in prompts:
            key = matcher.key_for(prompt)
            if key is None or key in long_outputs:
                answered = "long_outputs, which shifted() leaves alone" if key is not None else "no outputs key"
                raise ValueError(f"prompts: {prompt!r} is answered by {answered}")
            keys.append(key)
    for key in dict.fromkeys(keys):  # each distribution moves once, even when two prompts share it
        outputs[key] = _shift_distribution(outputs[key], tv)
    return result


def routed(settings: dict[str, Any], to: dict[str, Any], share: float) -> dict[str, Any]:
    """A copy of `settings` that answers `share` of the requests from `to` (see ``route``).

    Only the answer settings of `to` are kept, so another model's whole settings (for example
    ``realistic("b")``) can be passed. ValueError: `share` outside [0, 1], or `to` routes itself.
    """
    own = _settings_copy(settings, "settings")
    target = _settings_copy(to, "to")
    if "route" in target:
        raise ValueError("to: a routed-to model cannot route again; remove its 'route'")
    answers = {key: item for key, item in target.items() if key in _ANSWER_KEYS}
    return _validate_settings({**own, "route": {"share": share, "to": answers}}, "settings")


def perturbed_logprobs(settings: dict[str, Any], shift: float = 0.5) -> dict[str, Any]:
    """A copy of `settings` whose ``logprob_shift`` is `shift` nats more: a change of numerics only."""
    result = _settings_copy(settings, "settings")
    result["logprob_shift"] = result.get("logprob_shift", 0.0) + _signed_number(shift, "shift")
    return result


def with_fingerprints(settings: dict[str, Any], fingerprints: dict[str, float]) -> dict[str, Any]:
    """A copy of `settings` that reports these fingerprints (a weighted pool) and is otherwise the same."""
    result = _settings_copy(settings, "settings")
    result["fingerprints"] = _weights(fingerprints, "fingerprints", "fingerprint")
    return result
