"""Operators' actions on jobs: replay and discard a dead letter, cancel a job that has
not started, replay a queue's dead letters in batches.

Each is one statement: lock the row if it is in the expected state, change it, and log
the change with the actor and the reason (`LOG_ACTION`), so an operator and a worker can
never both win: whichever commits second finds the row changed. attempt_number in the
log is the job's attempt count at the time of the action.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from app.db.fragments import LOG_ACTION
from app.db.rows import ActionRefused, ActionResult

# failed -> queued with the attempts reset and errors cleared; history stays in job_logs.
# The UPDATE of both replays, from the locked rows of `target`.
_REPLAY = """UPDATE jobs j SET
        status = 'queued', attempt_count = 0, snooze_count = 0, last_error_message = NULL,
        failed_at = NULL, run_at = now(), worker_id = NULL, lease_expires_at = NULL,
        cancel_requested_at = NULL, cancel_requested_by = NULL, cancel_reason = NULL,
        updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status = 'failed'
    RETURNING j.id, j.queue_name, j.status, j.attempt_count,
              t.attempt_count AS previous_attempts, 'replayed' AS action"""

REPLAY_JOB = f"""
WITH target AS (
    SELECT id, attempt_count FROM jobs WHERE id = $1 AND status = 'failed' FOR UPDATE
), done AS (
    {_REPLAY}
), {LOG_ACTION}
"""

# Bulk replay: failed jobs of queue $1 (failed since $4, if given, and before $5, when the
# request began, so jobs failing meanwhile are not swept in), at most $6 at a time.
REPLAY_DEAD_LETTERS = f"""
WITH target AS (
    SELECT id, attempt_count FROM jobs
    WHERE status = 'failed' AND queue_name = $1
      AND ($4::timestamptz IS NULL OR failed_at >= $4) AND failed_at <= $5
    ORDER BY failed_at
    LIMIT $6
    FOR UPDATE SKIP LOCKED
), done AS (
    {_REPLAY}
), {LOG_ACTION}
"""

# failed -> discarded: kept for the record until retention deletes it.
DISCARD_JOB = f"""
WITH target AS (
    SELECT id, attempt_count FROM jobs WHERE id = $1 AND status = 'failed' FOR UPDATE
), done AS (
    UPDATE jobs j SET status = 'discarded', updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status = 'failed'
    RETURNING j.id, j.queue_name, j.status, j.attempt_count,
              t.attempt_count AS previous_attempts, 'discarded' AS action
), {LOG_ACTION}
"""

# A worker's claim (migrated_to_redis -> running) and a cancel lock the same row: the
# second to commit finds the status changed and does nothing.
CANCEL_JOB = f"""
WITH target AS (
    SELECT id, attempt_count FROM jobs
    WHERE id = $1 AND status IN ('scheduled', 'queued', 'migrated_to_redis') FOR UPDATE
), done AS (
    UPDATE jobs j SET status = 'cancelled', lease_expires_at = NULL, updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status IN ('scheduled', 'queued', 'migrated_to_redis')
    RETURNING j.id, j.queue_name, j.status, j.attempt_count,
              t.attempt_count AS previous_attempts, 'cancelled' AS action
), {LOG_ACTION}
"""

JOB_STATUS = "SELECT status FROM jobs WHERE id = $1"


def _action_result(row: Any) -> ActionResult:
    return ActionResult(
        id=row["id"],
        queue_name=row["queue_name"],
        status=row["status"],
        attempt_count=row["attempt_count"],
    )


class ActionStore:
    """The operators' state changes, over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _act(
        self, statement: str, job_id: uuid.UUID, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(statement, job_id, reason, actor)
            if row is not None:
                return _action_result(row)
            return ActionRefused(await conn.fetchval(JOB_STATUS, job_id))

    async def replay(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """failed -> queued with attempts reset and errors cleared (history kept)."""
        return await self._act(REPLAY_JOB, job_id, reason, actor)

    async def discard(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """failed -> discarded (the row and its logs stay until retention)."""
        return await self._act(DISCARD_JOB, job_id, reason, actor)

    async def cancel(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """queued | migrated_to_redis -> cancelled."""
        return await self._act(CANCEL_JOB, job_id, reason, actor)

    async def replay_dead_letters_batch(
        self,
        queue_name: str,
        failed_since: datetime | None,
        failed_until: datetime,
        limit: int,
        *,
        reason: str,
        actor: str,
    ) -> list[ActionResult]:
        """Replay up to `limit` failed jobs of a queue in one transaction."""
        rows = await self.pool.fetch(
            REPLAY_DEAD_LETTERS, queue_name, reason, actor, failed_since, failed_until, limit
        )
        return [_action_result(r) for r in rows]
