"""The statements of queue limits: which queues may move, how much a limited queue may
move now, and its moves.

A limited queue (rate_limit, max_running or max_running_per_key set) is moved in its
own transaction that first locks its job_queues row (FOR NO KEY UPDATE: inserts, which
take FOR KEY SHARE through the foreign key, are not blocked), so two migrators never
spend the same budget. Its moves mark the jobs `limited`; only those enter the partial
indexes that count its jobs in flight (moved or running) and its recent starts.

The budget holds at every instant: jobs in flight <= max_running, and starts in the
last rate_period seconds + jobs moved but not yet started <= rate_limit. A moved job
starts later than its move, so counting it from its move until its start (and its start
for a period after) bounds the starts in any window of rate_period seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.db.fragments import REDIS_MESSAGE
from app.db.hot import moved_job
from app.db.pool import Connection
from app.db.rows import MovedJob

# Seconds a start is counted beyond rate_period (see QUEUE_USAGE).
START_MARGIN = 0.02

# Active queues (paused ones are never read) with their limits.
ACTIVE_QUEUE_LIMITS = """
SELECT name, rate_limit, rate_period, max_running, max_running_per_key
FROM job_queues WHERE is_active ORDER BY name
"""

# Held until the move commits; the limits are read again under the lock.
LOCK_QUEUE = """
SELECT is_active, rate_limit, rate_period, max_running, max_running_per_key
FROM job_queues WHERE name = $1
FOR NO KEY UPDATE
"""

# A limited queue's use of its limits, from its `limited` jobs (partial indexes, bounded
# by the limits themselves): jobs in flight, of which moved but not started, starts in
# the last $2 seconds, seconds until the oldest of those leaves the window, and whether
# any job is queued (one probe of idx_jobs_queue_due). The caller's window $2 is the
# period plus START_MARGIN: started_at is the claim's time, and the handler starts a
# little later; the margin absorbs that delay.
QUEUE_USAGE = """
SELECT
    EXISTS (SELECT 1 FROM jobs WHERE queue_name = $1 AND status = 'queued') AS backlog,
    (SELECT count(*) FROM jobs
     WHERE limited AND queue_name = $1 AND status IN ('migrated_to_redis', 'running'))
        AS in_flight,
    (SELECT count(*) FROM jobs
     WHERE limited AND queue_name = $1 AND status = 'migrated_to_redis') AS waiting,
    s.started,
    EXTRACT(EPOCH FROM s.oldest + make_interval(secs => $2) - now())::float8 AS frees_in
FROM (
    SELECT count(*) AS started, min(started_at) AS oldest FROM jobs
    WHERE limited AND queue_name = $1 AND started_at > now() - make_interval(secs => $2)
) s
"""

_MOVE_TAIL = f"""
UPDATE jobs SET status = 'migrated_to_redis', limited = true, updated_at = now()
FROM locked
WHERE jobs.id = locked.id
RETURNING jobs.id, jobs.queue_name, jobs.priority, jobs.attempt_count, jobs.created_at,
    {REDIS_MESSAGE} AS message
