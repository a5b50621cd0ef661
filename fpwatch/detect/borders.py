"""Border inputs (B3IT, arXiv 2602.11083): prompts whose temperature-0 first token is not unique for a model.

A tiny change of the weights moves the border between the tied tokens, so these are the most sensitive
black-box canaries. Discovery (fpwatch/discovery.py asks, this module decides) follows the reference
implementation's steps, within a budget of one-token requests (research/anchors-2026-12.md section 3):

1. **scan**: each candidate prompt is asked `SCAN_QUERIES` times at temperature 0 with one output token;
   it is a candidate when the answers hold at least two distinct non-empty tokens. The scan stops at
   `CANDIDATE_RATIO` x `TARGET` candidates, or when the budget left is what measuring them needs.
2. **measure**: each candidate is asked `MEASURE_QUERIES` more times; the `TARGET` with the best balance
   (the second most common answer's count over the most common's) are kept, those still showing two
   answers.
3. After a confirmed change the kept border inputs are **re-probed** (`REPROBE_QUERIES` each); the survivors
   stay and the scan goes on where it stopped to top the set up.

Two gates end a scan early: answers that differ on most prompts mean the server ignores temperature
(B3IT's temperature gate: "unstable"), and first-token logprobs that agree to `DETERMINISTIC_SPREAD` on
every prompt mean a deterministic server (a self-hosted one), which has no border inputs to find.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fpwatch.clock import iso, parse_iso

SCAN_QUERIES = 3  # B3IT queries_per_token
MEASURE_QUERIES = 20  # B3IT measures each candidate 100 times; a 2,000-request budget allows 20
REPROBE_QUERIES = 10  # B3IT re-probes old border inputs with 10 samples
TARGET = 6  # border inputs kept per model (B3IT keeps 20; each costs SAMPLES tokens every check here)
CANDIDATE_RATIO = 2  # B3IT border_input_candidate_ratio
SAMPLES = 2  # requests per check of each discovered canary
UNSTABLE_SHARE = 0.3  # candidates among scanned prompts above this: the server ignores temperature 0
GATE_PROMPTS = 40  # prompts scanned before either gate may end the scan
GATE_MIN = 10  # ... or, for the unstable gate at the scan's end, this many
DETERMINISTIC_SPREAD = 1e-4  # nats: a prompt's repeated first-token logprobs agree this well on a deterministic server
PREFIX = "discovered/"
RETRY_FAILED = timedelta(hours=6)  # a discovery that failed (the provider was down) is tried again after this

Status = Literal["found", "none", "deterministic", "unstable", "failed"]


@dataclass(frozen=True)
class Answers:
    """What one prompt got: each answer's first token (None for a failed request) and its logprob when given,
    the output tokens spent, and the last request's error if any failed."""

    tokens: tuple[str | None, ...]
    logprobs: tuple[float | None, ...] = ()
    output_tokens: int = 0
    error: str | None = None

    def __add__(self, other: Answers) -> Answers:
        return Answers(
            self.tokens + other.tokens,
            self.logprobs + other.logprobs,
            self.output_tokens + other.output_tokens,
            other.error or self.error,
        )

    @property
    def failed(self) -> bool:
        return all(t is None for t in self.tokens)

    @property
    def counts(self) -> Counter[str]:
        return Counter(t.strip() for t in self.tokens if t is not None and t.strip())

    @property
    def spread(self) -> float | None:
        """How far apart the repeated logprobs of the chosen token are (None: no logprobs, or different tokens)."""
        values = [v for v in self.logprobs if v is not None]
        if len(values) < 2 or len(values) != len(self.tokens) or len(set(self.tokens)) != 1:
            return None
        return max(values) - min(values)


def is_candidate(answers: Answers) -> bool:
    """B3IT's scan rule: at least two distinct non-empty answers."""
    return len(answers.counts) >= 2


def balance(answers: Answers) -> float:
    """The second most common answer's count over the most common's (0: one answer; 1: a perfect tie)."""
    common = answers.counts.most_common(2)
    return common[1][1] / common[0][1] if len(common) == 2 else 0.0


@dataclass(frozen=True)
class Border:
    """One border input: its prompt, its balance and its two most common answers with their shares."""

    prompt: str
    balance: float
    answers: Mapping[str, float]

    @property
    def canary(self) -> str:
        return canary_name(self.prompt)

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "balance": self.balance, "answers": dict(self.answers)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Border:
        return cls(str(data["prompt"]), float(data["balance"]), {str(k): float(v) for k, v in data["answers"].items()})


