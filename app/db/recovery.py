"""Recovery: the statements that bring back jobs whose worker or Redis copy was lost.

- A running job whose lease expired (its worker died or stalled).
- Every migrated job, when Redis lost its data.
- A migrated job popped from Redis but never claimed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from app.db.fragments import REDIS_MESSAGE, RETRY_OR_FAIL, RETRY_OR_FAIL_NOTE
from app.db.rows import RescuedJob, StaleMigrated

# Running jobs whose lease expired (their worker died or stalled): each is a failed
# attempt with its own job_logs row, then retried by run_at or failed, as usual. The
# retry delay of attempt n is $2[n] (computed by app.backoff; the last entry repeats).
RESCUE_EXPIRED_LEASES = f"""
WITH i AS (
    SELECT id, ($2::float8[])[LEAST(attempt_count, cardinality($2::float8[]))] AS delay
    FROM jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE jobs j SET
        {RETRY_OR_FAIL},
        last_error_message =
            'lease expired: worker ' || coalesce(j.worker_id, '?') || ' stopped responding',
        lease_expires_at = NULL,
        updated_at = now()
    FROM i
    WHERE j.id = i.id AND j.status = 'running' AND j.lease_expires_at < now()
    RETURNING j.id, j.status, j.attempt_count, j.worker_id, j.started_at, j.run_at,
              j.last_error_message
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, 'failed',
           last_error_message || {RETRY_OR_FAIL_NOTE},
           attempt_count, worker_id, started_at, now(), now() - started_at
    FROM done
)
SELECT id, status, attempt_count, last_error_message FROM done
"""

# Redis lost its data: every job it held goes back to queued; the migrator (woken by
# the NOTIFY trigger) pushes them again at once.
REQUEUE_ALL_MIGRATED = """
UPDATE jobs SET status = 'queued', updated_at = now()
WHERE status = 'migrated_to_redis'
RETURNING id
"""

# Jobs migrated long ago: candidates for "popped but never claimed". The message is
# rebuilt exactly as the migrator built it, so the caller can look for it with LPOS.
STALE_MIGRATED = f"""
SELECT id, queue_name, priority, updated_at,
    {REDIS_MESSAGE} AS message
FROM jobs
WHERE status = 'migrated_to_redis' AND updated_at < now() - make_interval(secs => $1)
ORDER BY updated_at
LIMIT $2
"""

REQUEUE_MIGRATED = """
UPDATE jobs SET status = 'queued', updated_at = now()
FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, seen_updated_at)
WHERE jobs.id = t.id AND jobs.status = 'migrated_to_redis'
  AND jobs.updated_at = t.seen_updated_at
RETURNING jobs.id
"""


class RecoveryStore:
    """The recovery statements over an asyncpg pool (maintenance tasks use them)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def rescue_expired_leases(
        self, limit: int, retry_delays: Sequence[float]
    ) -> list[RescuedJob]:
        """Fail the attempts of running jobs whose lease expired; retry or fail them."""
        rows = await self.pool.fetch(RESCUE_EXPIRED_LEASES, limit, list(retry_delays))
        return [
            RescuedJob(
                id=r["id"],
                status=r["status"],
                attempt=r["attempt_count"],
                error=r["last_error_message"],
            )
            for r in rows
        ]

    async def requeue_all_migrated(self) -> int:
        """migrated_to_redis -> queued for every job (Redis lost its data)."""
        return len(await self.pool.fetch(REQUEUE_ALL_MIGRATED))

    async def stale_migrated(self, older_than: float, limit: int) -> list[StaleMigrated]:
        rows = await self.pool.fetch(STALE_MIGRATED, older_than, limit)
        return [StaleMigrated(**dict(r)) for r in rows]

    async def requeue_migrated(self, jobs: Sequence[StaleMigrated]) -> set[uuid.UUID]:
        """Queue these again unless they moved on since they were read."""
        if not jobs:
            return set()
        rows = await self.pool.fetch(
            REQUEUE_MIGRATED, [j.id for j in jobs], [j.updated_at for j in jobs]
        )
        return {r["id"] for r in rows}
