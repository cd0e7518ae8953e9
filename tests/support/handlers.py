"""Handlers the acceptance tests load into the real processes (HANDLER_MODULES).

Queue names start with "t-", so the clean_db fixture removes their rows and jobs.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from app.jobs.outcomes import PermanentFailure, Snooze
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


@handler("t-long-async")
async def runs_until_cancelled(job: Job) -> None:
    """Would complete after a minute; a cancel lands first. Leaves a `<id>.cancelled`
    file in payload["dir"] when it sees the cancellation (the test's ground truth)."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        (Path(job.payload["dir"]) / f"{job.id}.cancelled").touch()
        raise


@handler("t-long-sync")
def runs_until_flagged(job: Job) -> None:
    """A sync handler that checks `job.cancel_requested`, then returns as if done."""
    deadline = time.monotonic() + 60
    while not job.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.01)
    if job.cancel_requested:
        (Path(job.payload["dir"]) / f"{job.id}.flagged").touch()


@handler("t-gone")
async def gone(job: Job) -> None:
    raise PermanentFailure("endpoint gone (410)")


@handler("t-snooze")
def snoozes_three_times(job: Job) -> None:
    """Snoozes its first three runs, then succeeds; runs are counted in payload["dir"].
    A sync handler: outcomes are raised from its thread as from a coroutine."""
    runs = Path(job.payload["dir"])
    n = len(list(runs.glob(f"{job.id}.run*")))
    (runs / f"{job.id}.run{n}").touch()
    if n < 3:
        raise Snooze(0.05, f"not yet ({n + 1})")


@handler("t-poison", timeout=30)
async def kills_its_worker_on_the_poison_payload(job: Job) -> None:
    """A job that takes its worker down (as a segfault or an OOM would) when its payload
    says so; the others take a few milliseconds, so neighbours are in flight."""
    if job.payload.get("poison"):
        os._exit(1)
    await asyncio.sleep(random.uniform(0, 0.01))


# Queues with limits (tests/acceptance/test_limits.py): each run is stamped by the
# handler itself, the ground truth of when jobs started and ended, as JSON
# [start, end, job id, concurrency key] in the Redis list <REDIS_PREFIX>stamps.
_stamp_redis: list[aioredis.Redis] = []


async def _stamp(job: Job) -> None:
    start = time.time()
    if not _stamp_redis:
        _stamp_redis.append(aioredis.Redis.from_url(os.environ["REDIS_URL"]))
    prefix = os.environ.get("REDIS_PREFIX", "")
    seconds = float(job.payload.get("seconds", 0.0))
    # "hold_while_flagged": sleep only while the test keeps the key <prefix>hold (a stale
    # copy of the job run later must not hold again, whatever its payload says).
    if job.payload.get("hold_while_flagged") and not await _stamp_redis[0].exists(prefix + "hold"):
        seconds = 0.0
    if seconds:
        await asyncio.sleep(seconds)
    end = time.time()
    record = orjson.dumps([start, end, str(job.id), job.payload.get("key")])
    await _stamp_redis[0].rpush(prefix + "stamps", record)


for _queue in ("t-rate", "t-running", "t-per-key", "t-held"):
    handler(_queue)(_stamp)
