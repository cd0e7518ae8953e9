"""The producer's side of the direct path (app.db.direct): push a job it has just
committed as migrated_to_redis to its Redis list, as the migrator would have.

The push is one Lua script (atomic, registered once, one round trip): it refuses when
the queue's lists hold REDIS_QUEUE_MAX_DEPTH jobs, so Redis keeps only the hot window
(the caller then queues the job again in PostgreSQL and the migrator takes it), and
otherwise also writes the job hash and the `migrated` counter.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from uuid_utils.compat import uuid7

from app.db.direct import INSERT_DUE_JOB, REQUEUE_UNPUSHED
from app.job_state import NON_TERMINAL_TTL
from app.jobs.model import CreatedJob, InsertResult, JobToInsert
from app.keys import Keys

log = logging.getLogger("hybridq.producer")

# KEYS: the queue's three lists, the target list, the job hash, the `migrated` counter.
# ARGV: message, depth bound, hash TTL, queue name, then the hash's field/value pairs.
PUSH_IF_ROOM = """
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
    + redis.call('LLEN', KEYS[3])
if depth >= tonumber(ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[5], ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
return 1
"""


class DirectPusher:
    """Pushes directly inserted jobs; one per JobClient."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, max_depth: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_depth = max_depth
        self._script = redis.register_script(PUSH_IF_ROOM)

    async def push(self, row: Any) -> bool:
        """Push the job of an INSERT_DUE_JOB row, write its job hash (as the migrator's
        JobStateCache.migrated does) and count it as migrated, in one round trip;
        False if its queue is full in Redis."""
        queue = row["queue_name"]
        keys = [
            *self.keys.queue_lists(queue),
            self.keys.route(queue, row["priority"]),
            self.keys.job(str(row["id"])),
            self.keys.metric_counter("migrated"),
        ]
        fields = ["status", "migrated_to_redis", "attempt_count", str(row["attempt_count"])]
        args = [row["message"], self.max_depth, NON_TERMINAL_TTL, queue, *fields]
        return bool(await self._script(keys=keys, args=args))


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
