"""The producer's side of the direct path (app.db.direct): push a job it has just
committed as migrated_to_redis to its Redis list, as the migrator would have.

The push is one Lua script (atomic, registered once): it refuses when the queue's lists
hold REDIS_QUEUE_MAX_DEPTH jobs, so Redis keeps only the hot window; the caller then
queues the job again in PostgreSQL and the migrator takes it. The job hash and the
`migrated` counter are written in the same round trip.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from uuid_utils.compat import uuid7

from app.db.direct import INSERT_DUE_JOB, REQUEUE_UNPUSHED
from app.job_state import JobStateCache
from app.jobs.model import CreatedJob, InsertResult, JobToInsert
from app.keys import Keys
from app.metrics import MetricsWriter
from app.redis_batch import redis_batch

log = logging.getLogger("hybridq.producer")

# KEYS: the queue's three lists, then the target list. ARGV: message, depth bound.
PUSH_IF_ROOM = """
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
    + redis.call('LLEN', KEYS[3])
if depth >= tonumber(ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[4], ARGV[1])
return 1
"""


class DirectPusher:
    """Pushes directly inserted jobs; one per JobClient."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, max_depth: int, job_hash_ttl: int
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.max_depth = max_depth
        self.state = JobStateCache(keys, job_hash_ttl)
        self.metrics = MetricsWriter(keys)
        self._script = redis.register_script(PUSH_IF_ROOM)

    async def push(self, row: Any) -> bool:
        """Push the job of an INSERT_DUE_JOB row; False if its queue is full in Redis."""
        queue, job_id = row["queue_name"], row["id"]
        lists = self.keys.queue_lists(queue)
        target = self.keys.route(queue, row["priority"])
        pushed = await self._script(keys=[*lists, target], args=[row["message"], self.max_depth])
        if pushed:
            try:
                async with redis_batch(self.redis) as pipe:
                    self.state.migrated(pipe, uuid.UUID(str(job_id)), row["attempt_count"])
                    self.metrics.count(pipe, "migrated", queue, 1)
            except Exception:
                log.warning("could not update the job hash in Redis", exc_info=True)
        return bool(pushed)


async def insert_and_push(
    pool: asyncpg.Pool, pusher: DirectPusher, job: JobToInsert
) -> InsertResult:
    """Insert one job (no idempotency key) through the direct path and push it if it
    was inserted as migrated_to_redis. A failed push never fails the call: the job is
    committed, and either queued again here or recovered as a stale migrated job."""
    row = await pool.fetchrow(
        INSERT_DUE_JOB,
        uuid7(),
        job.queue_name,
        job.payload_json,
        job.priority,
        job.run_at,
        job.max_attempts,
    )
    if row is None:
        return InsertResult("unknown_queue")
    created = CreatedJob(
        id=row["id"],
        status="queued",  # as a caller of POST /jobs sees a new job
        queue_name=row["queue_name"],
        priority=row["priority"],
        created_at=row["created_at"],
    )
    if row["status"] == "migrated_to_redis":
        try:
            pushed = await pusher.push(row)
        except Exception:
            log.warning("direct push failed; the job goes back to the migrator", exc_info=True)
            pushed = False
        if not pushed:
            try:
                await pool.fetch(REQUEUE_UNPUSHED, row["id"], row["updated_at"])
            except Exception:
                log.warning("could not queue an unpushed job again; recovery will", exc_info=True)
    return InsertResult("created", created)
