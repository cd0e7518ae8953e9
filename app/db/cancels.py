"""Cancelling a running job: the operator's request, recorded on the row, and what the
worker reads of it. The worker itself ends the job (app.db.outcomes CANCEL_RUNNING_JOBS),
since only it can stop the handler; a job whose worker died after the request is ended
by maintenance instead of being run again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from app.db.rows import CancelRequest

# The request (status unchanged: the worker still runs the job), with a job_logs row
# naming the actor and the reason. A second request keeps the first one's time.
REQUEST_CANCEL = """
WITH done AS (
    UPDATE jobs SET
        cancel_requested_at = COALESCE(cancel_requested_at, now()),
        cancel_requested_by = $3,
        cancel_reason = $2,
        updated_at = now()
    WHERE id = $1 AND status = 'running'
    RETURNING id, queue_name, status, attempt_count, worker_id
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, actor,
                          started_at, finished_at, duration)
    SELECT id, 'cancel_requested', $2, attempt_count, $3, now(), now(), interval '0'
    FROM done
)
SELECT id, queue_name, status, attempt_count, worker_id FROM done
"""

# Which of a worker's running jobs were asked to stop (the heartbeat's fallback for a
# missed pub/sub message).
CANCELS_REQUESTED = """
SELECT id FROM jobs
WHERE id = ANY($1::uuid[]) AND status = 'running' AND worker_id = $2
  AND cancel_requested_at IS NOT NULL
"""

# Jobs asked to stop that no worker will stop: running with an expired lease (the worker
# died after the request), or handed back to the queue before the worker saw it. They
# end cancelled rather than run again. Bounded by $1, like every maintenance pass, and
# read through idx_jobs_cancel_pending (only jobs with a pending request).
CANCEL_ABANDONED = """
WITH target AS (
    SELECT id FROM jobs
    WHERE cancel_requested_at IS NOT NULL
      AND status IN ('queued', 'migrated_to_redis', 'running')
      AND (status <> 'running' OR lease_expires_at < now())
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE jobs j SET status = 'cancelled', lease_expires_at = NULL, updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.cancel_requested_at IS NOT NULL
      AND (j.status IN ('queued', 'migrated_to_redis')
           OR (j.status = 'running' AND j.lease_expires_at < now()))
    RETURNING j.id, j.attempt_count, j.cancel_requested_by, j.cancel_reason
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, actor,
                          started_at, finished_at, duration)
    SELECT id, 'cancelled',
           coalesce(cancel_reason, 'cancelled') || ' (its worker stopped before it could)',
           attempt_count, cancel_requested_by, now(), now(), interval '0'
    FROM done
)
SELECT id FROM done
"""


class CancelStore:
    """Cancel requests of running jobs, over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def request(self, job_id: uuid.UUID, *, reason: str, actor: str) -> CancelRequest | None:
        """Record a cancel of a running job; None if it is not running."""
        row = await self.pool.fetchrow(REQUEST_CANCEL, job_id, reason, actor)
        return CancelRequest(**dict(row)) if row is not None else None

    async def requested(self, job_ids: Sequence[uuid.UUID], worker_id: str) -> set[uuid.UUID]:
        """Which of this worker's running jobs were asked to stop."""
        if not job_ids:
            return set()
        rows = await self.pool.fetch(CANCELS_REQUESTED, list(job_ids), worker_id)
        return {r["id"] for r in rows}

    async def cancel_abandoned(self, limit: int) -> int:
        """End the cancel-requested jobs no worker will stop; how many."""
        return len(await self.pool.fetch(CANCEL_ABANDONED, limit))
