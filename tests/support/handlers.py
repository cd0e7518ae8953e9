"""Handlers the acceptance tests load into the real processes (HANDLER_MODULES).

Queue names start with "t-", so the clean_db fixture removes their rows and jobs.
"""

from __future__ import annotations

import asyncio
import os
import random

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


@handler("t-poison", timeout=30)
async def kills_its_worker_on_the_poison_payload(job: Job) -> None:
    """A job that takes its worker down (as a segfault or an OOM would) when its payload
    says so; the others take a few milliseconds, so neighbours are in flight."""
    if job.payload.get("poison"):
        os._exit(1)
    await asyncio.sleep(random.uniform(0, 0.01))
