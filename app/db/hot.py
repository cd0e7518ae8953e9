"""The hot path: every status change between a job's insert and its outcome, one named
statement each, on asyncpg.

queued -> migrated_to_redis (the migrator's move) -> running (a worker's claim) ->
completed, or back to queued or on to failed after a failed attempt, or back to queued
when a worker shuts down. Each is a single conditional UPDATE (`WHERE ... AND status =
<expected>`), so two actors can never both win; outcomes are fenced by (worker_id,
attempt_count). The table of every transition is app.jobs.transitions.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.db.fragments import (
    JOB_COLUMNS,
    OUTCOME_INPUT,
    REDIS_MESSAGE,
    RETRY_OR_FAIL,
    RETRY_OR_FAIL_NOTE,
)
from app.db.pool import Connection
from app.db.rows import Claim, Failure, FailureResult, JobRow, MovedJob, Success, failure_results

GET_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"

ENSURE_QUEUES = """
INSERT INTO job_queues (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING
"""

ACTIVE_QUEUES = "SELECT name FROM job_queues WHERE is_active ORDER BY name"

# One statement locks a batch of due jobs of each queue named in $1: active queues with
# room in Redis and no limits. A paused or full queue is not named, so its backlog is
# never read; the join re-checks the migrator's cached list of queues. Rows another
# migrator holds are skipped; the statement marks the jobs migrated and builds the Redis
# message. `queued` jobs are due (future ones are `scheduled`); the run_at test only
# guards rows written before that rule. The caller pushes, then commits: a crash
# before the commit leaves the jobs queued (a pushed copy is then dropped by the claim).
# The move commits asynchronously too: lost in a crash, the jobs are queued again in
# PostgreSQL while their copies sit in Redis, and those copies are dropped by the claim
# (it needs migrated_to_redis); the next pass moves the jobs again.
# $3 (ms) bounds the idle time of the move's transaction (its Redis push): a migrator
# that hangs or vanishes between push and commit loses its session after that long, so
# its row locks cannot hold back the workers' claims for the life of a TCP connection.
MOVE_DUE_JOBS = f"""
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true),
           set_config('idle_in_transaction_session_timeout', $3::text, true)
), due AS (
    SELECT d.id
    FROM async_commit, unnest($1::text[]) AS q(name)
    JOIN job_queues jq ON jq.name = q.name AND jq.is_active AND jq.rate_limit IS NULL
        AND jq.max_running IS NULL AND jq.max_running_per_key IS NULL
    CROSS JOIN LATERAL (
        SELECT j.id FROM jobs j
        WHERE j.queue_name = q.name AND j.status = 'queued' AND j.run_at <= now()
        ORDER BY j.priority, j.created_at
        LIMIT $2
        FOR UPDATE OF j SKIP LOCKED
    ) d
)
UPDATE jobs SET status = 'migrated_to_redis', updated_at = now()
FROM due
WHERE jobs.id = due.id
RETURNING jobs.id, jobs.queue_name, jobs.priority, jobs.attempt_count, jobs.created_at,
    {REDIS_MESSAGE} AS message
