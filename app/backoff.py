"""Retry delays: exponential from a base, capped, with jitter."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 3600.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the attempt after `attempt` (1-based): base * 2**(attempt-1).

    With the defaults: 2 s, 4 s, 8 s … capped at `cap`, then spread by +/- `jitter` (a
    fraction) so that jobs failing together do not retry together. Never above `cap`.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exponent = min(attempt - 1, 62)  # avoid float overflow for absurd attempt counts
    delay = min(cap, base * (2.0**exponent))
    if jitter:
        r = (rng or random).uniform(-jitter, jitter)
        delay = delay * (1.0 + r)
    return max(0.0, min(cap, delay))
