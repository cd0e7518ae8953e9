"""Handlers the acceptance tests load into the real processes (HANDLER_MODULES).

Queue names start with "t-", so the clean_db fixture removes their rows and jobs.
"""

from __future__ import annotations

import asyncio

from app.registry import Job, handler


@handler("t-ok")
async def succeeds(job: Job) -> None:
    return None


@handler("t-flaky")
async def fails_the_first_attempt(job: Job) -> None:
    if job.attempt == 1:
        raise RuntimeError(f"attempt {job.attempt} fails on purpose")


@handler("t-fail")
async def always_fails(job: Job) -> None:
    raise RuntimeError(f"attempt {job.attempt} fails on purpose")


@handler("t-slow")
async def takes_a_while(job: Job) -> None:
    await asyncio.sleep(float(job.payload.get("seconds", 1.0)))
