"""The handler outcomes beyond success and a failed attempt: a permanent failure, a
snooze, and a job stopped because it was cancelled. Each is one statement, fenced like
FAIL_JOBS by (status running, worker_id, attempt_count), that changes the job and writes
its job_logs row together, so an outcome of a worker that lost its lease (or of a job
cancelled meanwhile) changes nothing. Every outcome but the cancel itself also needs
that no cancel was asked: an outcome reported after the request is discarded, and the
recorder ends the job `cancelled` instead. Their input is OUTCOME_INPUT
(app.db.fragments), so that the rows are found by primary key whatever the statistics
say.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.db.fragments import OUTCOME_INPUT
from app.db.rows import CancelledRun, FailureResult, PermanentFailed, Snoozed, failure_results

# running -> failed whatever attempts are left.
PERMANENT_FAIL_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                $5::text[], $7::uuid[])
        AS t(id, attempt, started, finished, error, token)
), done AS (
    UPDATE jobs j SET
        status = 'failed',
        failed_at = now(),
        last_error_message = i.error,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $6
      AND j.attempt_count = i.attempt AND j.lease_token IS NOT DISTINCT FROM i.token
      AND j.cancel_requested_at IS NULL
    RETURNING j.id, j.status, j.run_at, i.attempt, i.started, i.finished, i.error
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, 'failed', error || ' (permanent failure: no more attempts)',
           attempt, $6, started, finished, finished - started
    FROM done
)
SELECT id, status, run_at FROM done
"""

# running -> queued after `seconds`, the attempt given back (attempt_count - 1) and the
# snooze counted; a job already snoozed $7 times (MAX_SNOOZES) is failed instead.
# Every CASE reads the row as it was before this UPDATE.
SNOOZE_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                $5::float8[], $6::text[], $9::uuid[])
        AS t(id, attempt, started, finished, seconds, reason, token)
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.snooze_count >= $7 THEN 'failed' ELSE 'queued' END,
        attempt_count = CASE WHEN j.snooze_count >= $7 THEN j.attempt_count
                             ELSE j.attempt_count - 1 END,
        snooze_count = CASE WHEN j.snooze_count >= $7 THEN j.snooze_count
                            ELSE j.snooze_count + 1 END,
        run_at = CASE WHEN j.snooze_count >= $7 THEN j.run_at
                      ELSE now() + make_interval(secs => i.seconds) END,
        failed_at = CASE WHEN j.snooze_count >= $7 THEN now() END,
        last_error_message = CASE WHEN j.snooze_count >= $7
            THEN 'snoozed more than ' || $7 || ' times (MAX_SNOOZES): ' || i.reason
            ELSE j.last_error_message END,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $8
      AND j.attempt_count = i.attempt AND j.lease_token IS NOT DISTINCT FROM i.token
      AND j.cancel_requested_at IS NULL
    RETURNING j.id, j.status, j.run_at, j.snooze_count, j.last_error_message,
              i.attempt, i.started, i.finished, i.seconds, i.reason
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id,
           CASE WHEN status = 'failed' THEN 'failed' ELSE 'snoozed' END,
           CASE WHEN status = 'failed' THEN last_error_message
                ELSE 'snoozed for ' || seconds || 's (' || snooze_count || ' of '
                     || $7 || '): ' || reason || ' (again at ' || run_at::text || ')' END,
           attempt, $8, started, finished, finished - started
    FROM done
)
SELECT id, status, run_at FROM done
"""

# running -> cancelled: the worker stopped the handler because a cancel was asked (the
# request is on the row); the log row names who asked, and why.
CANCEL_RUNNING_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                $6::uuid[])
        AS t(id, attempt, started, finished, token)
), done AS (
    UPDATE jobs j SET status = 'cancelled', lease_expires_at = NULL, updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $5
      AND j.attempt_count = i.attempt AND j.lease_token IS NOT DISTINCT FROM i.token
      AND j.cancel_requested_at IS NOT NULL
    RETURNING j.id, j.status, j.run_at, j.cancel_requested_by, j.cancel_reason,
              i.attempt, i.started, i.finished
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id, actor,
                          started_at, finished_at, duration)
    SELECT id, 'cancelled', coalesce(cancel_reason, 'cancelled') || ' (stopped while running)',
           attempt, $5, cancel_requested_by, started, finished, finished - started
    FROM done
)
SELECT id, status, run_at FROM done
"""


class OutcomeStore:
    """Permanent failures and snoozes, recorded by the worker's outcome recorder."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def fail_permanently(
        self, worker_id: str, failed: Sequence[PermanentFailed]
    ) -> list[FailureResult]:
        """running -> failed for the outcomes whose fence holds."""
        if not failed:
            return []
        rows = await self.pool.fetch(
            PERMANENT_FAIL_JOBS,
            [f.job_id for f in failed],
            [f.attempt for f in failed],
            [f.started_at for f in failed],
            [f.finished_at for f in failed],
            [f.error for f in failed],
            worker_id,
            [f.token for f in failed],
        )
        return failure_results(rows)

    async def snooze(
        self, worker_id: str, snoozed: Sequence[Snoozed], max_snoozes: int
    ) -> list[FailureResult]:
        """running -> queued after the snooze (or failed past `max_snoozes`) for the
        outcomes whose fence holds."""
        if not snoozed:
            return []
        rows = await self.pool.fetch(
            SNOOZE_JOBS,
            [s.job_id for s in snoozed],
            [s.attempt for s in snoozed],
            [s.started_at for s in snoozed],
            [s.finished_at for s in snoozed],
            [s.seconds for s in snoozed],
            [s.reason for s in snoozed],
            max_snoozes,
            worker_id,
            [s.token for s in snoozed],
        )
        return failure_results(rows)

    async def cancel_running(
        self, worker_id: str, stopped: Sequence[CancelledRun]
    ) -> list[FailureResult]:
        """running -> cancelled for the stopped jobs whose fence holds."""
        if not stopped:
            return []
        rows = await self.pool.fetch(
            CANCEL_RUNNING_JOBS,
            [s.job_id for s in stopped],
            [s.attempt for s in stopped],
            [s.started_at for s in stopped],
            [s.finished_at for s in stopped],
            worker_id,
            [s.token for s in stopped],
        )
        return failure_results(rows)
