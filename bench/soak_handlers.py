"""The soak's handler (HANDLER_MODULES=bench.soak_handlers): a no-op that fails a job's
first attempt when its payload says so, and reports when each first attempt started.

Each worker process keeps (start - due) of first attempts in memory and RPUSHes them to
`$SOAK_LATENCY_KEY` once a second (one round trip for hundreds of jobs), so measuring
costs the workers next to nothing.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio as aioredis

from app.registry import Job, handler

QUEUE = "soak"

_pending: list[str] = []
_flusher: asyncio.Task[None] | None = None


async def _flush_forever() -> None:
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    key = os.environ["SOAK_LATENCY_KEY"]
    while True:
        await asyncio.sleep(1.0)
        if _pending:
            batch = _pending[:]
            del _pending[:]
            await redis.rpush(key, *batch)


@handler(QUEUE)
async def work(job: Job) -> None:
    global _flusher
    if _flusher is None:
        _flusher = asyncio.get_running_loop().create_task(_flush_forever())
    if job.attempt == 1:
        _pending.append(f"{time.time() - float(job.payload['due']):.6f}")
        if job.payload.get("fail_once"):
            raise RuntimeError("soak: the first attempt of this job fails")
