"""Jobs by queue and status without counting the table.

Terminal statuses (completed, failed, cancelled, discarded) are counted by the triggers
of migration 0005: each change appends +1 or -1 to job_count_changes (append-only, so
concurrent completions never wait on one counter row), and `fold` moves those into
job_counts. Readers fold first, so their counts are exact; retention folds too, so the
changes stay few when nobody reads. Live statuses (scheduled, queued, migrated_to_redis, running)
are counted from their partial indexes, under a timeout (a huge backlog).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.db.pool import Connection
from app.db.rows import JobCounts
from app.jobs.transitions import TERMINAL_STATUSES

# Two folds at once: the second's DELETE waits for the first's rows, then skips them.
FOLD_JOB_COUNTS = """
WITH changes AS (
    DELETE FROM job_count_changes RETURNING queue_name, status, n
)
INSERT INTO job_counts (queue_name, status, n)
SELECT queue_name, status, sum(n) FROM changes GROUP BY queue_name, status
ON CONFLICT (queue_name, status) DO UPDATE SET n = job_counts.n + EXCLUDED.n
"""

COUNT_FINISHED_JOBS = """
SELECT queue_name, status, n FROM job_counts
WHERE n <> 0 AND ($1::text[] IS NULL OR queue_name = ANY($1::text[]))
"""

# Each from its partial index: the queued backlog, the in-flight jobs (idx_jobs_migrated,
# idx_jobs_running_lease) and the jobs not yet due (idx_jobs_scheduled).
COUNT_LIVE_JOBS = """
SELECT queue_name, 'queued' AS status, count(*) AS n FROM jobs
WHERE status = 'queued' GROUP BY queue_name
UNION ALL
SELECT queue_name, 'migrated_to_redis', count(*) FROM jobs
WHERE status = 'migrated_to_redis' GROUP BY queue_name
UNION ALL
SELECT queue_name, 'running', count(*) FROM jobs
WHERE status = 'running' GROUP BY queue_name
UNION ALL
SELECT queue_name, 'scheduled', count(*) FROM jobs
WHERE status = 'scheduled' GROUP BY queue_name
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


async def fold(conn: Connection) -> None:
    """Move the pending count changes into job_counts."""
    await conn.execute(FOLD_JOB_COUNTS)


async def count_jobs(
    conn: Connection, *, timeout: float, queue_names: Sequence[str] | None = None
) -> JobCounts:
    """Exact counts by queue and status; if the live ones take longer than `timeout`
    seconds, the planner's estimates of those (then by_status only, exact False)."""
    names = list(queue_names) if queue_names is not None else None
    await fold(conn)
    by_queue: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(COUNT_FINISHED_JOBS, names):
        by_queue.setdefault(r["queue_name"], {})[r["status"]] = int(r["n"])
    try:
        async with conn.transaction():
            await conn.execute(SET_LOCAL_STATEMENT_TIMEOUT, f"{max(1, int(timeout * 1000))}")
            live = await conn.fetch(COUNT_LIVE_JOBS)
    except asyncpg.QueryCanceledError:
        by_status = _by_status(by_queue)
        for r in await conn.fetch(ESTIMATE_JOBS_BY_STATUS):
            if r["status"] not in TERMINAL_STATUSES:
                by_status[r["status"]] = int(r["n"])
        return JobCounts(by_queue={}, by_status=by_status, exact=False)
    for r in live:
        if names is None or r["queue_name"] in names:
            by_queue.setdefault(r["queue_name"], {})[r["status"]] = int(r["n"])
    return JobCounts(by_queue=by_queue, by_status=_by_status(by_queue), exact=True)


def _by_status(by_queue: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for statuses in by_queue.values():
        for status, n in statuses.items():
            totals[status] = totals.get(status, 0) + n
    return totals