"""

# Scheduled jobs whose run_at has come become queued (of any queue: a paused queue's
# stay queued there, unread), oldest run_at first, a batch at a time.
PROMOTE_DUE_JOBS = """
WITH due AS (
    SELECT id FROM jobs
    WHERE status = 'scheduled' AND run_at <= now()
    ORDER BY run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'queued', updated_at = now()
FROM due
WHERE jobs.id = due.id AND jobs.status = 'scheduled'
RETURNING jobs.id
"""

# Seconds until the next scheduled job is due (<= 0: one is due now); one index probe.
SECONDS_UNTIL_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM (run_at - now()))::float8
FROM jobs
WHERE status = 'scheduled'
ORDER BY run_at
LIMIT 1
"""

# The migrator pushes before it commits, so a worker can pop a copy while the job still
# reads `queued`. Locking the rows by id first waits for that commit and reads the status
# it wrote; a status test in the UPDATE's own WHERE would see the old row and lose the
# claim, leaving the job migrated_to_redis with no copy left. Ids are locked in order, so
# two workers holding copies of the same jobs cannot deadlock.
# A claim commits asynchronously (synchronous_commit off for its own transaction): if
# PostgreSQL crashes before the WAL is flushed, the claim is lost, the job is back to
# migrated_to_redis with no copy in Redis, and reconciliation queues it again: at least
# once still holds, and the claim saves a WAL flush on the path to the handler.
# The lock wait is bounded ($4, ms: lock_timeout): a claim that times out is given up and
# its copies are left to the in-flight recovery. Each claim draws a random fencing token.
CLAIM_JOBS = """
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true),
           set_config('lock_timeout', $4::text, true)
), locked AS (
    SELECT id, status FROM jobs, async_commit
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE OF jobs
)
UPDATE jobs SET
    status = 'running',
    worker_id = $2,
    attempt_count = jobs.attempt_count + 1,
    started_at = now(),
    lease_expires_at = now() + make_interval(secs => $3),
    lease_token = gen_random_uuid(),
    updated_at = now()
FROM locked
WHERE jobs.id = locked.id AND locked.status = 'migrated_to_redis'
RETURNING jobs.id, jobs.attempt_count, jobs.max_attempts, jobs.started_at, jobs.run_at,
    jobs.lease_token
"""

RENEW_LEASES = """
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[]) AND status = 'running' AND worker_id = $2
RETURNING id
"""

# Completion and its job_logs row in one statement: both happen only while the fence
# (status running, same worker, same attempt) holds, and no cancel was asked meanwhile
# (then the recorder ends the job cancelled instead: app.db.outcomes).
# Like every outcome, it finds its rows by primary key whatever the statistics say
# (fragments.OUTCOME_INPUT).
COMPLETE_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                $6::uuid[])
        AS t(id, attempt, started, finished, token)
), done AS (
    UPDATE jobs j SET
        status = 'completed',
        completed_at = i.finished,
        last_error_message = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $5
      AND j.attempt_count = i.attempt AND j.lease_token IS NOT DISTINCT FROM i.token
      AND j.cancel_requested_at IS NULL
    RETURNING j.id, i.attempt, i.started, i.finished
)
INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                      started_at, finished_at, duration)
SELECT id, 'completed', NULL, attempt, $5, started, finished, finished - started FROM done
RETURNING job_id
"""

FAIL_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                $5::text[], $6::float8[], $8::uuid[])
        AS t(id, attempt, started, finished, error, delay, token)
), done AS (
    UPDATE jobs j SET
        {RETRY_OR_FAIL},
        last_error_message = i.error,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $7
      AND j.attempt_count = i.attempt AND j.lease_token IS NOT DISTINCT FROM i.token
      AND j.cancel_requested_at IS NULL
    RETURNING j.id, j.status, j.run_at, i.attempt, i.started, i.finished, i.error
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, 'failed',
           error || {RETRY_OR_FAIL_NOTE},
           attempt, $7, started, finished, finished - started
    FROM done
)
SELECT id, status, run_at FROM done
"""

# Shutdown hands back a job it could not finish: queued again, the attempt not spent.
RELEASE_JOBS = f"""
WITH {OUTCOME_INPUT}
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS t(id, attempt, started)
), released AS (
    UPDATE jobs j SET
        status = 'queued',
        attempt_count = j.attempt_count - 1,
        run_at = now(),
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.running AND j.worker_id = $4
      AND j.attempt_count = i.attempt
    RETURNING j.id, i.attempt, i.started
)
INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                      started_at, finished_at, duration)
SELECT id, 'interrupted', 'worker shut down before the job finished; handed back',
       attempt, $4, started, now(), now() - started
FROM released
RETURNING job_id
"""


def moved_job(r: Mapping[str, Any]) -> MovedJob:
    """A row RETURNed by a move statement."""
    return MovedJob(
        id=r["id"],
        queue_name=r["queue_name"],
        priority=r["priority"],
        attempt_count=r["attempt_count"],
        created_at=r["created_at"],
        message=r["message"],
    )


