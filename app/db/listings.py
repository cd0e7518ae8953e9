"""What operators read: job and dead-letter listings (newest first, keyset pagination
on the sort key), a job's timeline, counts by status and the age of the oldest due job."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.db.fragments import JOB_COLUMNS
from app.db.rows import JobCounts, JobLogRow, JobRow

LIST_DEAD_LETTERS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE status = 'failed'
  AND ($1::text IS NULL OR queue_name = $1)
  AND ($2::timestamptz IS NULL OR failed_at >= $2)
  AND ($3::timestamptz IS NULL OR (failed_at, id) < ($3, $4::uuid))
ORDER BY failed_at DESC, id DESC
LIMIT $5
"""

LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE ($1::text IS NULL OR queue_name = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3)
  AND ($4::timestamptz IS NULL OR created_at < $4)
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $7
"""

LIST_JOB_LOGS = """
SELECT id, job_id, status, log_message, attempt_number, worker_id, actor,
       started_at, finished_at, EXTRACT(EPOCH FROM duration)::float8 AS duration_seconds,
       created_at
FROM job_logs
WHERE job_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id
LIMIT $4
"""

JOB_EXISTS = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)"

# Seconds since the oldest job of each queue that is due and not started: queued with
# run_at passed (idx_jobs_queue_migration), or waiting in Redis (the hot window: bounded
# by REDIS_QUEUE_MAX_DEPTH per queue).
OLDEST_DUE_AGES = """
SELECT q.name,
       EXTRACT(EPOCH FROM now() - LEAST(
           (SELECT j.run_at FROM jobs j
            WHERE j.queue_name = q.name AND j.status = 'queued' AND j.run_at <= now()
            ORDER BY j.run_at LIMIT 1),
           (SELECT min(j.run_at) FROM jobs j
            WHERE j.queue_name = q.name AND j.status = 'migrated_to_redis')
       ))::float8 AS age
FROM unnest($1::text[]) AS q(name)
"""


# Exact counts; run under a statement timeout (a count of a huge table is slow).
COUNT_JOBS = """
SELECT queue_name, status, count(*) AS n FROM jobs
WHERE ($1::text[] IS NULL OR queue_name = ANY($1::text[]))
GROUP BY queue_name, status
"""

# The planner's estimate of jobs by status (as of the last ANALYZE): instant at any size.
ESTIMATE_JOBS_BY_STATUS = """
SELECT s.status, round(s.freq * greatest(c.reltuples, 0))::bigint AS n
FROM pg_class c
JOIN pg_stats ps ON ps.schemaname = current_schema() AND ps.tablename = 'jobs'
                AND ps.attname = 'status'
CROSS JOIN LATERAL unnest(ps.most_common_vals::text::text[], ps.most_common_freqs)
     AS s(status, freq)
WHERE c.oid = 'jobs'::regclass
"""

SET_LOCAL_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"


class ListingStore:
    """Listings and counts over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_dead_letters(
        self,
        *,
        queue_name: str | None,
        failed_since: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobRow]:
        rows = await self.pool.fetch(
            LIST_DEAD_LETTERS,
            queue_name,
            failed_since,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [JobRow(**dict(r)) for r in rows]

    async def list_jobs(
        self,
        *,
        queue_name: str | None,
        status: str | None,
        created_from: datetime | None,
        created_to: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobRow]:
        rows = await self.pool.fetch(
            LIST_JOBS,
            queue_name,
            status,
            created_from,
            created_to,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [JobRow(**dict(r)) for r in rows]

    async def list_job_logs(
        self, job_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[JobLogRow] | None:
        """The job's log rows, oldest first; None if there is no such job."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                LIST_JOB_LOGS,
                job_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
            if not rows and not await conn.fetchval(JOB_EXISTS, job_id):
                return None
        return [JobLogRow(**dict(r)) for r in rows]

    async def oldest_due_ages(self, names: Sequence[str]) -> dict[str, float | None]:
        rows = await self.pool.fetch(OLDEST_DUE_AGES, list(names))
        return {r["name"]: r["age"] for r in rows}

    async def count_jobs(
        self, *, timeout: float, queue_names: Sequence[str] | None = None
    ) -> JobCounts:
        """Exact counts by queue and status, or the planner's estimates by status if the
        count takes longer than `timeout` seconds."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        SET_LOCAL_STATEMENT_TIMEOUT, f"{max(1, int(timeout * 1000))}"
                    )
                    rows = await conn.fetch(
                        COUNT_JOBS, list(queue_names) if queue_names is not None else None
                    )
            except asyncpg.QueryCanceledError:
                estimates = await conn.fetch(ESTIMATE_JOBS_BY_STATUS)
                return JobCounts(
                    by_queue={},
                    by_status={r["status"]: int(r["n"]) for r in estimates},
                    exact=False,
                )
        by_queue: dict[str, dict[str, int]] = {}
        by_status: dict[str, int] = {}
        for r in rows:
            by_queue.setdefault(r["queue_name"], {})[r["status"]] = int(r["n"])
            by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        return JobCounts(by_queue=by_queue, by_status=by_status, exact=True)
