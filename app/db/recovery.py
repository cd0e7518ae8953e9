"""Recovery: the statements that bring back jobs whose worker or Redis copy was lost.

- A running job whose lease expired (its worker died or hung): a stall.
- Every migrated job, when Redis lost its data.

(A job popped but never claimed needs no statement: its in-flight entry in Redis brings
its message back, app.maintenance.inflight.)
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from app.db.rows import RescuedJob

# Running jobs whose lease expired (their worker died or hung) stalled: that is not a
# failed attempt. Each goes back to queued with its attempt not spent and its stall
# counted, due at a random time within $3 seconds (drawn per job, so the jobs of one
# dead worker do not come back together to the next one); the stall that reaches $2
# (MAX_STALLS) fails the job instead, as a poison pill. One job_logs row per stall.
RESCUE_EXPIRED_LEASES = """
WITH i AS (
    SELECT id
    FROM jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.stall_count + 1 >= $2 THEN 'failed' ELSE 'queued' END,
        stall_count = j.stall_count + 1,
        attempt_count = CASE WHEN j.stall_count + 1 >= $2 THEN j.attempt_count
                             ELSE j.attempt_count - 1 END,
        run_at = CASE WHEN j.stall_count + 1 >= $2 THEN j.run_at
                      ELSE now() + make_interval(secs => $3 * random()) END,
        failed_at = CASE WHEN j.stall_count + 1 >= $2 THEN now() END,
        last_error_message = CASE
            WHEN j.stall_count + 1 >= $2 THEN
                'stalled ' || (j.stall_count + 1) || ' times (last: worker '
                || coalesce(j.worker_id, '?') || ' stopped responding)'
            ELSE 'lease expired: worker ' || coalesce(j.worker_id, '?')
                 || ' stopped responding' END,
        lease_expires_at = NULL,
        updated_at = now()
    FROM i
    WHERE j.id = i.id AND j.status = 'running' AND j.lease_expires_at < now()
    RETURNING j.id, j.status, j.stall_count, j.worker_id, j.started_at,
              j.last_error_message,
              CASE WHEN j.status = 'failed' THEN j.attempt_count
                   ELSE j.attempt_count + 1 END AS attempt
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, CASE WHEN status = 'failed' THEN 'failed' ELSE 'stalled' END,
           last_error_message || CASE WHEN status = 'failed' THEN ' (poison pill)'
                                      ELSE ' (stall ' || stall_count || ', attempt not spent)'
                                 END,
           attempt, worker_id, started_at, now(), now() - started_at
    FROM done
)
SELECT id, status, attempt, stall_count, last_error_message FROM done
"""

# Redis lost its data: every job it held goes back to queued, in bounded batches (each
# its own short transaction, SKIP LOCKED so claims are never waited on), only jobs
# migrated before the loss was seen ($2): those moved since are in the new Redis. The
# migrator (woken by the trigger) pushes them again.
REQUEUE_MIGRATED_BEFORE = """
WITH batch AS (
    SELECT id FROM jobs
    WHERE status = 'migrated_to_redis' AND updated_at < $2
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'queued', updated_at = now()
FROM batch
WHERE jobs.id = batch.id AND jobs.status = 'migrated_to_redis'
RETURNING jobs.id
"""

# The same, for the jobs of some queues only ($3): Redis Cluster, a shard lost its data.
REQUEUE_QUEUES_MIGRATED_BEFORE = """
WITH batch AS (
    SELECT id FROM jobs
    WHERE status = 'migrated_to_redis' AND updated_at < $2 AND queue_name = ANY($3::text[])
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'queued', updated_at = now()
FROM batch
WHERE jobs.id = batch.id AND jobs.status = 'migrated_to_redis'
RETURNING jobs.id
"""

ANY_QUEUES_MIGRATED_BEFORE = """
SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'migrated_to_redis' AND updated_at < $1
               AND queue_name = ANY($2::text[]))
"""

ANY_MIGRATED_BEFORE = """
SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'migrated_to_redis' AND updated_at < $1)
"""

QUEUE_NAMES = "SELECT name FROM job_queues ORDER BY name"


class RecoveryStore:
    """The recovery statements over an asyncpg pool (maintenance tasks use them)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def rescue_expired_leases(
        self, limit: int, max_stalls: int, spread: float
    ) -> list[RescuedJob]:
        """Requeue (or, at `max_stalls`, fail) running jobs whose lease expired."""
        rows = await self.pool.fetch(RESCUE_EXPIRED_LEASES, limit, max_stalls, spread)
        return [
            RescuedJob(
                id=r["id"],
                status=r["status"],
                attempt=r["attempt"],
                error=r["last_error_message"],
                stalls=r["stall_count"],
            )
            for r in rows
        ]

    async def now(self) -> datetime:
        """PostgreSQL's clock (the one updated_at is written with)."""
        value: datetime = await self.pool.fetchval("SELECT now()")
        return value

    async def requeue_migrated_before(
        self, before: datetime, limit: int, queues: list[str] | None = None
    ) -> int:
        """migrated_to_redis -> queued for up to `limit` jobs migrated before `before`
        (of these `queues` only, if given)."""
        if queues is None:
            return len(await self.pool.fetch(REQUEUE_MIGRATED_BEFORE, limit, before))
        return len(await self.pool.fetch(REQUEUE_QUEUES_MIGRATED_BEFORE, limit, before, queues))

    async def queue_names(self) -> list[str]:
        """Every queue, paused ones included (their lists may still hold jobs)."""
        return [r["name"] for r in await self.pool.fetch(QUEUE_NAMES)]

    async def any_migrated_before(self, before: datetime, queues: list[str] | None = None) -> bool:
        """Whether a job migrated before `before` (of these `queues`, if given) is still
        migrated_to_redis."""
        if queues is None:
            return bool(await self.pool.fetchval(ANY_MIGRATED_BEFORE, before))
        return bool(await self.pool.fetchval(ANY_QUEUES_MIGRATED_BEFORE, before, queues))
