"""An observation: one API response as recorded, the raw material of every conclusion fpwatch draws."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

# "invalid": the key is there with a value that is not a string (an object, a number): a broken version
# signal, kept apart from one that is missing (null, "", absent) so neither hides the other.
FingerprintState = Literal["present", "null", "empty", "absent", "invalid"]


@dataclass(frozen=True)
class FirstToken:
    """The first generated token with its logprob and the provider's top alternatives."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    time: datetime  # UTC, when the request was sent
    model: str  # the monitored model's name
    canary: str
    sample: int
    seed: int | None
    ok: bool
    system_fingerprint: str | None = None  # the value when present and non-empty
    fingerprint_state: FingerprintState | None = None  # None when the request failed
    response_model: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    first_token: FirstToken | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_ms: float | None = None
    request_id: str | None = None  # the x-request-id header
    response_id: str | None = None  # the body's id
    http_status: int | None = None
    attempts: int = 1
    error_kind: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every field, a third of a check's recording cost.
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["time"] = self.time.isoformat().replace("+00:00", "Z")
        if self.first_token is not None:
            out["first_token"] = {
                "token": self.first_token.token,
                "logprob": self.first_token.logprob,
                "top": dict(self.first_token.top),
            }
        return out
