"""What operators read: job and dead-letter listings (newest first, keyset pagination
on the sort key), a job's timeline, counts by status and the age of the oldest due job.

Nothing here scans `jobs`: listings walk an index in order and stop at the page's end,
counts read counters (terminal statuses) or partial indexes (live ones)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.db.counts import count_jobs
from app.db.fragments import JOB_COLUMNS
from app.db.rows import JobCounts, JobLogRow, JobRow
from app.jobs.transitions import JOB_STATUSES

# The listings are built per combination of filters (a handful of fixed texts, each
# prepared once per connection) with the status as a literal, and planned for their
# values at every call (force_custom_plan): a prepared statement gets a generic plan
# after five calls, and a generic plan can use neither a partial index for a status
# parameter nor the selectivity of a rare queue, and reads the whole table backwards
# (445 ms instead of 0.1 ms on 201,000 rows). Planning costs ~0.1 ms per listing.
# Jobs are listed newest first by id (UUIDv7: time-ordered), keyset-paginated on it.

_IN_FLIGHT = ("migrated_to_redis", "running")

CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


def _status_literal(status: str) -> str:
    if status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return f"'{status}'"


class _Filters:
    """WHERE conditions and their parameters, numbered as they are added ($1 is the
    limit)."""

    def __init__(self, limit: int) -> None:
        self.conditions: list[str] = []
        self.args: list[object] = [limit]

    def add(self, condition: str, *values: object) -> None:
        """`condition` with `{}` for each value, in order."""
        numbers = []
        for value in values:
            self.args.append(value)
            numbers.append(f"${len(self.args)}")
        self.conditions.append(condition.format(*numbers))

    def where(self, *extra: str) -> str:
        conditions = [*self.conditions, *extra]
        return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def list_dead_letters_sql(
    *,
    queue_name: str | None,
    failed_since: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[str, list[object]]:
    """GET /dead-letter: failed jobs, newest failure first (idx_jobs_dead_letter)."""
    f = _Filters(limit)
    f.add("status = 'failed'")
    if queue_name is not None:
        f.add("queue_name = {}", queue_name)
    if failed_since is not None:
        f.add("failed_at >= {}", failed_since)
    if after is not None:
        f.add("(failed_at, id) < ({}, {})", after[0], after[1])
    statement = (
        f"SELECT {JOB_COLUMNS} FROM jobs{f.where()} ORDER BY failed_at DESC, id DESC LIMIT $1"
    )
    return statement, f.args


def list_jobs_sql(
    *,
    queue_name: str | None,
    status: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after_id: uuid.UUID | None,
    limit: int,
) -> tuple[str, list[object]]:
    """GET /jobs: newest first by id (time-ordered), after the cursor's id."""
    f = _Filters(limit)
    if created_from is not None:
        f.add("created_at >= {}", created_from)
    if created_to is not None:
        f.add("created_at < {}", created_to)
    if after_id is not None:
        f.add("id < {}", after_id)
    if queue_name is not None:
        f.add("queue_name = {}", queue_name)
    if status is not None:
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        f.add(f"status = '{status}'")
    if queue_name is None or status is not None:
        return _select_newest(f.where()), f.args
    # One queue, any status: its jobs at rest from idx_jobs_at_rest_by_queue and its
    # few in-flight jobs from their own partial indexes, merged.
    inflight = ", ".join(f"'{s}'" for s in _IN_FLIGHT)
    branches = [_select_newest(f.where(f"status NOT IN ({inflight})"))]
    branches += [_select_newest(f.where(f"status = '{s}'")) for s in _IN_FLIGHT]
    union = " UNION ALL ".join(f"({b})" for b in branches)
    return f"SELECT * FROM ({union}) AS j ORDER BY id DESC LIMIT $1", f.args


def _select_newest(where: str) -> str:
    return f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY id DESC LIMIT $1"


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
        statement, args = list_dead_letters_sql(
            queue_name=queue_name, failed_since=failed_since, after=after, limit=limit
        )
        return [JobRow(**dict(r)) for r in await self._fetch_planned(statement, args)]

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
        """Jobs newest first; `after` is the (created_at, id) of the previous page's last
        row (ids are time-ordered: the id alone is the key)."""
        statement, args = list_jobs_sql(
            queue_name=queue_name,
            status=status,
            created_from=created_from,
            created_to=created_to,
            after_id=after[1] if after else None,
            limit=limit,
        )
        return [JobRow(**dict(r)) for r in await self._fetch_planned(statement, args)]

    async def _fetch_planned(self, statement: str, args: list[object]) -> list[asyncpg.Record]:
        """Run a listing with a plan made for its values (see above)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(CUSTOM_PLANS)
            return await conn.fetch(statement, *args)

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
        """Counts by queue and status (see app.db.counts)."""
        async with self.pool.acquire() as conn:
            return await count_jobs(conn, timeout=timeout, queue_names=queue_names)
