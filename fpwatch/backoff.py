"""Exponential backoff with jitter: how long to wait before trying again (provider requests, notifications)."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float, cap: float, *, floor: float = 0.0) -> float:
    """Seconds before the attempt-th retry (0-based): uniform in [floor x d, d], d = min(cap, base x 2**attempt).

    `floor = 0` is "full jitter" (retries of one request spread as widely as possible); a higher floor keeps
    the delay near the exponential schedule (notifications, whose attempts are minutes apart).
    """
    delay = min(cap, base * 2**attempt)
    return random.uniform(floor * delay, delay)
