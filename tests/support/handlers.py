"""Handlers the acceptance tests load into the real processes (HANDLER_MODULES).

Queue names start with "t-", so the clean_db fixture removes their rows and jobs.
"""

from __future__ import annotations

import asyncio
import os
import time

import orjson
import redis.asyncio as aioredis

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


# Queues with limits (tests/acceptance/test_limits.py): each run is stamped by the
# handler itself, the ground truth of when jobs started and ended, as JSON
# [start, end, job id, concurrency key] in the Redis list <REDIS_PREFIX>stamps.
_stamp_redis: list[aioredis.Redis] = []


async def _stamp(job: Job) -> None:
    start = time.time()
    seconds = float(job.payload.get("seconds", 0.0))
    if job.payload.get("hold_first_attempt") and job.attempt > 1:
        seconds = 0.0
    if seconds:
        await asyncio.sleep(seconds)
    end = time.time()
    if not _stamp_redis:
        _stamp_redis.append(aioredis.Redis.from_url(os.environ["REDIS_URL"]))
    record = orjson.dumps([start, end, str(job.id), job.payload.get("key")])
    await _stamp_redis[0].rpush(os.environ.get("REDIS_PREFIX", "") + "stamps", record)


for _queue in ("t-rate", "t-running", "t-per-key", "t-held"):
    handler(_queue)(_stamp)
