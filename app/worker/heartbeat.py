"""The worker's heartbeat: every third of the visibility timeout it renews the leases
of the jobs the worker runs, keeps their in-flight entries in Redis fresh (so the
in-flight recovery leaves them alone), picks up cancels the listener missed, and writes
the worker's heartbeat key and its entry in the workers index."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from app.db.hot import JobStore
from app.keys import Keys
from app.logs import bound_job
from app.loops import wait_any
from app.settings import Settings
from app.worker.cancels import CancelWatcher
from app.worker.fetch import Fetcher
from app.worker.inflight import InFlight


class Worker(Protocol):
    """What the heartbeat needs of a worker (app.worker.runner.Worker)."""

    store: JobStore
    redis: aioredis.Redis
    keys: Keys
    settings: Settings
    worker_id: str
    queues: list[str]
    concurrency: int
    cancels: CancelWatcher
    fetcher: Fetcher

    def running(self) -> dict[uuid.UUID, InFlight]: ...


log = logging.getLogger("hybridq.worker")


async def beat_until(worker: Worker, stop: asyncio.Event) -> None:
    """Beat every third of the visibility timeout until `stop` is set; a failed beat is
    logged and the next one comes on time."""
    interval = worker.settings.visibility_timeout / 3
    ttl = max(1, int(worker.settings.visibility_timeout))
    while not stop.is_set():
        try:
            await beat(worker, ttl)
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
        await wait_any(stop, timeout=interval)


async def beat(worker: Worker, ttl: int) -> None:
    inflight = worker.running()
    ids = list(inflight)
    if ids:
        held = await worker.store.renew_leases(
            ids, worker.worker_id, worker.settings.visibility_timeout
        )
        await worker.cancels.poll(list(held))
        await worker.fetcher.touch([e.popped for i, e in inflight.items() if i in held])
        for job_id in set(ids) - held:
            entry = inflight.get(job_id)
            # A job whose outcome was just recorded is no longer running: not lost.
            if entry is not None and not entry.recording:
                job = entry.job
                with bound_job(job_id, job.queue_name, job.attempt, worker.worker_id):
                    log.warning("job %s: lease lost; its outcome will be discarded", job_id)
    now = time.time()
    # The value says what the worker serves, for the dashboard's workers page (the jobs
    # it runs now are read from PostgreSQL there, not from this stale copy).
    value = orjson.dumps({"at": now, "queues": worker.queues, "concurrency": worker.concurrency})
    async with worker.redis.pipeline(transaction=False) as pipe:
        pipe.set(worker.keys.worker_heartbeat(worker.worker_id), value, ex=ttl)
        pipe.zadd(worker.keys.workers_index(), {worker.worker_id: now})
        await pipe.execute()