"""

# Up to $2 due jobs of queue $1, in (priority, created_at) order, marked limited.
MOVE_LIMITED_JOBS = f"""
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
), locked AS (
    SELECT j.id FROM jobs j, async_commit
    WHERE j.queue_name = $1 AND j.status = 'queued' AND j.run_at <= now()
    ORDER BY j.priority, j.created_at
    LIMIT $2
    FOR UPDATE OF j SKIP LOCKED
)
{_MOVE_TAIL}
"""

# The same in a queue with a per-key limit $3: each concurrency_key with queued jobs
# (found by a skip scan of idx_jobs_queued_keys, one probe per key) contributes at most
# $3 minus its jobs in flight; jobs without a key are limited by the queue's limits only.
# Of those candidates, the first $2 in (priority, created_at) order are moved.
MOVE_KEYED_JOBS = f"""
WITH RECURSIVE async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
), keys(k) AS (
    (SELECT concurrency_key FROM jobs
     WHERE queue_name = $1 AND status = 'queued' AND concurrency_key IS NOT NULL
     ORDER BY concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT concurrency_key FROM jobs
            WHERE queue_name = $1 AND status = 'queued' AND concurrency_key > keys.k
            ORDER BY concurrency_key LIMIT 1)
    FROM keys WHERE keys.k IS NOT NULL
), busy AS (
    SELECT concurrency_key AS k, count(*) AS n FROM jobs
    WHERE limited AND queue_name = $1 AND status IN ('migrated_to_redis', 'running')
      AND concurrency_key IS NOT NULL
    GROUP BY concurrency_key
), candidates AS (
    SELECT c.id, c.priority, c.created_at
    FROM keys LEFT JOIN busy ON busy.k = keys.k
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.created_at FROM jobs j
        WHERE j.queue_name = $1 AND j.status = 'queued' AND j.concurrency_key = keys.k
        ORDER BY j.priority, j.created_at
        LIMIT GREATEST(0, $3 - COALESCE(busy.n, 0))
    ) c
    WHERE keys.k IS NOT NULL
    UNION ALL
    (SELECT j.id, j.priority, j.created_at FROM jobs j
     WHERE j.queue_name = $1 AND j.status = 'queued' AND j.concurrency_key IS NULL
     ORDER BY j.priority, j.created_at
     LIMIT $2)
), chosen AS (
    SELECT id FROM candidates ORDER BY priority, created_at LIMIT $2
), locked AS (
    SELECT j.id FROM jobs j, async_commit
    WHERE j.id IN (SELECT id FROM chosen) AND j.status = 'queued' AND j.run_at <= now()
    FOR UPDATE OF j SKIP LOCKED
)
{_MOVE_TAIL}
"""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits; None: no such limit."""

    name: str
    rate_limit: int | None = None
    rate_period: float = 1.0
    max_running: int | None = None
    max_running_per_key: int | None = None

    @property
    def limited(self) -> bool:
        return (
            self.rate_limit is not None
            or self.max_running is not None
            or self.max_running_per_key is not None
        )


@dataclass(frozen=True, slots=True)
class QueueUsage:
    backlog: bool  # some job is queued (due)
    in_flight: int  # moved or running
    waiting: int  # moved, not yet started
    started: int  # starts in the last rate_period seconds
    frees_in: float | None  # seconds until the oldest of those leaves the window


class LimitStore:
    """The limits' statements over an asyncpg pool (the migrator uses them)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def active_queues(self) -> list[QueueLimits]:
        """Active queues and their limits (paused queues are left out)."""
        return [QueueLimits(**dict(r)) for r in await self.pool.fetch(ACTIVE_QUEUE_LIMITS)]

    @staticmethod
    async def lock_queue(conn: Connection, name: str) -> QueueLimits | None:
        """Lock the queue's row until the caller's transaction ends; its limits as they
        are now, or None if it is paused or gone."""
        row = await conn.fetchrow(LOCK_QUEUE, name)
        if row is None or not row["is_active"]:
            return None
        fields = dict(row)
        del fields["is_active"]
        return QueueLimits(name=name, **fields)

    @staticmethod
    async def usage(conn: Connection, limits: QueueLimits) -> QueueUsage:
        window = limits.rate_period + START_MARGIN
        row = await conn.fetchrow(QUEUE_USAGE, limits.name, window)
        assert row is not None
        frees_in = row["frees_in"]
        return QueueUsage(
            backlog=row["backlog"],
            in_flight=row["in_flight"],
            waiting=row["waiting"],
            started=row["started"],
            frees_in=None if frees_in is None else float(frees_in),
        )

    @staticmethod
    async def move(conn: Connection, limits: QueueLimits, limit: int) -> list[MovedJob]:
        """Move up to `limit` due jobs of this limited queue, honouring its per-key limit."""
        if limits.max_running_per_key is None:
            rows = await conn.fetch(MOVE_LIMITED_JOBS, limits.name, limit)
        else:
            rows = await conn.fetch(MOVE_KEYED_JOBS, limits.name, limit, limits.max_running_per_key)
        return [moved_job(r) for r in rows]


def budget(limits: QueueLimits, usage: QueueUsage, batch: int) -> int:
    """How many jobs of this queue may be moved now (at most `batch`)."""
    n = batch
    if limits.max_running is not None:
        n = min(n, limits.max_running - usage.in_flight)
    if limits.rate_limit is not None:
        n = min(n, limits.rate_limit - usage.started - usage.waiting)
    return max(0, n)