class JobStore:
    """The hot path's statements over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get_job(self, job_id: uuid.UUID) -> JobRow | None:
        row = await self.pool.fetchrow(GET_JOB, job_id)
        return JobRow(**dict(row)) if row is not None else None

    async def ensure_queues(self, names: Sequence[str]) -> None:
        """Create job_queues rows for these names where missing."""
        if names:
            await self.pool.execute(ENSURE_QUEUES, list(names))

    async def active_queues(self) -> list[str]:
        return [r["name"] for r in await self.pool.fetch(ACTIVE_QUEUES)]

    @staticmethod
    async def move_due_jobs(
        conn: Connection, queues: Sequence[str], limit: int, idle_timeout: float = 10.0
    ) -> list[MovedJob]:
        """Lock and mark up to `limit` due jobs of each of these queues, inside the
        caller's open transaction, which PostgreSQL ends if it stays idle longer than
        `idle_timeout` seconds (a migrator that hangs between its push and its commit)."""
        rows = await conn.fetch(
            MOVE_DUE_JOBS, list(queues), limit, str(max(1, round(idle_timeout * 1000)))
        )
        return [moved_job(r) for r in rows]

    async def promote_due_jobs(self, limit: int) -> int:
        """scheduled -> queued for up to `limit` jobs whose run_at has come."""
        return len(await self.pool.fetch(PROMOTE_DUE_JOBS, limit))

    async def seconds_until_next_due(self) -> float | None:
        """Seconds until the next scheduled job is due; None if there is none."""
        value = await self.pool.fetchval(SECONDS_UNTIL_NEXT_DUE)
        return None if value is None else float(value)

    async def claim(
        self,
        job_ids: Sequence[uuid.UUID],
        worker_id: str,
        lease_seconds: float,
        lock_timeout: float = 10.0,
    ) -> list[Claim]:
        """migrated_to_redis -> running for these ids; only the won claims are returned.
        Raises asyncpg.LockNotAvailableError after waiting `lock_timeout` seconds on a
        row lock (a migrator's move that does not commit)."""
        rows = await self.pool.fetch(
            CLAIM_JOBS,
            list(job_ids),
            worker_id,
            lease_seconds,
            str(max(1, round(lock_timeout * 1000))),
        )
        return [
            Claim(
                id=r["id"],
                attempt=r["attempt_count"],
                max_attempts=r["max_attempts"],
                started_at=r["started_at"],
                run_at=r["run_at"],
                token=r["lease_token"],
            )
            for r in rows
        ]

    async def renew_leases(
        self, job_ids: Sequence[uuid.UUID], worker_id: str, lease_seconds: float
    ) -> set[uuid.UUID]:
        """Extend the leases this worker still holds; returns the ids it still holds."""
        rows = await self.pool.fetch(RENEW_LEASES, list(job_ids), worker_id, lease_seconds)
        return {r["id"] for r in rows}

    async def complete(self, worker_id: str, done: Sequence[Success]) -> set[uuid.UUID]:
        """Record successes whose fence still holds; returns the ids that applied."""
        if not done:
            return set()
        rows = await self.pool.fetch(
            COMPLETE_JOBS,
            [d.job_id for d in done],
            [d.attempt for d in done],
            [d.started_at for d in done],
            [d.finished_at for d in done],
            worker_id,
            [d.token for d in done],
        )
        return {r["job_id"] for r in rows}

    async def fail(self, worker_id: str, failed: Sequence[Failure]) -> list[FailureResult]:
        """Record failed attempts whose fence holds: retry later via run_at, or fail."""
        if not failed:
            return []
        rows = await self.pool.fetch(
            FAIL_JOBS,
            [f.job_id for f in failed],
            [f.attempt for f in failed],
            [f.started_at for f in failed],
            [f.finished_at for f in failed],
            [f.error for f in failed],
            [f.retry_delay for f in failed],
            worker_id,
            [f.token for f in failed],
        )
        return failure_results(rows)

    async def release(
        self, worker_id: str, jobs: Sequence[tuple[uuid.UUID, int, datetime]]
    ) -> set[uuid.UUID]:
        """Hand back running jobs (id, attempt, started) without spending their attempt."""
        if not jobs:
            return set()
        rows = await self.pool.fetch(
            RELEASE_JOBS,
            [j[0] for j in jobs],
            [j[1] for j in jobs],
            [j[2] for j in jobs],
            worker_id,
        )
        return {r["job_id"] for r in rows}