def border_of(prompt: str, answers: Answers) -> Border:
    counts = answers.counts
    total = sum(counts.values())
    top = {token: round(n / total, 3) for token, n in counts.most_common(2)}
    return Border(prompt, round(balance(answers), 3), top)


def canary_name(prompt: str) -> str:
    """`discovered/` and the prompt as a readable slug, one per prompt ("a dog" -> "discovered/a-dog", "Red" ->
    "discovered/Red", "?" -> "discovered/x3f")."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-")
    if not slug or slug != prompt.replace(" ", "-"):
        slug = (slug + "-" if slug else "") + "x" + prompt.encode().hex()[:16]
    return PREFIX + slug


def choose(measured: Mapping[str, Answers], target: int = TARGET) -> tuple[Border, ...]:
    """The `target` best-balanced prompts that still show two answers, best first (ties: the earlier prompt)."""
    ranked = [(balance(a), i, p) for i, (p, a) in enumerate(measured.items()) if is_candidate(a)]
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return tuple(border_of(p, measured[p]) for _, _, p in ranked[:target])


def measure_budget(target: int = TARGET) -> int:
    """What measuring a full set of candidates costs (the scan keeps this much of the budget)."""
    return CANDIDATE_RATIO * target * MEASURE_QUERIES


def gate(scanned: Mapping[str, Answers], candidates: int, *, final: bool = False) -> Status | None:
    """Does the scan so far say there is nothing to find? "unstable" or "deterministic", else None. At the scan's
    end (`final`: it found its candidates early) the unstable gate needs only GATE_MIN prompts."""
    if len(scanned) >= (GATE_MIN if final else GATE_PROMPTS) and candidates > UNSTABLE_SHARE * len(scanned):
        return "unstable"
    if len(scanned) < GATE_PROMPTS:
        return None
    spreads = [a.spread for a in scanned.values()]
    if not candidates and all(s is not None and s <= DETERMINISTIC_SPREAD for s in spreads):
        return "deterministic"
    return None


@dataclass(frozen=True)
class Borders:
    """A model's discovered border inputs and what finding them cost (kept in its state)."""

    status: Status
    found: tuple[Border, ...] = ()
    at: datetime | None = None
    requests: int = 0
    tokens: int = 0
    scanned: int = 0  # candidate prompts scanned so far (a top-up continues from here)
    confirmed: int = 0  # the model's confirmed drifts when this was found: a later one makes it stale
    model_id: str = ""  # the API model id it was found for
    error: str | None = None

    def due(self, confirmed: int, model_id: str, now: datetime) -> bool:
        """Run discovery again? Found before the model's latest confirmed change or for another model id (re-probe
        and top up), or failed RETRY_FAILED ago."""
        if confirmed > self.confirmed or model_id != self.model_id:
            return True
        return self.status == "failed" and (self.at is None or now - self.at >= RETRY_FAILED)

    def words(self) -> str:
        """What `status` says of it."""
        spent = f"{self.requests:,} requests"
        if self.status == "found":
            return f"{len(self.found)} border inputs ({spent})"
        return {
            "none": f"none found ({spent}): the answer screen and logprobs carry the load",
            "deterministic": f"none: the server is deterministic ({spent}): logprobs carry the load",
            "unstable": f"none: answers vary on most prompts, temperature 0 seems ignored ({spent})",
            "failed": f"failed ({spent}): {self.error}",
        }[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "found": [b.to_json() for b in self.found],
            "at": iso(self.at) if self.at else None,
            "requests": self.requests,
            "tokens": self.tokens,
            "scanned": self.scanned,
            "confirmed": self.confirmed,
            "model_id": self.model_id,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Borders | None:
        if not data:
            return None
        return cls(
            data["status"],
            tuple(Border.from_json(b) for b in data["found"]),
            parse_iso(data["at"]) if data.get("at") else None,
            int(data["requests"]),
            int(data["tokens"]),
            int(data["scanned"]),
            int(data["confirmed"]),
            str(data["model_id"]),
            data.get("error"),
        )


def survivors(previous: Sequence[Border], reprobed: Mapping[str, Answers]) -> list[Border]:
    """The old border inputs that still show two answers, with their balance measured again."""
    return [border_of(b.prompt, reprobed[b.prompt]) for b in previous if is_candidate(reprobed[b.prompt])]
