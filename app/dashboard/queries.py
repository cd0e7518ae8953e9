"""The dashboard's own SQL: counts that stay cheap on a table of millions.

No statement here counts a whole table. Each count reads an index range and stops after
a cap, so a page costs the same with a thousand jobs or ten million; a figure that hit
its cap is shown as "cap+". The statements the API already has (listings, actions,
queue settings) are reused from the stores of app.db through app.dashboard.data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from app.db.counts import ESTIMATE_JOBS_BY_STATUS

# A queue's backlog is counted exactly up to this many jobs; above it, "10,000+".
QUEUED_CAP: Final = 10_000
# Jobs in Redis, running and failed are bounded by the hot window, the workers'
# concurrency and retention; each status is read up to this many rows at most.
STATUS_CAP: Final = 100_000
# The dead letters of one queue, counted for the "replay all" confirmation.
DEAD_LETTERS_CAP: Final = 100_000
# Below this many rows (the planner's figure) an exact count by status is cheap.
EXACT_TOTALS_BELOW: Final = 200_000
RUNNING_JOBS_MAX: Final = 1000

# Queued jobs per queue, each stopped at the cap: idx_jobs_queue_migration
# (queue_name, status, run_at, priority) WHERE status = 'queued', index only.
QUEUED_PER_QUEUE = """
SELECT q.name AS queue_name,
       (SELECT count(*) FROM (
            SELECT 1 FROM jobs j WHERE j.queue_name = q.name AND j.status = 'queued'
            LIMIT $2) capped) AS n
FROM unnest($1::text[]) AS q(name)
"""

# Jobs of one status by queue, reading at most $2 rows (an index of the status where
# there is one, else the table: the LIMIT bounds it); $2 rows in all means the cap was hit.
STATUS_BY_QUEUE = """
SELECT queue_name, count(*) AS n
FROM (SELECT queue_name FROM jobs WHERE status = $1 LIMIT $2) s
GROUP BY queue_name
"""

# The failed jobs of one queue, up to a cap (the bulk-replay confirmation).
DEAD_LETTERS_IN_QUEUE = """
SELECT count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'failed' AND queue_name = $1 LIMIT $2) capped
"""

# The planner's row count of the table (-1 before the first VACUUM or ANALYZE).
TABLE_ROWS_ESTIMATE = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'jobs'::regclass"

# Jobs running now, with the worker that holds each (idx_jobs_running_lease, partial on
# status = 'running': as many rows as jobs run at once).
RUNNING_JOBS = """
SELECT id, queue_name, worker_id, attempt_count, started_at, lease_expires_at
FROM jobs WHERE status = 'running'
ORDER BY started_at
LIMIT $1
"""


@dataclass(frozen=True, slots=True)
class CappedCounts:
    """queue -> jobs, exact unless `capped` (then each figure is a lower bound)."""

    by_queue: dict[str, int]
    capped: bool


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: uuid.UUID
    queue_name: str
    worker_id: str | None
    attempt_count: int
    started_at: datetime | None
    lease_expires_at: datetime | None


async def queued_per_queue(pool: asyncpg.Pool, queues: list[str]) -> dict[str, int]:
    """queue -> queued jobs, at most QUEUED_CAP + 1 (more than the cap: shown "cap+")."""
    rows = await pool.fetch(QUEUED_PER_QUEUE, queues, QUEUED_CAP + 1)
    return {r["queue_name"]: int(r["n"]) for r in rows}


async def status_by_queue(pool: asyncpg.Pool, status: str) -> CappedCounts:
    rows = await pool.fetch(STATUS_BY_QUEUE, status, STATUS_CAP)
    return CappedCounts(
        by_queue={r["queue_name"]: int(r["n"]) for r in rows},
        capped=sum(int(r["n"]) for r in rows) >= STATUS_CAP,
    )


async def dead_letters_in_queue(pool: asyncpg.Pool, queue: str) -> int:
    """Failed jobs of the queue, at most DEAD_LETTERS_CAP + 1."""
    n: int = await pool.fetchval(DEAD_LETTERS_IN_QUEUE, queue, DEAD_LETTERS_CAP + 1)
    return n


async def table_rows_estimate(pool: asyncpg.Pool) -> int:
    n: int | None = await pool.fetchval(TABLE_ROWS_ESTIMATE)
    return -1 if n is None else int(n)


async def estimate_by_status(pool: asyncpg.Pool) -> dict[str, int]:
    """The planner's jobs by status, as of the last ANALYZE: no row is read."""
    return {r["status"]: int(r["n"]) for r in await pool.fetch(ESTIMATE_JOBS_BY_STATUS)}


async def running_jobs(pool: asyncpg.Pool) -> list[RunningJob]:
    rows = await pool.fetch(RUNNING_JOBS, RUNNING_JOBS_MAX)
    return [RunningJob(**dict(r)) for r in rows]
