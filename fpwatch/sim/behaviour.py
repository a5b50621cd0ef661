"""Model settings compiled for fast draws (pools, answers, long answers, prompt lookup) and the text helpers."""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fpwatch.sim.scenario import JsonDict

# --------------------------------------------------------------------------- text and tokens

_WORD = re.compile(r"\S+")
_VOCABULARY = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor",
    "indigo", "juniper", "kelp", "lantern", "meadow", "nickel", "orchid", "pebble",
    "quartz", "raven", "saffron", "tundra", "umber", "velvet", "willow", "yarrow",
    "zephyr", "yes", "no", "42", "blue", "seven", "paris", "hello",
)  # fmt: skip


def _pieces(text: str) -> list[str]:
    """Whitespace tokens that keep their leading whitespace, so they concatenate back to the text."""
    pieces: list[str] = []
    start = 0
    for match in _WORD.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    return pieces


def _first_piece(text: str) -> str:
    match = _WORD.search(text)
    return text[: match.end()] if match else ""


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()


@functools.lru_cache(maxsize=4096)
def _default_fingerprint(model: str) -> str:
    return "fp_" + _digest("fingerprint", model).hex()[:10]


@functools.lru_cache(maxsize=4096)
def _default_answers(model: str, prompt: str) -> _Answers:
    # Deterministic per (model, prompt): an unscripted canary sees a stable model, not noise.
    digest = _digest("answer", model, prompt)
    words = [_VOCABULARY[digest[i + 1] % len(_VOCABULARY)] for i in range(1 + digest[0] % 3)]
    return _Answers.of({" ".join(words).capitalize(): 1.0})


# --------------------------------------------------------------------------- compiled behaviour


@dataclass(frozen=True)
class _Pool:
    """A weighted choice ready to draw from; zero weights are dropped so they can never appear."""

    values: tuple[str, ...]
    cum_weights: tuple[float, ...]
    probs: dict[str, float]
    total: float

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> _Pool:
        items = [(value, weight) for value, weight in weights.items() if weight > 0]
        total = sum(weight for _, weight in items)
        cumulative: list[float] = []
        running = 0.0
        for _, weight in items:
            running += weight
            cumulative.append(running)
        probs = {value: weight / total for value, weight in items}
        return cls(tuple(value for value, _ in items), tuple(cumulative), probs, running)

    def draw(self, rng: random.Random) -> str:
        values = self.values
        if len(values) == 1:  # no draw: a constant pool does not shift the RNG stream
            return values[0]
        # What rng.choices(values, cum_weights=...) does for one value (the same single random()
        # call, so the same stream), without its per-call set-up.
        return values[bisect.bisect(self.cum_weights, rng.random() * self.total, 0, len(values) - 1)]


def _first_token_logprobs(first: Mapping[str, float]) -> tuple[tuple[tuple[str, float], ...], dict[str, float]]:
    """ln P of each first token: ranked most likely first, and by token."""
    ranked = tuple((token, math.log(prob)) for token, prob in sorted(first.items(), key=lambda item: -item[1]))
    return ranked, dict(ranked)


@dataclass(frozen=True)
class _Answers:
    """An answer distribution plus the distribution of its first tokens (for logprobs)."""

    pool: _Pool
    first_tokens: tuple[tuple[str, float], ...]  # (token, ln P), most likely first
    first_logprob: dict[str, float]  # token -> ln P

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> _Answers:
        pool = _Pool.of(weights)
        first: dict[str, float] = {}
        for answer, prob in pool.probs.items():
            token = _first_piece(answer)
            first[token] = first.get(token, 0.0) + prob
        return cls(pool, *_first_token_logprobs(first))

    def draw(self, rng: random.Random) -> str:
        return self.pool.draw(rng)


_VOCABULARY_HEAD = _VOCABULARY[:-1]


def _other_words(word: str) -> tuple[str, ...]:
    """The words `_LongAnswer.draw` may put in place of `word`: each equally likely."""
    if word in _VOCABULARY_HEAD:
        return tuple(other for other in _VOCABULARY if other != word)
    return _VOCABULARY_HEAD


@dataclass(frozen=True)
class _LongAnswer:
    """A long answer that repeats exactly with probability `repeat` and otherwise diverges late."""

    text: str
    prefixes: tuple[str, ...]  # prefixes[k]: the text's first k tokens
    leads: tuple[str, ...]  # leads[k]: the whitespace before token k
    words: tuple[str, ...]  # words[k]: token k without that whitespace
    repeat: float
    low: int  # the earliest position where an answer diverges
    first_tokens: tuple[tuple[str, float], ...]  # as in _Answers
    first_logprob: dict[str, float]

    @classmethod
    def of(cls, spec: JsonDict) -> _LongAnswer:
        text: str = spec["text"]
        repeat: float = spec["repeat"]
        pieces = _pieces(text)
        n = len(pieces)
        low = min(n - 1, math.ceil(spec["diverge_after"] * n))
        words = tuple(piece.lstrip() for piece in pieces)
        leads = tuple(piece[: len(piece) - len(word)] for piece, word in zip(pieces, words, strict=True))
        # The first token is the text's unless the answer diverges at position 0, which happens with
        # probability (1 - repeat) / n when low is 0, and then is one of the 31 other words, uniformly.
        diverge_first = (1.0 - repeat) / (n - low) if low == 0 else 0.0
        first = {pieces[0]: 1.0 - diverge_first}
        if diverge_first > 0:
            others = _other_words(words[0])
            first.update({leads[0] + other: diverge_first / len(others) for other in others})
        first = {token: prob for token, prob in first.items() if prob > 0}
        prefixes = tuple("".join(pieces[:k]) for k in range(n))
        return cls(text, prefixes, leads, words, repeat, low, *_first_token_logprobs(first))

    def draw(self, rng: random.Random) -> str:
        if rng.random() < self.repeat:
            return self.text
        n = len(self.words)
        k = self.low + rng.randrange(n - self.low)
        word = rng.choice(_VOCABULARY_HEAD)
        if word == self.words[k]:
            word = _VOCABULARY[-1]  # so the replacement is uniform over the 31 words that differ
        rest = rng.choices(_VOCABULARY, k=n - k - 1)
        return self.prefixes[k] + self.leads[k] + word + "".join(" " + other for other in rest)


