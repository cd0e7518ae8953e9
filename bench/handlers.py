"""The benchmark's no-op handler, loaded by the worker processes (HANDLER_MODULES).

It stamps `time.time()` when it starts and when it ends, and keeps the stamps where
they cost least, chosen by BENCH_MODE:

- `drain` (default): appended to an in-memory array, written once at process exit
  (atexit) to `$BENCH_STAMP_DIR/<pid>.stamps` as native doubles (start, end, start, ...).
  Nothing is written while the jobs run.
- `latency`: each start stamp is RPUSHed to the Redis list `$BENCH_LATENCY_KEY`, which
  the benchmark BLPOPs before it enqueues the next job (one job at a time).
"""

from __future__ import annotations

import array
import atexit
import os
import time
from pathlib import Path

import redis.asyncio as aioredis

from app.registry import Job, handler

QUEUE = "bench"

_MODE = os.environ.get("BENCH_MODE", "drain")
_STAMPS = array.array("d")
_redis: aioredis.Redis | None = None


def _write_stamps() -> None:
    directory = os.environ.get("BENCH_STAMP_DIR")
    if not directory:
        return
    path = Path(directory) / f"{os.getpid()}.stamps"
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        _STAMPS.tofile(f)
    tmp.rename(path)  # the benchmark only ever sees a complete file


if _MODE == "drain":
    atexit.register(_write_stamps)


@handler(QUEUE)
async def noop(job: Job) -> None:
    start = time.time()
    if _MODE == "latency":
        global _redis
        if _redis is None:
            _redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
        await _redis.rpush(os.environ["BENCH_LATENCY_KEY"], repr(start))
        return
    _STAMPS.append(start)
    _STAMPS.append(time.time())
