"""What a handler may report besides returning (success) and raising (a failed attempt).

from app.jobs.outcomes import PermanentFailure, Snooze

async def deliver(job: Job) -> None:
    if response.status_code == 410:
        raise PermanentFailure("endpoint gone (410)")   # failed now, no more attempts
    if response.status_code == 429:
        raise Snooze(60, "rate limited")                # again in 60 s, attempt not spent
"""

from __future__ import annotations

import math


class PermanentFailure(Exception):
    """The job can never succeed: it is failed now, whatever attempts are left."""


class Snooze(Exception):
    """Not now: run the job again after `seconds` without spending an attempt."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("snooze seconds must be a finite number >= 0")
        super().__init__(reason or f"snoozed for {seconds:g}s")
        self.seconds = float(seconds)
        self.reason = reason