_Source = _Answers | _LongAnswer


@dataclass(frozen=True)
class _KeyMatcher:
    """Prompt keys compiled for matching: exact (and "=" keys), then the longest substring, then "*"."""

    exact: dict[str, str]  # prompt -> key
    substrings: tuple[str, ...]  # longest first, so the most specific key wins
    fallback: bool

    @classmethod
    def of(cls, keys: Iterable[str]) -> _KeyMatcher:
        keys = list(keys)
        plain = [key for key in keys if key != "*" and not key.startswith("=")]
        exact = {key: key for key in plain}
        exact.update({key[1:]: key for key in keys if key.startswith("=")})
        return cls(exact, tuple(sorted(plain, key=len, reverse=True)), "*" in keys)

    def key_for(self, prompt: str) -> str | None:
        key = self.exact.get(prompt)
        if key is not None:
            return key
        for key in self.substrings:
            if key in prompt:
                return key
        return "*" if self.fallback else None


@dataclass(frozen=True)
class _Lookup:
    matcher: _KeyMatcher
    sources: dict[str, _Source]

    @classmethod
    def of(cls, sources: Mapping[str, _Source]) -> _Lookup:
        return cls(_KeyMatcher.of(sources), dict(sources))

    def find(self, model: str, prompt: str) -> _Source:
        key = self.matcher.key_for(prompt)
        return self.sources[key] if key is not None else _default_answers(model, prompt)


@dataclass(frozen=True)
class _Answerer:
    """The settings that shape an answer, compiled: a model's own, or its route's `to`."""

    resolved: _Pool | None
    fingerprints: _Pool | None
    lookup: _Lookup
    logprob_jitter: float
    logprob_shift: float
    replicas: dict[str, tuple[_Lookup, float]]  # by_fingerprint: the lookup and logprob shift to use
    echoes: JsonDict  # the Responses API's echoed settings for what a request leaves out

    @classmethod
    def compile(cls, settings: JsonDict) -> _Answerer:
        resolved = settings.get("resolved")
        fingerprints = settings.get("fingerprints")
        outputs: dict[str, _Source] = {p: _Answers.of(d) for p, d in settings.get("outputs", {}).items()}
        long: dict[str, _Source] = {p: _LongAnswer.of(d) for p, d in settings.get("long_outputs", {}).items()}
        shift: float = settings.get("logprob_shift", 0.0)
        replicas: dict[str, tuple[_Lookup, float]] = {}
        for fingerprint, override in settings.get("by_fingerprint", {}).items():
            own = {p: _Answers.of(d) for p, d in override.get("outputs", {}).items()}
            kept = {key: source for key, source in long.items() if key not in own}
            replicas[fingerprint] = (_Lookup.of({**outputs, **kept, **own}), override.get("logprob_shift", shift))
        return cls(
            resolved=_Pool.of(resolved) if resolved is not None else None,
            fingerprints=_Pool.of(fingerprints) if fingerprints is not None else None,
            lookup=_Lookup.of({**outputs, **long}),  # a long output wins over an output with its key
            logprob_jitter=settings.get("logprob_jitter", 0.0),
            logprob_shift=shift,
            replicas=replicas,
            echoes=settings.get("echoes", {}),
        )

    def fingerprint(self, model: str, rng: random.Random) -> str:
        return self.fingerprints.draw(rng) if self.fingerprints else _default_fingerprint(model)

    def resolve(self, model: str, rng: random.Random) -> str:
        return self.resolved.draw(rng) if self.resolved else model


@dataclass(frozen=True)
class _Behaviour:
    """One model's settings compiled for fast draws; rebuilt whenever the settings change."""

    own: _Answerer
    route_share: float
    route_to: _Answerer | None
    latency: float
    latency_jitter: float
    error_rate: float
    error_kinds: tuple[JsonDict, ...]
    rejects: frozenset[str]
    ignores: frozenset[str]
    echo_key: frozenset[str]

    @classmethod
    def compile(cls, settings: JsonDict) -> _Behaviour:
        route = settings.get("route")
        return cls(
            own=_Answerer.compile(settings),
            route_share=route["share"] if route is not None else 0.0,
            route_to=_Answerer.compile(route["to"]) if route is not None else None,
            latency=settings.get("latency", 0.0),
            latency_jitter=settings.get("latency_jitter", 0.0),
            error_rate=settings.get("error_rate", 0.0),
            error_kinds=tuple(settings.get("error_kinds", [{"kind": "500"}])),
            rejects=frozenset(settings.get("rejects", ())),
            ignores=frozenset(settings.get("ignores", ())),
            echo_key=frozenset(settings.get("echo_key", ())),
        )

    def answerer(self, rng: random.Random) -> _Answerer:
        """The model's own answer settings, or its route's with probability `route_share`."""
        share = self.route_share
        if self.route_to is None or share <= 0:
            return self.own
        return self.route_to if share >= 1 or rng.random() < share else self.own

    def delay(self, rng: random.Random) -> float:
        return self.latency + (rng.uniform(0.0, self.latency_jitter) if self.latency_jitter else 0.0)
